#!/usr/bin/env bats
# dq-analyze -j N: store, queue and analyzer calls from N threads at once,
# without a lock of the program's own (dq.h's promise), proved under
# ThreadSanitizer, and the same records as one thread gives.

load helpers

setup() {
	dq_env
	# 80 small parts: 40 good, 40 with defects, of one SKU; a model cache per test
	reference_setup 26 -W 160 -H 120 --refs 3 --good 40 --defects 40
	export DQ_CACHE_DIR=$BATS_TEST_TMPDIR/cache
}

# messages FILE: the 80 samples stored, their message records in FILE:
# the first 10 under a SKU without references (a permanent error), the
# rest under WK-KN-200.
messages() {
	local files
	mapfile -t files < <(ls "$S"/samples/*)
	{
		dq-put --sku WK-KN-999 --facility f "${files[@]:0:10}"
		dq-put --sku WK-KN-200 --facility f "${files[@]:10}"
	} 2>/dev/null >"$1"
}

# prime FILE: the first 40 records of FILE analyzed and stored (10 failure
# markers, 30 artifacts), so that --skip-existing finds them.
prime() {
	head -40 "$1" | dq-analyze -j 2 2>/dev/null | dq-put >/dev/null 2>&1 || true
}

# strip: the records on stdin without what differs between runs (the time
# fields), one line each, sorted by image.
strip() {
	jq -c 'del(.artifact.timestamps.processed_at, .artifact.analysis.duration_ms)' | sort
}

# tsan_build: a ThreadSanitizer build of dq-analyze (made or brought up to
# date), its bin directory on stdout; or the reason it cannot be had.
tsan_build() {
	local b=${DQ_TSAN_BUILD:-$DQ_TOP/build/tsan} cc=${CC:-cc}
	printf '#include <pthread.h>\nstatic void *f(void *a) { return a; }\nint main(void) { pthread_t t; return pthread_create(&t, 0, f, 0) || pthread_join(t, 0); }\n' \
		>"$BATS_TEST_TMPDIR/probe.c"
	if ! "$cc" -fsanitize=thread -o "$BATS_TEST_TMPDIR/probe" "$BATS_TEST_TMPDIR/probe.c" >"$BATS_TEST_TMPDIR/probe.log" 2>&1 ||
		! "$BATS_TEST_TMPDIR/probe" >>"$BATS_TEST_TMPDIR/probe.log" 2>&1; then
		echo "ThreadSanitizer is not usable with $cc here: $(head -c 300 "$BATS_TEST_TMPDIR/probe.log")"
		return 1
	fi
	if ! make -s -C "$DQ_TOP" -j2 "$b/bin/dq-analyze" B="$b" CC="$cc" \
		CFLAGS="-O1 -g -fsanitize=thread" LDFLAGS="-fsanitize=thread" >"$BATS_TEST_TMPDIR/make.log" 2>&1; then
		echo "the ThreadSanitizer build failed: $(tail -c 300 "$BATS_TEST_TMPDIR/make.log")"
		return 1
	fi
	echo "$b/bin"
}

@test "-j 8 under ThreadSanitizer: store gets and lookups, renewals, the model cache and the log from 8 threads, no data race" {
	local bin
	bin=$(tsan_build) || skip "$bin"
	messages "$BATS_TEST_TMPDIR/m"
	prime "$BATS_TEST_TMPDIR/m"
	# all 80 through the queue: receipts, so the keeper renews while analyses run
	dq-enqueue <"$BATS_TEST_TMPDIR/m" >/dev/null 2>&1
	# leases of 4 s, renewed at 2 s: analyses of at least 0.4 s each keep
	# the 8 threads busy past that (80 / 8 x 0.4 s), however fast the
	# machine; a lease short enough to run out before dq-analyze starts
	# on a loaded machine would test lost locks instead
	export DQ_LOCK_SECONDS=4 DQ_TEST_ANALYZE_DELAY_MS=400
	dq-dequeue -n 80 2>/dev/null >"$BATS_TEST_TMPDIR/r"
	assert_equal "$(wc -l <"$BATS_TEST_TMPDIR/r")" 80
	rm -rf "$DQ_CACHE_DIR"	# the model built while 8 threads ask for it
	# (a race that corrupts a list may also hang it: killed after 5 minutes)
	TSAN_OPTIONS="exitcode=86 halt_on_error=0" LOG_LEVEL=DEBUG run --separate-stderr \
		timeout -s KILL 300 "$bin/dq-analyze" -j 8 --skip-existing --annotate "$BATS_TEST_TMPDIR/ann" <"$BATS_TEST_TMPDIR/r"
	# what ThreadSanitizer found, if anything: its reports only
	refute_regex "$(grep -A 16 'WARNING: ThreadSanitizer' <<<"$stderr" | head -60)" 'ThreadSanitizer'
	# the 10 markers record no message id, so these messages are analyzed again
	assert_failure 65
	assert_equal "$(jq -r 'if .skipped then "skipped " + .skipped.reason elif .artifact then "artifact" else .error.code end' <<<"$output" | sort | uniq -c | sed 's/^ *//' | tr '\n' ';')" \
		"40 artifact;10 no_reference;30 skipped processed;"
	[ "$(log_events "$stderr" | grep -c '^renewed$')" -ge 1 ]
	assert_equal "$(find "$BATS_TEST_TMPDIR/ann" -name '*.png' | wc -l)" 40
	# the receipts passed on are the live ones: every message settles
	run --separate-stderr dq-dequeue --settle <<<"$output"
	assert_equal "$(jq -r .settled <<<"$output" | sort | uniq -c | sed 's/^ *//' | tr '\n' ';')" "70 completed;10 dead-lettered;"
}

@test "-j 8 gives the records -j 1 gives, byte for byte apart from the time fields, run after run" {
	messages "$BATS_TEST_TMPDIR/m"
	prime "$BATS_TEST_TMPDIR/m"
	run --separate-stderr dq-analyze -j 1 --skip-existing <"$BATS_TEST_TMPDIR/m"
	assert_success
	strip <<<"$output" >"$BATS_TEST_TMPDIR/one"
	assert_equal "$(grep -c '"artifact"' "$BATS_TEST_TMPDIR/one")" 40
	assert_equal "$(grep -c '"skipped"' "$BATS_TEST_TMPDIR/one")" 40
	for _ in 1 2 3; do
		run --separate-stderr dq-analyze -j 8 --skip-existing <"$BATS_TEST_TMPDIR/m"
		assert_success
		assert_equal "$(strip <<<"$output" | cmp - "$BATS_TEST_TMPDIR/one" && echo same)" same
	done
}

@test "DQ_TEST_ANALYZE_DELAY_P99_MS draws each test delay log-normally about its median; a p99 below the median is refused" {
	messages "$BATS_TEST_TMPDIR/msgs"
	run --separate-stderr env DQ_TEST_ANALYZE_DELAY_MS=50 DQ_TEST_ANALYZE_DELAY_P99_MS=40 dq-analyze --check
	assert_failure 78
	assert_output ""
	assert_equal "$(jq -r .msg <<<"$stderr")" \
		"DQ_TEST_ANALYZE_DELAY_P99_MS (40) is below the median DQ_TEST_ANALYZE_DELAY_MS (50)"
	# the 70 records of the known SKU each draw a delay: spread about 20 ms
	tail -70 "$BATS_TEST_TMPDIR/msgs" |
		DQ_TEST_ANALYZE_DELAY_MS=20 DQ_TEST_ANALYZE_DELAY_P99_MS=200 LOG_LEVEL=DEBUG \
		dq-analyze -j 8 >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err"
	jq -r 'select(.event == "test_delay") | .delay_ms' "$BATS_TEST_TMPDIR/err" | sort -n >"$BATS_TEST_TMPDIR/delays"
	assert_equal "$(wc -l <"$BATS_TEST_TMPDIR/delays")" 70
	assert_equal "$(jq -s '[.[] | select(.artifact)] | length' "$BATS_TEST_TMPDIR/out")" 70
	# a median near 20 (its sample median lies within 10..40 but for odds of
	# about 1e-7), many values, and a tail past the median's double
	local median distinct top
	median=$(sed -n 35p "$BATS_TEST_TMPDIR/delays")
	distinct=$(sort -u "$BATS_TEST_TMPDIR/delays" | wc -l)
	top=$(tail -1 "$BATS_TEST_TMPDIR/delays")
	[ "$median" -ge 10 ] && [ "$median" -le 40 ] || fail "median delay $median ms"
	[ "$distinct" -ge 20 ] || fail "only $distinct distinct delays"
	[ "$top" -ge 40 ] || fail "longest delay $top ms"
	# without the p99 the delay is fixed and not logged
	head -12 "$BATS_TEST_TMPDIR/msgs" | tail -2 |
		DQ_TEST_ANALYZE_DELAY_MS=20 LOG_LEVEL=DEBUG dq-analyze 2>"$BATS_TEST_TMPDIR/err2" >/dev/null
	refute grep -q test_delay "$BATS_TEST_TMPDIR/err2"
}
