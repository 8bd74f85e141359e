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
	assert_equal "$(raw_count)" 1
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
	assert_equal "$(raw_count)" 1
}

@test "a path with control bytes or bad UTF-8 still gets its full log line, made printable" {
	run --separate-stderr cgi GET $'/images/\xff\n{"forged":1}' HTTP_X_API_KEY="$API_KEY_CAM"
	assert_equal "$(cgi_status <<<"$output")" 404
	assert_equal "$(grep -c . <<<"$stderr")" 1
	run jq -c 'select(.event == "request") | [.http_status, .path, .code]' <<<"$stderr"
	assert_output '[404,"/images/??{\"forged\":1}","not_found"]'
}

# piped N|FILE ARGS...: cgi ARGS with a body (N zero bytes, or FILE) through
# a pipe, as fcgiwrap and mod_cgid feed it; the writer's exit status in
# $BATS_TEST_TMPDIR/writer (141, SIGPIPE, when dq-ingest left before it
# read it all).
piped() {
	local src=$1
	shift
	if [ -f "$src" ]; then
		cat "$src" | cgi "$@"
	else
		head -c "$src" /dev/zero | cgi "$@"
	fi
	echo "${PIPESTATUS[0]}" >"$BATS_TEST_TMPDIR/writer"
}

# request_log FIELD: a field of the request's log line.
request_log() {
	jq -c "select(.event == \"request\") | .$1" <<<"$stderr"
}

@test "a refusal as CGI reads and throws away the declared body before answering" {
	local n=1200000 args
	for args in "HTTP_X_API_KEY=wrong CONTENT_TYPE=image/jpeg QUERY_STRING=$Q" \
		"HTTP_X_API_KEY=$API_KEY_CAM CONTENT_TYPE=image/jpeg QUERY_STRING=product_sku=WK-KN-200" \
		"HTTP_X_API_KEY=$API_KEY_CAM CONTENT_TYPE=text/plain QUERY_STRING=$Q" \
		"HTTP_X_API_KEY=$API_KEY_CAM CONTENT_TYPE=image/jpeg QUERY_STRING=$Q&metadata=%zz"; do
		# shellcheck disable=SC2086
		run --separate-stderr piped "$n" POST /ingest $args CONTENT_LENGTH="$n"
		assert_success
		assert_equal "$(cat "$BATS_TEST_TMPDIR/writer")" 0
		assert_equal "$(request_log body_discarded)" "$n"
		assert_equal "$(request_log body_unread)" null
	done
	assert_equal "$(request_log http_status)" 400
	assert_nothing_stored
}

@test "a 405 and a 429 as CGI read and throw away the body too" {
	ingest_env RATE_LIMIT_PER_IP=1
	run --separate-stderr piped 300000 PUT /ingest HTTP_X_API_KEY="$API_KEY_CAM" CONTENT_TYPE=image/jpeg \
		QUERY_STRING="$Q" CONTENT_LENGTH=300000
	assert_equal "$(cgi_status <<<"$output")" 405
	assert_equal "$(cat "$BATS_TEST_TMPDIR/writer")" 0
	run --separate-stderr piped 300000 POST /ingest HTTP_X_API_KEY="$API_KEY_CAM" CONTENT_TYPE=image/jpeg \
		QUERY_STRING="$Q" CONTENT_LENGTH=300000
	assert_equal "$(cgi_status <<<"$output")" 429
	assert_equal "$(cat "$BATS_TEST_TMPDIR/writer")" 0
	assert_equal "$(request_log body_discarded)" 300000
	assert_nothing_stored
}

@test "a refusal after part of the body was read throws away the rest: an image part over the limit" {
	ingest_env DQ_MAX_IMAGE_BYTES=100000
	local n
	head -c 300000 /dev/zero >"$BATS_TEST_TMPDIR/zeros"
	{
		printf -- '--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
		printf 'Content-Type: image/jpeg\r\n\r\n'
		cat "$JPG" "$BATS_TEST_TMPDIR/zeros"
		printf -- '\r\n--XyZ--\r\n'
	} >"$BATS_TEST_TMPDIR/form"
	n=$(stat -c %s "$BATS_TEST_TMPDIR/form")
	run --separate-stderr piped "$BATS_TEST_TMPDIR/form" POST /ingest HTTP_X_API_KEY="$API_KEY_CAM" \
		CONTENT_TYPE='multipart/form-data; boundary=XyZ' CONTENT_LENGTH="$n"
	assert_success
	assert_equal "$(cgi_status <<<"$output")" 413
	assert_equal "$(body | jq -r .error.code)" image_too_large
	assert_equal "$(cat "$BATS_TEST_TMPDIR/writer")" 0
	[ "$(request_log body_discarded)" -gt 0 ]
	assert_nothing_stored
}

