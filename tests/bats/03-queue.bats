#!/usr/bin/env bats
# dq-enqueue and dq-dequeue over the queue of DQ_TEST_BACKEND: receive, settle, poison,
# duplicates, redrive, lost receivers and concurrent receivers.

load helpers

setup() {
	dq_env
}

# make_messages N: N message records for images that need not exist.
make_messages() {
	local i
	for ((i = 0; i < $1; i++)); do
		cat /proc/sys/kernel/random/uuid
	done | jq -Rc '{message: {image_id: ., ingested_at: "2026-11-28T10:00:00Z",
		metadata: {product_sku: "WK-KN-200", facility: "yangjiang",
		source_blob: {container: "raw-images", blob_name: (. + ".jpg")},
		content_type: "image/jpeg", extra: {}},
		image: {size: 1, sha256: "00", width: 1, height: 1}}}'
}

with_error() { # retryable
	jq -c --argjson r "$1" '. + {error: {stage: "analyze", code: "model_down", message: "try later",
		retryable: $r, scope: "record"}}'
}

@test "put | enqueue, then dequeue | settle completes both and empties the queue" {
	dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" "$FIXTURES/b.png" | dq-enqueue >"$BATS_TEST_TMPDIR/sent" 2>/dev/null
	assert_equal "$(jq -r .enqueued.queue "$BATS_TEST_TMPDIR/sent" | sort -u)" defect-jobs
	assert_equal "$(ready_count)" 2
	run --separate-stderr bash -c 'dq-dequeue -n 10 | dq-dequeue --settle'
	assert_success
	assert_equal "$(jq -r .settled <<<"$output" | tr '\n' ' ')" "completed completed "
	assert_equal "$(jq -r .message.image_id <<<"$output" | sort)" "$(jq -r .message.image_id "$BATS_TEST_TMPDIR/sent" | sort)"
	assert_equal "$(jq -r .receipt.delivery_count <<<"$output" | sort -u)" 1
	run --separate-stderr dq-dequeue -n 10 -w 0
	assert_success
	assert_output ""
}

@test "an empty queue waits -w seconds and exits 0 with no output" {
	run --separate-stderr dq-dequeue -w 0.2
	assert_success
	assert_output ""
}

@test "a retryable error is abandoned, comes back with delivery_count 2, dead-lettered at the limit" {
	export WORKER_MAX_DELIVERY_ATTEMPTS=3
	make_messages 1 | dq-enqueue >/dev/null 2>&1
	local n
	for n in 1 2; do
		run --separate-stderr bash -c 'dq-dequeue | with_error true | dq-dequeue --settle'
		assert_success
		assert_equal "$(jq -r .settled <<<"$output")" abandoned
		assert_equal "$(jq -r .receipt.delivery_count <<<"$output")" $n
	done
	run --separate-stderr bash -c 'dq-dequeue | with_error true | dq-dequeue --settle'
	assert_success
	assert_equal "$(jq -r .receipt.delivery_count <<<"$output")" 3
	assert_equal "$(jq -r .settled <<<"$output")" dead-lettered
	assert_equal "$(log_events "$stderr" | grep -c poison)" 1
	assert_equal "$(ready_count)" 0
	run --separate-stderr dq-dequeue --dead-letter -n 10 -w 0
	assert_success
	assert_equal "$(jq -r .receipt.dead_letter <<<"$output")" true
	assert_equal "$(jq -r .receipt.dead_letter_reason <<<"$output")" model_down
	assert_equal "$(jq -r .receipt.dead_letter_description <<<"$output")" "try later"
}
export -f with_error

@test "a permanent error is dead-lettered at once, logged once as dead_lettered and once as poison" {
	make_messages 1 | dq-enqueue >/dev/null 2>&1
	run --separate-stderr bash -c 'dq-dequeue | with_error false | dq-dequeue --settle'
	assert_success
	assert_equal "$(jq -r .settled <<<"$output")" dead-lettered
	assert_equal "$(jq -r .receipt.delivery_count <<<"$output")" 1
	assert_equal "$(log_events "$stderr" | grep -c '^dead_lettered$')" 1
	assert_equal "$(jq -r 'select(.event == "poison") | .reason' <<<"$stderr")" model_down
	run --separate-stderr dq-dequeue --dead-letter --peek -w 0
	assert_equal "$(jq -r .receipt.dead_letter_reason <<<"$output")" model_down
}

