#!/usr/bin/env bats
# Options that promise something of the file system or name what is wrong:
# --annotate makes its directory, a bad --extra says --extra.

load helpers

setup() {
	dq_env
	reference_setup 25 -W 160 -H 120 --refs 2 --good 1 --defects 0
}

@test "--annotate DIR makes the directory when it is missing" {
	local dir=$BATS_TEST_TMPDIR/new/ann
	run --separate-stderr dq-analyze --sku WK-KN-200 --annotate "$dir" "$S/samples/good-001.jpg"
	assert_success
	assert_equal "$(jq -r .annotation <<<"$output")" "$dir/good-001.png"
	assert_equal "$(head -c 8 "$dir/good-001.png" | od -An -tx1 | tr -d ' ')" 89504e470d0a1a0a
}

@test "--annotate on a file or where no directory can be made is a usage error that names it" {
	touch "$BATS_TEST_TMPDIR/file"
	run --separate-stderr dq-analyze --sku WK-KN-200 --annotate "$BATS_TEST_TMPDIR/file" "$S/samples/good-001.jpg"
	assert_failure 64
	assert_output ""
	assert_equal "$(head -1 <<<"$stderr")" "dq-analyze: --annotate $BATS_TEST_TMPDIR/file: not a directory"
	run --separate-stderr dq-analyze --sku WK-KN-200 --annotate "$BATS_TEST_TMPDIR/file/sub" "$S/samples/good-001.jpg"
	assert_failure 64
	assert_equal "$(head -1 <<<"$stderr")" "dq-analyze: --annotate $BATS_TEST_TMPDIR/file/sub: Not a directory"
}

@test "a bad --extra names --extra, and stores nothing" {
	for extra in '[1]' '{"a":' '{"a":1,"a":2}'; do
		run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang --extra "$extra" "$FIXTURES/a.jpg"
		assert_failure 64
		assert_output ""
		assert_regex "$(head -1 <<<"$stderr")" '^dq-put: --extra (must be a JSON object|is not valid JSON: .+)$'
	done
	assert_equal "$(raw_count)" 0
}