@test "a chunked body (no CONTENT_LENGTH, as Apache passes it) is read to its end before the 411" {
	run --separate-stderr piped 1200000 POST /ingest HTTP_X_API_KEY="$API_KEY_CAM" CONTENT_TYPE=image/jpeg \
		QUERY_STRING="$Q" HTTP_TRANSFER_ENCODING=chunked
	assert_success
	assert_equal "$(cgi_status <<<"$output")" 411
	assert_equal "$(cat "$BATS_TEST_TMPDIR/writer")" 0
	assert_equal "$(request_log body_discarded)" 1200000
}

@test "a body that stops coming is given up after DQ_INGEST_DRAIN_MS, and the refusal still answered" {
	ingest_env DQ_INGEST_DRAIN_MS=300
	mkfifo "$BATS_TEST_TMPDIR/fifo"
	"$PYTHON" -c 'import sys, time
sys.stdout.buffer.write(b"\0" * 100000); sys.stdout.flush(); time.sleep(60)' >"$BATS_TEST_TMPDIR/fifo" &
	local writer=$!
	# Without the deadline this would wait for the writer to end, a minute.
	run --separate-stderr cgi POST /ingest HTTP_X_API_KEY=wrong CONTENT_TYPE=image/jpeg \
		QUERY_STRING="$Q" CONTENT_LENGTH=1000000 <"$BATS_TEST_TMPDIR/fifo"
	kill "$writer"
	wait "$writer" || true
	assert_success
	assert_equal "$(cgi_status <<<"$output")" 401
	assert_equal "$(request_log body_discarded)" 100000
	assert_equal "$(request_log body_unread)" true
}

@test "a declared body over 64 MiB is not read at all: the 413 goes out at once" {
	run --separate-stderr cgi POST /ingest HTTP_X_API_KEY="$API_KEY_CAM" CONTENT_TYPE=image/jpeg \
		QUERY_STRING="$Q" CONTENT_LENGTH=$((64 * 1024 * 1024 + 1)) </dev/zero
	assert_success
	assert_equal "$(cgi_status <<<"$output")" 413
	assert_equal "$(request_log body_discarded)" null
	assert_equal "$(request_log body_unread)" true
}

@test "Location follows SCRIPT_NAME, where the server mounted the program, made safe for a header" {
	local sn want id
	while IFS='|' read -r sn want; do
		run --separate-stderr cgi POST /ingest HTTP_X_API_KEY="$API_KEY_CAM" CONTENT_TYPE=image/jpeg \
			CONTENT_LENGTH="$LEN" QUERY_STRING="$Q" SCRIPT_NAME="$(printf '%b' "$sn")" <"$JPG"
		assert_equal "$(cgi_status <<<"$output")" 202
		id=$(body | jq -r .image_id)
		assert_equal "$(grep -a '^Location:' <<<"$output" | tr -d '\r')" "Location: $want/images/$id"
	done <<-'EOF'
	/cgi-bin/ingest.cgi|/cgi-bin/ingest.cgi
	/api/v1/|/api/v1
	|
	/my api/v1\r\nSet-Cookie: x=1|/my%20api/v1%0D%0ASet-Cookie:%20x=1
	/a%2fb"<>|/a%252fb%22%3C%3E
	relative|/api/v1
	EOF
	# no SCRIPT_NAME at all: the documented mount
	run --separate-stderr cgi POST /ingest HTTP_X_API_KEY="$API_KEY_CAM" CONTENT_TYPE=image/jpeg \
		CONTENT_LENGTH="$LEN" QUERY_STRING="$Q" <"$JPG"
	assert_equal "$(grep -a '^Location:' <<<"$output" | tr -d '\r')" "Location: /api/v1/images/$(body | jq -r .image_id)"
}

@test "in a CGI request the arguments (a query's words) are never options" {
	run --separate-stderr env GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=GET REMOTE_ADDR=127.0.0.1 \
		PATH_INFO=/images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10 HTTP_X_API_KEY=wrong \
		dq-ingest --print-config
	assert_success
	assert_equal "$(cgi_status <<<"$output")" 401
	run --separate-stderr env -i DQ_ENV_FILE="$INGEST_ENV" GATEWAY_INTERFACE=CGI/1.1 REMOTE_ADDR=127.0.0.1 \
		REQUEST_METHOD=GET PATH_INFO=/images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10 \
		HTTP_X_API_KEY="$API_KEY_CAM" "$INGEST_CGI" --print-config
	assert_success
	assert_equal "$(cgi_status <<<"$output")" 404
}

@test "an empty HTTP_PROXY (nginx's recipe sets it so) is no Proxy header: nothing logged" {
	run --separate-stderr cgi GET /images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10 HTTP_X_API_KEY="$API_KEY_CAM" HTTP_PROXY=
	assert_equal "$(cgi_status <<<"$output")" 404
	assert_equal "$(log_events "$stderr" | grep -c httpoxy)" 0
	assert_equal "$(log_events "$stderr" | tail -1)" request
}

