#!/usr/bin/env bats
# dq-worker: the whole job on the backends of DQ_TEST_BACKEND.  What is
# received is settled, nothing is lost, nothing is analyzed twice, and a
# system error stops the worker without dead-lettering anything.

load helpers
load users
load worker
load local # a marker's history, kept copies, and the local directories' modes and mounts

setup() {
	dq_env
	reference_setup 22 -W 320 -H 240 --refs 3 --good 40 --defects 10
	export DQ_WORKER_WAIT_SECONDS=0.2
}

teardown() {
	users_teardown
}

@test "fifty images: fifty artifacts and an empty queue; re-sent with --new-id, none analyzed again" {
	send 50
	run --separate-stderr dq-worker --drain
	worker_ok
	assert_equal "$(settled "$output")" "50 completed 1"
	assert_equal "$(states)" "50 analyzed"
	assert_equal "$(ready_count) $(locked_count) $(dead_count)" "0 0 0"
	assert_equal "$(log_events "$stderr" | grep -c '^analyzed$')" 50
	assert_equal "$(jq -r 'select(.event == "worker_stop") | .reason + " " + (.status | tostring)' <<<"$stderr")" "drained 0"
	local before
	before=$(processed_sums)

	dq-enqueue --new-id <"$BATS_TEST_TMPDIR/sent" >/dev/null 2>&1
	assert_equal "$(ready_count)" 50
	run --separate-stderr dq-worker --drain
	worker_ok
	assert_equal "$(settled "$output")" "50 completed 1"
	assert_equal "$(jq -r .skipped.reason <<<"$output" | sort -u)" processed
	assert_equal "$(log_events "$stderr" | grep -c '^analyz')" 0
	assert_equal "$(processed_sums)" "$before"
	assert_equal "$(ready_count) $(locked_count) $(dead_count)" "0 0 0"
	# and nothing else was written (a kept copy, a marker): the files say
	if local_backend; then
		assert_equal "$(local_blob_count processed-images)" 50
	fi
}

@test "a worker killed with SIGKILL mid-batch loses nothing: after the lease a second worker finishes all" {
	send 5
	export DQ_LOCK_SECONDS=1
	DQ_TEST_ANALYZE_DELAY_MS=60000 setsid dq-worker --drain >"$BATS_TEST_TMPDIR/out1" 2>"$BATS_TEST_TMPDIR/err1" &
	local pid=$!
	wait_for 10 count_is 5 locked_count
	kill -KILL -- -"$pid"
	wait "$pid" || true
	assert_equal "$(states)" "5 pending"
	wait_for 10 leases_expired
	run --separate-stderr dq-worker --drain
	assert_success
	assert_equal "$(settled "$output")" "5 completed 2"
	assert_equal "$(states)" "5 analyzed"
	assert_equal "$(ready_count) $(locked_count) $(dead_count)" "0 0 0"
}

@test "an analysis slower than the lease keeps its lock and is delivered once" {
	send 3
	export DQ_LOCK_SECONDS=1 DQ_TEST_ANALYZE_DELAY_MS=2500 LOG_LEVEL=DEBUG
	dq-worker --drain >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" &
	local pid=$!
	# two renewals of each lock: the first lease is long gone
	wait_for 10 count_is 6 grep -c '"event":"renewed"' "$BATS_TEST_TMPDIR/err"
	run --separate-stderr dq-dequeue -n 10 -w 0
	assert_success
	assert_output ""
	local st=0
	wait "$pid" || st=$?
	assert_equal "$st" 0
	assert_equal "$(settled "$(cat "$BATS_TEST_TMPDIR/out")")" "3 completed 1"
	assert_equal "$(states)" "3 analyzed"
	assert_equal "$(ready_count) $(locked_count) $(dead_count)" "0 0 0"
}

