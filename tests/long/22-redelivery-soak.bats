#!/usr/bin/env bats
# A soak for make check-long: redrives, restarts under a broken setting
# and SIGTERMs, many times at random timings.  At the end nothing is lost
# and nothing failed for good that was not the image's fault: every image
# of a known SKU has its artifact and no marker, and only the images of an
# SKU without references are marked and dead-lettered, with their reason.

load ../bats/helpers
load ../bats/local # an image's marker beside its artifact, and a marker's history, are seen in files only

setup() {
	dq_env
	reference_setup 2201 -W 320 -H 240 --refs 3 --good 8 --defects 2
	export DQ_WORKER_WAIT_SECONDS=0.3 DQ_LOCK_SECONDS=5 WORKER_MAX_MESSAGES=4
	export DQ_TEST_ANALYZE_DELAY_MS=80 DQ_WORKER_GRACE_SECONDS=20
	# circumstances alone never exhaust the attempts within the soak
	export WORKER_MAX_DELIVERY_ATTEMPTS=1000
	PIDS=()
}

teardown() {
	local p
	for p in "${PIDS[@]}"; do kill -KILL -- -"$p" 2>/dev/null || true; done
}

# A setting that the preflight refuses: DQ_REFERENCE_DIR at an empty
# directory where --check knows it for what it is, else a regular file.
broken_reference() {
	mkdir -p "$BATS_TEST_TMPDIR/empty-ref"
	if DQ_REFERENCE_DIR=$BATS_TEST_TMPDIR/empty-ref dq-analyze --check >/dev/null 2>&1; then
		touch "$BATS_TEST_TMPDIR/ref-file"
		echo "$BATS_TEST_TMPDIR/ref-file"
	else
		echo "$BATS_TEST_TMPDIR/empty-ref"
	fi
}

# rand_s LO HI: a random time from LO to HI milliseconds, in seconds for sleep.
rand_s() {
	local ms=$(($1 + RANDOM % ($2 - $1)))
	printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}

dead_peek() {
	dq-dequeue --dead-letter --peek -n 1000 -w 0 2>/dev/null
}

# stopped PID: the process has exited (a zombie counts: its status is waiting).
stopped() {
	[ "$(ps -o stat= -p "$1" 2>/dev/null)" = "" ] || [[ "$(ps -o stat= -p "$1")" == Z* ]]
}

# events FILE: the JSON lines of a log (anything else a shell wrote is skipped).
events() {
	jq -cR 'fromjson? // empty' "$1"
}

# round_sigterm: two workers, stopped by SIGTERM at a random moment.  A
# worker that does not stop cleanly is noted (what matters here is that no
# message is lost or failed for good), and one that lost the signal is
# killed: its messages come back when their leases run out.
round_sigterm() {
	local i st
	for i in 0 1; do
		setsid dq-worker >>"$BATS_TEST_TMPDIR/out" 2>>"$BATS_TEST_TMPDIR/err" &
		PIDS[i]=$!
	done
	sleep "$(rand_s 50 1500)" # the random timing is what is under test
	# a worker gone before the signal is noted by its status below
	for i in 0 1; do kill -TERM "${PIDS[i]}" 2>/dev/null || :; done
	for i in 0 1; do
		if ! wait_for $((DQ_WORKER_GRACE_SECONDS + 10)) stopped "${PIDS[i]}"; then
			echo "# note: a worker did not stop on SIGTERM: killed" >&3
			kill -KILL -- -"${PIDS[i]}"
		fi
		st=0
		wait "${PIDS[i]}" || st=$?
		# 65: messages of the unknown SKU failed for good in this run
		[ "$st" = 0 ] || [ "$st" = 65 ] || echo "# note: a worker exited $st after SIGTERM" >&3
	done
	PIDS=()
}

# round_broken: a worker restarted under a broken setting touches nothing.
round_broken() {
	local before st=0
	before=$(dq-dequeue --peek -n 1000 -w 0 2>/dev/null | jq -r '.receipt.delivery_count' | sort | md5sum)
	DQ_REFERENCE_DIR=$BROKEN dq-worker --drain >>"$BATS_TEST_TMPDIR/out" 2>>"$BATS_TEST_TMPDIR/broken.err" || st=$?
	[ "$st" = 78 ] || [ "$st" = 69 ] || { echo "# worker under a broken setting: $st" >&3; return 1; }
	[ "$before" = "$(dq-dequeue --peek -n 1000 -w 0 2>/dev/null | jq -r '.receipt.delivery_count' | sort | md5sum)" ]
}