@test "--settle --require stored abandons a record without stored and logs incomplete" {
	make_messages 2 | dq-enqueue >/dev/null 2>&1
	run --separate-stderr bash -c 'dq-dequeue -n 2 | jq -c "if .receipt.sequence_number == 1 then . + {stored: {container: \"processed-images\", blob_name: \"x.json\", etag: \"e\"}} else . end" | dq-dequeue --settle --require stored'
	assert_success
	assert_equal "$(jq -r .settled <<<"$output" | tr '\n' ' ')" "completed abandoned "
	assert_equal "$(log_events "$stderr" | grep -c incomplete)" 1
	assert_equal "$(ready_count)" 1
}

@test "a record skipped as processed is completed, one skipped as failed dead-lettered with the failure's reason" {
	make_messages 2 | dq-enqueue >/dev/null 2>&1
	run --separate-stderr bash -c 'dq-dequeue -n 2 | jq -c ". + {skipped: (if .receipt.sequence_number == 1 then {reason: \"processed\"} else {reason: \"failed\", error: {code: \"no_reference\", message: \"no references\"}} end)}" | dq-dequeue --settle --require stored'
	assert_success
	assert_equal "$(jq -r .settled <<<"$output" | tr '\n' ' ')" "completed dead-lettered "
	run --separate-stderr dq-dequeue --dead-letter --peek -n 10 -w 0
	assert_equal "$(jq -r '[.receipt.dead_letter_reason, .receipt.dead_letter_description] | join(" ")' <<<"$output")" "no_reference no references"
}

@test "the same message id twice within the window is delivered once; --new-id sends again" {
	make_messages 1 >"$BATS_TEST_TMPDIR/m"
	dq-enqueue <"$BATS_TEST_TMPDIR/m" >/dev/null 2>&1
	run --separate-stderr dq-enqueue <"$BATS_TEST_TMPDIR/m"
	assert_success
	assert_equal "$(log_events "$stderr" | grep -c duplicate)" 1
	assert_equal "$(ready_count)" 1
	run --separate-stderr dq-enqueue --new-id <"$BATS_TEST_TMPDIR/m"
	assert_success
	[ "$(jq -r .enqueued.message_id <<<"$output")" != "$(jq -r .message.image_id <<<"$output")" ]
	assert_equal "$(ready_count)" 2
}

@test "a duplicate id is accepted again once the window has passed" {
	export DQ_DUPLICATE_WINDOW_SECONDS=0.3
	make_messages 1 >"$BATS_TEST_TMPDIR/m"
	dq-enqueue <"$BATS_TEST_TMPDIR/m" >/dev/null 2>&1
	sleep 0.5 # the window itself is what is under test
	dq-enqueue <"$BATS_TEST_TMPDIR/m" >/dev/null 2>&1
	assert_equal "$(ready_count)" 2
}

@test "redrive run twice sends each dead-lettered message once" {
	make_messages 3 | dq-enqueue >/dev/null 2>&1
	dq-dequeue -n 3 | with_error false | dq-dequeue --settle >/dev/null 2>&1
	assert_equal "$(ready_count)" 0
	run --separate-stderr bash -c 'dq-dequeue --dead-letter -n 10 -w 0 | dq-enqueue --new-id | dq-dequeue --settle'
	assert_success
	assert_equal "$(jq -r .settled <<<"$output" | tr '\n' ' ')" "completed completed completed "
	assert_equal "$(ready_count)" 3
	run --separate-stderr bash -c 'dq-dequeue --dead-letter -n 10 -w 0 | dq-enqueue --new-id | dq-dequeue --settle'
	assert_success
	assert_output ""
	assert_equal "$(ready_count)" 3
	run --separate-stderr dq-dequeue -n 10 -w 0
	assert_equal "$(jq -r .receipt.delivery_count <<<"$output" | sort -u)" 1
}

# redrive [DQ-ENQUEUE OPTION]: the README's redrive; each stage's status in $BATS_TEST_TMPDIR/st.
redrive() {
	bash -c 'dq-dequeue --dead-letter -n 10 -w 0 | dq-enqueue "$@" | dq-dequeue --settle
		echo "${PIPESTATUS[*]}" >"$BATS_TEST_TMPDIR/st"' _ "$@"
}

