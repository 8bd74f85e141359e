#!/usr/bin/env bats
# dq-ingest through lighttpd (CGI): every bad request gets its status and
# a JSON error, and stores nothing.

load helpers
load ingest

setup() {
	ingest_env DQ_MAX_IMAGE_BYTES=100000 DQ_MAX_IMAGE_PIXELS=1000000
	lighttpd_start cgi
	JPG=$(fixture a.jpg jpeg 64 48 1)
	PNG=$(fixture a.png png 64 48 2)
}

teardown() {
	ingest_teardown
}

# multipart_file NAME: write a hand-made multipart body (stdin) with CRLF
# line ends; the boundary is XyZ.
multipart_file() {
	sed 's/$/\r/' >"$BATS_TEST_TMPDIR/$1"
	echo "$BATS_TEST_TMPDIR/$1"
}

post_body() {
	req -H "X-API-Key: $API_KEY_CAM" -H "Content-Type: ${2:-multipart/form-data; boundary=XyZ}" \
		--data-binary "@$1" "$BASE/ingest"
}

@test "no API key: 401 with WWW-Authenticate" {
	run --separate-stderr req -F "image=@$JPG" -F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_error 401 unauthorized
	[[ "$(header WWW-Authenticate)" == Bearer* ]]
	assert_nothing_stored
}

@test "a wrong API key: 401, in either header" {
	run --separate-stderr req -H "X-API-Key: s3cret-cam-not" -F "image=@$JPG" -F product_sku=WK-KN-200 \
		-F facility=yangjiang "$BASE/ingest"
	assert_error 401 unauthorized
	run --separate-stderr req -H "Authorization: Bearer camera:$API_KEY_CAM" -F "image=@$JPG" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_error 401 unauthorized
	assert_nothing_stored
}

@test "an unknown method: 405 with Allow" {
	run --separate-stderr req -X DELETE -H "X-API-Key: $API_KEY_CAM" "$BASE/ingest"
	assert_error 405 method_not_allowed
	assert_equal "$(header Allow)" "POST, OPTIONS"
	run --separate-stderr req -X PUT -H "X-API-Key: $API_KEY_CAM" --data-binary x \
		"$BASE/images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10"
	assert_error 405 method_not_allowed
	assert_equal "$(header Allow)" "GET, OPTIONS"
	assert_nothing_stored
}

@test "a missing field: 400" {
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -F "image=@$JPG" -F product_sku=WK-KN-200 "$BASE/ingest"
	assert_error 400 missing_field
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -H "Content-Type: image/jpeg" \
		--data-binary "@$JPG" "$BASE/ingest?facility=yangjiang"
	assert_error 400 missing_field
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_error 400 missing_field
	assert_nothing_stored
}

@test "a malformed field: 400" {
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -F "image=@$JPG" -F 'product_sku=WK KN/../200' \
		-F facility=yangjiang "$BASE/ingest"
	assert_error 400 bad_field
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -H "Content-Type: image/jpeg" \
		--data-binary "@$JPG" "$BASE/ingest?product_sku=WK-KN-200&facility=yang+jiang"
	assert_error 400 bad_field
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -H "Content-Type: image/jpeg" \
		--data-binary "@$JPG" "$BASE/ingest?product_sku=A&product_sku=B&facility=yangjiang"
	assert_error 400 bad_query
	assert_nothing_stored
}

@test "a text file named .jpg: 415" {
	echo "this is not a picture" >"$BATS_TEST_TMPDIR/notes.jpg"
	run --separate-stderr post_multipart "$BATS_TEST_TMPDIR/notes.jpg"
	assert_error 415 not_an_image
	run --separate-stderr post_raw "$BATS_TEST_TMPDIR/notes.jpg" image/jpeg
	assert_error 415 not_an_image
	assert_nothing_stored
}

@test "a PNG declared as JPEG: 415" {
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -F "image=@$PNG;type=image/jpeg" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_error 415 type_mismatch
	run --separate-stderr post_raw "$PNG" image/jpeg
	assert_error 415 type_mismatch
	assert_nothing_stored
}

@test "an unsupported body or part type: 415" {
	run --separate-stderr post_raw "$JPG" image/gif
	assert_error 415 unsupported_media_type
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -F "image=@$JPG;type=image/gif" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_error 415 unsupported_media_type
	assert_nothing_stored
}

@test "a truncated JPEG: 400" {
	head -c 120 "$JPG" >"$BATS_TEST_TMPDIR/cut.jpg"
	run --separate-stderr post_multipart "$BATS_TEST_TMPDIR/cut.jpg"
	assert_error 400 truncated_image
	run --separate-stderr post_raw "$BATS_TEST_TMPDIR/cut.jpg" image/jpeg
	assert_error 400 truncated_image
	assert_nothing_stored
}

@test "an image whole in structure but corrupt inside: 400 corrupt_image" {
	local jpg
	jpg=$(fixture big.jpg jpeg 640 480 3)
	"$BATS_TEST_DIRNAME/corrupt.py" jpeg-scan "$jpg" >"$BATS_TEST_TMPDIR/scan.jpg"
	"$BATS_TEST_DIRNAME/corrupt.py" png-idat "$PNG" >"$BATS_TEST_TMPDIR/idat.png"
	run --separate-stderr post_multipart "$BATS_TEST_TMPDIR/scan.jpg"
	assert_error 400 corrupt_image
	run jq -r .error.message "$BODY"
	assert_output --regexp '^JPEG: Corrupt JPEG data'
	run --separate-stderr post_raw "$BATS_TEST_TMPDIR/idat.png" image/png
	assert_error 400 corrupt_image
	assert_nothing_stored
	# the good image it was made from is taken
	run --separate-stderr post_multipart "$jpg"
	assert_success
	assert_output 202
}

