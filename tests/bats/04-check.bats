#!/usr/bin/env bats
# --check: configuration and backends, before any record is touched.

load helpers
load local # most checks here are of the local store's and spool's directories

setup() {
	dq_env
}

# Every file and directory under a path, with its mode.
tree() {
	find "$1" -printf '%M %P\n' 2>/dev/null | sort
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
	no_backend
	run --separate-stderr dq-dequeue --check
	assert_failure 78
	assert_equal "$(log_events "$stderr")" check_failed
	[[ "$stderr" == *AZURE_SERVICEBUS_NAMESPACE* ]]
}

@test "--check on a DQ_LOCAL_DIR that is not a directory exits 78" {
	local_only "DQ_LOCAL_DIR a file"
	echo "not a directory" >"$BATS_TEST_TMPDIR/file"
	export DQ_LOCAL_DIR="$BATS_TEST_TMPDIR/file"
	run --separate-stderr dq-put --check
	assert_failure 78
	[[ "$stderr" == *"Not a directory"* ]]
	run --separate-stderr dq-enqueue --check
	assert_failure 78
}

@test "an unusable spool stops dq-enqueue with a system error and no output" {
	local_only "a file where the spool's directory goes"
	dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" 2>/dev/null >"$BATS_TEST_TMPDIR/in"
	mkdir -p "$DQ_LOCAL_DIR/queues"
	echo x >"$DQ_LOCAL_DIR/queues/defect-jobs"
	run --separate-stderr dq-enqueue <"$BATS_TEST_TMPDIR/in"
	[ "$status" -ne 0 ] && [ "$status" -ne 65 ]
	assert_output ""
	assert_equal "$(jq -r 'select(.level == "ERROR") | .event' <<<"$stderr" | tail -1)" system_error
}

@test "--check creates nothing, and says what the first run will create" {
	local_only "every file and directory under DQ_LOCAL_DIR"
	reference_setup 4 -W 160 -H 120 --refs 2 --good 1 --defects 0
	# a cache of its own, that no other test created
	export DQ_CACHE_DIR=$BATS_TEST_TMPDIR/cache
	for p in dq-put dq-enqueue dq-dequeue dq-analyze dq-worker; do
		run --separate-stderr "$p" --check
		assert_success
		assert_output ""
		[ ! -e "$DQ_LOCAL_DIR" ] || fail "$p --check created $(tree "$DQ_LOCAL_DIR")"
		[ ! -e "$DQ_CACHE_DIR" ] || fail "$p --check created $DQ_CACHE_DIR"
	done
	run --separate-stderr dq-dequeue --check
	assert_equal "$(jq -r 'select(.event == "check_missing") | .msg' <<<"$stderr")" \
		"local queue defect-jobs: $DQ_LOCAL_DIR/queues/defect-jobs does not exist yet; the first dq-enqueue or dq-dequeue creates it ($BATS_TEST_TMPDIR takes files)"
	# on a layout in use, the probes leave nothing behind either
	dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" 2>/dev/null | dq-enqueue >/dev/null 2>&1
	local before
	before=$(tree "$DQ_LOCAL_DIR")
	for p in dq-put dq-enqueue dq-dequeue dq-analyze dq-worker; do
		run --separate-stderr "$p" --check
		assert_success
		assert_equal "$(tree "$DQ_LOCAL_DIR")" "$before"
	done
	assert_equal "$(find "$BATS_TEST_TMPDIR" -maxdepth 1 -name '*dq-probe*' | wc -l)" 0
}

@test "--check of a spool with a directory missing says which, and that the programs recreate it" {
	local_only "a directory of the spool removed"
	dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" 2>/dev/null | dq-enqueue >/dev/null 2>&1
	rmdir "$DQ_LOCAL_DIR/queues/defect-jobs/dead"
	run --separate-stderr dq-dequeue --check
	assert_failure 78
	assert_equal "$(jq -r 'select(.event == "check_failed") | .msg' <<<"$stderr")" \
		"local queue defect-jobs: $DQ_LOCAL_DIR/queues/defect-jobs/dead is missing; dq-enqueue or dq-dequeue recreates it when they can write $DQ_LOCAL_DIR/queues/defect-jobs"
	[ ! -e "$DQ_LOCAL_DIR/queues/defect-jobs/dead" ]
}

@test "--check on a full file system exits 69 for the store and the spool" {
	local_only "DQ_LOCAL_DIR on a small file system"
	unshare -m mount -t tmpfs none /mnt 2>/dev/null || skip "needs a mount namespace for a small file system (unshare -m)"
	mkdir -p "$DQ_LOCAL_DIR"
	run --separate-stderr unshare -m bash -c '
		mount -t tmpfs -o size=256k dqfull "$DQ_LOCAL_DIR" || exit 99
		dq-put --sku WK-KN-200 --facility yangjiang "$1" 2>/dev/null | dq-enqueue >/dev/null 2>&1
		cat /dev/zero >"$DQ_LOCAL_DIR/fill" 2>/dev/null
		dq-put --check; echo "put $?"
		dq-enqueue --check; echo "enqueue $?"' - "$FIXTURES/a.jpg"
	assert_success
	assert_equal "$output" "put 69
enqueue 69"
	assert_equal "$(jq -r 'select(.event == "check_failed") | .code' <<<"$stderr" | tr '\n' ' ')" "store_io no_space "
}

@test "--check of a processed container on a read-only mount exits 78; the raw one is probed only for FILEs" {
	local_only "a container's directory mounted read-only"
	unshare -m mount -t tmpfs none /mnt 2>/dev/null || skip "needs a mount namespace for a read-only mount (unshare -m)"
	dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" >/dev/null 2>&1
	mkdir -p "$DQ_LOCAL_DIR/store/processed-images"
	run --separate-stderr unshare -m bash -c '
		for c in processed-images raw-images; do
			mount --bind -o ro "$DQ_LOCAL_DIR/store/$c" "$DQ_LOCAL_DIR/store/$c" || exit 99
			dq-put --check; echo "$c put $?"
			dq-put --check "$1"; echo "$c put FILE $?"
			umount "$DQ_LOCAL_DIR/store/$c"
		done' - "$FIXTURES/b.png"
	assert_success
	assert_equal "$output" "processed-images put 78
processed-images put FILE 78
raw-images put 0
raw-images put FILE 78"
	assert_equal "$(jq -r 'select(.event == "check_failed") | .msg' <<<"$stderr" | sed 's/: [^:]*$//' | sort -u)" \
		"local store: write $DQ_LOCAL_DIR/store/processed-images
local store: write $DQ_LOCAL_DIR/store/raw-images"
	assert_equal "$(jq -r 'select(.event == "check_failed") | .msg' <<<"$stderr" | sed 's/.*: //' | sort -u)" "Read-only file system"
}
