#!/usr/bin/env bats
# dq-ingest through lighttpd (CGI): Idempotency-Key, and the store or queue
# down.

load helpers
load ingest
load local # the store or queue down: files put where their directories go

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
	assert_equal "$(raw_count)" 1
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
	assert_equal "$(raw_count)" 1
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
	local_only "a file where the spool's tmp directory goes"
	dq-dequeue -w 0 >/dev/null
	rm -rf "$(local_spool)/tmp"
	touch "$(local_spool)/tmp"
	run --separate-stderr post_multipart "$JPG2"
	assert_error 503 unavailable
	[[ "$(header Retry-After)" =~ ^[1-9][0-9]*$ ]]
	assert_equal "$(raw_count)" 1
	rm "$(local_spool)/tmp"
	mkdir "$(local_spool)/tmp"
	run --separate-stderr post_multipart "$JPG2"
	assert_output 202
	assert_equal "$(raw_count)" 2
	assert_equal "$(ready_count)" 1
}

@test "the queue down with an Idempotency-Key: 503, then the retry is accepted under the same id" {
	local_only "a file where the spool's tmp directory goes"
	mkdir -p "$(local_spool)"
	touch "$(local_spool)/tmp"
	run --separate-stderr post_multipart "$JPG" -H "Idempotency-Key: order-21"
	assert_error 503 unavailable
	assert_nothing_stored
	rm "$(local_spool)/tmp"
	run --separate-stderr post_multipart "$JPG" -H "Idempotency-Key: order-21"
	assert_output 202
	assert_equal "$(jq -r .image_id "$BODY")" "$(idem_id order-21)"
	assert_equal "$(raw_count)" 1
	assert_equal "$(ready_count)" 1
}

@test "the store down: 503 with Retry-After, nothing queued; the retry succeeds" {
	local_only "a file where the store's directory goes"
	mkdir -p "$DQ_LOCAL_DIR"
	touch "$(local_store_dir)"
	run --separate-stderr post_raw "$JPG" image/jpeg
	assert_error 503 unavailable
	[[ "$(header Retry-After)" =~ ^[1-9][0-9]*$ ]]
	assert_equal "$(ready_count)" 0
	rm "$(local_store_dir)"
	run --separate-stderr post_raw "$JPG" image/jpeg
	assert_output 202
	assert_equal "$(raw_count)" 1
	assert_equal "$(ready_count)" 1
}

@test "GET with the store down: 503" {
	local_only "a directory where an artifact's file goes"
	# a directory where the artifact should be: unreadable as a blob
	mkdir -p "$(local_blob processed-images 0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10.json)"
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" "$BASE/images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10"
	assert_error 503 unavailable
}

# reference_for PNG: a reference directory whose SKU matches that image.
reference_for() {
	mkdir -p "$BATS_TEST_TMPDIR/ref/WK-KN-200"
	cp "$1" "$BATS_TEST_TMPDIR/ref/WK-KN-200/good1.png"
	cp "$1" "$BATS_TEST_TMPDIR/ref/WK-KN-200/good2.png"
}

@test "a send whose outcome is unknown keeps the image: 503, the message is processed, the retry is 202" {
	local png id
	png=$(fixture p.png png 64 48 100)
	reference_for "$png"
	ingest_env DQ_TEST_SEND_FSYNC_FAIL=1
	run --separate-stderr post_multipart "$png" -H "Idempotency-Key: order-30"
	assert_error 503 unavailable
	id=$(idem_id order-30)
	# the message was published before the failure: it is there, and so is its image
	run --separate-stderr dq-dequeue --peek -n 10
	assert_success
	assert_equal "$(jq -r .message.image_id <<<"$output")" "$id"
	run --separate-stderr dq-put --stored "$id"
	assert_success
	assert_equal "$(jq -r .message.image_id <<<"$output")" "$id"
	assert_equal "$(server_log | jq -r 'select(.event == "send_unknown") | .image_id')" "$id"
	# the worker analyzes it: no raw_missing
	DQ_ANALYZER=reference DQ_REFERENCE_DIR="$BATS_TEST_TMPDIR/ref" DQ_CACHE_DIR="$BATS_TEST_TMPDIR/cache" \
		run --separate-stderr timeout 60 dq-worker --drain
	assert_success
	# the client's retry, the disk healthy again, is the same image
	ingest_env
	run --separate-stderr post_multipart "$png" -H "Idempotency-Key: order-30"
	assert_output 202
	assert_equal "$(jq -r .image_id "$BODY")" "$id"
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" "$BASE/images/$id"
	assert_output 200
	assert_equal "$(jq -r '.image_id, .defect_findings.defect_detected' "$BODY" | tr '\n' ' ')" "$id false "
}