@test "a system error mid-batch stops the worker with its status and dead-letters nothing" {
	# a threshold file the analyzer refuses: passes the preflight, fails
	# on the first analysis (a configuration error that holds as root)
	send 3
	mkdir "$BATS_TEST_TMPDIR/ref"
	cp -r "$S/reference/WK-KN-200" "$BATS_TEST_TMPDIR/ref/"
	echo '{"k": -1}' >"$BATS_TEST_TMPDIR/ref/WK-KN-200/reference.json"
	export DQ_LOCK_SECONDS=1
	DQ_REFERENCE_DIR=$BATS_TEST_TMPDIR/ref run --separate-stderr dq-worker --drain
	assert_failure 78
	assert_output ""
	assert_equal "$(jq -r 'select(.event == "system_error") | .prog' <<<"$stderr" | sort -u | tr '\n' ' ')" "dq-analyze dq-worker "
	assert_equal "$(dead_count) $(states)" "0 3 pending"
	# the messages come back when their leases run out
	wait_for 10 leases_expired
	run --separate-stderr dq-dequeue -n 10 -w 1
	assert_success
	assert_equal "$(jq -r .receipt.delivery_count <<<"$output" | sort | uniq -c | sed 's/^ *//')" "3 2"
}

@test "a failed preflight exits 78 before any message is touched" {
	send 2
	# a regular file where the reference directory should be (chmod 000 would not stop root)
	touch "$BATS_TEST_TMPDIR/file"
	DQ_REFERENCE_DIR=$BATS_TEST_TMPDIR/file run --separate-stderr dq-worker --drain
	assert_failure 78
	assert_equal "$(log_events "$stderr" | grep -c preflight_failed)" 1
	assert_equal "$(ready_count) $(locked_count) $(dead_count)" "2 0 0"
	run --separate-stderr dq-dequeue --peek -n 10 -w 0
	assert_equal "$(jq -r .receipt.delivery_count <<<"$output" | sort -u)" 0
}

@test "a reference directory one level too deep, empty or /etc fails the preflight: 78, no message touched" {
	send 2
	mkdir "$BATS_TEST_TMPDIR/empty"
	for dir in "$S/reference/WK-KN-200" "$BATS_TEST_TMPDIR/empty" /etc; do
		DQ_REFERENCE_DIR=$dir run --separate-stderr dq-worker --drain
		assert_failure 78
		assert_equal "$(log_events "$stderr" | grep -c preflight_failed)" 1
		assert_regex "$(jq -r 'select(.event == "check_failed") | .msg' <<<"$stderr")" "^DQ_REFERENCE_DIR $dir holds .*expected $dir/<SKU>/<images>"
		assert_equal "$(ready_count) $(locked_count) $(dead_count)" "2 0 0"
	done
	run --separate-stderr dq-dequeue --peek -n 10 -w 0
	assert_equal "$(jq -r .receipt.delivery_count <<<"$output" | sort -u)" 0
}

@test "SIGTERM during a batch settles everything received and exits 0" {
	send 3
	export WORKER_MAX_MESSAGES=3 DQ_TEST_ANALYZE_DELAY_MS=1500 LOG_LEVEL=DEBUG
	dq-worker >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" &
	local pid=$!
	wait_for 10 count_is 3 grep -c '"event":"analyzing"' "$BATS_TEST_TMPDIR/err"
	kill -TERM "$pid"
	local st=0
	wait "$pid" || st=$?
	assert_equal "$st" 0
	assert_equal "$(settled "$(cat "$BATS_TEST_TMPDIR/out")")" "3 completed 1"
	assert_equal "$(ready_count) $(locked_count) $(dead_count)" "0 0 0"
	assert_equal "$(jq -r 'select(.event == "worker_stop") | .reason' "$BATS_TEST_TMPDIR/err")" signal
}

@test "SIGTERM to the whole process group (systemd's way) settles everything received too" {
	send 3
	export WORKER_MAX_MESSAGES=3 DQ_TEST_ANALYZE_DELAY_MS=1500 LOG_LEVEL=DEBUG
	setsid dq-worker >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" &
	local pid=$!
	wait_for 10 count_is 3 grep -c '"event":"analyzing"' "$BATS_TEST_TMPDIR/err"
	kill -TERM -- -"$pid"
	local st=0
	wait "$pid" || st=$?
	assert_equal "$st" 0
	assert_equal "$(settled "$(cat "$BATS_TEST_TMPDIR/out")")" "3 completed 1"
	assert_equal "$(ready_count) $(locked_count) $(dead_count)" "0 0 0"
}

