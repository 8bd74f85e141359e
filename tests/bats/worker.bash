# shellcheck shell=bash
# The worker suites' helpers: images sent, and what became of them.

# Every line of a log is one JSON object.
json_lines() {
	local bad
	bad=$(jq -R -r 'try (fromjson | objects | empty) catch .' "$1")
	[ -z "$bad" ] || fail "not JSON lines in $1: $bad"
}

# send N [SKU]: the first N samples stored and enqueued; their records in $BATS_TEST_TMPDIR/sent.
send() {
	local samples=("$S"/samples/*)
	dq-put --sku "${2:-WK-KN-200}" --facility yangjiang "${samples[@]:0:$1}" 2>/dev/null |
		tee "$BATS_TEST_TMPDIR/sent" | dq-enqueue >/dev/null 2>&1
}

# states: what GET tells of each image sent, counted: "N analyzed" etc.
states() {
	local id
	for id in $(jq -r .message.image_id "$BATS_TEST_TMPDIR/sent"); do
		image_state "$id" || return 1
	done | sort | uniq -c | sed 's/^ *//' | paste -sd ' '
}

# settled: "settled delivery_count" of each record the worker printed, sorted and counted.
settled() {
	jq -r '[.settled, .receipt.delivery_count] | join(" ")' <<<"$1" | sort | uniq -c | sed 's/^ *//'
}

# worker_ok: the last run succeeded; if not, show what was not routine.
# shellcheck disable=SC2154 # bats's run sets status and stderr
worker_ok() {
	[ "$status" -eq 0 ] && return
	grep -v '"level":"INFO"' <<<"$stderr" || true
	jq -c 'select(.prog == "dq-worker")' <<<"$stderr" || true
	assert_success
}

# processed_sums: the checksum of each image's artifact, as GET answers it.
processed_sums() {
	local id
	for id in $(jq -r .message.image_id "$BATS_TEST_TMPDIR/sent"); do
		echo "$id $(artifact "$id" | sha256sum)"
	done
}