@test "redrive without --new-id deletes nothing: refused naming --new-id, the message stays dead-lettered" {
	make_messages 1 | dq-enqueue >/dev/null 2>&1
	dq-dequeue | with_error false | dq-dequeue --settle >/dev/null 2>&1
	local n
	for n in 1 2; do
		run --separate-stderr redrive
		assert_success
		assert_equal "$(cat "$BATS_TEST_TMPDIR/st")" "0 65 0"
		assert_equal "$(jq -r '[.error.stage, .error.code, .error.retryable, .settled] | join(" ")' <<<"$output")" \
			"enqueue dead_letter_same_id false abandoned"
		assert_regex "$(jq -r .error.message <<<"$output")" 'dq-enqueue --new-id'
		assert_equal "$(jq -r 'select(.event == "rejected") | .code' <<<"$stderr")" dead_letter_same_id
		assert_equal "$(ready_count)" 0
		run --separate-stderr dq-dequeue --dead-letter --peek -n 10 -w 0
		assert_equal "$(jq -r .receipt.dead_letter_reason <<<"$output")" model_down
	done
	# the documented redrive then resends it once
	run --separate-stderr redrive --new-id
	assert_equal "$(cat "$BATS_TEST_TMPDIR/st")" "0 0 0"
	assert_equal "$(jq -r .settled <<<"$output")" completed
	assert_equal "$(ready_count)" 1
}

@test "a resend the queue drops as a duplicate says so, and settle abandons what was not resent" {
	make_messages 1 | dq-enqueue >/dev/null 2>&1
	run --separate-stderr bash -c 'dq-dequeue | dq-enqueue | dq-dequeue --settle'
	assert_success
	assert_equal "$(jq -c '[.enqueued.duplicate, .settled]' <<<"$output")" '[true,"abandoned"]'
	assert_equal "$(log_events "$stderr" | grep -E '^(duplicate|not_resent)$' | tr '\n' ' ')" "duplicate not_resent "
	# the only copy is still there
	run --separate-stderr dq-dequeue --peek -n 10 -w 0
	assert_equal "$(wc -l <<<"$output")" 1
	assert_equal "$(jq -r .receipt.delivery_count <<<"$output")" 1
}

@test "a record abandoned on its last delivery that the spool dead-letters is printed as dead-lettered" {
	export WORKER_MAX_DELIVERY_ATTEMPTS=1
	make_messages 1 | dq-enqueue >/dev/null 2>&1
	run --separate-stderr bash -c 'dq-dequeue | dq-dequeue --settle --require stored'
	assert_success
	assert_equal "$(jq -r .settled <<<"$output")" dead-lettered
	assert_equal "$(log_events "$stderr" | grep -E '^(incomplete|abandoned|dead_lettered)$' | tr '\n' ' ')" "incomplete dead_lettered "
	run --separate-stderr dq-dequeue --dead-letter --peek -n 10 -w 0
	assert_equal "$(jq -r .receipt.dead_letter_reason <<<"$output")" MaxDeliveryCountExceeded
}

@test "a receiver killed with SIGKILL loses nothing: the messages come back after the lease" {
	export DQ_LOCK_SECONDS=1
	make_messages 3 | dq-enqueue >/dev/null 2>&1
	setsid bash -c 'dq-dequeue -n 3 | { sleep 60; cat >/dev/null; }' 2>/dev/null &
	local pid=$!
	wait_for 10 count_is 3 locked_count
	kill -KILL -- -"$pid"
	wait "$pid" || true
	assert_equal "$(ready_count)" 0
	# the leases end a few milliseconds apart: receive until all are back
	: >"$BATS_TEST_TMPDIR/again"
	receive_more() {
		dq-dequeue -n 10 -w 5 2>/dev/null >>"$BATS_TEST_TMPDIR/again"
		[ "$(wc -l <"$BATS_TEST_TMPDIR/again")" -ge 3 ]
	}
	wait_for 15 receive_more
	assert_equal "$(wc -l <"$BATS_TEST_TMPDIR/again")" 3
	assert_equal "$(jq -r .receipt.delivery_count "$BATS_TEST_TMPDIR/again" | sort -u)" 2
}

