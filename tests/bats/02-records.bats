#!/usr/bin/env bats
# JSON Lines between the programs: pass-through, numbers, malformed input.

load helpers
load local # --print-config names the local store's directory

setup() {
	dq_env
}

@test "a float added by jq and unknown keys come out of each stage unchanged" {
	dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" 2>/dev/null |
		jq -c '. + {score: 0.1, tiny: 1e-7, note: {"ü": [1, 2.5, null]}}' |
		sed 's/}$/,"big":9007199254740993}/' >"$BATS_TEST_TMPDIR/in"
	run --separate-stderr bash -c 'dq-enqueue | dq-put' <"$BATS_TEST_TMPDIR/in"
	assert_success
	assert_equal "$(jq -c '{score, tiny, note}' <<<"$output")" '{"score":0.1,"tiny":1e-07,"note":{"ü":[1,2.5,null]}}'
	[[ "$output" == *'"score":0.1,'* ]]
	[[ "$output" == *'"big":9007199254740993'* ]]
	run --separate-stderr bash -c 'dq-dequeue | jq -c ". + {x: 0.1}" | dq-dequeue --settle'
	assert_success
	[[ "$output" == *'"x":0.1,'* ]]
}

@test "a line cut off mid-record is reported with its position and not acted on" {
	dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" "$FIXTURES/b.png" 2>/dev/null >"$BATS_TEST_TMPDIR/in"
	{ head -1 "$BATS_TEST_TMPDIR/in"; tail -1 "$BATS_TEST_TMPDIR/in" | head -c 100; } >"$BATS_TEST_TMPDIR/cut"
	run --separate-stderr dq-enqueue <"$BATS_TEST_TMPDIR/cut"
	assert_failure 65
	assert_equal "$(wc -l <<<"$output")" 1
	assert_equal "$(ready_count)" 1
	assert_equal "$(jq -r 'select(.event == "malformed") | "\(.input):\(.line)"' <<<"$stderr")" "<stdin>:2"
}

@test "duplicate keys, integers beyond int64 and non-objects are malformed records" {
	printf '%s\n' '{"a":1,"a":2}' '{"n":123456789012345678901234567890}' '[1]' 'nope' >"$BATS_TEST_TMPDIR/bad"
	run --separate-stderr dq-put <"$BATS_TEST_TMPDIR/bad"
	assert_failure 65
	assert_output ""
	assert_equal "$(jq -r 'select(.event == "malformed") | .line' <<<"$stderr" | tr '\n' ' ')" "1 2 3 4 "
}

@test "records with an error pass through a later stage untouched" {
	local rec='{"message":{"image_id":"x"},"error":{"stage":"analyze","code":"c","message":"m","retryable":true,"scope":"record"}}'
	run --separate-stderr dq-enqueue <<<"$rec"
	assert_success
	assert_json_equal "$output" "$rec"
	assert_equal "$(ready_count)" 0
}

