# helpers.bash - shared by the suites: PATH, bats-support/assert, fresh
# backends per test (DQ_TEST_BACKEND), JSON comparison through jq -S,
# polling, counts and reads through the programs, the reference set-up.
# shellcheck shell=bash

# DQ_TOP is the source tree, DQ_BUILD where make put the programs (the
# sanitizer build uses another one).
DQ_TOP=${DQ_TOP:-$(cd "$BATS_TEST_DIRNAME/../.." && pwd)}
DQ_BUILD=${DQ_BUILD:-$DQ_TOP}
PATH="$DQ_BUILD/bin:$DQ_BUILD/tools:$PATH"
FIXTURES="$DQ_TOP/tests/bats/fixtures"
export DQ_TOP DQ_BUILD PATH FIXTURES

bats_require_minimum_version 1.5.0

load /usr/lib/bats/bats-support/load.bash
load /usr/lib/bats/bats-assert/load.bash

# DQ_TEST_BACKEND selects the store and queue the pipeline suites run on:
# `local' (the default: the local store and spool under a fresh
# DQ_LOCAL_DIR per test), `azure' (the store on Azurite, the queue on the
# Service Bus fake), or one half of azure with the other half local:
# `azure-blob' (Azurite and the local spool) and `azure-servicebus' (the
# local store and the fake).  DQ_TEST_STORE (local, azurite) and
# DQ_TEST_QUEUE (local, servicebus) say which each half is; a non-local
# half is set up by tests/bats/<name>.bash (store_env / queue_env,
# store_vars / queue_vars).  Tests observe the backends through the
# programs (the helpers below); those about the local backends' files load
# local.bash and skip on another backend.
DQ_TEST_BACKEND=${DQ_TEST_BACKEND:-local}
case $DQ_TEST_BACKEND in
local) DQ_TEST_STORE=local DQ_TEST_QUEUE=local ;;
azure) DQ_TEST_STORE=azurite DQ_TEST_QUEUE=servicebus ;;
azure-blob) DQ_TEST_STORE=azurite DQ_TEST_QUEUE=local ;;
azure-servicebus) DQ_TEST_STORE=local DQ_TEST_QUEUE=servicebus ;;
*) DQ_TEST_STORE="" DQ_TEST_QUEUE="" ;;
esac
export DQ_TEST_BACKEND DQ_TEST_STORE DQ_TEST_QUEUE
if [ "$DQ_TEST_STORE" = azurite ]; then
	load "$DQ_TOP/tests/bats/azurite.bash"
fi
if [ "$DQ_TEST_QUEUE" = servicebus ]; then
	load "$DQ_TOP/tests/bats/servicebus.bash"
fi

# backend_env: fresh, empty backends for this test, as DQ_TEST_BACKEND says.
# A backend added here is set up in its own file only; a test never names
# a backend's variables but to unset them.  Tests set the queue's timings
# per test (DQ_LOCK_SECONDS for a lease, DQ_DUPLICATE_WINDOW_SECONDS,
# WORKER_MAX_DELIVERY_ATTEMPTS): a backend added here honours them (the
# fake's entity settings) or those tests skip.
backend_env() {
	[ -n "$DQ_TEST_STORE" ] ||
		fail "DQ_TEST_BACKEND=$DQ_TEST_BACKEND: no such test backend; the suites run on: local, azure, azure-blob, azure-servicebus"
	# the local halves (and the programs' other files) live here
	export DQ_LOCAL_DIR="$BATS_TEST_TMPDIR/dq"
	[ "$DQ_TEST_STORE" = local ] || store_env
	[ "$DQ_TEST_QUEUE" = local ] || queue_env
}

# backend_vars: the backends' variables as VAR=value lines, for an
# environment file (dq-ingest's).
backend_vars() {
	echo "DQ_LOCAL_DIR=$DQ_LOCAL_DIR"
	[ "$DQ_TEST_STORE" = local ] || store_vars
	[ "$DQ_TEST_QUEUE" = local ] || queue_vars
}