@test "a message whose lease expires WORKER_MAX_DELIVERY_ATTEMPTS times is dead-lettered" {
	export DQ_LOCK_SECONDS=0.3 WORKER_MAX_DELIVERY_ATTEMPTS=2
	make_messages 1 >"$BATS_TEST_TMPDIR/m"
	dq-enqueue <"$BATS_TEST_TMPDIR/m" >/dev/null 2>&1
	run --separate-stderr dq-dequeue -w 2
	assert_equal "$(jq -r .receipt.delivery_count <<<"$output")" 1
	run --separate-stderr dq-dequeue -w 2
	assert_equal "$(jq -r .receipt.delivery_count <<<"$output")" 2
	run --separate-stderr dq-dequeue -w 1
	assert_success
	assert_output ""
	run --separate-stderr dq-dequeue --dead-letter -w 2
	assert_equal "$(jq -r .receipt.dead_letter_reason <<<"$output")" MaxDeliveryCountExceeded
	# the message dead-lettered is the one sent
	assert_equal "$(jq -r .message.image_id <<<"$output")" "$(jq -r .message.image_id "$BATS_TEST_TMPDIR/m")"
}

@test "a stale lease token cannot complete a message" {
	export DQ_LOCK_SECONDS=0.3
	make_messages 1 | dq-enqueue >/dev/null 2>&1
	dq-dequeue >"$BATS_TEST_TMPDIR/old" 2>/dev/null
	run --separate-stderr dq-dequeue -w 3
	assert_equal "$(jq -r .receipt.delivery_count <<<"$output")" 2
	local fresh=$output
	run --separate-stderr dq-dequeue --settle <"$BATS_TEST_TMPDIR/old"
	assert_failure 75
	assert_equal "$(jq -r .error.code <<<"$output")" lock_lost
	assert_equal "$(jq -r .settled <<<"$output")" null
	run --separate-stderr dq-dequeue --settle <<<"$fresh"
	assert_success
	assert_equal "$(jq -r .settled <<<"$output")" completed
}

@test "--renew extends the lock" {
	export DQ_LOCK_SECONDS=1
	make_messages 1 | dq-enqueue >/dev/null 2>&1
	dq-dequeue >"$BATS_TEST_TMPDIR/r" 2>/dev/null
	run --separate-stderr dq-dequeue --renew <"$BATS_TEST_TMPDIR/r"
	assert_success
	[[ "$(jq -r .receipt.locked_until <<<"$output")" > "$(jq -r .receipt.locked_until "$BATS_TEST_TMPDIR/r")" ]]
}

@test "two receivers at once over 200 messages receive each exactly once" {
	make_messages 200 | dq-enqueue >/dev/null 2>&1
	assert_equal "$(ready_count)" 200
	drain() {
		local out
		while out=$(dq-dequeue -n 7 -w 0 2>/dev/null) && [ -n "$out" ]; do
			printf '%s\n' "$out" | dq-dequeue --settle 2>/dev/null
		done
	}
	drain >"$BATS_TEST_TMPDIR/r1" &
	local p1=$!
	drain >"$BATS_TEST_TMPDIR/r2" &
	local p2=$!
	wait "$p1" "$p2"
	[ -s "$BATS_TEST_TMPDIR/r1" ] && [ -s "$BATS_TEST_TMPDIR/r2" ]
	assert_equal "$(cat "$BATS_TEST_TMPDIR/r1" "$BATS_TEST_TMPDIR/r2" | jq -r .message.image_id | sort -u | wc -l)" 200
	assert_equal "$(cat "$BATS_TEST_TMPDIR/r1" "$BATS_TEST_TMPDIR/r2" | wc -l)" 200
	assert_equal "$(cat "$BATS_TEST_TMPDIR/r1" "$BATS_TEST_TMPDIR/r2" | jq -r .settled | sort -u)" completed
}

@test "--peek shows messages without locking them" {
	make_messages 2 | dq-enqueue >/dev/null 2>&1
	run --separate-stderr dq-dequeue --peek -n 10 -w 0
	assert_success
	assert_equal "$(wc -l <<<"$output")" 2
	assert_equal "$(jq -r .receipt.lock_token <<<"$output" | sort -u)" null
	assert_equal "$(ready_count) $(locked_count)" "2 0"
	# and a receiver still takes both
	run --separate-stderr dq-dequeue -n 10 -w 0
	assert_equal "$(jq -r .receipt.delivery_count <<<"$output" | tr '\n' ' ')" "1 1 "
}

@test "a record without a receipt is not settled and exits 65" {
	run --separate-stderr dq-dequeue --settle <<<'{"message":{}}'
	assert_failure 65
	assert_equal "$(jq -r .settled <<<"$output")" null
	assert_equal "$(log_events "$stderr")" no_receipt
}
