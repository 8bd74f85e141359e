#!/usr/bin/env bats
# dq-ingest through lighttpd (CGI): concurrent uploads and rate limits.

load helpers
load ingest

teardown() {
	ingest_teardown
}

# upload_many N [curl options]: N concurrent uploads of distinct images;
# each one's status in $BATS_TEST_TMPDIR/out/N.code, headers in N.hdr.
upload_many() {
	local n=$1 i pids=()
	shift
	mkdir -p "$BATS_TEST_TMPDIR/out"
	"$PYTHON" "$MKIMAGE" -d "$BATS_TEST_TMPDIR/out" jpeg 64 48 1 "$n"
	for i in $(seq "$n"); do
		curl -sS -o "$BATS_TEST_TMPDIR/out/$i.body" -D "$BATS_TEST_TMPDIR/out/$i.hdr" \
			-w '%{http_code}' -H "X-API-Key: $API_KEY_CAM" "$@" \
			-F "image=@$BATS_TEST_TMPDIR/out/$i.jpeg" -F product_sku=WK-KN-200 -F facility=yangjiang \
			"$BASE/ingest" >"$BATS_TEST_TMPDIR/out/$i.code" &
		pids+=($!)
	done
	for i in "${pids[@]}"; do
		wait "$i"
	done
}