# round_redrive: the wrong redrive deletes nothing, the right one resends each once.
round_redrive() {
	local n
	n=$(dead_peek | wc -l)
	dq-dequeue --dead-letter -n 1000 -w 0 2>/dev/null | dq-enqueue 2>/dev/null | dq-dequeue --settle >/dev/null 2>&1
	[ "$(dead_peek | wc -l)" = "$n" ] || { echo "# the redrive without --new-id lost messages" >&3; return 1; }
	dq-dequeue --dead-letter -n 1000 -w 0 2>/dev/null | dq-enqueue --new-id 2>/dev/null |
		dq-dequeue --settle >>"$BATS_TEST_TMPDIR/redriven" 2>/dev/null
	[ "$(dead_peek | wc -l)" = 0 ]
}

@test "redrives, broken restarts and SIGTERMs at random: nothing lost, nothing failed for good but the image's own" {
	local copy r rounds=0
	BROKEN=$(broken_reference)
	for ((copy = 0; copy < 3; copy++)); do
		dq-put --sku WK-KN-200 --facility yangjiang "$S"/samples/*.jpg 2>/dev/null
	done >"$BATS_TEST_TMPDIR/good"
	dq-put --sku WK-KN-999 --facility yangjiang "$S"/samples/good-00[1-4].jpg 2>/dev/null >"$BATS_TEST_TMPDIR/bad"
	cat "$BATS_TEST_TMPDIR/good" "$BATS_TEST_TMPDIR/bad" | dq-enqueue >/dev/null 2>&1
	local ngood nbad
	ngood=$(wc -l <"$BATS_TEST_TMPDIR/good") nbad=$(wc -l <"$BATS_TEST_TMPDIR/bad")
	assert_equal "$(ready_count)" $((ngood + nbad))
	# a few minutes at most
	local until=$((SECONDS + ${DQ_SOAK_SECONDS:-120}))
	while [ "$SECONDS" -lt "$until" ]; do
		r=$((RANDOM % 4))
		case $r in
		0 | 1) round_sigterm ;;
		2) round_broken ;;
		3) round_redrive ;;
		esac
		rounds=$((rounds + 1))
	done
	echo "# $rounds rounds" >&3
	# then the job runs to the end (after the leases of killed workers), and
	# the dead-lettered are redriven once more
	wait_for 30 leases_expired
	run --separate-stderr dq-worker --drain
	assert [ "$status" = 0 -o "$status" = 65 ]
	round_redrive
	run --separate-stderr dq-worker --drain
	cat "$BATS_TEST_TMPDIR/err" - <<<"$stderr" >"$BATS_TEST_TMPDIR/all.err"

	# nothing lost: every image of the known SKU has its artifact, no marker
	assert_equal "$(ready_count) $(locked_count)" "0 0"
	local id missing=0 marked=0
	for id in $(jq -r .message.image_id "$BATS_TEST_TMPDIR/good"); do
		[ "$(image_state "$id")" = analyzed ] || missing=$((missing + 1))
		# GET answers with the artifact: a marker beside it is in its file
		if local_backend; then
			[ ! -f "$(local_blob processed-images "$id.error.json")" ] || marked=$((marked + 1))
		fi
	done
	assert_equal "$missing $marked" "0 0"
	# dq-put --stored lists exactly the images without an artifact: the unknown SKU's
	assert_equal "$(dq-put --stored 2>/dev/null | jq -r .message.image_id | sort)" "$(jq -r .message.image_id "$BATS_TEST_TMPDIR/bad" | sort)"
	# failed for good only for the image's own reason, each dead-lettered once
	for id in $(jq -r .message.image_id "$BATS_TEST_TMPDIR/bad"); do
		assert_equal "$(failure "$id" | jq -r .error.code)" no_reference
		# every failure of its history (read in the marker's file)
		if local_backend; then
			assert_equal "$(local_marker "$id" | jq -r '.failures | map(.error.code) | unique | join(" ")')" no_reference
		fi
	done
	assert_equal "$(dead_peek | jq -r .receipt.dead_letter_reason | sort | uniq -c | sed 's/^ *//')" "$nbad no_reference"
	assert_equal "$(events "$BATS_TEST_TMPDIR/all.err" | jq -r 'select(.event == "poison" or .event == "dead_lettered") | .reason' | sort -u)" no_reference
	# and the broken restarts never got past the preflight
	refute [ -n "$(events "$BATS_TEST_TMPDIR/broken.err" | jq -r 'select(.event == "received") | .event')" ]
}
