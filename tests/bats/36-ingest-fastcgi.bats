#!/usr/bin/env bats
# dq-ingest as a FastCGI responder behind lighttpd: the same answers as
# CGI, one long-lived process, its backends kept, its memory flat.

load helpers
load ingest
load local # the queue down: a file where the spool's tmp directory goes

setup() {
	ingest_env
	lighttpd_start fastcgi
}

teardown() {
	ingest_teardown
}

# The dq-ingest process lighttpd spawned (ingest.cgi execs it).
fcgi_pid() {
	pgrep -P "$LIGHTTPD_PID" -x dq-ingest
}

@test "FastCGI: a JPEG, a PNG and a WebP, multipart and raw, each 202, stored and queued" {
	local t n=0 f id ext
	for t in jpeg png webp; do
		f=$(fixture "a.$t" "$t" 64 48 "$n")
		ext=$t
		[ "$t" = jpeg ] && ext=jpg
		run --separate-stderr post_multipart "$f"
		assert_output 202
		id=$(jq -r .image_id "$BODY")
		raw_holds "$id" "$f"
		assert_equal "$(dq-put --stored "$id" 2>/dev/null | jq -r .message.metadata.source_blob.blob_name)" "$id.$ext"
		f=$(fixture "b.$t" "$t" 64 48 "$((n + 100))")
		run --separate-stderr post_raw "$f" "image/$t"
		assert_output 202
		id=$(jq -r .image_id "$BODY")
		raw_holds "$id" "$f"
		assert_equal "$(dq-put --stored "$id" 2>/dev/null | jq -r .message.metadata.source_blob.blob_name)" "$id.$ext"
		n=$((n + 1))
	done
	assert_equal "$(raw_count)" 6
	assert_equal "$(ready_count)" 6
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" "$BASE/images/$id"
	assert_output 202
	assert_equal "$(jq -r .status "$BODY")" pending
}

@test "FastCGI: one process serves every request and opens its backends once" {
	local f pid
	f=$(fixture a.jpg jpeg 64 48)
	run --separate-stderr post_multipart "$f"
	assert_output 202
	pid=$(fcgi_pid)
	[ -n "$pid" ]
	for _ in 1 2 3 4 5; do
		run --separate-stderr post_raw "$f" image/jpeg
		assert_output 202
	done
	assert_equal "$(fcgi_pid)" "$pid"
	run jq -r 'select(.event == "backend") | .store // .queue' <<<"$(server_log)"
	assert_output "$(printf 'local\nlocal')"
	assert_equal "$(server_log | jq -r 'select(.event == "request") | .http_status' | sort | uniq -c | awk '{print $1, $2}')" "6 202"
}

@test "FastCGI: rejected requests in between leave no trace on the next one" {
	local jpg png big
	jpg=$(fixture a.jpg jpeg 64 48 1)
	png=$(fixture a.png png 64 48 2)
	big=$(fixture big.png png 100 100)
	head -c 21000000 /dev/zero >>"$big"
	head -c 100 "$jpg" >"$BATS_TEST_TMPDIR/cut.jpg"
	run --separate-stderr post_raw "$big" image/png
	assert_error 413 payload_too_large
	run --separate-stderr post_raw "$jpg" image/jpeg -H "X-API-Key: wrong"
	assert_error 401 unauthorized
	run --separate-stderr post_multipart "$BATS_TEST_TMPDIR/cut.jpg"
	assert_error 400 truncated_image
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -H "Content-Type: multipart/form-data; boundary=XyZ" \
		--data-binary "@$jpg" "$BASE/ingest"
	assert_error 400 malformed_multipart
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -F "image=@$png;type=image/jpeg" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_error 415 type_mismatch
	assert_nothing_stored
	run --separate-stderr post_multipart "$png" -F 'metadata={"k":"v"}'
	assert_output 202
	run --separate-stderr dq-dequeue -w 0
	assert_equal "$(jq -c .message.metadata.extra <<<"$output")" '{"k":"v"}'
}

