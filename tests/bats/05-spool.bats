#!/usr/bin/env bats
# The local spool queue itself (lib/queue/local.c) through its C test,
# tests/unit/spool-test: leases, counts, dead-lettering, duplicates, races
# between processes, damaged files; and one spool shared by two users.
# The programs over the spool are tested in 03-queue.bats.

load helpers
load local # the suite is about the local spool's files

setup() {
	dq_env
	local_only "the local spool itself"
}

# event_field EVENT FIELD: FIELD of each logged EVENT on stderr.
event_field() {
	jq -r --arg e "$1" --arg f "$2" 'select(.event == $e) | .[$f]' <<<"$stderr"
}

@test "spool-test lists its tests and refuses an unknown one with 64" {
	spool_test -l
	assert_success
	assert_line send_receive_complete
	assert_line concurrent_receivers
	spool_test no_such_test
	assert_failure 64
	assert_output ""
	[[ $stderr == *"unknown test"* ]]
}

@test "spool-test reports a failure as 'not ok' and exits 1" {
	# a spool under a regular file cannot even be opened
	: >"$BATS_TEST_TMPDIR/file"
	run --separate-stderr "$SPOOL_TEST" -d "$BATS_TEST_TMPDIR/file" send_receive_complete
	assert_failure 1
	assert_line "not ok 1 - send_receive_complete"
	assert_line "# 0 passed, 1 failed"
}

@test "send, receive in order up to max, complete; long polling waits and wakes" {
	spool_test send_receive_complete order_and_max wait
	assert_passed send_receive_complete order_and_max wait
}

@test "a duplicate id within the window is dropped, accepted after it; old ids are purged" {
	spool_test duplicate dup_purge
	assert_passed duplicate dup_purge
	assert_equal "$(event_field duplicate message_id)" img-1
}

@test "abandon and an expired lease raise the delivery count; a stale token settles nothing" {
	spool_test abandon lease_expiry
	assert_passed abandon lease_expiry
	assert_equal "$(event_field lease_expired delivery_count)" 1
}

@test "the last delivery's lease expiring or abandoned dead-letters with MaxDeliveryCountExceeded" {
	spool_test max_delivery abandon_at_limit dead_letter_lease
	assert_passed max_delivery abandon_at_limit dead_letter_lease
	assert_equal "$(event_field dead_lettered reason | sort -u)" MaxDeliveryCountExceeded
	assert_equal "$(event_field dead_lettered message_id | sort | tr '\n' ' ')" "m m1 poison-1 "
}

@test "renewing keeps a lease alive past its length" {
	spool_test renew
	assert_passed renew
}

@test "dead-letter queue: dead_letter, receive with the reason, abandon back, complete" {
	spool_test dead_letter
	assert_passed dead_letter
	assert_equal "$(event_field dead_lettered reason)" bad_image
}

@test "peek takes nothing and its receipts settle nothing" {
	spool_test peek
	assert_passed peek
}

@test "bad receipts and queue names are refused; an unusable spool is a system error" {
	spool_test bad_receipt open_errors system_error
	assert_passed bad_receipt open_errors system_error
}

@test "a damaged message file is moved aside; a crash's leftovers and a lost or stale counter are harmless" {
	spool_test corrupt crash_leftover counter
	assert_passed corrupt crash_leftover counter
	assert_equal "$(log_events "$stderr" | sort -u | tr '\n' ' ')" "spool_corrupt spool_counter "
	run ls "$BATS_TEST_TMPDIR/local/queues/corrupt/tmp"
	assert_output --regexp '^corrupt\.0000000000000000\.1\.[0-9a-f-]{36}\.[0-9]+$'
}

@test "processes racing: receivers, expiring leases and senders get each message exactly once" {
	spool_test concurrent_receivers concurrent_expiry concurrent_senders
	assert_passed concurrent_receivers concurrent_expiry concurrent_senders
	assert_line --regexp '^# receivers completed [0-9]+ and [0-9]+$'
	# leases did run out under the racers, or the test proved little
	[ "$(event_field lease_expired queue | grep -c '^expiry$')" -gt 0 ]
}

@test "directories are setgid and group-writable under umask 002" {
	spool_test permissions
	assert_passed permissions
}