@test "SIGTERM on an idle worker ends it at once with 0" {
	export DQ_WORKER_WAIT_SECONDS=1
	dq-worker >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" &
	local pid=$!
	wait_for 10 grep -q worker_start "$BATS_TEST_TMPDIR/err"
	kill -TERM "$pid"
	local st=0
	wait "$pid" || st=$?
	assert_equal "$st" 0
	assert_equal "$(cat "$BATS_TEST_TMPDIR/out")" ""
}

# slow_check: a dq-put first in PATH whose --check takes long (the last
# check of the preflight) and says when it has begun.
slow_check() {
	local real
	real=$(command -v dq-put)
	mkdir -p "$BATS_TEST_TMPDIR/slow"
	printf '#!/bin/sh\nif [ "$1" = --check ]; then : >"%s/checking"; sleep 2; fi\nexec "%s" "$@"\n' \
		"$BATS_TEST_TMPDIR" "$real" >"$BATS_TEST_TMPDIR/slow/dq-put"
	chmod 755 "$BATS_TEST_TMPDIR/slow/dq-put"
	PATH=$BATS_TEST_TMPDIR/slow:$PATH
}

@test "SIGTERM during the preflight stops the worker with 0, no message touched, not a failed preflight" {
	send 2
	slow_check
	dq-worker >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" &
	local pid=$!
	wait_for 10 test -e "$BATS_TEST_TMPDIR/checking"
	kill -TERM "$pid"
	local st=0
	wait "$pid" || st=$?
	assert_equal "$st" 0
	assert_equal "$(cat "$BATS_TEST_TMPDIR/out")" ""
	# the stages' checks log their own lines; the worker's one line is its stop
	assert_equal "$(jq -r 'select(.prog == "dq-worker") | "\(.event) \(.reason)"' "$BATS_TEST_TMPDIR/err")" \
		"worker_stop signal"
	# never received: both still ready
	assert_equal "$(ready_count) $(locked_count)" "2 0"
}

@test "SIGTERM to the process group during the preflight kills the check, and is a clean stop too" {
	send 2
	slow_check
	setsid dq-worker >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" &
	local pid=$!
	wait_for 10 test -e "$BATS_TEST_TMPDIR/checking"
	kill -TERM -- -"$pid"
	local st=0
	wait "$pid" || st=$?
	assert_equal "$st" 0
	json_lines "$BATS_TEST_TMPDIR/err" # no "Terminated" line from the shell
	assert_equal "$(jq -r 'select(.prog == "dq-worker") | "\(.event) \(.reason)"' "$BATS_TEST_TMPDIR/err")" \
		"worker_stop signal"
	assert_equal "$(ready_count) $(locked_count)" "2 0"
}

# redrive: the README's redrive of every dead-lettered message.
redrive() {
	dq-dequeue --dead-letter -n 100 -w 0 2>/dev/null | dq-enqueue --new-id 2>/dev/null | dq-dequeue --settle 2>/dev/null
}

dead_reasons() {
	dq-dequeue --dead-letter --peek -n 100 -w 0 2>/dev/null | jq -r .receipt.dead_letter_reason
}

