#!/usr/bin/env bats
# Rules kept in one place in lib: the exit status of an errno, the fate of
# a record at the end of the pipeline, the queue a receipt names.

load helpers
load local # the errno test is about the local backends' files

setup() {
	dq_env
}

# a message record for an image that need not exist, with error code $1
failed_message() {
	jq -nc --arg id "$(cat /proc/sys/kernel/random/uuid)" --arg code "$1" '{message: {image_id: $id,
		ingested_at: "2026-11-28T10:00:00Z",
		metadata: {product_sku: "WK-KN-200", facility: "yangjiang",
		source_blob: {container: "raw-images", blob_name: ($id + ".jpg")},
		content_type: "image/jpeg", extra: {}},
		image: {size: 1, sha256: "00", width: 1, height: 1}},
		error: {stage: "analyze", code: $code, message: "no", retryable: false, scope: "record"}}'
}

# starved NAME PROG...: run PROG once its start-up is done (it logged its
# backend) with no file descriptor left to open, feeding it the record in
# $BATS_TEST_TMPDIR/record: each open(2) fails with EMFILE.  Its stdout and
# stderr are in $BATS_TEST_TMPDIR/NAME.out and NAME.err; returns its status.
starved() {
	local name=$1 in="$BATS_TEST_TMPDIR/$1.in" pid writer rc=0
	shift
	mkfifo "$in"
	"$@" <"$in" >"$BATS_TEST_TMPDIR/$name.out" 2>"$BATS_TEST_TMPDIR/$name.err" 3>&- &
	pid=$!
	exec {writer}>"$in"
	if ! wait_for 10 grep -q '"event":"backend"' "$BATS_TEST_TMPDIR/$name.err"; then
		exec {writer}>&-
		wait "$pid"
		return 99
	fi
	prlimit --pid "$pid" --nofile=3:3
	cat "$BATS_TEST_TMPDIR/record" >&"$writer"
	exec {writer}>&-
	wait "$pid" || rc=$?
	return "$rc"
}

@test "out of file descriptors, the store and the spool both exit 75, by dq(7)'s one errno table" {
	local_only "an errno of the local store's and spool's files"
	failed_message not_an_image >"$BATS_TEST_TMPDIR/record"
	run starved put dq-put
	assert_failure 75
	assert_equal "$(cat "$BATS_TEST_TMPDIR/put.out")" ""
	assert_equal "$(jq -r 'select(.level == "ERROR") | "\(.code) \(.msg | test("Too many open files"))"' \
		"$BATS_TEST_TMPDIR/put.err")" "store_io true"
	jq -c 'del(.error)' "$BATS_TEST_TMPDIR/record" >"$BATS_TEST_TMPDIR/message"
	mv "$BATS_TEST_TMPDIR/message" "$BATS_TEST_TMPDIR/record"
	run starved enqueue dq-enqueue
	assert_failure 75
	assert_equal "$(cat "$BATS_TEST_TMPDIR/enqueue.out")" ""
	assert_equal "$(jq -r 'select(.level == "ERROR") | "\(.code) \(.msg | test("Too many open files"))"' \
		"$BATS_TEST_TMPDIR/enqueue.err")" "spool_busy true"
	run --separate-stderr dq-dequeue --peek -n 10 -w 0
	assert_success
	assert_output ""
}

# messages N: N message records for images that need not exist
messages() {
	local i
	for ((i = 0; i < $1; i++)); do
		failed_message x | jq -c 'del(.error)'
	done
}

