#!/usr/bin/env bats
# --check: configuration and backends, before any record is touched.

load helpers

setup() {
	dq_env
}

@test "--check passes on a usable local store and queue" {
	for p in dq-put dq-enqueue dq-dequeue; do
		run --separate-stderr "$p" --check
		assert_success
		assert_output ""
		assert_equal "$(log_events "$stderr" | tail -1)" check_ok
	done
}

@test "--check without any backend configured exits 78" {
	unset DQ_LOCAL_DIR
	run --separate-stderr dq-dequeue --check
	assert_failure 78
	assert_equal "$(log_events "$stderr")" check_failed
	[[ "$stderr" == *AZURE_SERVICEBUS_NAMESPACE* ]]
}

@test "--check on a DQ_LOCAL_DIR that is not a directory exits 78" {
	echo "not a directory" >"$BATS_TEST_TMPDIR/file"
	export DQ_LOCAL_DIR="$BATS_TEST_TMPDIR/file"
	run --separate-stderr dq-put --check
	assert_failure 78
	[[ "$stderr" == *"Not a directory"* ]]
	run --separate-stderr dq-enqueue --check
	assert_failure 78
}

@test "an unusable spool stops dq-enqueue with a system error and no output" {
	dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" 2>/dev/null >"$BATS_TEST_TMPDIR/in"
	mkdir -p "$DQ_LOCAL_DIR/queues"
	echo x >"$DQ_LOCAL_DIR/queues/defect-jobs"
	run --separate-stderr dq-enqueue <"$BATS_TEST_TMPDIR/in"
	[ "$status" -ne 0 ] && [ "$status" -ne 65 ]
	assert_output ""
	assert_equal "$(jq -r 'select(.level == "ERROR") | .event' <<<"$stderr" | tail -1)" system_error
}
