# ingest.bash - dq-ingest behind a real lighttpd on a free loopback port,
# for the 30-ingest-*.bats suites (load helpers first).
# shellcheck shell=bash

MKIMAGE="$DQ_TOP/tests/bats/mkimage.py"
# Debian's interpreter when there is one: a version-manager shim costs a
# second per start.
PYTHON=python3
[ -x /usr/bin/python3 ] && PYTHON=/usr/bin/python3
INGEST_CGI="$DQ_TOP/cmd/dq-ingest/ingest.cgi"

# ingest_env [VAR=value...]: the environment file ingest.cgi loads, with a
# fresh store, queue and state directory; arguments are added last.
ingest_env() {
	dq_env
	export DQ_STATE_DIR="$BATS_TEST_TMPDIR/state"
	export INGEST_ENV="$BATS_TEST_TMPDIR/env"
	export API_KEY_CAM=s3cret-cam API_KEY_OPS=s3cret-ops
	{
		backend_vars
		echo "DQ_STATE_DIR=$DQ_STATE_DIR"
		echo "DQ_LOG_FORMAT=json"
		echo "TMPDIR=$BATS_TEST_TMPDIR"
		# the build under test (the sanitizer build lives elsewhere)
		echo "DQ_INGEST=$DQ_BUILD/bin/dq-ingest"
		[ -z "${ASAN_OPTIONS:-}" ] || printf 'ASAN_OPTIONS=%q\n' "$ASAN_OPTIONS"
		[ -z "${UBSAN_OPTIONS:-}" ] || printf 'UBSAN_OPTIONS=%q\n' "$UBSAN_OPTIONS"
		echo "API_KEY=camera:$API_KEY_CAM,ops:$API_KEY_OPS"
		local kv
		for kv in "$@"; do
			printf '%s=%q\n' "${kv%%=*}" "${kv#*=}"
		done
	} >"$INGEST_ENV"
}

