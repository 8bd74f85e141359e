#!/usr/bin/env bats
# dq-worker as one stream: at most WORKER_MAX_MESSAGES in flight, a slot
# refilled as soon as a message is settled, no image waiting for another,
# and the promises of a stop kept at any moment, for a signal as for a
# stage killed outright.

load helpers
load worker
load local # the run directory's pid files name the stages to kill

setup() {
	dq_env
	reference_setup 22 -W 320 -H 240 --refs 3 --good 40 --defects 10
	export DQ_WORKER_WAIT_SECONDS=0.2
}

# stage_pid NAME: the pid of the running worker's stage NAME (TMPDIR holds one run).
stage_pid() {
	local f
	for f in "$TMPDIR"/dq-worker.*/pid."$1"; do
		[ -s "$f" ] && cat "$f" && return 0
	done
	return 1
}

# completed_in FILE: the records settled "completed" in it.
completed_in() {
	grep -c '"settled":"completed"' "$1" || true
}

# analyzed_ids ERRFILE...: the images analyzed in the logs, one id per line.
analyzed_ids() {
	jq -r 'select(.event == "analyzed") | .image_id' "$@" | sort
}

@test "never more than WORKER_MAX_MESSAGES locked at once, the limit reached while a slow analysis runs" {
	send 16
	export WORKER_MAX_MESSAGES=4 DQ_TEST_ANALYZE_DELAY_MS=300 DQ_TEST_ANALYZE_DELAY_P99_MS=900
	dq-worker --drain >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" &
	local pid=$! most=0 n
	while kill -0 "$pid" 2>/dev/null; do
		n=$(locked_count) || break
		[ "$n" -le "$most" ] || most=$n
		sleep 0.05
	done
	local st=0
	wait "$pid" || st=$?
	assert_equal "$st" 0
	# the peeks saw the limit reached and never passed
	assert_equal "$most" 4
	assert_equal "$(settled "$(cat "$BATS_TEST_TMPDIR/out")")" "16 completed 1"
	assert_equal "$(jq -r 'select(.event == "stream") | [.received, .settled, .completed, .unsettled] | join(" ")' "$BATS_TEST_TMPDIR/err")" "16 16 16 0"
	assert_equal "$(ready_count) $(locked_count) $(dead_count)" "0 0 0"
	# one process of each stage for the whole run: one backend line each
	assert_equal "$(jq -r 'select(.event == "stream_start") | .prog' "$BATS_TEST_TMPDIR/err" | wc -l)" 1
	assert_equal "$(jq -r 'select(.event == "backend" and .analyzer) | .prog' "$BATS_TEST_TMPDIR/err" | wc -l)" 1
}