@test "after the cause is fixed, a redrive analyzes again and the artifact answers; the marker keeps every failure" {
	# references for WK-KN-200 only: WK-KN-300 fails no_reference
	mkdir "$BATS_TEST_TMPDIR/ref"
	cp -r "$S/reference/WK-KN-200" "$BATS_TEST_TMPDIR/ref/"
	export DQ_REFERENCE_DIR=$BATS_TEST_TMPDIR/ref
	send 1 WK-KN-300
	local id
	id=$(jq -r .message.image_id "$BATS_TEST_TMPDIR/sent")
	run --separate-stderr dq-worker --drain
	assert_failure 65
	assert_equal "$(jq -r .settled <<<"$output")" dead-lettered
	assert_equal "$(dead_reasons)" no_reference
	assert_equal "$(failure "$id" | jq -r '[.status, .error.code] | join(" ")')" "failed no_reference"
	# redriven before the fix: analyzed again, failed again with the real reason
	assert_equal "$(redrive | jq -r .settled)" completed
	run --separate-stderr dq-worker --drain
	assert_failure 65
	assert_equal "$(jq -r '[.error.code, .settled] | join(" ")' <<<"$output")" "no_reference dead-lettered"
	assert_equal "$(log_events "$stderr" | grep -c '^analyze_failed$')" 1
	assert_equal "$(dead_reasons)" no_reference
	# the fix, and the same redrive: analyzed, stored, completed
	cp -r "$S/reference/WK-KN-200" "$BATS_TEST_TMPDIR/ref/WK-KN-300"
	assert_equal "$(redrive | jq -r .settled)" completed
	run --separate-stderr dq-worker --drain
	worker_ok
	assert_equal "$(jq -r '[.stored.blob_name, .settled] | join(" ")' <<<"$output")" "$id.json completed"
	assert_equal "$(dead_reasons)" ""
	# the artifact answers for the image: GET, and --skip-existing whatever the message id
	assert_equal "$(artifact "$id" | jq -r '.image_id + " " + (.defect_findings | has("severity") | tostring)')" "$id true"
	run --separate-stderr bash -c 'dq-put --stored "$1" | dq-analyze --skip-existing' _ "$id"
	assert_equal "$(jq -r .skipped.reason <<<"$output")" processed
	# and the history is kept, first failure first (no program prints a
	# marker once an artifact answers: read in the local store's file)
	if local_backend; then
		assert_equal "$(local_marker "$id" | jq -r '.failures | map(.error.code) | join(" ")')" "no_reference no_reference"
	fi
	# run again, the redrive finds nothing
	assert_equal "$(redrive)" ""
}

@test "records not started because of SIGTERM on their last delivery get no marker and are dead-lettered as shutdown" {
	export WORKER_MAX_DELIVERY_ATTEMPTS=1 DQ_TEST_ANALYZE_DELAY_MS=1500 LOG_LEVEL=DEBUG
	send 3
	dq-dequeue -n 3 2>/dev/null >"$BATS_TEST_TMPDIR/recv"
	mkfifo "$BATS_TEST_TMPDIR/in"
	dq-analyze -j 1 --skip-existing <"$BATS_TEST_TMPDIR/in" >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" &
	local pid=$! fd
	exec {fd}>"$BATS_TEST_TMPDIR/in"
	cat "$BATS_TEST_TMPDIR/recv" >&$fd
	wait_for 10 grep -q '"analyzing"' "$BATS_TEST_TMPDIR/err"
	kill -TERM $pid
	wait $pid || true
	exec {fd}>&-
	run --separate-stderr bash -c 'dq-put <"$1" | dq-dequeue --settle --require stored' _ "$BATS_TEST_TMPDIR/out"
	assert_success
	assert_equal "$(jq -r '[.error.code // "none", .settled] | join(" ")' <<<"$output" | sort | uniq -c | sed 's/^ *//')" \
		$'1 none completed\n2 shutdown dead-lettered'
	assert_equal "$(states)" "1 analyzed 2 pending"
	assert_equal "$(dead_reasons | sort -u)" shutdown
}

@test "reprocessing through the queue: dq-enqueue --reprocess analyzes again and keeps the replaced artifact" {
	send 2
	run --separate-stderr dq-worker --drain
	worker_ok
	local id
	id=$(head -1 "$BATS_TEST_TMPDIR/sent" | jq -r .message.image_id)
	artifact "$id" >"$BATS_TEST_TMPDIR/old.json"
	# a plain resend of both is skipped; a reprocess request of one is not
	dq-enqueue --new-id <"$BATS_TEST_TMPDIR/sent" >/dev/null 2>&1
	run --separate-stderr bash -c 'dq-put --stored "$1" | dq-enqueue --reprocess' _ "$id"
	assert_success
	assert_regex "$(jq -r .message.reprocess.requested_at <<<"$output")" '^20[0-9-]+T[0-9:]+Z$'
	# once the request's second is over, what is analyzed is newer than the request
	local asked
	asked=$(date -d "$(jq -r .message.reprocess.requested_at <<<"$output")" +%s)
	after_request() { [ "$(date +%s)" -gt "$asked" ]; }
	wait_for 3 after_request
	run --separate-stderr dq-worker --drain
	worker_ok
	assert_equal "$(settled "$output")" "3 completed 1"
	assert_equal "$(jq -r 'select(.skipped) | .message.image_id' <<<"$output" | sort -u | wc -l)" 2
	assert_equal "$(jq -r 'select(.artifact) | .message.image_id' <<<"$output")" "$id"
	assert_equal "$(log_events "$stderr" | grep -c '^analyzed$')" 1
	local kept
	kept=$(jq -r 'select(.event == "artifact_kept") | .blob' <<<"$stderr")
	assert_regex "$kept" "^$id\.[0-9]{8}T[0-9]{9}Z\.json\$"
	# byte for byte (no program reads a kept copy: read in the local store)
	if local_backend; then
		cmp "$(local_blob processed-images "$kept")" "$BATS_TEST_TMPDIR/old.json"
	fi
	assert_equal "$(artifact "$id" | jq -r .timestamps.processed_at)" "$(jq -r 'select(.artifact) | .artifact.timestamps.processed_at' <<<"$output")"
	# the reprocess message delivered again is skipped: its request is done
	run --separate-stderr bash -c 'jq -c "select(.artifact) | del(.artifact, .stored, .settled)" | dq-analyze --skip-existing' <<<"$output"
	assert_equal "$(jq -r .skipped.reason <<<"$output")" processed
}

