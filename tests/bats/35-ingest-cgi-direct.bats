#!/usr/bin/env bats
# dq-ingest run directly with made-up CGI environments: what no web server
# would pass, and the program's own interface.

load helpers
load ingest

setup() {
	ingest_env
	JPG=$(fixture a.jpg jpeg 64 48)
	LEN=$(stat -c %s "$JPG")
	Q='product_sku=WK-KN-200&facility=yangjiang'
}

# body: the JSON body of a CGI response in $output.
body() {
	sed '1,/^\r$/d' <<<"$output"
}

@test "no Content-Length: 411" {
	run --separate-stderr cgi POST /ingest HTTP_X_API_KEY="$API_KEY_CAM" CONTENT_TYPE=image/jpeg QUERY_STRING="$Q" <"$JPG"
	assert_success
	assert_equal "$(cgi_status <<<"$output")" 411
	assert_equal "$(body | jq -r .error.code)" length_required
	assert_nothing_stored
}

@test "a body over the limit is 413 from Content-Length alone: nothing is read" {
	# stdin is empty: had dq-ingest read it, it would answer 400.
	run --separate-stderr cgi POST /ingest HTTP_X_API_KEY="$API_KEY_CAM" CONTENT_TYPE=image/jpeg \
		CONTENT_LENGTH=20971521 QUERY_STRING="$Q" </dev/null
	assert_success
	assert_equal "$(cgi_status <<<"$output")" 413
	assert_equal "$(body | jq -r .error.code)" payload_too_large
	run --separate-stderr cgi POST /ingest HTTP_X_API_KEY="$API_KEY_CAM" \
		CONTENT_TYPE="multipart/form-data; boundary=x" CONTENT_LENGTH=99999999999 </dev/null
	assert_equal "$(cgi_status <<<"$output")" 413
	assert_nothing_stored
}

@test "a body shorter than Content-Length, or a malformed Content-Length: 400" {
	run --separate-stderr cgi POST /ingest HTTP_X_API_KEY="$API_KEY_CAM" CONTENT_TYPE=image/jpeg \
		CONTENT_LENGTH=$((LEN + 10)) QUERY_STRING="$Q" <"$JPG"
	assert_equal "$(cgi_status <<<"$output")" 400
	local cl
	for cl in -1 12abc " 12" 0x10 99999999999999999999; do
		run --separate-stderr cgi POST /ingest HTTP_X_API_KEY="$API_KEY_CAM" CONTENT_TYPE=image/jpeg \
			CONTENT_LENGTH="$cl" QUERY_STRING="$Q" <"$JPG"
		assert_equal "$(cgi_status <<<"$output")" 400
		assert_equal "$(body | jq -r .error.code)" bad_request
	done
	assert_nothing_stored
}

@test "a NUL or a bad escape in the query string: 400" {
	local q
	for q in "$Q&metadata=%00" "product_sku=WK%00-KN&facility=yangjiang" "$Q&metadata=%7" "$Q&metadata=%zz"; do
		run --separate-stderr cgi POST /ingest HTTP_X_API_KEY="$API_KEY_CAM" CONTENT_TYPE=image/jpeg \
			CONTENT_LENGTH="$LEN" QUERY_STRING="$q" <"$JPG"
		assert_equal "$(cgi_status <<<"$output")" 400
		assert_equal "$(body | jq -r .error.code)" bad_query
	done
	assert_nothing_stored
}

@test "paths a server would normalise: 404" {
	local p
	for p in /images/../../etc/passwd /images/%2e%2e/x "" /ingest/ //ingest /images/$'\x01'; do
		run --separate-stderr cgi GET "$p" HTTP_X_API_KEY="$API_KEY_CAM"
		assert_equal "$(cgi_status <<<"$output")" 404
	done
}

@test "API_KEY unset: every request is refused and the log says why" {
	ingest_env API_KEY=
	run --separate-stderr cgi POST /ingest CONTENT_TYPE=image/jpeg CONTENT_LENGTH="$LEN" QUERY_STRING="$Q" <"$JPG"
	assert_success
	assert_equal "$(cgi_status <<<"$output")" 401
	assert_equal "$(jq -r 'select(.event == "config") | .level' <<<"$stderr")" ERROR
	assert_nothing_stored
}

@test "API_KEY unset and DQ_INSECURE_NO_AUTH=1: accepted without a key" {
	ingest_env API_KEY= DQ_INSECURE_NO_AUTH=1
	run --separate-stderr cgi POST /ingest CONTENT_TYPE=image/jpeg CONTENT_LENGTH="$LEN" QUERY_STRING="$Q" <"$JPG"
	assert_success
	assert_equal "$(cgi_status <<<"$output")" 202
	assert_equal "$(blob_count raw-images)" 1
}