@test "a slow image holds back no other: the nine quick ones finish first, and messages are taken while it runs" {
	# one SKU whose images take 2 s, the same reference set under both names
	mkdir "$BATS_TEST_TMPDIR/ref"
	cp -r "$S/reference/WK-KN-200" "$BATS_TEST_TMPDIR/ref/"
	cp -r "$S/reference/WK-KN-200" "$BATS_TEST_TMPDIR/ref/WK-KN-SLOW"
	export DQ_REFERENCE_DIR=$BATS_TEST_TMPDIR/ref
	local samples=("$S"/samples/*) slow
	dq-put --sku WK-KN-SLOW --facility yangjiang "${samples[0]}" 2>/dev/null | dq-enqueue >/dev/null 2>&1
	dq-put --sku WK-KN-200 --facility yangjiang "${samples[@]:1:9}" 2>/dev/null | dq-enqueue >/dev/null 2>&1
	slow=$(dq-put --stored --all 2>/dev/null | jq -r 'select(.message.metadata.product_sku == "WK-KN-SLOW") | .message.image_id')
	export WORKER_MAX_MESSAGES=4 DQ_TEST_ANALYZE_DELAY_MS=100 DQ_TEST_ANALYZE_SLOW_SKU=WK-KN-SLOW DQ_TEST_ANALYZE_SLOW_MS=2000
	run --separate-stderr dq-worker --drain
	worker_ok
	assert_equal "$(settled "$output")" "10 completed 1"
	# settled in the order they were done: the slow one last
	assert_equal "$(jq -r .message.image_id <<<"$output" | tail -1)" "$slow"
	# it was received first; the other nine were received after it, while it ran
	local log
	log=$(jq -c 'select(.image_id and (.event == "received" or .event == "analyzed"))' <<<"$stderr" | jq -s -c 'sort_by(.ts)')
	assert_equal "$(jq -r --arg s "$slow" '[.[] | select(.event == "received")] | .[0].image_id == $s' <<<"$log")" true
	assert_equal "$(jq -r --arg s "$slow" '(map(.event == "analyzed" and .image_id == $s) | index(true)) as $done | [.[:$done][] | select(.event == "received")] | length' <<<"$log")" 10
	assert_equal "$(jq -r --arg s "$slow" '(map(.event == "analyzed" and .image_id == $s) | index(true)) as $done | [.[:$done][] | select(.event == "analyzed")] | length' <<<"$log")" 9
}

@test "SIGTERM at fifty random moments: nothing left locked, exit 0, every message completed exactly once in the end" {
	send 4
	export WORKER_MAX_MESSAGES=3 WORKER_MAX_DELIVERY_ATTEMPTS=1000 DQ_TEST_ANALYZE_DELAY_MS=60 DQ_TEST_ANALYZE_DELAY_P99_MS=250
	local i pid st delay completed=0 sent=4 bad=''
	for i in $(seq 50); do
		# four more messages, analyzed again (not skipped) though their images were done
		if [ "$i" -gt 1 ]; then
			dq-enqueue --new-id --reprocess <"$BATS_TEST_TMPDIR/sent" >/dev/null 2>&1
			sent=$((sent + 4))
		fi
		dq-worker >"$BATS_TEST_TMPDIR/out.$i" 2>"$BATS_TEST_TMPDIR/err.$i" &
		pid=$!
		# from the first milliseconds (the preflight) to well into the stream
		delay=$((RANDOM % 700))
		sleep "$((delay / 1000)).$(printf %03d $((delay % 1000)))"
		kill -TERM "$pid"
		st=0
		wait "$pid" || st=$?
		[ "$st" = 0 ] || bad+=" run $i after ${delay}ms: status $st;"
		[ "$(locked_count)" = 0 ] || bad+=" run $i after ${delay}ms: $(locked_count) locked;"
		json_lines "$BATS_TEST_TMPDIR/err.$i"
		[ "$(jq -r 'select(.event == "worker_stop") | .reason' "$BATS_TEST_TMPDIR/err.$i")" = signal ] ||
			bad+=" run $i: stopped for $(jq -r 'select(.event == "worker_stop") | .reason' "$BATS_TEST_TMPDIR/err.$i");"
		completed=$((completed + $(completed_in "$BATS_TEST_TMPDIR/out.$i")))
	done
	assert_equal "$bad" ""
	# what the signals left in the queue is taken by one more run
	run --separate-stderr dq-worker --drain
	worker_ok
	completed=$((completed + $(completed_in <(printf '%s\n' "$output"))))
	assert_equal "$completed" "$sent"
	assert_equal "$(ready_count) $(locked_count) $(dead_count)" "0 0 0"
	assert_equal "$(states)" "4 analyzed"
}

# kill_stage NAME: a drain of eight images with stage NAME killed with
# SIGKILL once the first message is settled; then, once the locks have
# run out, a second drain.  Checks that nothing was lost and nothing
# analyzed again that already had its artifact.
kill_stage() {
	export TMPDIR=$BATS_TEST_TMPDIR/tmp.$1 WORKER_MAX_MESSAGES=3 DQ_LOCK_SECONDS=1 DQ_TEST_ANALYZE_DELAY_MS=300
	mkdir "$TMPDIR"
	send 8
	dq-worker --drain >"$BATS_TEST_TMPDIR/out1" 2>"$BATS_TEST_TMPDIR/err1" &
	local pid=$! victim st=0 id done_before
	wait_for 20 grep -q '"settled":"completed"' "$BATS_TEST_TMPDIR/out1"
	victim=$(stage_pid "$1")
	kill -KILL "$victim"
	wait "$pid" || st=$?
	# a stage killed is transient: the worker stops, nothing is dead-lettered
	assert_equal "$st" 75
	json_lines "$BATS_TEST_TMPDIR/err1"
	assert_equal "$(dead_count)" 0
	# the images with an artifact now are never analyzed again
	done_before=$(for id in $(jq -r .message.image_id "$BATS_TEST_TMPDIR/sent"); do
		[ "$(image_state "$id")" != analyzed ] || echo "$id"
	done | sort)
	[ -n "$done_before" ]
	wait_for 10 leases_expired
	run --separate-stderr dq-worker --drain
	worker_ok
	assert_equal "$(states)" "8 analyzed"
	assert_equal "$(ready_count) $(locked_count) $(dead_count)" "0 0 0"
	assert_equal "$(comm -12 <(analyzed_ids <(printf '%s\n' "$stderr")) <(printf '%s\n' "$done_before"))" ""
	# and each image was analyzed in the second run at most once
	assert_equal "$(analyzed_ids <(printf '%s\n' "$stderr") | uniq -d)" ""
}

@test "the receiver killed with SIGKILL mid-stream: nothing lost, nothing with an artifact analyzed again" {
	kill_stage receive
}

@test "dq-analyze killed with SIGKILL mid-stream: nothing lost, nothing with an artifact analyzed again" {
	kill_stage analyze
}

@test "dq-put killed with SIGKILL mid-stream: nothing lost, nothing with an artifact analyzed again" {
	kill_stage put
}

@test "the settle stage killed with SIGKILL mid-stream: nothing lost, nothing with an artifact analyzed again" {
	kill_stage settle
}

@test "dq-dequeue --tokens by hand: a pipeline of one's own keeps its window, and ends when its tokens are back" {
	send 6
	mkfifo "$BATS_TEST_TMPDIR/tokens"
	run --separate-stderr bash -c 'dq-dequeue --tokens 3 --drain -n 2 -w 0.2 3<"$1" |
		dq-analyze -j 2 --skip-existing | dq-put |
		dq-dequeue --settle --require stored --tokens 3 3>"$1"' _ "$BATS_TEST_TMPDIR/tokens"
	assert_success
	assert_equal "$(settled "$output")" "6 completed 1"
	assert_equal "$(jq -r 'select(.event == "stream_end") | [.reason, .received, .settled, .unsettled] | join(" ")' <<<"$stderr")" "drained 6 6 0"
	assert_equal "$(ready_count) $(locked_count)" "0 0"
}

@test "dq-dequeue --tokens: usage errors" {
	run --separate-stderr dq-dequeue --tokens 9
	assert_failure 64
	assert_regex "$stderr" "--tokens wants the number of an open pipe"
	run --separate-stderr dq-dequeue --drain
	assert_failure 64
	assert_regex "$stderr" "apply to a receive with --tokens"
	run --separate-stderr bash -c 'echo | dq-dequeue --tokens 0 --peek'
	assert_failure 64
	assert_regex "$stderr" "--tokens applies to a receive or to --settle"
}

@test "two holders renewing one lock at once, then a settle: no renewal and no settle finds the lock lost" {
	# the receiver and dq-analyze both renew what is in flight
	send 1
	dq-dequeue -n 1 -w 1 2>/dev/null >"$BATS_TEST_TMPDIR/rec"
	renew_loop() {
		local i
		for i in $(seq 60); do
			dq-dequeue --renew <"$BATS_TEST_TMPDIR/rec" >/dev/null 2>>"$BATS_TEST_TMPDIR/renew.$1" || echo "status $?" >>"$BATS_TEST_TMPDIR/renew.$1"
		done
	}
	renew_loop a &
	local a=$!
	renew_loop b &
	local b=$!
	wait "$a" "$b"
	assert_equal "$(cat "$BATS_TEST_TMPDIR/renew.a" "$BATS_TEST_TMPDIR/renew.b" | grep -c -e lock_lost -e status || true)" 0
	renew_loop c &
	local c=$!
	run --separate-stderr dq-dequeue --settle <"$BATS_TEST_TMPDIR/rec"
	wait "$c"
	assert_success
	assert_equal "$(jq -r .settled <<<"$output")" completed
	assert_equal "$(ready_count) $(locked_count) $(dead_count)" "0 0 0"
}

@test "--max-runtime stops taking messages in time: the run ends within it, all it took settled" {
	send 20
	export WORKER_MAX_MESSAGES=2 DQ_TEST_ANALYZE_DELAY_MS=400
	local start=$SECONDS
	run --separate-stderr dq-worker --max-runtime 4
	assert_success
	[ $((SECONDS - start)) -le 5 ] || fail "took $((SECONDS - start)) s for --max-runtime 4"
	assert_equal "$(jq -r 'select(.event == "worker_stop") | .reason' <<<"$stderr")" max_runtime
	local received
	received=$(jq -r 'select(.event == "stream") | .received' <<<"$stderr")
	[ "$received" -gt 0 ] && [ "$received" -lt 20 ] || fail "received $received of 20"
	assert_equal "$(settled "$output")" "$received completed 1"
	assert_equal "$(ready_count) $(locked_count)" "$((20 - received)) 0"
}
