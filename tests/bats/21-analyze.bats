#!/usr/bin/env bats
# dq-analyze: the artifact's shape and determinism, --skip-existing,
# record errors and system errors, lock keeping, shutdown, terminal mode.

load helpers
load local # a marker's history and kept copies are seen in files only; faults put into raw blobs

setup() {
	dq_env
	reference_setup 21 -W 640 -H 480 --refs 3 --good 2 --defects 2
}

# put FILE...: message records of the files, stored under WK-KN-200.
put() {
	dq-put --sku "${SKU:-WK-KN-200}" --facility yangjiang "$@" 2>/dev/null
}

# strip_times: an artifact without its two time fields.
strip_times() {
	jq -c 'del(.timestamps.processed_at, .analysis.duration_ms)'
}

@test "an artifact has DESIGN's keys in DESIGN's order" {
	put "$S/samples/good-001.jpg" >"$BATS_TEST_TMPDIR/m"
	run --separate-stderr dq-analyze <"$BATS_TEST_TMPDIR/m"
	assert_success
	assert_equal "$(jq -c '.artifact | keys_unsorted' <<<"$output")" \
		'["image_id","timestamps","metadata","defect_findings","model_version","analysis"]'
	assert_equal "$(jq -c '.artifact.timestamps | keys_unsorted' <<<"$output")" '["ingested_at","processed_at"]'
	assert_equal "$(jq -c '.artifact.defect_findings | keys_unsorted' <<<"$output")" \
		'["defect_detected","defect_type","severity","description","confidence","bounding_boxes"]'
	assert_equal "$(jq -c '.artifact.analysis | keys_unsorted | [first, .[-2], last]' <<<"$output")" \
		'["analyzer","image","duration_ms"]'
	assert_equal "$(jq -c '.artifact.analysis.image | keys_unsorted' <<<"$output")" '["sha256","width","height"]'
	# what it copies from the message, it copies exactly, in the message's order
	assert_json_equal "$(jq -c '.artifact.metadata' <<<"$output")" "$(jq -c .message.metadata "$BATS_TEST_TMPDIR/m")"
	assert_equal "$(jq -c '.artifact.metadata | keys_unsorted' <<<"$output")" \
		'["product_sku","facility","source_blob","content_type","file_name","extra"]'
	assert_equal "$(jq -r '.artifact.metadata.file_name' <<<"$output")" good-001.jpg
	assert_equal "$(jq -r '.artifact | [.image_id, .timestamps.ingested_at, .analysis.image.sha256, .analysis.image.width, .analysis.image.height, .analysis.analyzer] | join(" ")' <<<"$output")" \
		"$(jq -r '.message | [.image_id, .ingested_at, .image.sha256, 640, 480, "reference"] | join(" ")' "$BATS_TEST_TMPDIR/m")"
	[[ "$(jq -r .artifact.timestamps.processed_at <<<"$output")" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$ ]]
	assert_equal "$(jq -r '.artifact.defect_findings | [.defect_detected, .defect_type, .severity] | join(" ")' <<<"$output")" "false none none"
	assert_equal "$(jq -r '.artifact.analysis.duration_ms | type' <<<"$output")" number
	# the record keeps its other keys
	assert_json_equal "$(jq -c 'del(.artifact)' <<<"$output")" "$(cat "$BATS_TEST_TMPDIR/m")"
}

