# local.bash - probes of the local backends' files, for the tests that are
# about the local store and spool (load helpers first): a lease running
# out by its name, a crash's leftovers, a fault put into a file.  A test
# that uses them calls local_only first, which skips it on another
# DQ_TEST_BACKEND; everything else observes through the programs.
# shellcheck shell=bash

# local_only WHY: skip this test unless it runs on the local backends.
local_only() {
	[ "$DQ_TEST_BACKEND" = local ] ||
		skip "about the local backends' files ($1); DQ_TEST_BACKEND=$DQ_TEST_BACKEND"
}

# local_spool [QUEUE]: the local spool's directory of QUEUE.
local_spool() {
	echo "$DQ_LOCAL_DIR/queues/${1:-defect-jobs}"
}

# local_container NAME: the local store's directory of container NAME.
local_container() {
	echo "$DQ_LOCAL_DIR/store/$1"
}

# local_blob CONTAINER NAME: the path of a blob in the local store.
local_blob() {
	echo "$DQ_LOCAL_DIR/store/$1/$2"
}

# local_meta CONTAINER NAME: the path of a blob's metadata file.
local_meta() {
	echo "$DQ_LOCAL_DIR/store/$1/.meta/$2.json"
}

# local_marker ID: the failure marker of image ID, its whole history.
local_marker() {
	cat "$DQ_LOCAL_DIR/store/processed-images/$1.error.json"
}

# local_blob_count [CONTAINER]: files in a container, every kind of blob
# (artifacts, failure markers, kept copies), hidden temporaries and
# metadata aside.
local_blob_count() {
	find "$DQ_LOCAL_DIR/store/${1:-raw-images}" -type f -not -path '*/.*' 2>/dev/null | wc -l
}

# local_store_dir: the local store's directory.
local_store_dir() {
	echo "$DQ_LOCAL_DIR/store"
}

# local_backend: the test runs on the local backends, for the part of a
# test that only the local files show (say which in a comment).
local_backend() {
	[ "$DQ_TEST_BACKEND" = local ]
}

# The local spool's own C test, tests/unit/spool-test.
SPOOL_TEST="$DQ_BUILD/tests/unit/spool-test"

# spool_test TEST...: run the named C tests in this test's directory.
spool_test() {
	[ -x "$SPOOL_TEST" ] || fail "$SPOOL_TEST is not built: run 'make tests/unit/spool-test'"
	run --separate-stderr "$SPOOL_TEST" -d "$BATS_TEST_TMPDIR" "$@"
}

# assert_passed TEST...: every named test passed, in order.
assert_passed() {
	local i=0 t
	assert_success
	assert_line --index 0 "1..$#"
	for t in "$@"; do
		i=$((i + 1))
		assert_line "ok $i - $t"
	done
	refute_line --partial "not ok"
	assert_line "# $# passed, 0 failed"
}