@test "--once takes one window of WORKER_MAX_MESSAGES" {
	send 5
	WORKER_MAX_MESSAGES=2 run --separate-stderr dq-worker --once
	assert_success
	assert_equal "$(settled "$output")" "2 completed 1"
	assert_equal "$(ready_count)" 3
}

@test "--max-runtime takes no message it could not finish in time" {
	send 2
	run --separate-stderr dq-worker --max-runtime 1
	assert_success
	assert_equal "$(jq -r 'select(.event == "worker_stop") | .reason' <<<"$stderr")" max_runtime
	assert_equal "$(ready_count)" 2
}

@test "--print-config: the stages' store, queue and analyzer, then the variables the worker and its stages read" {
	export DQ_WORKER_GRACE_SECONDS=08 API_KEY=ops:S3CRET
	run --separate-stderr dq-worker --print-config
	assert_success
	assert_equal "$(jq -c '[.program, .store.backend, .analyzer.backend, .analyzer.reference_dir, .analyzer.cache_dir, .analyzer.credentials]' <<<"$output")" \
		"[\"dq-worker\",\"$DQ_TEST_BACKEND\",\"reference\",\"$DQ_REFERENCE_DIR\",\"$DQ_CACHE_DIR\",\"none (local)\"]"
	# where the local spool lives (only the local backends have a directory)
	if local_backend; then
		assert_equal "$(jq -r .queue.dir <<<"$output")" "$(local_spool)"
	fi
	assert_equal "$(jq -c '.variables | [.DQ_WORKER_GRACE_SECONDS, .WORKER_MAX_MESSAGES, has("API_KEY"), has("CORS_ORIGINS")]' <<<"$output")" \
		'["08","10",false,false]'
	[[ "$output" != *S3CRET* ]]
	run --separate-stderr dq-worker --print-config --drain
	assert_failure 64
}

@test "usage: -h on stdout, bad options exit 64" {
	run --separate-stderr dq-worker -h
	assert_success
	assert_output 'usage: dq-worker [--drain | --once] [--max-runtime SECONDS]
       dq-worker --check | --print-config'
	run --separate-stderr dq-worker --max-runtime soon
	assert_failure 64
	run --separate-stderr dq-worker --bogus
	assert_failure 64
	assert_regex "$stderr" 'usage: dq-worker'
	run --separate-stderr dq-worker --drain --once
	assert_failure 64
}

@test "a run in which messages failed for good exits 65, after settling everything" {
	send 3
	dq-put --sku WK-KN-999 --facility yangjiang "$(ls "$S"/samples/* | tail -1)" 2>/dev/null | dq-enqueue >/dev/null 2>&1
	run --separate-stderr dq-worker --drain
	assert_failure 65
	assert_equal "$(jq -r .settled <<<"$output" | sort | uniq -c | sed 's/^ *//' | tr '\n' ' ')" "3 completed 1 dead-lettered "
	assert_equal "$(jq -r 'select(.event == "worker_stop") | [.reason, .failed, .status] | join(" ")' <<<"$stderr")" "drained 1 65"
	run --separate-stderr dq-dequeue --peek -n 10 -w 0
	assert_output ""
}

