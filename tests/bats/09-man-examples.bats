#!/usr/bin/env bats
# The EXAMPLES of the manual pages run as written.

load helpers
load local # dq(7)'s example is written for the local backends

setup() {
	dq_env
	export HOME="$BATS_TEST_TMPDIR/home"
	mkdir -p "$HOME"
	cd "$BATS_TEST_TMPDIR" || exit 1
	cp "$FIXTURES/a.jpg" "$FIXTURES/b.png" .
}

# The "$ command" lines of a page's EXAMPLES section, mdoc escapes undone.
examples() {
	awk '/^\.Sh /{ex = ($2 == "EXAMPLES")} ex && /^\$ /{sub(/^\$ /, ""); gsub(/\\e/, "\\"); print}' "$DQ_TOP/man/$1"
}

run_examples() {
	local script
	script=$(examples "$1")
	[ -n "$script" ] || fail "$1 has no examples"
	run --separate-stderr bash -euo pipefail -c "$script"
	assert_success
}

@test "dq-put(1) examples run" {
	run_examples dq-put.1
	assert_equal "$(raw_count)" 2
	# the two stored, then the same two again under new message ids
	assert_equal "$(ready_count)" 4
	assert_equal "$(peek_all | jq -r .message.image_id | sort | uniq -c | awk '{print $1}' | sort -u)" 2
	assert_equal "$(peek_all | jq -r .receipt.message_id | sort -u | wc -l)" 4
}

@test "dq-enqueue(1) examples run" {
	run_examples dq-enqueue.1
	assert_equal "$(ready_count)" 1
}

@test "dq-dequeue(1) examples run" {
	dq-put --sku WK-KN-200 --facility yangjiang a.jpg b.png 2>/dev/null | dq-enqueue >/dev/null 2>&1
	run_examples dq-dequeue.1
	assert_equal "$(ready_count)" 0
	assert_equal "$(jq -r .settled <<<"$output" | sort -u)" completed
}

@test "dq(7) examples run the whole job" {
	local_only "the example sets DQ_LOCAL_DIR"
	dq-synth -s 7 -o "$HOME/dq" -W 480 -H 360 --refs 3 --good 1 --defects 1
	unset DQ_LOCAL_DIR
	run_examples dq.7
	export DQ_LOCAL_DIR=$HOME/dq
	assert_equal "$(analyzed_count)" 2
	local id
	for id in $(dq-put --stored --all 2>/dev/null | jq -r .message.image_id); do
		assert_equal "$(artifact "$id" | jq -r '.defect_findings.defect_detected | type')" boolean
	done
	assert_equal "$(ready_count)" 0
}
