#!/usr/bin/env bats
# dq-ingest through lighttpd (CGI): uploads accepted, stored, queued, and
# their status answered.

load helpers
load ingest
load local # an artifact's file, to compare with what GET serves

setup() {
	ingest_env
	lighttpd_start cgi
}

teardown() {
	ingest_teardown
}

# check_accepted FILE TYPE EXT: the answer of the last req and what it stored.
check_accepted() {
	local f=$1 type=$2 ext=$3 id at
	id=$(jq -r .image_id "$BODY")
	at=$(jq -r .ingested_at "$BODY")
	[[ "$id" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]]
	[[ "$at" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$ ]]
	assert_equal "$(jq -r .status "$BODY")" queued
	assert_equal "$(header Location)" "/api/v1/images/$id"
	assert_equal "$(header Content-Type)" application/json
	# The raw blob: the very bytes, under a name made from the id only.
	raw_holds "$id" "$f"
	assert_equal "$(raw_count)" 1
	# The message: one, and it agrees with the answer and the image.
	assert_equal "$(ready_count)" 1
	run --separate-stderr dq-dequeue -w 0
	assert_success
	run jq -c --arg id "$id" --arg at "$at" --arg sha "$(sha256sum "$f" | cut -d' ' -f1)" \
		--arg blob "$id.$ext" --arg type "$type" --argjson size "$(stat -c %s "$f")" '
		.message | [.image_id == $id, .ingested_at == $at, .image.sha256 == $sha,
		.image.size == $size, .image.width, .image.height,
		.metadata.source_blob == {container: "raw-images", blob_name: $blob},
		.metadata.content_type == $type, .metadata.product_sku, .metadata.facility]' <<<"$output"
	assert_output '[true,true,true,true,64,48,true,true,"WK-KN-200","yangjiang"]'
}

@test "a JPEG in a multipart form is accepted: 202, stored, queued" {
	local f
	f=$(fixture a.jpg jpeg 64 48 1)
	run --separate-stderr post_multipart "$f"
	assert_success
	assert_output 202
	check_accepted "$f" image/jpeg jpg
}

@test "a PNG in a multipart form is accepted" {
	local f
	f=$(fixture a.png png 64 48 2)
	run --separate-stderr post_multipart "$f"
	assert_output 202
	check_accepted "$f" image/png png
}

@test "a WebP in a multipart form is accepted" {
	local f
	f=$(fixture a.webp webp 64 48 3)
	run --separate-stderr post_multipart "$f"
	assert_output 202
	check_accepted "$f" image/webp webp
}

@test "a raw JPEG body with the fields in the query string is accepted" {
	local f
	f=$(fixture a.jpg jpeg 64 48 4)
	run --separate-stderr post_raw "$f" image/jpeg
	assert_success
	assert_output 202
	check_accepted "$f" image/jpeg jpg
}

@test "a raw PNG body is accepted" {
	local f
	f=$(fixture a.png png 64 48 5)
	run --separate-stderr post_raw "$f" image/png
	assert_output 202
	check_accepted "$f" image/png png
}

@test "a raw WebP body is accepted" {
	local f
	f=$(fixture a.webp webp 64 48 6)
	run --separate-stderr post_raw "$f" image/webp
	assert_output 202
	check_accepted "$f" image/webp webp
}

@test "metadata (a JSON object) becomes the message's extra; Bearer auth works too" {
	local f
	f=$(fixture a.png png 64 48 7)
	run --separate-stderr req -H "Authorization: Bearer $API_KEY_OPS" -F "image=@$f" \
		-F product_sku=WK-KN-200 -F facility=yangjiang \
		-F 'metadata={"line":"L3","camera":{"id":7}}' "$BASE/ingest"
	assert_output 202
	run --separate-stderr dq-dequeue -w 0
	assert_success
	assert_json_equal "$(jq -c .message.metadata.extra <<<"$output")" '{"line":"L3","camera":{"id":7}}'
}

