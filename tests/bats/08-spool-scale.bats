#!/usr/bin/env bats
# The local store and spool at scale and at the floor of their per-record
# costs: duplicate-detection ids in time buckets (through spool-test and
# dq-enqueue), a new blob's directory synced, no failing mkdir and no
# system calls of its own per id (seen with strace where it is installed).
# These are about the local backends' files: local.bash, and every test
# skips on another DQ_TEST_BACKEND.

load helpers
load local

setup() {
	dq_env
	local_only "the spool's id buckets and the store's directories"
	IMG=$BATS_TEST_TMPDIR/img
	mkdir -p "$IMG"
	local n
	for n in 1 2 3 4 5 6; do
		python3 "$DQ_TOP/tests/bats/mkimage.py" jpeg 64 48 "$n" >"$IMG/$n.jpg"
	done
}

need_strace() {
	command -v strace >/dev/null || skip "strace is not installed"
	# LeakSanitizer cannot run under ptrace: the sanitizer build's leak
	# check is off for the traced runs only
	export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
}

# The id file of message id $2 in queue $1, in whichever bucket holds it.
id_file() {
	local h
	h=$(printf '%s' "$2" | sha256sum | cut -d' ' -f1)
	find "$(local_spool "$1")/ids" -name "$h" -type f
}

@test "ids are a duplicate for the window, in buckets that a send removes whole once expired" {
	spool_test dup_purge dup_buckets
	assert_passed dup_purge dup_buckets
}

@test "two processes sending while buckets expire lose no send and leave one bucket" {
	spool_test concurrent_purge
	assert_passed concurrent_purge
}

@test "a spool of the old layout: its live ids move into buckets and still catch duplicates" {
	spool_test dup_migrate
	assert_passed dup_migrate
}

@test "dq-enqueue into a spool with ids/<sha256> of the old layout: a duplicate, and the id migrated" {
	run --separate-stderr dq-put --sku s --facility f "$IMG/1.jpg" "$IMG/2.jpg"
	assert_success
	printf '%s\n' "$output" >"$BATS_TEST_TMPDIR/records"
	id1=$(head -n 1 "$BATS_TEST_TMPDIR/records" | jq -r .message.image_id)
	# the queue exists, its ids/ holds the first image's id the old way
	run --separate-stderr dq-enqueue <"$BATS_TEST_TMPDIR/records" --new-id
	assert_success
	ids=$(local_spool)/ids
	find "$ids" -mindepth 1 -delete
	h=$(printf '%s' "$id1" | sha256sum | cut -d' ' -f1)
	printf '%s\n' "$id1" >"$ids/$h"
	run --separate-stderr dq-enqueue <"$BATS_TEST_TMPDIR/records"
	assert_success
	assert_equal "$(jq -c '[.enqueued.message_id, .enqueued.duplicate]' <<<"$output" | tr '\n' ' ')" \
		"[\"$id1\",true] [\"$(sed -n 2p "$BATS_TEST_TMPDIR/records" | jq -r .message.image_id)\",null] "
	[ ! -e "$ids/$h" ]
	f=$(id_file defect-jobs "$id1")
	[ -n "$f" ]
	# the bucket's name is its end, less than a sixteenth of the window (600 s) away
	end=$(basename "$(dirname "$f")")
	now=$(date +%s%3N)
	[ "$end" -gt "$((now - 600000))" ] && [ "$end" -le "$((now + 37500))" ]
}

@test "dq-put syncs the container directory after linking a new raw blob, before printing its message" {
	need_strace
	run --separate-stderr dq-put --sku s --facility f "$IMG/1.jpg"
	assert_success
	run --separate-stderr strace -f -qq -o "$BATS_TEST_TMPDIR/trace" -e trace=link,rename,openat,fsync,close,write \
		dq-put --sku s --facility f "$IMG/2.jpg"
	assert_success
	blob=$(jq -r .stored.blob_name <<<"$output")
	dir=$(local_container raw-images)
	# after the link to the blob: the directory opened as fd N, fsync(N), then the record
	run awk -v link="link(\"$dir/.tmp/" -v dst="\"$dir/$blob\") = 0" -v opendir="openat(AT_FDCWD, \"$dir\", " '
		index($0, link) && index($0, dst) { linked = 1; next }
		linked && index($0, opendir) && /O_DIRECTORY/ { fd = $NF; next }
		linked && fd != "" && $0 ~ ("fsync\\(" fd "\\) += 0$") { synced = 1; next }
		/write\(1, "\{\\"message\\"/ { print (synced ? "synced" : "not synced") " before the record"; exit }
	' "$BATS_TEST_TMPDIR/trace"
	assert_success
	assert_output "synced before the record"
}

# traced_put FILE...: dq-put of the files under strace, into $BATS_TEST_TMPDIR/trace.
traced_put() {
	run --separate-stderr strace -f -qq -o "$BATS_TEST_TMPDIR/trace" dq-put --sku s --facility f "$@"
	assert_success
	assert_equal "$(jq -r .stored.blob_name <<<"$output" | wc -l)" "$#"
}

# calls REGEX: how many traced system calls match.
calls() {
	grep -cE " ($1)\\(" "$BATS_TEST_TMPDIR/trace" || true
}

@test "dq-put makes no mkdir and no system call per id once the store exists: five images cost what one does" {
	need_strace
	run --separate-stderr dq-put --sku s --facility f "$IMG/1.jpg"
	assert_success
	traced_put "$IMG/2.jpg"
	mkdir1=$(calls 'mkdir|mkdirat') ids1=$(calls 'getpid|getppid|getuid|gettid') rand1=$(calls getrandom)
	# five images make 15 ids (image, blob temporary, metadata temporary)
	traced_put "$IMG/2.jpg" "$IMG/3.jpg" "$IMG/4.jpg" "$IMG/5.jpg" "$IMG/6.jpg"
	assert_equal "$mkdir1" 0
	assert_equal "$(calls 'mkdir|mkdirat')" 0
	assert_equal "$(calls 'getpid|getppid|getuid|gettid')" "$ids1"
	[ "$(calls getrandom)" -le "$((rand1 + 1))" ]
}

@test "the ETag of a stored image is its SHA-256's first 16 hex digits, for a new and an existing blob" {
	run --separate-stderr dq-put --sku s --facility f --id 11111111-2222-4333-8444-555555555555 "$IMG/1.jpg"
	assert_success
	sha=$(jq -r .message.image.sha256 <<<"$output")
	assert_equal "$(jq -r .stored.etag <<<"$output")" "\"0x${sha:0:16}\""
	run --separate-stderr dq-put --sku s --facility f --id 11111111-2222-4333-8444-555555555555 "$IMG/1.jpg"
	assert_success
	assert_equal "$(jq -r .stored.etag <<<"$output")" "\"0x${sha:0:16}\""
}