@test "DQ_WORKER_GRACE_SECONDS=08 is eight seconds: SIGTERM settles the batch, the log stays JSON" {
	send 2
	export WORKER_MAX_MESSAGES=2 DQ_TEST_ANALYZE_DELAY_MS=1000 LOG_LEVEL=DEBUG DQ_WORKER_GRACE_SECONDS=08
	dq-worker >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" &
	local pid=$! st=0
	wait_for 10 count_is 2 grep -c '"event":"analyzing"' "$BATS_TEST_TMPDIR/err"
	kill -TERM "$pid"
	wait "$pid" || st=$?
	assert_equal "$st" 0
	json_lines "$BATS_TEST_TMPDIR/err"
	assert_equal "$(settled "$(cat "$BATS_TEST_TMPDIR/out")")" "2 completed 1"
	assert_equal "$(jq -r 'select(.event == "shutdown" and .prog == "dq-worker") | .msg' "$BATS_TEST_TMPDIR/err")" \
		"SIGTERM: taking no more messages, finishing those in flight within 8s"
}

@test "numbers the C programs refuse stop the worker at the preflight with 78" {
	send 1
	for v in 0x10 1e1 nan -1 ' 5'; do
		DQ_WORKER_GRACE_SECONDS=$v run --separate-stderr dq-worker --drain
		assert_failure 78
		assert_equal "$(jq -r 'select(.event == "config") | .msg' <<<"$stderr")" \
			"DQ_WORKER_GRACE_SECONDS=$v: expected a decimal number from 0 to 3600"
	done
	WORKER_MAX_MESSAGES=1.5 run --separate-stderr dq-worker --drain
	assert_failure 78
	assert_equal "$(ready_count) $(locked_count)" "1 0"
}

@test "a batch killed after the grace period leaves only JSON lines on stderr" {
	send 2
	export DQ_TEST_ANALYZE_DELAY_MS=60000 DQ_WORKER_GRACE_SECONDS=0.2 LOG_LEVEL=DEBUG
	dq-worker --drain >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" &
	local pid=$! st=0
	wait_for 10 count_is 2 grep -c '"event":"analyzing"' "$BATS_TEST_TMPDIR/err"
	kill -TERM "$pid"
	wait "$pid" || st=$?
	assert_equal "$st" 75
	grep -q '"event":"grace_over"' "$BATS_TEST_TMPDIR/err"
	json_lines "$BATS_TEST_TMPDIR/err"
	assert_equal "$(states) $(locked_count)" "2 pending 2"
}

@test "a worker killed with SIGKILL leaves no run directory once the next one has started" {
	send 2
	export TMPDIR=$BATS_TEST_TMPDIR/tmp
	mkdir "$TMPDIR"
	DQ_TEST_ANALYZE_DELAY_MS=60000 setsid dq-worker --drain >/dev/null 2>&1 &
	local pid=$!
	wait_for 10 count_is 2 locked_count
	kill -KILL -- -"$pid"
	wait "$pid" || true
	wait_for 10 bash -c "! pgrep -g $pid >/dev/null"
	assert_equal "$(find "$TMPDIR" -mindepth 1 -maxdepth 1 -name 'dq-worker.*' | wc -l)" 1
	run --separate-stderr dq-worker --once
	assert_success
	assert_equal "$(find "$TMPDIR" -mindepth 1 -maxdepth 1 | wc -l)" 0
}

@test "a processed container the worker cannot write stops it at the preflight: 78, no delivery counted" {
	local_only "a container's directory the worker's user cannot write"
	users_setup
	send 2
	chmod -R a+rwX "$DQ_LOCAL_DIR/queues"
	mkdir -m 755 "$(local_container processed-images)"
	# the worker's own cache: only the processed container is wrong
	install -d -o "$DQ_WORK" "$BATS_TEST_TMPDIR/cache"
	export DQ_CACHE_DIR=$BATS_TEST_TMPDIR/cache
	run --separate-stderr as "$DQ_WORK" dq-worker --drain
	assert_failure 78
	assert_equal "$(jq -r 'select(.event == "preflight_failed") | .msg' <<<"$stderr")" "dq-put --check failed: no message touched"
	assert_regex "$(jq -r 'select(.event == "check_failed") | .msg' <<<"$stderr")" "processed-images.*Permission denied"
	run --separate-stderr dq-dequeue --peek -n 10 -w 0
	assert_equal "$(jq -r .receipt.delivery_count <<<"$output" | tr '\n' ' ')" "0 0 "
}