@test "dq-put leaves a failure marker for exactly the image's own failures that dq-dequeue --settle dead-letters" {
	export WORKER_MAX_DELIVERY_ATTEMPTS=1
	messages 6 | dq-enqueue >/dev/null 2>&1
	# by sequence number: an image's own permanent error, one on its last
	# delivery, a circumstance's (no marker), an outage's (no marker),
	# skipped as failed (its marker exists), no error at all
	run --separate-stderr bash -c 'dq-dequeue -n 6 | jq -c "
		def err(code; r): . + {error: {stage: \"analyze\", code: code, message: \"m\", retryable: r, scope: \"record\"}};
		if .receipt.sequence_number == 1 then err(\"not_an_image\"; false)
		elif .receipt.sequence_number == 2 then err(\"no_reference\"; true)
		elif .receipt.sequence_number == 3 then err(\"raw_missing\"; true)
		elif .receipt.sequence_number == 4 then err(\"model_down\"; true) | .error.http_status = 503
		elif .receipt.sequence_number == 5 then . + {skipped: {reason: \"failed\", error: {code: \"no_reference\", message: \"m\"}}}
		else . end" | dq-put | dq-dequeue --settle'
	assert_success
	assert_equal "$(jq -r '"\(.receipt.sequence_number) \(.stored.blob_name // "-" | sub("^[0-9a-f-]{36}"; "")) \(.settled)"' <<<"$output")" \
		"1 .error.json dead-lettered
2 .error.json dead-lettered
3 - dead-lettered
4 - dead-lettered
5 - dead-lettered
6 - completed"
	assert_equal "$(jq -r 'select(.event == "poison") | .reason' <<<"$stderr" | tr '\n' ' ')" \
		"not_an_image no_reference raw_missing model_down no_reference "
	assert_equal "$(jq -r 'select(.event == "failure_marker") | .image_id' <<<"$stderr" | sort)" \
		"$(jq -r 'select(.stored) | .message.image_id' <<<"$output" | sort)"
}

@test "a record read from the dead-letter queue that fails again goes back there, with no poison logged" {
	messages 1 | dq-enqueue >/dev/null 2>&1
	dq-dequeue | jq -c '. + {error: {stage: "analyze", code: "model_down", message: "m", retryable: false, scope: "record"}}' |
		dq-dequeue --settle >/dev/null 2>&1
	run --separate-stderr bash -c 'dq-dequeue --dead-letter | jq -c ".error.code = \"again\" | .error.retryable = false" | dq-dequeue --settle'
	assert_success
	assert_equal "$(jq -r .settled <<<"$output")" abandoned
	assert_equal "$(log_events "$stderr" | grep -cE '^(poison|dead_lettered)$')" 0
	run --separate-stderr dq-dequeue --dead-letter --peek -n 10 -w 0
	assert_success
	assert_equal "$(jq -r '"\(.receipt.dead_letter_reason) \(.receipt.delivery_count)"' <<<"$output")" "model_down 2"
}

@test "every receipt's backend is checked, not only the first one of its queue" {
	messages 2 | dq-enqueue >/dev/null 2>&1
	run --separate-stderr bash -c 'dq-dequeue -n 2 | jq -c "if .receipt.sequence_number == 2 then .receipt.backend = \"elsewhere\" else . end" | dq-dequeue --settle'
	assert_failure 78
	assert_equal "$(jq -r '"\(.receipt.sequence_number) \(.settled)"' <<<"$output")" "1 completed"
	assert_equal "$(jq -r 'select(.level == "ERROR") | "\(.code): \(.msg)"' <<<"$stderr")" \
		"backend_mismatch: record was received from backend elsewhere, configured is $(jq -r .receipt.backend <<<"$output")"
	run --separate-stderr dq-dequeue --peek -n 10 -w 0
	assert_success
	assert_equal "$(jq -r .receipt.sequence_number <<<"$output")" 2
}

@test "a *_MS variable takes milliseconds as a decimal, a fraction too; a hex, an exponent or a sign is refused with its range" {
	DQ_POLL_MS=2.5 DQ_RETRY_BASE_MS=0.5 run --separate-stderr dq-dequeue --peek -w 0
	assert_success
	assert_output ""
	for v in 0x10 1e2 -1 +5 nan 0.5 60001; do
		DQ_POLL_MS=$v run --separate-stderr dq-dequeue --peek -w 0
		assert_failure 78
		assert_output ""
		assert_equal "$(jq -r 'select(.level == "ERROR") | .msg' <<<"$stderr")" \
			"DQ_POLL_MS=$v: expected a decimal number from 1 to 60000"
	done
}
