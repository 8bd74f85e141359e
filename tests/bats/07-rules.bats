#!/usr/bin/env bats
# Rules kept in one place in lib: the exit status of an errno, the fate of
# a record at the end of the pipeline, the queue a receipt names.

load helpers

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
	assert_equal "$(ready_count)" 0
}