count_code() {
	grep -lx "$1" "$BATS_TEST_TMPDIR"/out/*.code | wc -l
}

@test "fifty concurrent uploads give fifty images and fifty messages" {
	ingest_env
	lighttpd_start cgi
	upload_many 50
	assert_equal "$(count_code 202)" 50
	assert_equal "$(raw_count)" 50
	assert_equal "$(ready_count)" 50
	# fifty distinct ids, each with its image and one message
	assert_equal "$(cat "$BATS_TEST_TMPDIR"/out/*.body | jq -r .image_id | sort -u | wc -l)" 50
	run --separate-stderr dq-dequeue -n 50 -w 0
	assert_success
	assert_equal "$(jq -r .message.image_id <<<"$output" | sort -u)" \
		"$(cat "$BATS_TEST_TMPDIR"/out/*.body | jq -r .image_id | sort -u)"
}

@test "RATE_LIMIT_PER_KEY=20: thirty concurrent requests, 20 to 22 accepted, the rest 429 with Retry-After" {
	ingest_env RATE_LIMIT_PER_KEY=20
	lighttpd_start cgi
	upload_many 30
	local ok limited f
	ok=$(count_code 202)
	limited=$(count_code 429)
	[ "$ok" -ge 20 ] && [ "$ok" -le 22 ] || fail "$ok accepted"
	assert_equal $((ok + limited)) 30
	for f in "$BATS_TEST_TMPDIR"/out/*.code; do
		[ "$(cat "$f")" = 429 ] || continue
		grep -qi '^Retry-After: [1-9][0-9]*' "${f%.code}.hdr" || fail "no Retry-After in ${f%.code}.hdr"
		assert_equal "$(jq -r .error.code "${f%.code}.body")" rate_limited
	done
	# what was refused stored nothing
	assert_equal "$(raw_count)" "$ok"
	assert_equal "$(ready_count)" "$ok"
	# the other key has its own bucket
	run --separate-stderr req -H "X-API-Key: $API_KEY_OPS" -F "image=@$BATS_TEST_TMPDIR/out/1.jpeg" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_output 202
	# bucket files are named by hash: no key or caller name in the state directory
	run grep -rl -e "$API_KEY_CAM" -e camera "$DQ_STATE_DIR"
	assert_failure
	assert_equal "$(find "$DQ_STATE_DIR" -name '*camera*' -o -name "*$API_KEY_CAM*" | wc -l)" 0
}

@test "RATE_LIMIT_PER_IP: checked before authentication and before the body" {
	ingest_env RATE_LIMIT_PER_IP=3
	lighttpd_start cgi
	local i
	for i in 1 2 3; do
		run --separate-stderr req "$BASE/images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10"
		assert_error 401 unauthorized
	done
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" "$BASE/images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10"
	assert_error 429 rate_limited
	[[ "$(header Retry-After)" =~ ^[1-9][0-9]*$ ]]
}

@test "failed authentications are counted per IP: then even a good key waits" {
	ingest_env RATE_LIMIT_PER_KEY=4
	lighttpd_start cgi
	local i
	for i in 1 2 3 4; do
		run --separate-stderr req -H "X-API-Key: guess-$i" "$BASE/images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10"
		assert_error 401 unauthorized
	done
	run --separate-stderr req -H "X-API-Key: guess-5" "$BASE/images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10"
	assert_error 429 rate_limited
	# the right key from the same address is not even compared now
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" "$BASE/images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10"
	assert_error 429 rate_limited
}

@test "rate limits are checked before the body is read (direct, no body given)" {
	ingest_env RATE_LIMIT_PER_KEY=1
	local f
	f=$(fixture a.png png 64 48)
	run --separate-stderr cgi POST /ingest HTTP_X_API_KEY="$API_KEY_CAM" CONTENT_TYPE=image/png \
		CONTENT_LENGTH="$(stat -c %s "$f")" QUERY_STRING='product_sku=WK-KN-200&facility=yangjiang' <"$f"
	assert_success
	assert_equal "$(cgi_status <<<"$output")" 202
	# The second request's body never comes: a read would give 400.
	run --separate-stderr cgi POST /ingest HTTP_X_API_KEY="$API_KEY_CAM" CONTENT_TYPE=image/png \
		CONTENT_LENGTH="$(stat -c %s "$f")" QUERY_STRING='product_sku=WK-KN-200&facility=yangjiang' </dev/null
	assert_success
	assert_equal "$(cgi_status <<<"$output")" 429
	assert_line --regexp '^Retry-After: [1-9][0-9]*'
}

# bucket_files: rate-limit bucket files in the state directory.
bucket_files() {
	find "$DQ_STATE_DIR/ratelimit" -type f -not -name '.*' 2>/dev/null | wc -l
}

# get_from ADDR: one authenticated GET from ADDR, run directly; its status.
get_from() {
	cgi GET /images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10 REMOTE_ADDR="$1" \
		HTTP_X_API_KEY="$API_KEY_CAM" </dev/null | cgi_status
}

@test "rate-limit state is bounded: idle buckets expire, a live one is kept" {
	ingest_env RATE_LIMIT_PER_IP=2
	local i
	for i in $(seq 40); do
		assert_equal "$(get_from "10.0.$((i / 200)).$((i % 200 + 1))")" 404
	done
	# one bucket per address (a look at the failed-authentication budget
	# creates none)
	assert_equal "$(bucket_files)" 40
	# a busy address, its bucket empty
	assert_equal "$(get_from 192.0.2.7)" 404
	assert_equal "$(get_from 192.0.2.7)" 404
	assert_equal "$(get_from 192.0.2.7)" 429
	# Two minutes pass for everyone but the busy address: its bucket is
	# not full again yet, the others are, the same as none.
	local busy
	busy=$(grep -l . "$DQ_STATE_DIR"/ratelimit/* | xargs ls -t | head -1)
	find "$DQ_STATE_DIR/ratelimit" -type f ! -path "$busy" -exec touch -d '2 minutes ago' {} +
	touch -d '2 minutes ago' "$DQ_STATE_DIR/ratelimit/.sweep"
	assert_equal "$(get_from 198.51.100.1)" 404
	assert_equal "$(bucket_files)" 2
	assert_equal "$(get_from 192.0.2.7)" 429
	# a second sweep waits its minute: a new address adds one
	assert_equal "$(get_from 198.51.100.2)" 404
	assert_equal "$(bucket_files)" 3
}

@test "a sweep racing concurrent requests loses no take: an expired key bucket admits its limit, no more" {
	ingest_env RATE_LIMIT_PER_KEY=10
	local i
	# spend some of the key's tokens, then let two minutes pass for its bucket
	for i in 1 2 3; do
		assert_equal "$(get_from 127.0.0.1)" 404
	done
	find "$DQ_STATE_DIR/ratelimit" -type f -exec touch -d '2 minutes ago' {} +
	mkdir -p "$BATS_TEST_TMPDIR/out"
	for i in $(seq 20); do
		get_from "10.1.0.$i" >"$BATS_TEST_TMPDIR/out/$i.code" &
	done
	wait
	# a full bucket again (10), plus at most one token refilled meanwhile
	local ok
	ok=$(grep -lx 404 "$BATS_TEST_TMPDIR"/out/*.code | wc -l)
	[ "$ok" -ge 10 ] && [ "$ok" -le 11 ]
	assert_equal "$((ok + $(grep -lx 429 "$BATS_TEST_TMPDIR"/out/*.code | wc -l)))" 20
	# the expired bucket was swept and the live one is what is left
	assert_equal "$(bucket_files)" 1
}
