#!/usr/bin/env bats
# A soak for make check-long: several workers on one spool, killed and
# restarted while they run.  Every image ends with exactly one artifact,
# nothing is dead-lettered, and the queue ends empty.

load ../bats/helpers
load ../bats/local # a failure marker beside an artifact is seen in its file only

setup() {
	dq_env
	reference_setup 2101 -W 320 -H 240 --refs 3 --good 16 --defects 4
	export DQ_WORKER_WAIT_SECONDS=0.5 DQ_LOCK_SECONDS=2 WORKER_MAX_MESSAGES=5
	export DQ_TEST_ANALYZE_DELAY_MS=150 DQ_WORKER_GRACE_SECONDS=20
	export TMPDIR=$BATS_TEST_TMPDIR/tmp
	mkdir -p "$TMPDIR"
	PIDS=()
}

teardown() {
	local p
	for p in "${PIDS[@]}"; do kill -KILL -- -"$p" 2>/dev/null || true; done
}

# at_least N COMMAND...: COMMAND prints N or more.
at_least() {
	local want=$1
	shift
	[ "$("$@")" -ge "$want" ]
}

# start_worker N: worker N in its own process group, logs appended.
start_worker() {
	setsid dq-worker >>"$BATS_TEST_TMPDIR/out.$1" 2>>"$BATS_TEST_TMPDIR/err.$1" &
	PIDS[$1]=$!
}

@test "three workers, two of them killed twice: 400 messages, 400 artifacts, nothing dead" {
	local i n=400 copy
	for ((copy = 0; copy < n / 20; copy++)); do
		dq-put --sku WK-KN-200 --facility yangjiang "$S"/samples/*.jpg 2>/dev/null
	done | dq-enqueue >/dev/null 2>&1
	assert_equal "$(ready_count)" "$n"
	for i in 0 1 2; do start_worker $i; done
	local k=0
	for i in 1 2 1 2; do
		k=$((k + 1))
		wait_for 120 at_least $((n * k / 6)) analyzed_count
		kill -KILL -- -"${PIDS[$i]}"
		start_worker $i
	done
	wait_for 300 count_is "$n" analyzed_count
	for i in 0 1 2; do kill -TERM "${PIDS[$i]}"; done
	local st
	for i in 0 1 2; do
		st=0
		wait "${PIDS[$i]}" || st=$?
		assert_equal "$st" 0
	done
	PIDS=()
	# the killed workers' messages come back after their leases
	run --separate-stderr dq-worker --drain
	assert_success
	assert_equal "$(analyzed_count)" "$n"
	assert_equal "$(ready_count) $(locked_count)" "0 0"
	assert_equal "$(dead_count)" 0
	# no failure marker: none logged, and (GET shows the artifact, not a
	# marker beside it) none in the local store's files
	refute [ -n "$(cat "$BATS_TEST_TMPDIR"/err.* - <<<"$stderr" | grep '"event":"failure_marker"')" ]
	if local_backend; then
		assert_equal "$(local_blob_count processed-images)" "$n"
	fi
	# the killed workers' run directories went with the later starts
	assert_equal "$(find "$TMPDIR" -mindepth 1 -maxdepth 1 -name 'dq-worker.*' | wc -l)" 0
}