@test "two users of one group share a spool through the programs" {
	[ "$(id -u)" -eq 0 ] || skip "needs root to act as a second user"
	local p=$BATS_TEST_TMPDIR msg
	# let nobody reach the test directory
	while [ "$p" != / ]; do
		[ -x "$p" ] && [ "$(stat -c %A "$p" | cut -c10)" != - ] || chmod o+x "$p"
		p=$(dirname "$p")
	done
	# and run copies of the programs: the build tree may be out of its reach
	mkdir -m 755 "$BATS_TEST_TMPDIR/bin"
	cp "$(command -v dq-enqueue)" "$(command -v dq-dequeue)" "$BATS_TEST_TMPDIR/bin/"
	mkdir -m 2770 "$DQ_LOCAL_DIR"
	chgrp nogroup "$DQ_LOCAL_DIR"
	msg='{"message":{"image_id":"IDX","ingested_at":"2026-11-28T10:00:00Z","metadata":{"product_sku":"WK-KN-200","facility":"yangjiang","source_blob":{"container":"raw-images","blob_name":"IDX.jpg"},"content_type":"image/jpeg","extra":{}},"image":{"size":1,"sha256":"00","width":1,"height":1}}}'
	for id in 11111111-1111-4111-8111-111111111111 22222222-2222-4222-8222-222222222222; do
		echo "${msg//IDX/$id}"
	done | (umask 002 && dq-enqueue) >/dev/null 2>&1
	echo "${msg//IDX/33333333-3333-4333-8333-333333333333}" >"$BATS_TEST_TMPDIR/third"
	chmod 644 "$BATS_TEST_TMPDIR/third"

	run --separate-stderr env PATH="$BATS_TEST_TMPDIR/bin:$PATH" \
		setpriv --reuid=nobody --regid=nogroup --clear-groups bash -c \
		'umask 002 && dq-enqueue <"$1" >/dev/null && dq-dequeue -n 1 -w 0 | dq-dequeue --settle' \
		- "$BATS_TEST_TMPDIR/third"
	assert_success
	assert_equal "$(jq -r .settled <<<"$output")" completed
	assert_equal "$(jq -r .message.image_id <<<"$output")" 11111111-1111-4111-8111-111111111111

	run --separate-stderr dq-dequeue -n 10 -w 0
	assert_success
	assert_equal "$(jq -r .message.image_id <<<"$output" | tr '\n' ' ')" \
		"22222222-2222-4222-8222-222222222222 33333333-3333-4333-8333-333333333333 "
	assert_equal "$(stat -c %G "$DQ_LOCAL_DIR/queues/defect-jobs/ready")" nogroup
}

@test "a FIFO, a directory or a link in ready/ is moved aside without blocking; the messages around it are delivered" {
	local msg ready
	msg='{"message":{"image_id":"IDX","ingested_at":"2026-11-28T10:00:00Z","metadata":{"product_sku":"WK-KN-200","facility":"yangjiang","source_blob":{"container":"raw-images","blob_name":"IDX.jpg"},"content_type":"image/jpeg","extra":{}},"image":{"size":1,"sha256":"00","width":1,"height":1}}}'
	for id in 11111111-1111-4111-8111-111111111111 22222222-2222-4222-8222-222222222222 \
		33333333-3333-4333-8333-333333333333; do
		echo "${msg//IDX/$id}"
	done | dq-enqueue >/dev/null 2>&1
	ready=$DQ_LOCAL_DIR/queues/defect-jobs/ready
	assert_equal "$(ls "$ready" | tr '\n' ' ')" "0000000000000001.0 0000000000000002.0 0000000000000003.0 "
	# the second replaced by a FIFO no one writes to, and a directory after the third
	rm "$ready/0000000000000002.0"
	mkfifo "$ready/0000000000000002.0"
	mkdir "$ready/0000000000000004.0"
	# and a symbolic link to the first: followed, it would be a second copy
	ln -s "$ready/0000000000000001.0" "$ready/0000000000000005.0"
	run --separate-stderr timeout -k 5 20 dq-dequeue --peek -n 10
	assert_success
	assert_equal "$(jq -r .message.image_id <<<"$output" | tr '\n' ' ')" \
		"11111111-1111-4111-8111-111111111111 33333333-3333-4333-8333-333333333333 "
	run --separate-stderr timeout -k 5 20 dq-dequeue -n 10 -w 0
	assert_success
	assert_equal "$(jq -r .message.image_id <<<"$output" | tr '\n' ' ')" \
		"11111111-1111-4111-8111-111111111111 33333333-3333-4333-8333-333333333333 "
	assert_equal "$(event_field spool_corrupt level | tr '\n' ' ')" "ERROR ERROR ERROR "
	run ls "$DQ_LOCAL_DIR/queues/defect-jobs/tmp"
	assert_line --regexp '^corrupt\.0000000000000002\.1\.[0-9a-f-]{36}\.[0-9]+$'
	assert_line --regexp '^corrupt\.0000000000000004\.1\.[0-9a-f-]{36}\.[0-9]+$'
	assert_line --regexp '^corrupt\.0000000000000005\.1\.[0-9a-f-]{36}\.[0-9]+$'
	local fifo=("$DQ_LOCAL_DIR"/queues/defect-jobs/tmp/corrupt.0000000000000002.*)
	[ "${#fifo[@]}" = 1 ] && [ -p "${fifo[0]}" ]
	assert_equal "$(find "$ready" "$DQ_LOCAL_DIR/queues/defect-jobs/locked" -mindepth 1 -maxdepth 1 -name '0*' | wc -l)" 2
}