@test "a body over the limit: 413" {
	local big
	big=$(fixture big.png png 1000 1000)
	head -c 400000 /dev/urandom >>"$big"
	run --separate-stderr post_raw "$big" image/png
	assert_error 413 payload_too_large
	run --separate-stderr post_multipart "$big"
	assert_error 413 payload_too_large
	assert_nothing_stored
}

@test "an image part over the limit inside a body that is not: 413" {
	local big
	big=$(fixture big.png png 300 300)
	head -c 120000 /dev/urandom >>"$big"
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -F "image=@$big" -F product_sku=WK-KN-200 \
		-F facility=yangjiang "$BASE/ingest"
	assert_error 413 image_too_large
	assert_nothing_stored
}

@test "pixel dimensions over the limit: 413" {
	local f
	f=$(fixture wide.jpg jpeg 2000 1000)
	run --separate-stderr post_multipart "$f"
	assert_error 413 too_many_pixels
	assert_nothing_stored
}

@test "malformed multipart: no boundary parameter, 400" {
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -H "Content-Type: multipart/form-data" \
		--data-binary "@$JPG" "$BASE/ingest"
	assert_error 400 malformed_multipart
	assert_nothing_stored
}

@test "malformed multipart: a boundary that never appears, 400" {
	run --separate-stderr post_body "$JPG"
	assert_error 400 malformed_multipart
	assert_nothing_stored
}

@test "malformed multipart: an unterminated part, 400" {
	local f
	f=$(multipart_file body <<-EOF
	--XyZ
	Content-Disposition: form-data; name="product_sku"

	WK-KN-200
	--XyZ
	Content-Disposition: form-data; name="facility"

	yangjiang
	EOF
	)
	run --separate-stderr post_body "$f"
	assert_error 400 malformed_multipart
	assert_nothing_stored
}

@test "malformed multipart: a duplicated part, 400" {
	local f
	f=$(multipart_file body <<-EOF
	--XyZ
	Content-Disposition: form-data; name="product_sku"

	WK-KN-200
	--XyZ
	Content-Disposition: form-data; name="product_sku"

	WK-KN-201
	--XyZ--
	EOF
	)
	run --separate-stderr post_body "$f"
	assert_error 400 malformed_multipart
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -F "image=@$JPG" -F "image=@$PNG" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_error 400 malformed_multipart
	assert_nothing_stored
}

@test "malformed multipart: a part without a name, 400" {
	local f
	f=$(multipart_file body <<-EOF
	--XyZ
	Content-Disposition: form-data

	WK-KN-200
	--XyZ--
	EOF
	)
	run --separate-stderr post_body "$f"
	assert_error 400 malformed_multipart
	assert_nothing_stored
}

@test "metadata nested too deep: 400" {
	local deep
	deep=$(printf '{"a":%.0s' {1..20})1$(printf '}%.0s' {1..20})
	run --separate-stderr post_multipart "$JPG" -F "metadata=$deep"
	assert_error 400 bad_metadata
	assert_nothing_stored
}

@test "metadata too large: 400" {
	local large
	large="{\"note\":\"$(head -c 6000 /dev/zero | tr '\0' x)\"}"
	run --separate-stderr post_multipart "$JPG" -F "metadata=$large"
	assert_error 400 bad_metadata
	assert_nothing_stored
}

@test "metadata that is not a JSON object: 400" {
	run --separate-stderr post_multipart "$JPG" -F 'metadata=[1,2]'
	assert_error 400 bad_metadata
	run --separate-stderr post_multipart "$JPG" -F 'metadata={"a":1,"a":2}'
	assert_error 400 bad_metadata
	assert_nothing_stored
}

@test "a path-traversal file name is ignored: the blob is named by the id" {
	run --separate-stderr post_multipart "$JPG" -F "image=@$JPG;filename=../../../../tmp/evil.jpg"
	# curl sends the image part twice here: a duplicate, refused.
	assert_error 400 malformed_multipart
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -F "image=@$JPG;filename=../../../escape.jpg" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	assert_output 202
	local id
	id=$(jq -r .image_id "$BODY")
	raw_holds "$id" "$JPG"
	assert_equal "$(find "$BATS_TEST_TMPDIR" -name 'escape*' | wc -l)" 0
	assert_equal "$(raw_count)" 1
}

@test "a GET path that is not a canonical UUID: 404" {
	local p
	for p in "images/abc" "images/0B8F3C52-6A55-4BD6-9A6E-3B1F7D2C9E10" \
		"images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10.jpg" "images/%2e%2e/x" "images/" "nope"; do
		run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" "$BASE/$p"
		assert_error 404 not_found
	done
}

@test "an unsupported Content-Type: 415; a malformed one: 400" {
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -H "Content-Type: text/plain" \
		--data-binary "@$JPG" "$BASE/ingest?product_sku=WK-KN-200&facility=yangjiang"
	assert_error 415 unsupported_media_type
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -H 'Content-Type: multipart/form-data; boundary="XyZ' \
		--data-binary "@$JPG" "$BASE/ingest"
	assert_error 400 bad_request
	assert_nothing_stored
}