# check [VAR=value...]: dq-ingest --check in the environment file's settings.
check() {
	(
		set -a
		# shellcheck source=/dev/null
		. "$INGEST_ENV"
		set +a
		exec env "$@" dq-ingest --check
	)
}

# tree: every path under the test's directory, for a before and after.
tree() {
	find "$BATS_TEST_TMPDIR" -path "$BATS_TEST_TMPDIR/tree.*" -prune -o \
		-path "$BATS_TEST_TMPDIR/separate-stderr-*" -prune -o -print | sort
}

@test "--check: a usable configuration and backends, 0; it creates nothing" {
	# the layout the first upload makes, then nothing more
	run --separate-stderr cgi POST /ingest HTTP_X_API_KEY="$API_KEY_CAM" CONTENT_TYPE=image/jpeg \
		CONTENT_LENGTH="$LEN" QUERY_STRING="$Q" <"$JPG"
	assert_equal "$(cgi_status <<<"$output")" 202
	ingest_env RATE_LIMIT_PER_IP=60 DQ_STATE_DIR="$BATS_TEST_TMPDIR/state/not-yet"
	tree >"$BATS_TEST_TMPDIR/tree.before"
	run --separate-stderr check
	assert_success
	assert_output ""
	assert_equal "$(log_events "$stderr" | tail -1)" check_ok
	tree >"$BATS_TEST_TMPDIR/tree.after"
	assert_equal "$(diff "$BATS_TEST_TMPDIR/tree.before" "$BATS_TEST_TMPDIR/tree.after")" ""
	# and through ingest.cgi, from a shell, with the server's environment file
	run --separate-stderr env -i DQ_ENV_FILE="$INGEST_ENV" PATH="$PATH" "$INGEST_CGI" --check
	assert_success
	assert_equal "$(log_events "$stderr" | tail -1)" check_ok
	run --separate-stderr env -i DQ_ENV_FILE="$BATS_TEST_TMPDIR/missing" PATH="$PATH" "$INGEST_CGI" --check
	assert_failure 78
	assert_output ""
}

@test "--check: settings every request would trip over are 78, with the reason" {
	local kv want
	while IFS='|' read -r kv want; do
		# shellcheck disable=SC2086
		ingest_env $kv
		run --separate-stderr check
		[ "$status" -eq 78 ] || fail "$kv: exit $status: $stderr"
		assert_output ""
		# config: a value that does not parse, as for every program
		assert_regex "$(log_events "$stderr" | tail -1)" '^(check_failed|config)$'
		[[ "$stderr" == *"$want"* ]] || fail "$kv: no \"$want\" in: $stderr"
		[[ "$stderr" != *s3cret* ]] || fail "$kv: a secret in the log"
	done <<-'EOF'
	API_KEY=|API_KEY is not set
	API_KEY=camera:s3cret-cam,ops:|API_KEY: an entry is empty
	CORS_ORIGINS=https://app.example.com/|CORS_ORIGINS: \"https://app.example.com/\"
	CORS_ORIGINS=*|CORS_ORIGINS: \"*\"
	DQ_TRUSTED_PROXY=10.0.0.0/33|DQ_TRUSTED_PROXY: \"10.0.0.0/33\"
	DQ_STATE_DIR= RATE_LIMIT_PER_KEY=10|DQ_STATE_DIR is not set: the rate limits need it
	TMPDIR=/nonexistent/tmp|TMPDIR: /nonexistent
	DQ_MAX_IMAGE_BYTES=lots|DQ_MAX_IMAGE_BYTES
	EOF
}

@test "--check: DQ_STATE_DIR or TMPDIR a file is 78; a store that is no directory is 78" {
	echo x >"$BATS_TEST_TMPDIR/file"
	local kv
	for kv in DQ_STATE_DIR="$BATS_TEST_TMPDIR/file" TMPDIR="$BATS_TEST_TMPDIR/file" \
		DQ_LOCAL_DIR="$BATS_TEST_TMPDIR/file"; do
		ingest_env "$kv"
		run --separate-stderr check
		assert_failure 78
		[[ "$stderr" == *"$BATS_TEST_TMPDIR/file"* ]]
	done
}

@test "--check: the development settings (DQ_INSECURE_NO_AUTH, no DQ_STATE_DIR) pass, with a warning" {
	ingest_env API_KEY= DQ_INSECURE_NO_AUTH=1 DQ_STATE_DIR=
	run --separate-stderr check
	assert_success
	assert_equal "$(jq -r 'select(.level == "WARNING") | .msg' <<<"$stderr")" \
		"DQ_STATE_DIR is not set: requests with an Idempotency-Key will be answered 500"
	assert_equal "$(log_events "$stderr" | tail -1)" check_ok
}