# free_port: a TCP port nobody listens on at the time of asking.
free_port() {
	"$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# lighttpd_start cgi|fastcgi|FILE: start lighttpd in front of ingest.cgi
# (or with the configuration lines in FILE), set BASE (the API root) and
# LIGHTTPD_PID, and wait until it answers.
lighttpd_start() {
	local mode=$1 dir="$BATS_TEST_TMPDIR/lighttpd" try
	mkdir -p "$dir/www" "$dir/upload"
	# A token only this server serves: a port taken by another is no answer.
	LIGHTTPD_TOKEN="dq-ingest-test-$$-$RANDOM"
	echo "$LIGHTTPD_TOKEN" >"$dir/www/static.bin"
	for try in 1 2 3; do
		: "attempt $try"
		LIGHTTPD_PORT=$(free_port)
		{
			cat <<-EOF
			server.document-root = "$dir/www"
			server.bind = "127.0.0.1"
			server.port = $LIGHTTPD_PORT
			server.errorlog = "$dir/error.log"
			server.upload-dirs = ("$dir/upload")
			EOF
			if [ -f "$mode" ]; then
				cat "$mode"
			elif [ "$mode" = cgi ]; then
				cat <<-EOF
				server.max-request-size = 65536
				server.modules = ("mod_alias", "mod_setenv", "mod_cgi")
				alias.url = ("/api/v1" => "$INGEST_CGI")
				\$HTTP["url"] =~ "^/api/v1(/|\$)" {
				  cgi.assign = ("" => "")
				  setenv.add-environment = ("DQ_ENV_FILE" => "$INGEST_ENV")
				}
				EOF
			else
				cat <<-EOF
				server.max-request-size = 65536
				server.modules = ("mod_fastcgi")
				fastcgi.server = ("/api/v1" => ((
				  "socket" => "$dir/fcgi.sock",
				  "bin-path" => "$INGEST_CGI",
				  "bin-environment" => ("DQ_ENV_FILE" => "$INGEST_ENV"),
				  "check-local" => "disable",
				  "max-procs" => 1,
				)))
				EOF
			fi
		} >"$dir/lighttpd.conf"
		lighttpd -tt -f "$dir/lighttpd.conf" >&2 || return 1
		lighttpd -D -f "$dir/lighttpd.conf" 2>>"$dir/error.log" &
		LIGHTTPD_PID=$!
		BASE="http://127.0.0.1:$LIGHTTPD_PORT/api/v1"
		if wait_for 10 lighttpd_up; then
			export BASE LIGHTTPD_PID LIGHTTPD_PORT
			return 0
		fi
		lighttpd_stop
	done
	cat "$dir/error.log" >&2
	return 1
}

lighttpd_up() {
	kill -0 "$LIGHTTPD_PID" 2>/dev/null &&
		[ "$(curl -s "http://127.0.0.1:$LIGHTTPD_PORT/static.bin")" = "$LIGHTTPD_TOKEN" ]
}

# lighttpd_stop: stop the server this test started (it stops its FastCGI
# children), by PID, and wait for it to be gone.
lighttpd_stop() {
	[ -n "${LIGHTTPD_PID:-}" ] || return 0
	kill "$LIGHTTPD_PID" 2>/dev/null || true
	wait_for 10 lighttpd_gone
	wait "$LIGHTTPD_PID" 2>/dev/null || true
	LIGHTTPD_PID=
}

lighttpd_gone() {
	! kill -0 "$LIGHTTPD_PID" 2>/dev/null
}

# dq-ingest's JSON log lines, from the server's error log.
server_log() {
	grep -ao '{"ts".*' "$BATS_TEST_TMPDIR/lighttpd/error.log"
}

# req [curl options...] URL: one request; the status code on stdout, the
# headers in $HDRS, the body in $BODY.
req() {
	HDRS="$BATS_TEST_TMPDIR/headers" BODY="$BATS_TEST_TMPDIR/body"
	curl -sS -o "$BODY" -D "$HDRS" -w '%{http_code}' "$@"
}
HDRS="$BATS_TEST_TMPDIR/headers"
BODY="$BATS_TEST_TMPDIR/body"

# header NAME: the value of a response header of the last req (CR removed).
header() {
	grep -i "^$1:" "$HDRS" | head -1 | cut -d: -f2- | sed 's/^ *//; s/\r$//'
}

# assert_error STATUS CODE: status from run, and a JSON error with CODE.
assert_error() {
	assert_success
	assert_output "$1"
	run jq -r '.error.code | select(type == "string")' "$BODY"
	assert_success
	assert_output "$2"
	run jq -r '.error.message | type' "$BODY"
	assert_output string
}

# assert_nothing_stored: no raw image, no message.
assert_nothing_stored() {
	assert_equal "$(raw_count)" 0
	assert_equal "$(ready_count)" 0
}

# fixture NAME TYPE W H [SEED]: make an image in the test's directory.
fixture() {
	"$PYTHON" "$MKIMAGE" "$2" "$3" "$4" "${5:-0}" >"$BATS_TEST_TMPDIR/$1"
	echo "$BATS_TEST_TMPDIR/$1"
}

# post_multipart FILE [curl options...]: the camera's upload.
post_multipart() {
	local f=$1
	shift
	req -H "X-API-Key: $API_KEY_CAM" -F "image=@$f" -F product_sku=WK-KN-200 \
		-F facility=yangjiang "$@" "$BASE/ingest"
}

# post_raw FILE TYPE [curl options...]: the raw-body upload.
post_raw() {
	local f=$1 t=$2
	shift 2
	req -H "X-API-Key: $API_KEY_CAM" -H "Content-Type: $t" --data-binary "@$f" "$@" \
		"$BASE/ingest?product_sku=WK-KN-200&facility=yangjiang"
}

# cgi METHOD PATH_INFO [VAR=value...] < body: dq-ingest run directly with a
# made-up CGI environment (what no server would pass), env file loaded.
cgi() {
	local method=$1 path=$2
	shift 2
	(
		set -a
		# shellcheck source=/dev/null
		. "$INGEST_ENV"
		set +a
		exec env GATEWAY_INTERFACE=CGI/1.1 SERVER_PROTOCOL=HTTP/1.1 \
			REQUEST_METHOD="$method" PATH_INFO="$path" REMOTE_ADDR=127.0.0.1 \
			"$@" dq-ingest
	)
}

# cgi_status: the status code of a CGI response on stdin.
cgi_status() {
	sed -n '1s/^Status: \([0-9]*\).*/\1/p'
}

# ingest_teardown: stop the server; after a failure show its log.
ingest_teardown() {
	if [ -z "${BATS_TEST_COMPLETED:-}" ] && [ -f "$BATS_TEST_TMPDIR/lighttpd/error.log" ]; then
		echo "# server log:" >&2
		tail -20 "$BATS_TEST_TMPDIR/lighttpd/error.log" >&2
	fi
	lighttpd_stop
}

# example N: the Nth literal block of dq-ingest(1)'s EXAMPLES, as plain text.
example() {
	sed -n '/^\.Sh EXAMPLES/,/^\.Sh /p' "$DQ_TOP/man/dq-ingest.1" |
		awk -v n="$1" '/^\.Bd -literal/ { b++; in_block = 1; next } /^\.Ed/ { in_block = 0; next }
			in_block && b == n' |
		sed 's/\\e/\\/g; s/\\&//g'
}

# example_with TEXT: the block whose first line contains TEXT.
example_with() {
	local i n
	n=$(grep -c '^\.Bd -literal' "$DQ_TOP/man/dq-ingest.1")
	for i in $(seq "$n"); do
		if example "$i" | head -1 | grep -qF -- "$1"; then
			example "$i"
			return 0
		fi
	done
	echo "dq-ingest(1) has no example starting with $1" >&2
	return 1
}