@test "a send whose outcome is unknown, without Idempotency-Key: the image stays for its message" {
	ingest_env DQ_TEST_SEND_FSYNC_FAIL=1
	run --separate-stderr post_raw "$JPG" image/jpeg
	assert_error 503 unavailable
	local id
	id=$(server_log | jq -r 'select(.event == "send_unknown") | .image_id')
	run --separate-stderr dq-dequeue --peek
	assert_success
	assert_equal "$(jq -r .message.image_id <<<"$output")" "$id"
	run --separate-stderr dq-put --stored "$id"
	assert_success
	assert_equal "$(jq -r .message.metadata.source_blob.blob_name <<<"$output")" "$id.jpg"
}

@test "a partial upload (image written, its metadata not): 503, then the same request completes it, 202" {
	local id
	id=$(idem_id order-31)
	# The metadata cannot be written, as on a full disk: a directory where it goes.
	local_only "a directory where a metadata file goes"
	mkdir -p "$(local_meta raw-images "$id.jpg")"
	run --separate-stderr post_multipart "$JPG" -H "Idempotency-Key: order-31"
	assert_error 503 unavailable
	assert_equal "$(ready_count)" 0
	rmdir "$(local_meta raw-images "$id.jpg")"
	run --separate-stderr post_multipart "$JPG" -H "Idempotency-Key: order-31"
	assert_output 202
	assert_equal "$(jq -r .image_id "$BODY")" "$id"
	local first
	first=$(jq -c . "$BODY")
	assert_equal "$(server_log | jq -r 'select(.event == "repaired") | .image_id')" "$id"
	# stored whole and queued once
	run --separate-stderr dq-put --stored "$id"
	assert_success
	assert_equal "$(jq -r .message.ingested_at <<<"$output")" "$(jq -r .ingested_at <<<"$first")"
	assert_equal "$(ready_count)" 1
	# a third try is the plain retry: the same answer
	run --separate-stderr post_multipart "$JPG" -H "Idempotency-Key: order-31"
	assert_output 202
	assert_json_equal "$(cat "$BODY")" "$first"
	# and another request under the key is still 422
	run --separate-stderr post_multipart "$JPG2" -H "Idempotency-Key: order-31"
	assert_error 422 idempotency_key_reused
	run --separate-stderr post_multipart "$JPG" -H "Idempotency-Key: order-31" -F "image=@$JPG;filename=other.jpg"
	assert_error 400 malformed_multipart
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -H "Idempotency-Key: order-31" -F "image=@$JPG;filename=other.jpg" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_error 422 idempotency_key_reused
	assert_equal "$(raw_count)" 1
}

@test "two bare-secret callers with the same Idempotency-Key are two callers" {
	ingest_env API_KEY=bare-secret-one,bare-secret-two
	run --separate-stderr req -H "X-API-Key: bare-secret-one" -H "Idempotency-Key: shot-1" -F "image=@$JPG" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_output 202
	local a b
	a=$(jq -r .image_id "$BODY")
	run --separate-stderr req -H "X-API-Key: bare-secret-two" -H "Idempotency-Key: shot-1" -F "image=@$JPG2" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_output 202
	b=$(jq -r .image_id "$BODY")
	[ "$a" != "$b" ]
	# each one's retry is its own image
	run --separate-stderr req -H "X-API-Key: bare-secret-one" -H "Idempotency-Key: shot-1" -F "image=@$JPG" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_output 202
	assert_equal "$(jq -r .image_id "$BODY")" "$a"
	# the same image from both is still two
	run --separate-stderr req -H "X-API-Key: bare-secret-two" -H "Idempotency-Key: shot-2" -F "image=@$JPG" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_output 202
	[ "$(jq -r .image_id "$BODY")" != "$a" ]
	assert_equal "$(raw_count)" 3
	# the identity is derived, never the secret: not in the state, the log, the store
	run grep -rlF -e bare-secret-one -e bare-secret-two "$DQ_STATE_DIR" "$BATS_TEST_TMPDIR/lighttpd/error.log"
	assert_output ""
	# the messages and the stored images' metadata, as the programs print them
	run grep -cF -e bare-secret-one -e bare-secret-two <<<"$(peek_all; dq-put --stored --all 2>/dev/null)"
	assert_output 0
	# and every file of the local store and spool
	if local_backend; then
		run grep -rlF -e bare-secret-one -e bare-secret-two "$DQ_LOCAL_DIR"
		assert_output ""
	fi
}

@test "a bare-secret caller's identity is key: and an HMAC of its secret, so its ids can be told in advance" {
	ingest_env API_KEY=bare-secret-one
	run --separate-stderr req -H "X-API-Key: bare-secret-one" -H "Idempotency-Key: shot-9" -F "image=@$JPG" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_output 202
	local want
	want=$("$PYTHON" -c 'import hmac, hashlib, sys, uuid
ident = "key:" + hmac.new(b"bare-secret-one", b"dq ingest caller identity", hashlib.sha256).hexdigest()[:16]
print(uuid.uuid5(uuid.UUID("6f1c2d0e-5b7a-4c1e-9a57-2f0d3c8b9e41"), ident + "\n" + sys.argv[1]))' shot-9)
	assert_equal "$(jq -r .image_id "$BODY")" "$want"
}