@test "the same message analyzed twice gives the same bytes apart from the time fields" {
	local f
	f=$(printf '%s\n' "$S"/samples/*.jpg | grep -v good | head -1)
	put "$f" >"$BATS_TEST_TMPDIR/m"
	run --separate-stderr bash -c 'cat "$1" "$1" | dq-analyze -j 2' _ "$BATS_TEST_TMPDIR/m"
	assert_success
	assert_equal "$(wc -l <<<"$output")" 2
	assert_equal "$(jq -r .artifact.defect_findings.defect_detected <<<"$output" | sort -u)" true
	assert_equal "$(strip_times <<<"$(jq -c .artifact <<<"$output")" | sort -u | wc -l)" 1
	# and a third run, in another process, agrees byte for byte
	run --separate-stderr dq-analyze <"$BATS_TEST_TMPDIR/m"
	assert_success
	assert_equal "$(jq -c .artifact <<<"$output" | strip_times)" "$(jq -c .artifact <<<"$(head -1 <<<"$output")" | strip_times)"
}

@test "an image whose SKU has no reference is a permanent record error naming the directory" {
	SKU=WK-KN-999 put "$S/samples/good-001.jpg" >"$BATS_TEST_TMPDIR/m"
	run --separate-stderr dq-analyze <"$BATS_TEST_TMPDIR/m"
	assert_failure 65
	assert_equal "$(jq -r '.error | [.stage, .code, .retryable, .scope] | join(" ")' <<<"$output")" "analyze no_reference false record"
	assert_regex "$(jq -r .error.message <<<"$output")" "$DQ_REFERENCE_DIR/WK-KN-999"
	assert_equal "$(jq -r .artifact <<<"$output")" null
}

@test "a permanent error leaves a failure marker and a later delivery is skipped as failed, unanalyzed" {
	SKU=WK-KN-999 put "$S/samples/good-001.jpg" >"$BATS_TEST_TMPDIR/m"
	local id
	id=$(jq -r .message.image_id "$BATS_TEST_TMPDIR/m")
	run --separate-stderr bash -c 'set -o pipefail; dq-analyze --skip-existing <"$1" | dq-put' _ "$BATS_TEST_TMPDIR/m"
	assert_failure 65
	assert_equal "$(jq -r .stored.blob_name <<<"$output")" "$id.error.json"
	assert_equal "$(failure "$id" | jq -r .error.code)" no_reference
	# a record without a receipt has no message id: any marker answers for it
	run --separate-stderr dq-analyze --skip-existing <"$BATS_TEST_TMPDIR/m"
	assert_success
	assert_equal "$(jq -c '[.skipped.reason, .skipped.error.code]' <<<"$output")" '["failed","no_reference"]'
	assert_equal "$(jq -r .error <<<"$output")" null
	refute_regex "$(log_events "$stderr")" 'analyz'
}

@test "a marker answers for the message that failed; a message sent anew is analyzed again and added to its history" {
	SKU=WK-KN-999 put "$S/samples/good-001.jpg" | dq-enqueue >/dev/null 2>&1
	dq-dequeue 2>/dev/null >"$BATS_TEST_TMPDIR/first"
	local id mid
	id=$(jq -r .message.image_id "$BATS_TEST_TMPDIR/first")
	mid=$(jq -r .receipt.message_id "$BATS_TEST_TMPDIR/first")
	dq-analyze --skip-existing <"$BATS_TEST_TMPDIR/first" 2>/dev/null | dq-put >/dev/null 2>&1 || true
	# the same message again (a redelivery): no model call, the real reason
	run --separate-stderr dq-analyze --skip-existing <"$BATS_TEST_TMPDIR/first"
	assert_success
	assert_equal "$(jq -c '[.skipped.reason, .skipped.error.code]' <<<"$output")" '["failed","no_reference"]'
	refute_regex "$(log_events "$stderr")" 'analyz'
	# sent again deliberately, under a new message id: analyzed again
	dq-put --stored "$id" 2>/dev/null | dq-enqueue --new-id >/dev/null 2>&1
	dq-dequeue -w 1 2>/dev/null >"$BATS_TEST_TMPDIR/second"
	local mid2
	mid2=$(jq -r .receipt.message_id "$BATS_TEST_TMPDIR/second")
	[ "$mid2" != "$mid" ]
	run --separate-stderr bash -c 'set -o pipefail; dq-analyze --skip-existing <"$1" | dq-put' _ "$BATS_TEST_TMPDIR/second"
	assert_failure 65
	assert_equal "$(jq -r .skipped <<<"$output")" null
	assert_equal "$(jq -r '[.error.code, .stored.blob_name] | join(" ")' <<<"$output")" "no_reference $id.error.json"
	assert_equal "$(log_events "$stderr" | grep -c '^analyze_failed$')" 1
	assert_equal "$(failure "$id" | jq -r '[.error.code, .attempts] | join(" ")')" "no_reference 1"
	# the history: both failures, the first one's reason kept (no program
	# prints a marker's history: read in the local store's file)
	if local_backend; then
		assert_equal "$(local_marker "$id" | jq -r '.failures | map([.message_id, .error.code, (.attempts | tostring)] | join(" ")) | join(",")')" \
			"$mid no_reference 1,$mid2 no_reference 1"
		assert_equal "$(local_marker "$id" | jq -r '[.message_id, .error.code] | join(" ")')" "$mid2 no_reference"
	fi
	# dq-put again on the same failure adds nothing
	run --separate-stderr bash -c 'dq-analyze <"$1" | dq-put' _ "$BATS_TEST_TMPDIR/second"
	assert_equal "$(jq -r .stored.existing <<<"$output")" true
	if local_backend; then
		assert_equal "$(local_marker "$id" | jq '.failures | length')" 2
	fi
}

@test "no failure marker for what is not the image's fault: lock_lost, shutdown, raw_missing, an outage on the last delivery" {
	export WORKER_MAX_DELIVERY_ATTEMPTS=2
	put "$S/samples/good-001.jpg" | jq -c '. + {receipt: {backend: "local", queue: "defect-jobs", message_id: .message.image_id, delivery_count: 2}}' >"$BATS_TEST_TMPDIR/r"
	local code
	for code in lock_lost shutdown raw_missing; do
		jq -c --arg c "$code" '. + {error: {stage: "analyze", code: $c, message: "m", retryable: true, scope: "record"}}' \
			"$BATS_TEST_TMPDIR/r" >"$BATS_TEST_TMPDIR/e"
		run --separate-stderr dq-put <"$BATS_TEST_TMPDIR/e"
		assert_success
		assert_json_equal "$output" "$(cat "$BATS_TEST_TMPDIR/e")"
	done
	# nor for a backend outage (an HTTP status of 408, 429 or 5xx), whatever its code
	jq -c '. + {error: {stage: "analyze", code: "model_error", message: "m", retryable: true, scope: "record", http_status: 503}}' \
		"$BATS_TEST_TMPDIR/r" >"$BATS_TEST_TMPDIR/e"
	run --separate-stderr dq-put <"$BATS_TEST_TMPDIR/e"
	assert_success
	assert_json_equal "$output" "$(cat "$BATS_TEST_TMPDIR/e")"
	assert_equal "$(image_state "$(jq -r .message.image_id "$BATS_TEST_TMPDIR/r")")" pending
	# the image's own retryable failure on its last delivery is marked
	jq -c '. + {error: {stage: "analyze", code: "bad_findings", message: "m", retryable: true, scope: "record"}}' \
		"$BATS_TEST_TMPDIR/r" >"$BATS_TEST_TMPDIR/e"
	run --separate-stderr dq-put <"$BATS_TEST_TMPDIR/e"
	assert_success
	assert_regex "$(jq -r .stored.blob_name <<<"$output")" '\.error\.json$'
}

@test "a missing raw image is retryable, never marked, and dead-lettered as raw_missing at the limit" {
	export WORKER_MAX_DELIVERY_ATTEMPTS=1
	# the message of an image that was never stored: another id, no blob
	local id
	id=$(cat /proc/sys/kernel/random/uuid)
	put "$S/samples/good-001.jpg" | jq -c --arg id "$id" '.message.image_id = $id |
		.message.metadata.source_blob.blob_name = $id + ".jpg"' | dq-enqueue >/dev/null 2>&1
	run --separate-stderr bash -c 'dq-dequeue | dq-analyze --skip-existing | dq-put | dq-dequeue --settle --require stored'
	assert_success
	assert_equal "$(jq -r '[.message.image_id, .error.code, .error.retryable, .stored, .settled] | join(" ")' <<<"$output")" \
		"$id raw_missing true  dead-lettered"
	assert_equal "$(image_state "$id")" absent
	assert_equal "$(analyzed_count)" 0
	run --separate-stderr dq-dequeue --dead-letter --peek -w 0
	assert_equal "$(jq -r .receipt.dead_letter_reason <<<"$output")" raw_missing
}

@test "reprocessing: a request older than the artifact is skipped, a newer one analyzed; --replace keeps what it replaced" {
	put "$S/samples/good-001.jpg" >"$BATS_TEST_TMPDIR/m"
	local id
	id=$(jq -r .message.image_id "$BATS_TEST_TMPDIR/m")
	dq-analyze <"$BATS_TEST_TMPDIR/m" 2>/dev/null | dq-put >/dev/null 2>&1
	artifact "$id" >"$BATS_TEST_TMPDIR/old.json"
	# already done after the request: a redelivery of it costs nothing
	jq -c '.message.reprocess = {requested_at: "2020-01-01T00:00:00Z"}' "$BATS_TEST_TMPDIR/m" >"$BATS_TEST_TMPDIR/old-req"
	run --separate-stderr dq-analyze --skip-existing <"$BATS_TEST_TMPDIR/old-req"
	assert_success
	assert_equal "$(jq -r .skipped.reason <<<"$output")" processed
	# a request newer than the artifact: analyzed, and dq-put replaces
	jq -c '.message.reprocess = {requested_at: "2099-01-01T00:00:00Z"}' "$BATS_TEST_TMPDIR/m" >"$BATS_TEST_TMPDIR/new-req"
	run --separate-stderr bash -c 'dq-analyze --skip-existing <"$1" | dq-put' _ "$BATS_TEST_TMPDIR/new-req"
	assert_success
	assert_equal "$(jq -r '[.skipped, .stored.blob_name, .stored.existing] | join(" ")' <<<"$output")" " $id.json "
	assert_json_equal "$(artifact "$id")" "$(jq -c .artifact <<<"$output")"
	# the replaced artifact is kept as <id>.<time>.json
	local kept
	kept=$(jq -r 'select(.event == "artifact_kept") | .blob' <<<"$stderr")
	assert_regex "$kept" "^$id\.[0-9]{8}T[0-9]{9}Z\.json\$"
	# byte for byte (no program reads a kept copy: read in the local store)
	if local_backend; then
		assert_equal "$(local_blob_count processed-images)" 2
		cmp "$(local_blob processed-images "$kept")" "$BATS_TEST_TMPDIR/old.json"
	fi
	# dq-put --stored lists no image that has an artifact, --stored --all each image once
	run --separate-stderr dq-put --stored
	assert_success
	assert_output ""
	run --separate-stderr dq-put --stored --all
	assert_success
	assert_equal "$(jq -r .message.image_id <<<"$output")" "$id"
	run --separate-stderr dq-put --stored --all "$id"
	assert_failure 64
	# dq-put --replace keeps what it replaces the same way
	run --separate-stderr bash -c 'dq-analyze --force <"$1" | dq-put --replace' _ "$BATS_TEST_TMPDIR/m"
	assert_success
	assert_regex "$(jq -r 'select(.event == "artifact_kept") | .blob' <<<"$stderr")" "^$id\.[0-9]{8}T[0-9]{9}Z\.json\$"
	if local_backend; then
		assert_equal "$(local_blob_count processed-images)" 3
	fi
}

@test "--skip-existing finds the artifact and calls no analyzer; --force analyzes anyway" {
	put "$S/samples/good-001.jpg" >"$BATS_TEST_TMPDIR/m"
	dq-analyze <"$BATS_TEST_TMPDIR/m" 2>/dev/null | dq-put >/dev/null 2>&1
	run --separate-stderr dq-analyze --skip-existing <"$BATS_TEST_TMPDIR/m"
	assert_success
	assert_equal "$(jq -c .skipped <<<"$output")" '{"reason":"processed"}'
	assert_equal "$(jq -r .artifact <<<"$output")" null
	assert_equal "$(log_events "$stderr" | grep -c '^analyzed$')" 0
	assert_equal "$(log_events "$stderr" | grep -c '^skipped$')" 1
	run --separate-stderr dq-analyze --skip-existing --force <"$BATS_TEST_TMPDIR/m"
	assert_success
	assert_equal "$(jq -r .skipped <<<"$output")" null
	assert_equal "$(jq -r .artifact.image_id <<<"$output")" "$(jq -r .message.image_id "$BATS_TEST_TMPDIR/m")"
}

@test "an image that differs from the message's checksum is a permanent record error" {
	put "$S/samples/good-001.jpg" | jq -c '.message.image.sha256 = ("0" * 64)' >"$BATS_TEST_TMPDIR/m"
	run --separate-stderr dq-analyze <"$BATS_TEST_TMPDIR/m"
	assert_failure 65
	assert_equal "$(jq -r '.error | [.code, .retryable] | join(" ")' <<<"$output")" "checksum_mismatch false"
}

@test "records with an error or without a message pass through untouched, and count for nothing" {
	local e='{"message":{"image_id":"x"},"error":{"stage":"put","code":"c","message":"m","retryable":false,"scope":"record"},"z":[1,0.1]}'
	local o='{"file":"a.jpg","other":{"k":true}}'
	run --separate-stderr dq-analyze <<<"$e"$'\n'"$o"
	assert_success
	assert_equal "$output" "$e"$'\n'"$o"
}

@test "a malformed message is a record error; a malformed line is reported with its position" {
	run --separate-stderr dq-analyze <<<'{"message":{"image_id":"nope"}}'$'\n''{"message":'
	assert_failure 65
	assert_equal "$(jq -r .error.code <<<"$output")" bad_message
	assert_regex "$stderr" '<stdin>:2'
}

@test "a message whose metadata.file_name is not a string is a record error" {
	put "$S/samples/good-001.jpg" | jq -c '.message.metadata.file_name = 7' >"$BATS_TEST_TMPDIR/m"
	run --separate-stderr dq-analyze <"$BATS_TEST_TMPDIR/m"
	assert_failure 65
	assert_equal "$(jq -r '.error.code, (.artifact | type)' <<<"$output" | tr '\n' ' ')" "bad_message null "
	[[ "$(jq -r .error.message <<<"$output")" == *file_name* ]]
}

@test "a misconfigured analyzer is a system error: exit 78, no record emitted" {
	put "$S/samples/good-001.jpg" "$S/samples/good-002.jpg" >"$BATS_TEST_TMPDIR/m"
	mkdir -p "$BATS_TEST_TMPDIR/ref"
	cp -r "$S/reference/WK-KN-200" "$BATS_TEST_TMPDIR/ref/"
	echo '{"k": "high"}' >"$BATS_TEST_TMPDIR/ref/WK-KN-200/reference.json"
	DQ_REFERENCE_DIR=$BATS_TEST_TMPDIR/ref run --separate-stderr dq-analyze -j 2 <"$BATS_TEST_TMPDIR/m"
	assert_failure 78
	assert_output ""
	assert_equal "$(log_events "$stderr" | grep -c system_error)" 1
	assert_regex "$stderr" 'reference.json'
}

@test "--check asks the store and the analyzer: 0, or 78 before touching any record" {
	run --separate-stderr dq-analyze --check
	assert_success
	assert_output ""
	# a regular file where the reference directory should be (works as root too)
	touch "$BATS_TEST_TMPDIR/not-a-dir"
	DQ_REFERENCE_DIR=$BATS_TEST_TMPDIR/not-a-dir run --separate-stderr dq-analyze --check
	assert_failure 78
	assert_equal "$(log_events "$stderr" | tail -1)" check_failed
	unset DQ_REFERENCE_DIR DQ_ANALYZER
	run --separate-stderr dq-analyze --check
	assert_failure 78
	assert_regex "$stderr" 'no analyzer configured'
}

# check_msg STDERR: the message of the check_failed or system_error log line.
check_msg() {
	jq -r 'select(.event == "check_failed" or .event == "system_error") | "\(.code): \(.msg)"' <<<"$1"
}

@test "--check refuses a reference directory without a SKU: too deep, empty, /etc, missing (78, what it found and expected)" {
	local t=$BATS_TEST_TMPDIR
	mkdir "$t/empty"
	DQ_REFERENCE_DIR=$S/reference/WK-KN-200 run --separate-stderr dq-analyze --check
	assert_failure 78
	assert_output ""
	assert_regex "$(check_msg "$stderr")" "^bad_reference_dir: DQ_REFERENCE_DIR $S/reference/WK-KN-200 holds images \(ref-0[123]\.png, \.\.\.\) but no SKU directory \(one level too deep\?\): expected $S/reference/WK-KN-200/<SKU>/<images>; point it at its parent$"
	DQ_REFERENCE_DIR=$t/empty run --separate-stderr dq-analyze --check
	assert_failure 78
	assert_equal "$(check_msg "$stderr")" "bad_reference_dir: DQ_REFERENCE_DIR $t/empty holds no SKU directory: expected $t/empty/<SKU>/<images>"
	DQ_REFERENCE_DIR=/etc run --separate-stderr dq-analyze --check
	assert_failure 78
	assert_regex "$(check_msg "$stderr")" '^bad_reference_dir: DQ_REFERENCE_DIR /etc holds [0-9]+ director(y|ies) but none with PNG, JPEG or WebP images: expected /etc/<SKU>/<images>$'
	DQ_REFERENCE_DIR=$t/missing run --separate-stderr dq-analyze --check
	assert_failure 78
	assert_regex "$(check_msg "$stderr")" "^reference_unreadable: DQ_REFERENCE_DIR $t/missing: No such file or directory; expected .*$t/missing/<SKU>/<images>$"
	# a SKU directory without images does not make a SKU either
	mkdir -p "$t/notes/WK-KN-200"
	touch "$t/notes/WK-KN-200/readme.txt"
	DQ_REFERENCE_DIR=$t/notes run --separate-stderr dq-analyze --check
	assert_failure 78
	assert_regex "$(check_msg "$stderr")" 'holds 1 directory but none with PNG, JPEG or WebP images'
}

@test "records with a reference directory one level too deep stop the stage (78) instead of failing one by one" {
	put "$S/samples/good-001.jpg" "$S/samples/good-002.jpg" >"$BATS_TEST_TMPDIR/m"
	DQ_REFERENCE_DIR=$S/reference/WK-KN-200 run --separate-stderr dq-analyze <"$BATS_TEST_TMPDIR/m"
	assert_failure 78
	assert_output ""
	assert_regex "$(check_msg "$stderr")" '^bad_reference_dir: .*one level too deep'
	refute_regex "$stderr" 'no_reference'
}

@test "--check refuses a cache directory that cannot be written, and creates nothing" {
	local t=$BATS_TEST_TMPDIR
	touch "$t/file"
	DQ_CACHE_DIR=$t/file run --separate-stderr dq-analyze --check
	assert_failure 78
	assert_equal "$(check_msg "$stderr")" "cache_unwritable: DQ_CACHE_DIR $t/file: $t/file is not a directory; expected a directory the reference models can be written to"
	DQ_CACHE_DIR=$t/file/models run --separate-stderr dq-analyze --check
	assert_failure 78
	assert_regex "$(check_msg "$stderr")" "^cache_unwritable: DQ_CACHE_DIR $t/file/models: .*Not a directory"
	# one that does not exist yet is fine when it can be made, and is not made
	DQ_CACHE_DIR=$t/new/cache run --separate-stderr dq-analyze --check
	assert_success
	[ ! -e "$t/new" ]
}

@test "terminal mode without --sku says the real cause: no analyzer, a bad reference directory, an analyzer not configured" {
	local f=$S/samples/good-001.jpg t=$BATS_TEST_TMPDIR
	no_backend
	DQ_REFERENCE_DIR=$S/reference/WK-KN-200 run --separate-stderr dq-analyze "$f"
	assert_failure 78
	assert_output ""
	assert_regex "$(check_msg "$stderr")" '^bad_reference_dir: .*one level too deep'
	DQ_REFERENCE_DIR=$t/missing run --separate-stderr dq-analyze "$f"
	assert_failure 78
	assert_regex "$(check_msg "$stderr")" "^reference_unreadable: DQ_REFERENCE_DIR $t/missing: No such file or directory"
	DQ_ANALYZER=azure-openai run --separate-stderr dq-analyze "$f"
	assert_failure 78
	assert_equal "$(check_msg "$stderr")" "config: AZURE_AI_PROJECT_ENDPOINT is not set"
	(
		unset DQ_REFERENCE_DIR DQ_ANALYZER
		run --separate-stderr dq-analyze "$f"
		assert_failure 78
		assert_regex "$(check_msg "$stderr")" '^config: no analyzer configured'
	)
	# two SKUs: then --sku is what is missing
	mkdir -p "$t/two"
	cp -r "$S/reference/WK-KN-200" "$t/two/A"
	cp -r "$S/reference/WK-KN-200" "$t/two/B"
	DQ_REFERENCE_DIR=$t/two run --separate-stderr dq-analyze "$f"
	assert_failure 64
	assert_output ""
	assert_regex "$stderr" '--sku is required: DQ_REFERENCE_DIR holds more than one SKU'
}

@test "a lock that cannot be renewed is never analyzed: retryable lock_lost" {
	put "$S/samples/good-001.jpg" | dq-enqueue >/dev/null 2>&1
	# a receipt whose lock is gone: another token, expired
	dq-dequeue 2>/dev/null | jq -c '.receipt.lock_token = "stale" | .receipt.locked_until = "2020-01-01T00:00:00.000Z"' >"$BATS_TEST_TMPDIR/r"
	LOG_LEVEL=DEBUG run --separate-stderr dq-analyze <"$BATS_TEST_TMPDIR/r"
	assert_failure 75
	assert_equal "$(jq -r '.error | [.code, .retryable] | join(" ")' <<<"$output")" "lock_lost true"
	refute_regex "$(log_events "$stderr")" 'analyzing|analyzed'
}

@test "a lock is renewed while the analysis outlasts the lease" {
	put "$S/samples/good-001.jpg" | dq-enqueue >/dev/null 2>&1
	export DQ_LOCK_SECONDS=1 DQ_TEST_ANALYZE_DELAY_MS=2500
	dq-dequeue 2>/dev/null >"$BATS_TEST_TMPDIR/r"
	LOG_LEVEL=DEBUG run --separate-stderr dq-analyze <"$BATS_TEST_TMPDIR/r"
	assert_success
	[ "$(log_events "$stderr" | grep -c '^renewed$')" -ge 3 ]
	# the receipt it passes on is the live one: settling it works
	run --separate-stderr dq-dequeue --settle <<<"$output"
	assert_success
	assert_equal "$(jq -r '[.settled, .receipt.delivery_count] | join(" ")' <<<"$output")" "completed 1"
}

@test "SIGTERM: analyses in flight finish, records not started pass on as retryable shutdown" {
	put "$S"/samples/good-00[12].jpg "$S"/samples/good-001.jpg >"$BATS_TEST_TMPDIR/m"
	export DQ_TEST_ANALYZE_DELAY_MS=1500 LOG_LEVEL=DEBUG
	mkfifo "$BATS_TEST_TMPDIR/in"
	dq-analyze -j 1 <"$BATS_TEST_TMPDIR/in" >"$BATS_TEST_TMPDIR/out" 2>"$BATS_TEST_TMPDIR/err" &
	local pid=$!
	local fd
	exec {fd}>"$BATS_TEST_TMPDIR/in"
	cat "$BATS_TEST_TMPDIR/m" >&$fd
	wait_for 10 grep -q '"analyzing"' "$BATS_TEST_TMPDIR/err"
	kill -TERM $pid
	local st=0
	wait $pid || st=$?
	exec {fd}>&-
	assert_equal "$st" 75
	run sort <<<"$(jq -r 'if .artifact then "artifact" else .error.code + " " + (.error.retryable | tostring) end' "$BATS_TEST_TMPDIR/out")"
	assert_output $'artifact\nshutdown true\nshutdown true'
}

@test "--annotate writes a PNG of each image with its boxes" {
	put "$S/samples/good-001.jpg" >"$BATS_TEST_TMPDIR/m"
	mkdir "$BATS_TEST_TMPDIR/ann"
	run --separate-stderr dq-analyze --annotate "$BATS_TEST_TMPDIR/ann" <"$BATS_TEST_TMPDIR/m"
	assert_success
	local id
	id=$(jq -r .message.image_id "$BATS_TEST_TMPDIR/m")
	assert_equal "$(jq -r .annotation <<<"$output")" "$BATS_TEST_TMPDIR/ann/$id.png"
	assert_equal "$(head -c 8 "$BATS_TEST_TMPDIR/ann/$id.png" | od -An -tx1 | tr -d ' ')" 89504e470d0a1a0a
}

@test "terminal mode: one record per file with file and artifact, touching no store" {
	no_backend
	local bad=$BATS_TEST_TMPDIR/missing.jpg
	run --separate-stderr dq-analyze --sku WK-KN-200 "$S/samples/good-001.jpg" "$bad"
	assert_failure 66
	assert_equal "$(wc -l <<<"$output")" 2
	assert_equal "$(head -1 <<<"$output" | jq -r '[.file, .artifact.metadata.product_sku, .artifact.defect_findings.defect_detected] | join(" ")')" \
		"$S/samples/good-001.jpg WK-KN-200 false"
	assert_equal "$(tail -1 <<<"$output" | jq -r '[.file, .error.code] | join(" ")')" "$bad no_such_file"
	# the only SKU under DQ_REFERENCE_DIR is the default; the id is the content's
	run --separate-stderr dq-analyze "$S/samples/good-001.jpg"
	assert_success
	assert_equal "$(jq -r .artifact.metadata.product_sku <<<"$output")" WK-KN-200
	local id
	id=$(jq -r .artifact.image_id <<<"$output")
	run --separate-stderr dq-analyze "$S/samples/good-001.jpg"
	assert_equal "$(jq -r .artifact.image_id <<<"$output")" "$id"
}

@test "terminal mode: a truncated or corrupt image is an error record, exit 65, never a finding" {
	no_backend
	local scan=$BATS_TEST_TMPDIR/scan.jpg cut=$BATS_TEST_TMPDIR/cut.jpg
	"$BATS_TEST_DIRNAME/corrupt.py" jpeg-scan "$S/samples/good-001.jpg" >"$scan"
	"$BATS_TEST_DIRNAME/corrupt.py" jpeg-cut "$S/samples/good-001.jpg" >"$cut"
	run --separate-stderr dq-analyze --sku WK-KN-200 "$FIXTURES/truncated.jpg" "$scan" "$cut" "$S/samples/good-001.jpg"
	assert_failure 65
	assert_equal "$(jq -r '[.file, .error.code, .error.retryable, .artifact.defect_findings.defect_detected] | map(tostring) | join(" ")' <<<"$output")" \
		"$FIXTURES/truncated.jpg truncated_image false null
$scan corrupt_image false null
$cut corrupt_image false null
$S/samples/good-001.jpg null null false"
	assert_regex "$(sed -n 2p <<<"$output" | jq -r .error.message)" '^JPEG: Corrupt JPEG data'
	assert_equal "$(jq -r 'select(.event == "analyze_failed") | .code' <<<"$stderr" | tr '\n' ' ')" "truncated_image corrupt_image corrupt_image "
}

@test "terminal mode: a directory or a FIFO given as a file is refused at once with 66" {
	no_backend
	mkdir "$BATS_TEST_TMPDIR/dir.jpg"
	mkfifo "$BATS_TEST_TMPDIR/fifo.jpg"
	run --separate-stderr timeout -k 5 20 dq-analyze --sku WK-KN-200 "$BATS_TEST_TMPDIR/dir.jpg" "$BATS_TEST_TMPDIR/fifo.jpg" "$S/samples/good-001.jpg"
	assert_failure 66
	assert_equal "$(jq -r '[.error.code // "-", .error.message // .artifact.defect_findings.defect_type] | join(": ")' <<<"$output")" \
		"not_a_file: a directory, not a regular file
not_a_file: a FIFO, not a regular file
-: none"
}

@test "record mode: a stored raw image that is corrupt inside is a permanent error, not analyzed" {
	# A raw image stored before the validation decoded: put a good one, then
	# spoil its bytes in the local store and its message's checksum with them.
	local_only "a raw image's bytes spoilt in its file"
	put "$S/samples/good-001.jpg" >"$BATS_TEST_TMPDIR/m"
	local blob sha
	blob=$(local_blob raw-images "$(jq -r .message.metadata.source_blob.blob_name "$BATS_TEST_TMPDIR/m")")
	"$BATS_TEST_DIRNAME/corrupt.py" jpeg-scan "$S/samples/good-001.jpg" >"$blob"
	sha=$(sha256sum "$blob" | cut -d' ' -f1)
	jq -c --arg s "$sha" '.message.image.sha256 = $s' "$BATS_TEST_TMPDIR/m" >"$BATS_TEST_TMPDIR/m2"
	run --separate-stderr dq-analyze <"$BATS_TEST_TMPDIR/m2"
	assert_failure 65
	assert_equal "$(jq -r '[.error.stage, .error.code, .error.retryable, .error.scope] | join(" ")' <<<"$output")" "analyze corrupt_image false record"
	assert_equal "$(jq -r .artifact <<<"$output")" null
	refute_regex "$(log_events "$stderr")" 'analyzed'
}

@test "record mode: a raw blob that is a FIFO in the local store is a record error, not a hang" {
	local_only "a FIFO where a raw image's file goes"
	put "$S/samples/good-001.jpg" "$S/samples/good-002.jpg" >"$BATS_TEST_TMPDIR/m"
	local blob
	blob=$(local_blob raw-images "$(head -1 "$BATS_TEST_TMPDIR/m" | jq -r .message.metadata.source_blob.blob_name)")
	rm "$blob"
	mkfifo "$blob"
	run --separate-stderr timeout -k 5 20 dq-analyze <"$BATS_TEST_TMPDIR/m"
	assert_failure 65
	assert_equal "$(head -1 <<<"$output" | jq -r '[.error.code, .error.scope] | join(" ")')" "bad_blob record"
	assert_regex "$(head -1 <<<"$output" | jq -r .error.message)" 'is not a regular file$'
	assert_equal "$(tail -1 <<<"$output" | jq -r .artifact.defect_findings.defect_type)" none
}

@test "usage errors exit 64; a broken stdout exits 74" {
	run --separate-stderr dq-analyze -j 0
	assert_failure 64
	run --separate-stderr dq-analyze -j 2 "$S/samples/good-001.jpg"
	assert_failure 64
	run --separate-stderr dq-analyze --sku WK-KN-200
	assert_failure 64
	run --separate-stderr dq-analyze --bogus
	assert_failure 64
	assert_regex "$stderr" 'usage: dq-analyze'
	run --separate-stderr dq-analyze -h
	assert_success
	assert_line --index 0 --regexp '^usage: dq-analyze \[-j N\]'
	put "$S/samples/good-001.jpg" >"$BATS_TEST_TMPDIR/m"
	run --separate-stderr bash -c 'dq-analyze <"$1" >/dev/full' _ "$BATS_TEST_TMPDIR/m"
	assert_failure 74
}