@test "raw upload: metadata as a percent-encoded query parameter" {
	local f
	f=$(fixture a.jpg jpeg 64 48 8)
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -H "Content-Type: image/jpeg" \
		--data-binary "@$f" "$BASE/ingest?product_sku=WK-KN-200&facility=yangjiang&metadata=%7B%22shift%22%3A2%7D"
	assert_output 202
	run --separate-stderr dq-dequeue -w 0
	assert_json_equal "$(jq -c .message.metadata.extra <<<"$output")" '{"shift":2}'
}

@test "GET /images/<id>: 202 pending, then 200 with the artifact the worker's dq-put stored" {
	local f id msg
	f=$(fixture a.jpg jpeg 64 48 9)
	run --separate-stderr post_multipart "$f"
	assert_output 202
	id=$(jq -r .image_id "$BODY")

	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" "$BASE/images/$id"
	assert_success
	assert_output 202
	assert_json_equal "$(cat "$BODY")" "{\"image_id\":\"$id\",\"status\":\"pending\"}"

	# The worker's last stages: the artifact stored by dq-put.
	run --separate-stderr dq-dequeue -w 0
	msg=$(jq -c .message <<<"$output")
	run --separate-stderr dq-put <<<"{\"message\":$msg,\"artifact\":{\"image_id\":\"$id\",\"timestamps\":{},\"defect_findings\":{\"defect_detected\":false},\"model_version\":\"reference\"}}"
	assert_success
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" "$BASE/images/$id"
	assert_output 200
	assert_equal "$(jq -r '.image_id, .defect_findings.defect_detected, .model_version' "$BODY" | tr '\n' ' ')" "$id false reference "
}

@test "GET /images/<id>: 202 pending, then 200 with the artifact after a real worker run" {
	local f id
	mkdir -p "$BATS_TEST_TMPDIR/ref/WK-KN-200"
	fixture ref/WK-KN-200/good1.png png 64 48 100 >/dev/null
	fixture ref/WK-KN-200/good2.png png 64 48 100 >/dev/null
	f=$(fixture part.png png 64 48 100)
	run --separate-stderr post_multipart "$f"
	assert_output 202
	id=$(jq -r .image_id "$BODY")
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" "$BASE/images/$id"
	assert_output 202
	DQ_ANALYZER=reference DQ_REFERENCE_DIR="$BATS_TEST_TMPDIR/ref" DQ_CACHE_DIR="$BATS_TEST_TMPDIR/cache" \
		run --separate-stderr timeout 60 dq-worker --drain
	assert_success
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" "$BASE/images/$id"
	assert_output 200
	run jq -c '[.image_id == $id, .metadata.product_sku, .metadata.file_name, .defect_findings.defect_detected, .analysis.analyzer]' \
		--arg id "$id" "$BODY"
	assert_output '[true,"WK-KN-200","part.png",false,"reference"]'
	# the very bytes stored (the store's own copy is read in its file)
	if local_backend; then
		cmp "$BODY" "$(local_blob processed-images "$id.json")"
	fi
}

@test "GET /images/<id> of an image whose analysis failed for good: 200 failed" {
	local f id msg
	f=$(fixture a.png png 64 48 10)
	run --separate-stderr post_raw "$f" image/png
	assert_output 202
	id=$(jq -r .image_id "$BODY")
	run --separate-stderr dq-dequeue -w 0
	msg=$(jq -c .message <<<"$output")
	run --separate-stderr dq-put <<<"{\"message\":$msg,\"error\":{\"stage\":\"analyze\",\"code\":\"undecodable\",\"message\":\"cannot decode\",\"retryable\":false,\"scope\":\"record\"}}"
	assert_success
	assert_equal "$(jq -r .stored.blob_name <<<"$output")" "$id.error.json"
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" "$BASE/images/$id"
	assert_output 200
	assert_equal "$(jq -r '.image_id, .status, .error.code' "$BODY" | tr '\n' ' ')" "$id failed undecodable "
}

