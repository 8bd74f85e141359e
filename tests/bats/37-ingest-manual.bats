#!/usr/bin/env bats
# dq-ingest(1)'s EXAMPLES, run: its lighttpd configurations serve, and its
# curl commands get the answers the page describes.

load helpers
load ingest

setup() {
	ingest_env
	cd "$BATS_TEST_TMPDIR" || return
	"$PYTHON" "$MKIMAGE" jpeg 64 48 1 >part.jpg
	"$PYTHON" "$MKIMAGE" png 64 48 2 >part.png
}

teardown() {
	ingest_teardown
}

# A lighttpd example with this test's paths.
server_example() {
	{
		echo 'server.modules = ()'
		example_with "$1" | sed "s#/usr/local/libexec/dq/ingest.cgi#$INGEST_CGI#; s#/etc/dq/env#$INGEST_ENV#;
			s#/run/lighttpd/dq-ingest.sock#$BATS_TEST_TMPDIR/fcgi.sock#;
			s#/var/log/lighttpd/dq-ingest.log#$BATS_TEST_TMPDIR/lighttpd/error.log#; s#\"max-procs\" => 4#\"max-procs\" => 1#"
	} >"$BATS_TEST_TMPDIR/example.conf"
	echo "$BATS_TEST_TMPDIR/example.conf"
}

# The curl examples, pointed at this server, one command per line.
curl_examples() {
	local i
	for i in $(seq 12); do
		example "$i" | grep -q '^curl' || continue
		example "$i" | sed -e :a -e '/\\$/N; s/\\\n *//; ta' | grep '^curl' |
			sed "s#https://dq.example.com#http://127.0.0.1:$LIGHTTPD_PORT#; s#^curl #curl -sS -o /dev/null -w '%{http_code}\\\\n' #"
	done
}

run_examples() {
	local KEY=$API_KEY_CAM
	export KEY
	curl_examples >"$BATS_TEST_TMPDIR/examples.sh"
	[ "$(wc -l <"$BATS_TEST_TMPDIR/examples.sh")" -eq 3 ]
	run --separate-stderr sh "$BATS_TEST_TMPDIR/examples.sh"
	assert_success
	# the form and the raw upload are accepted; the made-up id is unknown
	assert_output "$(printf '202\n202\n404')"
	assert_equal "$(raw_count)" 2
	run --separate-stderr dq-dequeue -n 2 -w 0
	assert_equal "$(jq -c 'select(.message.metadata.extra != {}) | .message.metadata.extra' <<<"$output")" '{"line":"L3"}'
}

@test "the manual's lighttpd CGI configuration and curl examples" {
	lighttpd_start "$(server_example 'server.modules += ("mod_alias"')"
	run_examples
}

@test "the manual's lighttpd FastCGI configuration and curl examples" {
	lighttpd_start "$(server_example 'server.modules += ("mod_fastcgi")')"
	run_examples
	pgrep -P "$LIGHTTPD_PID" -x dq-ingest
}

@test "the manual's environment file is one ingest.cgi can load" {
	example_with "API_KEY=" >"$BATS_TEST_TMPDIR/example.env"
	run --separate-stderr sh -n "$BATS_TEST_TMPDIR/example.env"
	assert_success
	run --separate-stderr sh -c 'set -a; . "$1"; echo "$API_KEY $RATE_LIMIT_PER_KEY"' sh "$BATS_TEST_TMPDIR/example.env"
	assert_output "camera:5f2b...,ops:9c1d... 600"
}
