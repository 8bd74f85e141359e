#!/usr/bin/env bats
# The runbook's redrive (README "Runbook"), as written there: three
# messages dead-lettered for a cause, the cause fixed, one redrive
# processes each once, and a second redrive sends nothing.  On the queue
# backend DQ_TEST_BACKEND names (local spool or the Service Bus fake).

load helpers
load worker

setup() {
	dq_env
	reference_setup 50 -W 320 -H 240 --refs 2 --good 3 --defects 0
	export DQ_WORKER_WAIT_SECONDS=0.2
}

# the runbook's command, with a bounded wait
runbook_redrive() {
	dq-dequeue --dead-letter -n 100 -w 0 | dq-enqueue --new-id | dq-dequeue --settle
}

@test "a redrive of three dead-lettered messages processes them once each; a second sends nothing" {
	# references for WK-KN-200 only: WK-KN-300 fails no_reference
	mkdir "$BATS_TEST_TMPDIR/ref"
	cp -r "$S/reference/WK-KN-200" "$BATS_TEST_TMPDIR/ref/"
	export DQ_REFERENCE_DIR=$BATS_TEST_TMPDIR/ref
	send 3 WK-KN-300
	run --separate-stderr dq-worker --drain
	assert_failure 65
	assert_equal "$(dead_count)" 3
	# the fix, then the redrive: three resent, three completed from the DLQ
	cp -r "$S/reference/WK-KN-200" "$BATS_TEST_TMPDIR/ref/WK-KN-300"
	run --separate-stderr bash -c "$(declare -f runbook_redrive); runbook_redrive"
	assert_success
	assert_equal "$(jq -r .settled <<<"$output" | sort | uniq -c | sed 's/^ *//')" "3 completed"
	assert_equal "$(dead_count)" 0
	assert_equal "$(ready_count)" 3
	run --separate-stderr dq-worker --drain
	worker_ok
	# each image analyzed once: three artifacts, three analyses
	assert_equal "$(log_events "$stderr" | grep -c '^analyzed$')" 3
	assert_equal "$(jq -r .settled <<<"$output" | sort | uniq -c | sed 's/^ *//')" "3 completed"
	local id
	for id in $(jq -r .message.image_id "$BATS_TEST_TMPDIR/sent"); do
		assert_equal "$(artifact "$id" | jq -r .image_id)" "$id"
	done
	# the second redrive: nothing to send, nothing sent
	run --separate-stderr bash -c "$(declare -f runbook_redrive); runbook_redrive"
	assert_success
	assert_output ""
	assert_equal "$(ready_count)" 0
	assert_equal "$(dead_count)" 0
}
