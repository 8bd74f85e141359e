#!/usr/bin/env bats
# dq-ingest through lighttpd (CGI): Idempotency-Key, and the store or queue
# down.

load helpers
load ingest

setup() {
	ingest_env
	lighttpd_start cgi
	JPG=$(fixture a.jpg jpeg 64 48 1)
	JPG2=$(fixture b.jpg jpeg 64 48 2)
}

teardown() {
	ingest_teardown
}

# clock_past T: the clock (to the second) no longer reads T.
clock_past() {
	[ "$(date -u +%Y-%m-%dT%H:%M:%SZ)" != "$1" ]
}

# The image id of key K for the caller "camera": UUIDv5 in dq's namespace.
idem_id() {
	"$PYTHON" -c 'import sys, uuid; print(uuid.uuid5(uuid.UUID("6f1c2d0e-5b7a-4c1e-9a57-2f0d3c8b9e41"), "camera\n" + sys.argv[1]))' "$1"
}

@test "a retry with the same Idempotency-Key returns the original answer and stores one image" {
	run --separate-stderr post_multipart "$JPG" -H "Idempotency-Key: order-17"
	assert_output 202
	local first
	first=$(jq -c . "$BODY")
	assert_equal "$(jq -r .image_id <<<"$first")" "$(idem_id order-17)"
	# a second later, so a fresh answer would carry another time
	wait_for 5 clock_past "$(jq -r .ingested_at <<<"$first")"
	run --separate-stderr post_multipart "$JPG" -H "Idempotency-Key: order-17"
	assert_output 202
	assert_json_equal "$(cat "$BODY")" "$first"
	assert_equal "$(header Location)" "/api/v1/images/$(idem_id order-17)"
	assert_equal "$(blob_count raw-images)" 1
	assert_equal "$(ready_count)" 1
}

@test "the same key with another image is 422, and stores nothing more" {
	run --separate-stderr post_multipart "$JPG" -H "Idempotency-Key: order-18"
	assert_output 202
	run --separate-stderr post_multipart "$JPG2" -H "Idempotency-Key: order-18"
	assert_error 422 idempotency_key_reused
	local png
	png=$(fixture c.png png 64 48 3)
	run --separate-stderr post_multipart "$png" -H "Idempotency-Key: order-18"
	assert_error 422 idempotency_key_reused
	run --separate-stderr post_multipart "$JPG" -H "Idempotency-Key: order-18" -F 'metadata={"other":1}'
	assert_error 422 idempotency_key_reused
	assert_equal "$(blob_count raw-images)" 1
	assert_equal "$(ready_count)" 1
}

@test "keys are per caller: the same key from another caller is another image" {
	run --separate-stderr post_multipart "$JPG" -H "Idempotency-Key: order-19"
	assert_output 202
	local a
	a=$(jq -r .image_id "$BODY")
	run --separate-stderr req -H "X-API-Key: $API_KEY_OPS" -H "Idempotency-Key: order-19" -F "image=@$JPG2" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_output 202
	[ "$(jq -r .image_id "$BODY")" != "$a" ]
}

@test "a concurrent duplicate (the key's request still running) is 409" {
	local lock
	mkdir -p "$DQ_STATE_DIR/idempotency"
	lock="$DQ_STATE_DIR/idempotency/$(printf %s "$(idem_id order-20)" | sha256sum | cut -c1-32).lock"
	# This shell holds the lock, as the first request would.
	exec {fd}>"$lock"
	flock -n "$fd"
	run --separate-stderr post_multipart "$JPG" -H "Idempotency-Key: order-20"
	exec {fd}>&-
	assert_error 409 conflict
	assert_nothing_stored
	run --separate-stderr post_multipart "$JPG" -H "Idempotency-Key: order-20"
	assert_output 202
}

@test "an Idempotency-Key that is not visible ASCII is 400" {
	run --separate-stderr post_multipart "$JPG" -H "Idempotency-Key: two words"
	assert_error 400 bad_idempotency_key
	assert_nothing_stored
}

@test "the queue down: 503 with Retry-After, the orphaned image removed; the retry succeeds" {
	# The spool's tmp directory replaced by a file: open works, send fails.
	run --separate-stderr post_multipart "$JPG"
	assert_output 202
	dq-dequeue -w 0 >/dev/null
	rm -rf "$DQ_LOCAL_DIR/queues/defect-jobs/tmp"
	touch "$DQ_LOCAL_DIR/queues/defect-jobs/tmp"
	run --separate-stderr post_multipart "$JPG2"
	assert_error 503 unavailable
	[[ "$(header Retry-After)" =~ ^[1-9][0-9]*$ ]]
	assert_equal "$(blob_count raw-images)" 1
	rm "$DQ_LOCAL_DIR/queues/defect-jobs/tmp"
	mkdir "$DQ_LOCAL_DIR/queues/defect-jobs/tmp"
	run --separate-stderr post_multipart "$JPG2"
	assert_output 202
	assert_equal "$(blob_count raw-images)" 2
	assert_equal "$(ready_count)" 1
}

@test "the queue down with an Idempotency-Key: 503, then the retry is accepted under the same id" {
	rm -rf "$DQ_LOCAL_DIR/queues/defect-jobs/tmp"
	mkdir -p "$DQ_LOCAL_DIR/queues/defect-jobs"
	touch "$DQ_LOCAL_DIR/queues/defect-jobs/tmp"
	run --separate-stderr post_multipart "$JPG" -H "Idempotency-Key: order-21"
	assert_error 503 unavailable
	assert_nothing_stored
	rm "$DQ_LOCAL_DIR/queues/defect-jobs/tmp"
	run --separate-stderr post_multipart "$JPG" -H "Idempotency-Key: order-21"
	assert_output 202
	assert_equal "$(jq -r .image_id "$BODY")" "$(idem_id order-21)"
	assert_equal "$(blob_count raw-images)" 1
	assert_equal "$(ready_count)" 1
}

@test "the store down: 503 with Retry-After, nothing queued; the retry succeeds" {
	mkdir -p "$DQ_LOCAL_DIR"
	touch "$DQ_LOCAL_DIR/store"
	run --separate-stderr post_raw "$JPG" image/jpeg
	assert_error 503 unavailable
	[[ "$(header Retry-After)" =~ ^[1-9][0-9]*$ ]]
	assert_equal "$(ready_count)" 0
	rm "$DQ_LOCAL_DIR/store"
	run --separate-stderr post_raw "$JPG" image/jpeg
	assert_output 202
	assert_equal "$(blob_count raw-images)" 1
	assert_equal "$(ready_count)" 1
}

@test "GET with the store down: 503" {
	mkdir -p "$DQ_LOCAL_DIR/store/processed-images"
	# a directory where the artifact should be: unreadable as a blob
	mkdir "$DQ_LOCAL_DIR/store/processed-images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10.json"
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" "$BASE/images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10"
	assert_error 503 unavailable
}