@test "a full disk stops the worker at the preflight with 69, no delivery counted" {
	local_only "DQ_LOCAL_DIR on a small file system"
	unshare -m mount -t tmpfs none /mnt 2>/dev/null || skip "needs a mount namespace for a small file system (unshare -m)"
	mkdir -p "$DQ_LOCAL_DIR"
	local samples=("$S"/samples/*)
	run --separate-stderr unshare -m bash -c '
		mount -t tmpfs -o size=1m dqfull "$DQ_LOCAL_DIR" || exit 99
		dq-put --sku WK-KN-200 --facility yangjiang "$@" 2>/dev/null | dq-enqueue >/dev/null 2>&1
		cat /dev/zero >"$DQ_LOCAL_DIR/fill" 2>/dev/null
		dq-worker --drain 2>"$BATS_TEST_TMPDIR/err"
		echo "status $?"
		dq-dequeue --peek -n 10 -w 0 2>/dev/null' - "${samples[@]:0:2}"
	assert_success
	assert_equal "$(head -1 <<<"$output")" "status 69"
	assert_equal "$(tail -n +2 <<<"$output" | jq -r .receipt.delivery_count | tr '\n' ' ')" "0 0 "
	assert_regex "$(jq -r 'select(.event == "check_failed") | .msg' "$BATS_TEST_TMPDIR/err" | head -1)" "No space left on device"
}

# web REQUEST_METHOD PATH_INFO [FILE]: dq-ingest as the web server's user runs it, CGI.
web() {
	local len=0
	[ -z "${3:-}" ] || len=$(stat -c %s "$3")
	as "$DQ_WEB" env GATEWAY_INTERFACE=CGI/1.1 SERVER_PROTOCOL=HTTP/1.1 REMOTE_ADDR=127.0.0.1 \
		REQUEST_METHOD="$1" PATH_INFO="$2" CONTENT_TYPE=image/jpeg CONTENT_LENGTH="$len" \
		QUERY_STRING='product_sku=WK-KN-200&facility=yangjiang' DQ_INSECURE_NO_AUTH=1 \
		DQ_STATE_DIR="$BATS_TEST_TMPDIR/state" dq-ingest <"${3:-/dev/null}"
}

@test "the web server's user and the worker's user share one store and queue through a group" {
	local_only "DQ_LOCAL_DIR shared through its group"
	users_setup
	# as an administrator would: the top directory in the shared group, setgid
	mkdir -m 2770 "$DQ_LOCAL_DIR"
	chgrp "$DQ_GROUP" "$DQ_LOCAL_DIR"
	install -d -o "$DQ_WORK" "$BATS_TEST_TMPDIR/cache"
	install -d -o "$DQ_WEB" "$BATS_TEST_TMPDIR/state"
	export DQ_CACHE_DIR=$BATS_TEST_TMPDIR/cache
	local f id ids=()
	# shellcheck disable=SC2012
	for f in $(ls "$S"/samples/* | head -4); do
		run --separate-stderr web POST /ingest "$f"
		assert_success
		assert_equal "$(head -1 <<<"$output")" $'Status: 202 Accepted\r'
		ids+=("$(sed '1,/^\r$/d' <<<"$output" | jq -r .image_id)")
		# the worker takes each upload, between the web server's writes
		run --separate-stderr as "$DQ_WORK" dq-worker --drain
		worker_ok
		assert_equal "$(settled "$output")" "1 completed 1"
	done
	# the web server's user reads what the worker wrote
	for id in "${ids[@]}"; do
		run --separate-stderr web GET "/images/$id"
		assert_equal "$(head -1 <<<"$output")" $'Status: 200 OK\r'
		assert_equal "$(sed '1,/^\r$/d' <<<"$output" | jq -r .image_id)" "$id"
	done
	run --separate-stderr as "$DQ_WEB" dq-dequeue --peek -n 10 -w 0
	assert_success
	assert_output ""
	run --separate-stderr as "$DQ_WEB" dq-put --stored
	assert_success
	assert_output ""
}