@test "an invalid message is a record error, the next record still goes" {
	{ echo '{"message":{"image_id":"not-a-uuid"}}'; dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" 2>/dev/null; } >"$BATS_TEST_TMPDIR/in"
	run --separate-stderr dq-enqueue <"$BATS_TEST_TMPDIR/in"
	assert_failure 65
	assert_equal "$(head -1 <<<"$output" | jq -r .error.code)" bad_message
	assert_equal "$(tail -1 <<<"$output" | jq -r .enqueued.queue)" defect-jobs
}

@test "logs are JSON lines with ts, level, prog and event" {
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg"
	assert_success
	run jq -e -s 'all(.[]; (.ts|test("Z$")) and .level and .prog == "dq-put" and .event)' <<<"$stderr"
	assert_success
	assert_equal "$(jq -r .event <<<"$stderr" | tr '\n' ' ')" "backend stored "
}

@test "LOG_LEVEL=ERROR keeps info events out; a text format is used on request" {
	export LOG_LEVEL=ERROR
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg"
	assert_success
	assert_equal "$stderr" ""
	export LOG_LEVEL=INFO DQ_LOG_FORMAT=text
	run --separate-stderr dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/text.txt"
	assert_failure 65
	[[ "$stderr" == *"dq-put: store: local"* ]]
	[[ "$stderr" == *"dq-put: $FIXTURES/text.txt: not a JPEG, PNG or WebP image"* ]]
}

@test "--print-config shows what the program uses, then the variables it reads, secrets hidden" {
	export API_KEY=ops:s3cret-value AZURE_AI_API_KEY=another-secret
	run --separate-stderr dq-ingest --print-config
	assert_success
	assert_equal "$(jq -c '[keys_unsorted[], .store.backend, .queue.queue]' <<<"$output")" \
		"[\"program\",\"store\",\"queue\",\"variables\",\"$DQ_TEST_BACKEND\",\"defect-jobs\"]"
	# where the local store lives (only the local backends have a directory)
	if [ "$DQ_TEST_BACKEND" = local ]; then
		assert_equal "$(jq -c '[.store.dir, .store.credentials]' <<<"$output")" "[\"$(local_store_dir)\",\"none (local)\"]"
	fi
	assert_equal "$(jq -r .variables.AZURE_SERVICEBUS_QUEUE <<<"$output")" defect-jobs
	assert_equal "$(jq -r .variables.API_KEY <<<"$output")" "<set>"
	[[ "$output" != *s3cret* && "$output" != *another-secret* ]]
	# each program its own variables: dq-put has no queue and no ingest key
	run --separate-stderr dq-put --print-config
	assert_success
	assert_equal "$(jq -c '[has("queue"), has("analyzer"), (.variables | has("API_KEY"), has("AZURE_SERVICEBUS_QUEUE"), has("DQ_MAX_IMAGE_BYTES"))]' <<<"$output")" \
		'[false,false,false,false,true]'
}

@test "a bad configuration value exits 78 and says which" {
	export WORKER_MAX_DELIVERY_ATTEMPTS=zero
	run --separate-stderr dq-dequeue
	assert_failure 78
	[[ "$stderr" == *WORKER_MAX_DELIVERY_ATTEMPTS* ]]
}

@test "a broken stdout exits 74 in every program" {
	dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" 2>/dev/null >"$BATS_TEST_TMPDIR/in"
	run --separate-stderr sh -c 'dq-enqueue <"$1" >/dev/full' sh "$BATS_TEST_TMPDIR/in"
	assert_failure 74
	run --separate-stderr sh -c 'dq-dequeue >/dev/full'
	assert_failure 74
	run --separate-stderr sh -c 'dq-put --version >/dev/full'
	assert_failure 74
}

@test "a line over 16 MiB is a malformed record and the next line still counts" {
	dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" 2>/dev/null >"$BATS_TEST_TMPDIR/one"
	{ printf '{"pad":"'; head -c 17000000 /dev/zero | tr '\0' x; printf '"}\n'; cat "$BATS_TEST_TMPDIR/one"; } >"$BATS_TEST_TMPDIR/in"
	run --separate-stderr dq-enqueue <"$BATS_TEST_TMPDIR/in"
	assert_failure 65
	assert_equal "$(jq -r 'select(.event == "malformed") | "\(.line) \(.msg)"' <<<"$stderr")" "1 <stdin>:1: malformed record: line longer than 16 MiB"
	assert_equal "$(jq -r .enqueued.queue <<<"$output")" defect-jobs
}

@test "an unknown DQ_TEST_BACKEND fails every test at its set-up, naming the backends there are" {
	DQ_TEST_BACKEND=nope run --separate-stderr bats "$BATS_TEST_DIRNAME/25-options.bats"
	assert_failure
	assert_equal "$(grep -c '^not ok' <<<"$output") $(grep -c '^ok' <<<"$output")" "3 0"
	assert_equal "$(grep -c '# DQ_TEST_BACKEND=nope: no such test backend; the suites run on: local, azure, azure-blob, azure-servicebus$' <<<"$output")" 3
	assert_equal "$(grep -c "\`dq_env' failed" <<<"$output")" 3
}
