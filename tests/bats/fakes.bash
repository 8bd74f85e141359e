# fakes.bash - the test servers of tests/fakes/ on free loopback ports:
# started per test in $BATS_TEST_TMPDIR, stopped by their own PID.
# shellcheck shell=bash

FAKES="$DQ_TOP/tests/fakes"

# fake_start NAME [httpd.py options...]: a fake named NAME (its files in
# $BATS_TEST_TMPDIR/fake-NAME); waits until it listens.
fake_start() {
	local name=$1 dir=$BATS_TEST_TMPDIR/fake-$1
	shift
	mkdir -p "$dir"
	python3 "$FAKES/httpd.py" --port-file "$dir/port" --stats-file "$dir/stats" "$@" \
		>"$dir/out" 2>"$dir/err" &
	echo $! >"$dir/pid"
	wait_for 10 test -s "$dir/port" || fail "fake $name did not start: $(cat "$dir/err")"
}

# fake_script NAME JSON: start fake NAME answering from the script JSON.
fake_script() {
	local dir=$BATS_TEST_TMPDIR/fake-$1
	mkdir -p "$dir"
	printf '%s\n' "$2" >"$dir/script.json"
	fake_start "$1" --script "$dir/script.json"
}

# fake_port NAME, fake_url NAME [PATH]
fake_port() {
	cat "$BATS_TEST_TMPDIR/fake-$1/port"
}
fake_url() {
	echo "http://127.0.0.1:$(fake_port "$1")${2:-/}"
}

# fake_stats NAME [JQ-FILTER]: what the fake saw ({requests, connections, log}).
fake_stats() {
	jq -c "${2:-.}" "$BATS_TEST_TMPDIR/fake-$1/stats"
}

# fake_gaps NAME: the ms between one request's arrival and the next's, one a line.
fake_gaps() {
	jq -r '.log as $l | range(1; $l | length) | ($l[.].t_ms - $l[. - 1].t_ms)' \
		"$BATS_TEST_TMPDIR/fake-$1/stats"
}

# fakes_stop: every fake this test started, by PID (call in teardown).
fakes_stop() {
	local p
	for p in "$BATS_TEST_TMPDIR"/fake-*/pid; do
		[ -f "$p" ] || continue
		kill "$(cat "$p")" 2>/dev/null || :
		rm -f "$p"
	done
}