# Every test starts from the embedded default and nothing else.
dq_env() {
	unset AZURE_STORAGE_CONNECTION_STRING AZURE_STORAGE_ACCOUNT \
		AZURE_SERVICEBUS_CONNECTION_STRING AZURE_SERVICEBUS_NAMESPACE \
		AZURE_AI_PROJECT_ENDPOINT AZURE_AI_API_KEY API_KEY DQ_ANALYZER \
		DQ_REFERENCE_DIR DQ_CACHE_DIR LOG_LEVEL DQ_LOCAL_DIR
	backend_env
	export DQ_LOG_FORMAT=json
	export DQ_POLL_MS=20
	# a drained queue is known after this long, not the 5 s of production
	export DQ_WORKER_WAIT_SECONDS=0.5
}

# reference_setup SEED [dq-synth options...]: the reference analyzer on a
# synthetic set (references, good parts, defects) drawn once per file by
# `dq-synth -s SEED options' into $BATS_FILE_TMPDIR, with a model cache
# shared by the file's tests (a model is then built once per file).  Call
# it in setup, after dq_env; it sets S to the set's directory.
reference_setup() {
	local seed=$1
	shift
	S=$BATS_FILE_TMPDIR/synth-$seed
	# the first test of the file draws it; tests running at once wait
	(
		flock 9
		if [ ! -d "$S" ]; then
			rm -rf "$S.new"
			dq-synth -s "$seed" -o "$S.new" "$@" >/dev/null 2>&1 && mv "$S.new" "$S"
		fi
	) 9>"$BATS_FILE_TMPDIR/synth-$seed.lock" || fail "dq-synth -s $seed $* failed"
	[ -d "$S/reference" ] || fail "dq-synth -s $seed $* drew no reference set in $S"
	export S DQ_ANALYZER=reference DQ_REFERENCE_DIR=$S/reference DQ_CACHE_DIR=$BATS_FILE_TMPDIR/cache
}

# assert_json_equal ACTUAL EXPECTED: the same JSON, key order aside.
assert_json_equal() {
	local a e
	a=$(jq -S . <<<"$1") || fail "not JSON: $1"
	e=$(jq -S . <<<"$2") || fail "expected is not JSON: $2"
	assert_equal "$a" "$e"
}

# wait_for SECONDS COMMAND...: poll until COMMAND succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.05
	done
}

# count_is N COMMAND...: COMMAND prints N (for wait_for).
count_is() {
	local want=$1
	shift
	[ "$("$@")" -eq "$want" ]
}

# The events logged on stderr (JSON lines) as one event name per line.
log_events() {
	jq -r 'select(.event) | .event' <<<"$1"
}

# --- the queue, through dq-dequeue --peek -------------------------------
# A peek shows every message, under a lease or not, without taking one; a
# message under a lease has receipt.locked_until.  At most 1000 (the -n
# limit): a count that reaches it is an error, not a number.

# peek_all [--dead-letter] [QUEUE]: every message of the queue, peeked.
peek_all() {
	local dl=() out n
	if [ "${1:-}" = --dead-letter ]; then
		dl=(--dead-letter)
		shift
	fi
	out=$(dq-dequeue "${dl[@]}" -q "${1:-defect-jobs}" --peek -n 1000 -w 0 2>/dev/null) ||
		{ echo "peek_all: dq-dequeue --peek failed" >&2; return 1; }
	n=$(grep -c . <<<"$out" || :) # 0 for an empty queue
	[ "$n" -lt 1000 ] || { echo "peek_all: 1000 messages or more: more than a peek shows" >&2; return 1; }
	[ -z "$out" ] || printf '%s\n' "$out"
}

# peek_count FILTER [--dead-letter] [QUEUE]: the peeked messages FILTER keeps.
peek_count() {
	local filter=$1 out
	shift
	out=$(peek_all "$@") || return 1
	jq -s "[.[] | select($filter)] | length" <<<"$out"
}

# Messages waiting in the queue (ready, not under a lease).
ready_count() {
	peek_count '.receipt.locked_until == null' "$@"
}

# Messages under a lease, running or run out (not yet returned).
locked_count() {
	peek_count '.receipt.locked_until != null' "$@"
}

# Messages in the dead-letter queue (a redrive's lease included).
dead_count() {
	peek_count true --dead-letter "$@"
}

# leases_expired [QUEUE]: every lease in the queue has run out.
leases_expired() {
	local out now
	out=$(peek_all "$@") || return 1
	now=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
	[ "$(jq -s --arg now "$now" '[.[] | select(.receipt.locked_until != null and .receipt.locked_until >= $now)] | length' <<<"$out")" -eq 0 ]
}