@test "GET /images/<id> of an unknown image is 404" {
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" "$BASE/images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10"
	assert_error 404 not_found
}

@test "one log line per request: event request with status, image_id and duration" {
	local f id
	f=$(fixture a.webp webp 64 48 11)
	run --separate-stderr post_raw "$f" image/webp
	assert_output 202
	id=$(jq -r .image_id "$BODY")
	run jq -c "select(.event == \"request\") | [.http_status, .image_id, .method, .path, (.duration_ms | type)]" \
		<<<"$(server_log)"
	assert_output "[202,\"$id\",\"POST\",\"/ingest\",\"number\"]"
	# and no secret in it
	run grep -c -e "$API_KEY_CAM" -e "$API_KEY_OPS" "$BATS_TEST_TMPDIR/lighttpd/error.log"
	assert_output 0
}

@test "the multipart filename is kept as metadata.file_name (base name, sanitized); a raw body has none" {
	local f id
	f=$(fixture a.jpg jpeg 64 48 12)
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -F "image=@$f;filename=C:\\cam 7\\shot-0042.jpg" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_output 202
	id=$(jq -r .image_id "$BODY")
	run --separate-stderr dq-dequeue -w 0
	assert_success
	assert_equal "$(jq -r .message.metadata.file_name <<<"$output")" shot-0042.jpg
	assert_equal "$(jq -c '.message.metadata | keys_unsorted' <<<"$output")" \
		'["product_sku","facility","source_blob","content_type","file_name","extra"]'
	assert_equal "$(jq -r .message.metadata.source_blob.blob_name <<<"$output")" "$id.jpg"
	# the raw blob carries it: the message rebuilt from the store has it too
	local msg=$output
	run --separate-stderr dq-put --stored "$id"
	assert_success
	assert_json_equal "$(jq -c .message <<<"$output")" "$(jq -c .message <<<"$msg")"

	run --separate-stderr post_raw "$f" image/jpeg
	assert_output 202
	run --separate-stderr dq-dequeue -w 0
	assert_success
	assert_equal "$(jq -c '.message.metadata | has("file_name")' <<<"$output")" false
}

@test "a filename with control characters, invalid UTF-8 or over 255 bytes is sanitized and bounded" {
	local f long
	f=$(fixture a.png png 64 48 13)
	long=$(printf 'x%.0s' $(seq 300))
	{
		printf -- '--XyZ\r\nContent-Disposition: form-data; name="product_sku"\r\n\r\nWK-KN-200\r\n'
		printf -- '--XyZ\r\nContent-Disposition: form-data; name="facility"\r\n\r\nyangjiang\r\n'
		printf -- '--XyZ\r\nContent-Disposition: form-data; name="image"; filename="../\001\033[31m\377%s.png"\r\n' "$long"
		printf -- 'Content-Type: image/png\r\n\r\n'
		cat "$f"
		printf -- '\r\n--XyZ--\r\n'
	} >"$BATS_TEST_TMPDIR/body.mp"
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -H 'Content-Type: multipart/form-data; boundary=XyZ' \
		--data-binary "@$BATS_TEST_TMPDIR/body.mp" "$BASE/ingest"
	assert_output 202
	run --separate-stderr dq-dequeue -w 0
	assert_success
	local name
	name=$(jq -r .message.metadata.file_name <<<"$output")
	[[ "$name" == "__[31m_xxx"* ]]
	[ "${#name}" -le 255 ]
	run grep -c $'[\001-\037\177]' <<<"$name"
	assert_output 0
	# a name that is only a path, or "..", leaves no name: the key is absent
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -F "image=@$f;filename=uploads/.." \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_output 202
	run --separate-stderr dq-dequeue -w 0
	assert_success
	assert_equal "$(jq -c '.message.metadata | has("file_name")' <<<"$output")" false
}