@test "FastCGI: Idempotency-Key and the per-key rate limit hold across requests of one process" {
	lighttpd_stop
	ingest_env RATE_LIMIT_PER_KEY=3
	lighttpd_start fastcgi
	local f first
	f=$(fixture a.webp webp 64 48)
	run --separate-stderr post_multipart "$f" -H "Idempotency-Key: k-1"
	assert_output 202
	first=$(cat "$BODY")
	run --separate-stderr post_multipart "$f" -H "Idempotency-Key: k-1"
	assert_output 202
	assert_json_equal "$(cat "$BODY")" "$first"
	run --separate-stderr post_multipart "$(fixture b.webp webp 64 48 9)" -H "Idempotency-Key: k-1"
	assert_error 422 idempotency_key_reused
	run --separate-stderr post_multipart "$f"
	assert_error 429 rate_limited
	assert_equal "$(raw_count)" 1
}

@test "FastCGI: memory stays flat over many requests" {
	local f pid before after
	# Under AddressSanitizer freed memory waits in a quarantine: none here.
	lighttpd_stop
	ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0:thread_local_quarantine_size_kb=0"
	export ASAN_OPTIONS
	ingest_env
	lighttpd_start fastcgi
	f=$(fixture a.jpg jpeg 64 48)
	printf '%s\n' "url = \"$BASE/ingest?product_sku=WK-KN-200&facility=yangjiang\"" \
		"header = \"X-API-Key: $API_KEY_CAM\"" "header = \"Content-Type: image/jpeg\"" \
		"data-binary = \"@$f\"" "output = /dev/null" "write-out = \"%{http_code}\\n\"" >"$BATS_TEST_TMPDIR/one.curl"
	# a warm-up, then the resident size before and after ${DQ_INGEST_REQUESTS:-600} more
	for _ in $(seq 100); do echo next; cat "$BATS_TEST_TMPDIR/one.curl"; done | tail -n +2 >"$BATS_TEST_TMPDIR/many.curl"
	run curl -sS -K "$BATS_TEST_TMPDIR/many.curl"
	assert_success
	pid=$(fcgi_pid)
	before=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
	for _ in $(seq $((${DQ_INGEST_REQUESTS:-600} / 100))); do
		run curl -sS -K "$BATS_TEST_TMPDIR/many.curl"
		assert_success
		assert_equal "$(sort -u <<<"$output")" 202
	done
	after=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
	assert_equal "$(fcgi_pid)" "$pid"
	echo "# VmRSS ${before} kB -> ${after} kB" >&3
	# ASan's allocator keeps growing its own caches for a while: a looser
	# bound there (valgrind's leak check is in bench/README.md).
	local slack=256
	grep -q __asan_init "$DQ_BUILD/bin/dq-ingest" && slack=4096
	[ "$after" -le $((before + slack)) ] || fail "VmRSS grew from $before kB to $after kB"
}

@test "FastCGI: the log settings of the environment file hold for every request" {
	lighttpd_stop
	ingest_env LOG_LEVEL=WARNING
	lighttpd_start fastcgi
	local f
	f=$(fixture a.png png 64 48)
	run --separate-stderr post_multipart "$f"
	assert_output 202
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -F "image=@$f;type=image/jpeg" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_error 415 type_mismatch
	# INFO lines (backends, a 202, a 415) are filtered out; the log is JSON
	run grep -c '"level":"INFO"' "$BATS_TEST_TMPDIR/lighttpd/error.log"
	assert_output 0
	run grep -c '^dq-ingest: ' "$BATS_TEST_TMPDIR/lighttpd/error.log"
	assert_output 0
}

@test "FastCGI: the queue down is 503 for the request, and the same process recovers" {
	local f pid
	f=$(fixture a.jpg jpeg 64 48)
	run --separate-stderr post_raw "$f" image/jpeg
	assert_output 202
	pid=$(fcgi_pid)
	local_only "a file where the spool's tmp directory goes"
	dq-dequeue -w 0 >/dev/null
	rm -rf "$(local_spool)/tmp"
	touch "$(local_spool)/tmp"
	run --separate-stderr post_raw "$(fixture b.jpg jpeg 64 48 2)" image/jpeg
	assert_error 503 unavailable
	assert_equal "$(raw_count)" 1
	rm "$(local_spool)/tmp"
	run --separate-stderr post_raw "$BATS_TEST_TMPDIR/b.jpg" image/jpeg
	assert_output 202
	assert_equal "$(fcgi_pid)" "$pid"
	assert_equal "$(raw_count)" 2
	assert_equal "$(ready_count)" 1
}