@test "a bare secret in API_KEY, and rotation: every entry is accepted" {
	ingest_env API_KEY="old-secret, camera:new-secret"
	local k
	for k in old-secret new-secret; do
		run --separate-stderr cgi GET /images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10 HTTP_X_API_KEY="$k"
		assert_equal "$(cgi_status <<<"$output")" 404
	done
	for k in old new-secre new-secretx camera:new-secret ""; do
		run --separate-stderr cgi GET /images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10 HTTP_AUTHORIZATION="Bearer $k"
		assert_equal "$(cgi_status <<<"$output")" 401
	done
}

@test "a configuration error is a JSON 500, not a crash" {
	ingest_env DQ_MAX_IMAGE_BYTES=lots
	run --separate-stderr cgi POST /ingest HTTP_X_API_KEY="$API_KEY_CAM" CONTENT_TYPE=image/jpeg \
		CONTENT_LENGTH="$LEN" QUERY_STRING="$Q" <"$JPG"
	assert_success
	assert_equal "$(cgi_status <<<"$output")" 500
	assert_equal "$(body | jq -r .error.code)" internal
	assert_nothing_stored
}

@test "no store configured: 500, and the refused requests before it never open one" {
	ingest_env DQ_LOCAL_DIR=
	run --separate-stderr cgi GET /images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10 HTTP_X_API_KEY=wrong
	assert_equal "$(cgi_status <<<"$output")" 401
	refute_line --partial '"backend"'
	run --separate-stderr cgi GET /images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10 HTTP_X_API_KEY="$API_KEY_CAM"
	assert_equal "$(cgi_status <<<"$output")" 500
}

@test "HTTP_PROXY in a CGI environment is dropped and logged" {
	run --separate-stderr cgi GET /images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10 HTTP_X_API_KEY="$API_KEY_CAM" \
		HTTP_PROXY=http://127.0.0.1:9/
	assert_equal "$(cgi_status <<<"$output")" 404
	assert_equal "$(jq -r 'select(.event == "httpoxy") | .level' <<<"$stderr")" WARNING
}

@test "from a terminal, without a CGI environment: usage and 64" {
	run --separate-stderr env -u GATEWAY_INTERFACE dq-ingest </dev/null
	assert_failure 64
	assert_equal "$output" ""
	[[ "$stderr" == *"usage: dq-ingest"* ]]
	run --separate-stderr dq-ingest -h
	assert_success
	assert_line --index 0 --partial "usage: dq-ingest"
	run --separate-stderr dq-ingest --version
	assert_success
	assert_output --regexp '^dq-ingest [0-9]+\.[0-9]+'
	run --separate-stderr dq-ingest --bogus
	assert_failure 64
}

@test "ingest.cgi without its environment file: a JSON 500" {
	run --separate-stderr env -i DQ_ENV_FILE="$BATS_TEST_TMPDIR/missing" GATEWAY_INTERFACE=CGI/1.1 \
		REQUEST_METHOD=GET PATH_INFO=/images/x "$INGEST_CGI"
	assert_failure
	assert_equal "$(cgi_status <<<"$output")" 500
	assert_equal "$(body | jq -r .error.code)" internal
	[[ "$stderr" == *missing* ]]
}

@test "ingest.cgi loads DQ_ENV_FILE and runs dq-ingest" {
	run --separate-stderr env -i DQ_ENV_FILE="$INGEST_ENV" GATEWAY_INTERFACE=CGI/1.1 REMOTE_ADDR=127.0.0.1 \
		REQUEST_METHOD=POST PATH_INFO=/ingest HTTP_X_API_KEY="$API_KEY_CAM" CONTENT_TYPE=image/jpeg \
		CONTENT_LENGTH="$LEN" QUERY_STRING="$Q" "$INGEST_CGI" <"$JPG"
	assert_success
	assert_equal "$(cgi_status <<<"$output")" 202
	assert_equal "$(blob_count raw-images)" 1
}

@test "a path with control bytes or bad UTF-8 still gets its full log line, made printable" {
	run --separate-stderr cgi GET $'/images/\xff\n{"forged":1}' HTTP_X_API_KEY="$API_KEY_CAM"
	assert_equal "$(cgi_status <<<"$output")" 404
	assert_equal "$(grep -c . <<<"$stderr")" 1
	run jq -c 'select(.event == "request") | [.http_status, .path, .code]' <<<"$stderr"
	assert_output '[404,"/images/??{\"forged\":1}","not_found"]'
}
