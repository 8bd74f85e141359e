#!/usr/bin/env bats
# The EXAMPLES of dq-analyze(1) and dq-worker(1) run as written.

load helpers

setup() {
	dq_env
	export DQ_WORKER_WAIT_SECONDS=0.5
	cd "$BATS_TEST_TMPDIR" || exit 1
}

# The "$ command" lines of a page's EXAMPLES section, mdoc escapes undone.
examples() {
	awk '/^\.Sh /{ex = ($2 == "EXAMPLES")} ex && /^\$ /{sub(/^\$ /, ""); gsub(/\\e/, "\\"); print}' "$DQ_TOP/man/$1"
}

@test "dq-analyze(1) examples run" {
	run --separate-stderr bash -euo pipefail -c "$(examples dq-analyze.1)"
	assert_success
	# the chipped knife from a terminal, then two messages settled
	assert_line --regexp '^\{"defect_detected":true,"defect_type":"[a-z_]+","severity":"(minor|major|critical)"'
	assert_equal "$(grep -c '"settled":"completed"' <<<"$output")" 2
	assert_equal "$(blob_count processed-images)" 2
	assert_equal "$(ready_count) $(locked_count)" "0 0"
}

@test "dq-worker(1) examples run" {
	run --separate-stderr bash -euo pipefail -c "$(examples dq-worker.1)"
	assert_success
	# dq-synth's summary, then the worker's two settled records
	assert_equal "$(grep '^\[' <<<"$output" | jq -r '.[1]' | sort | uniq -c | sed 's/^ *//')" "2 completed"
	assert_equal "$(blob_count processed-images)" 2
}