# --- the store, through dq-put --stored and dq-ingest's GET --------------

# Raw images in the store (dq-put --stored --all: one line each).
raw_count() {
	local out
	out=$(dq-put --stored --all 2>/dev/null)
	[ $? -le 65 ] || { echo "raw_count: dq-put --stored --all failed" >&2; return 1; }
	grep -c . <<<"$out"
}

# Raw images with an artifact (all of them less those dq-put --stored lists).
analyzed_count() {
	local all todo
	all=$(raw_count) || return 1
	todo=$(dq-put --stored 2>/dev/null)
	[ $? -le 65 ] || { echo "analyzed_count: dq-put --stored failed" >&2; return 1; }
	echo $((all - $(grep -c . <<<"$todo")))
}

# image_get ID FILE: dq-ingest's GET /api/v1/images/ID, run as CGI: the
# HTTP status on stdout, the body (an artifact's bytes as stored) in FILE.
image_get() {
	local out=$2.cgi
	API_KEY=tests:dq-tests-key HTTP_X_API_KEY=dq-tests-key \
		DQ_STATE_DIR="$BATS_TEST_TMPDIR/get-state" GATEWAY_INTERFACE=CGI/1.1 \
		SERVER_PROTOCOL=HTTP/1.1 REQUEST_METHOD=GET PATH_INFO="/images/$1" \
		REMOTE_ADDR=127.0.0.1 dq-ingest >"$out" 2>/dev/null ||
		{ echo "image_get: dq-ingest failed" >&2; return 1; }
	sed '1,/^\r$/d' "$out" >"$2"
	sed -n '1s/^Status: \([0-9]*\).*/\1/p' "$out"
	rm -f "$out"
}

# image_state ID: analyzed, failed (a failure marker), pending (the raw
# image only) or absent, as GET tells.
image_state() {
	local body=$BATS_TEST_TMPDIR/image_state.body code
	code=$(image_get "$1" "$body") || return 1
	case $code in
	200) jq -r 'if .status == "failed" then "failed" else "analyzed" end' "$body" ;;
	202) echo pending ;;
	404) echo absent ;;
	*) echo "image_state: GET $1: $code" >&2; return 1 ;;
	esac
}

# artifact ID: the artifact of image ID, byte for byte as stored.
artifact() {
	local body=$BATS_TEST_TMPDIR/artifact.body
	[ "$(image_state "$1")" = analyzed ] || { echo "artifact: no artifact for $1" >&2; return 1; }
	image_get "$1" "$body" >/dev/null && cat "$body"
}

# failure ID: what GET tells of image ID's failure marker: the latest
# error, attempts and failed_at.
failure() {
	local body=$BATS_TEST_TMPDIR/failure.body
	[ "$(image_state "$1")" = failed ] || { echo "failure: no failure marker for $1" >&2; return 1; }
	image_get "$1" "$body" >/dev/null && cat "$body"
}

# raw_holds ID FILE: the store holds FILE's bytes as raw image ID (dq-put
# compares them byte for byte: the same bytes are existing, others a
# conflict).
raw_holds() {
	local out
	out=$(dq-put --sku WK-KN-200 --facility yangjiang --id "$1" "$2" 2>/dev/null)
	[ "$(jq -r .stored.existing <<<"$out")" = true ] ||
		{ echo "raw_holds: the store holds other bytes than $2 as $1, or none: $out" >&2; return 1; }
}

# no_backend: no store, queue or analyzer configured at all.
no_backend() {
	unset DQ_LOCAL_DIR AZURE_STORAGE_CONNECTION_STRING AZURE_STORAGE_ACCOUNT \
		AZURE_SERVICEBUS_CONNECTION_STRING AZURE_SERVICEBUS_NAMESPACE
}

# blob_count [CONTAINER]: for suites written before raw_count and
# analyzed_count, which say what they count: raw images in the raw
# container, images with an artifact in the processed one (a failure
# marker or a kept copy is not counted: local_blob_count counts files).
blob_count() {
	case ${1:-raw-images} in
	raw-images) raw_count ;;
	processed-images) analyzed_count ;;
	*) echo "blob_count: no count of container $1" >&2; return 1 ;;
	esac
}
