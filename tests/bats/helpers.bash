# helpers.bash - shared by the suites: PATH, bats-support/assert, a fresh
# DQ_LOCAL_DIR per test, JSON comparison through jq -S, and polling.
# shellcheck shell=bash

# DQ_TOP is the source tree, DQ_BUILD where make put the programs (the
# sanitizer build uses another one).
DQ_TOP=${DQ_TOP:-$(cd "$BATS_TEST_DIRNAME/../.." && pwd)}
DQ_BUILD=${DQ_BUILD:-$DQ_TOP}
PATH="$DQ_BUILD/bin:$DQ_BUILD/tools:$PATH"
FIXTURES="$BATS_TEST_DIRNAME/fixtures"
export DQ_TOP DQ_BUILD PATH FIXTURES

bats_require_minimum_version 1.5.0

load /usr/lib/bats/bats-support/load.bash
load /usr/lib/bats/bats-assert/load.bash

# Every test starts from the embedded default and nothing else.
dq_env() {
	unset AZURE_STORAGE_CONNECTION_STRING AZURE_STORAGE_ACCOUNT \
		AZURE_SERVICEBUS_CONNECTION_STRING AZURE_SERVICEBUS_NAMESPACE \
		AZURE_AI_PROJECT_ENDPOINT AZURE_AI_API_KEY API_KEY DQ_ANALYZER \
		DQ_REFERENCE_DIR DQ_CACHE_DIR LOG_LEVEL
	export DQ_LOCAL_DIR="$BATS_TEST_TMPDIR/dq"
	export DQ_LOG_FORMAT=json
	export DQ_POLL_MS=20
	# a drained queue is known after this long, not the 5 s of production
	export DQ_WORKER_WAIT_SECONDS=0.5
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

# Messages waiting in the local queue (ready, not locked).
ready_count() {
	find "$DQ_LOCAL_DIR/queues/${1:-defect-jobs}/ready" -type f 2>/dev/null | wc -l
}

# The events logged on stderr (JSON lines) as one event name per line.
log_events() {
	jq -r 'select(.event) | .event' <<<"$1"
}

# Blobs stored in a local container (hidden temporaries and metadata aside).
blob_count() {
	find "$DQ_LOCAL_DIR/store/${1:-raw-images}" -type f -not -path '*/.*' 2>/dev/null | wc -l
}

# Messages under a lease in the local queue.
locked_count() {
	find "$DQ_LOCAL_DIR/queues/${1:-defect-jobs}/locked" -type f 2>/dev/null | wc -l
}

# Every lease in the local spool has run out (the expiry in ms ends the name).
leases_expired() {
	local f now
	now=$(date +%s%3N)
	for f in "$DQ_LOCAL_DIR"/queues/${1:-defect-jobs}/locked/*; do
		[ -e "$f" ] || continue
		[ "${f##*.}" -lt "$now" ] || return 1
	done
}

# count_is N COMMAND...: COMMAND prints N (for wait_for).
count_is() {
	local want=$1
	shift
	[ "$("$@")" -eq "$want" ]
}
