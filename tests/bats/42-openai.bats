#!/usr/bin/env bats
# The azure-openai analyzer against the strict fake (tests/fakes/openai.py):
# artifacts that match the schema with the response's model name, boxes on
# the stored image's pixels, fail-closed answers, and the system errors
# that stop the stage.

load helpers
load worker
load fakes

setup() {
	dq_env
	reference_setup 42 -W 160 -H 120 --refs 1 --good 50 --defects 0
	export DQ_WORKER_WAIT_SECONDS=0.2
	export DQ_ANALYZER=azure-openai AZURE_AI_API_KEY=k3y-S3CRET-openai FAKE_OPENAI_KEY=k3y-S3CRET-openai
	unset DQ_REFERENCE_DIR
}

teardown() {
	fakes_stop
}

# openai_start [SCRIPT-JSON]: the fake, and the analyzer pointed at it.
openai_start() {
	local dir=$BATS_TEST_TMPDIR/fake-openai
	mkdir -p "$dir"
	rm -f "$dir/port"
	printf '%s\n' "${1:-{\}}" >"$dir/script.json"
	python3 "$FAKES/openai.py" --port-file "$dir/port" --stats-file "$dir/stats" \
		--script "$dir/script.json" >"$dir/out" 2>"$dir/err" &
	echo $! >"$dir/pid"
	wait_for 10 test -s "$dir/port" || fail "the openai fake did not start: $(cat "$dir/err")"
	export AZURE_AI_PROJECT_ENDPOINT
	AZURE_AI_PROJECT_ENDPOINT=$(fake_url openai "")
}

# answer FINDINGS-JSON: a script whose every answer is those findings.
answer() {
	jq -nc --argjson f "$1" '{answers: [{findings: $f}]}'
}

@test "fifty images through dq-worker --drain: fifty artifacts of the schema, model_version from the response" {
	openai_start
	send 50
	run --separate-stderr dq-worker --drain
	worker_ok
	assert_equal "$(states)" "50 analyzed"
	assert_equal "$(ready_count) $(locked_count) $(dead_count)" "0 0 0"
	assert_equal "$(fake_stats openai .requests)" 50
	local id a
	for id in $(jq -r .message.image_id "$BATS_TEST_TMPDIR/sent"); do
		a=$(artifact "$id")
		assert_equal "$(jq -r '[.model_version, .analysis.analyzer, .analysis.deployment, .analysis.api_version,
			.defect_findings.defect_type, .defect_findings.severity, (.analysis.usage.prompt_tokens > 0),
			(.analysis.prompt_sha256 | length), .analysis.image.sent_width, .analysis.image.detail] | join(" ")' <<<"$a")" \
			"gpt-5.2-2025-12-11 azure-openai gpt-5-2 2025-04-01-preview none none true 64 160 high"
	done
	# the deployment path with its api-version, the key as api-key, GPT-5's parameters only
	run fake_stats openai '.log[0] | [.path, .headers["api-key"] != null, (.body | contains("\"temperature\"") | not)] | join(" ")'
	assert_output "\"/openai/deployments/gpt-5-2/chat/completions?api-version=2025-04-01-preview true true\""
	# no secret in any output
	! grep -q S3CRET <<<"$output$stderr"
}

@test "the v1 path: model in the body, no api-version" {
	openai_start
	export AZURE_OPENAI_API_VERSION=v1
	send 2
	run --separate-stderr dq-worker --drain
	worker_ok
	assert_equal "$(states)" "2 analyzed"
	assert_equal "$(fake_stats openai '.log[0].path')" '"/openai/v1/chat/completions"'
}

@test "a Foundry project endpoint: its /openai/v1 base" {
	openai_start
	AZURE_AI_PROJECT_ENDPOINT+=api/projects/p1
	send 1
	run --separate-stderr dq-worker --drain
	worker_ok
	assert_equal "$(states)" "1 analyzed"
	assert_equal "$(fake_stats openai '.log[0].path')" '"/api/projects/p1/openai/v1/chat/completions"'
}

@test "a box in the 0-1000 frame lands on the stored image's pixels" {
	openai_start "$(answer '{"defect_detected":true,"defect_type":"scratch","severity":"minor",
		"description":"a scratch","confidence":0.81234,"boxes":[{"x0":250,"y0":500,"x1":500,"y1":750},{"x0":10,"y0":10,"x1":10,"y1":20}]}')"
	send 1
	run --separate-stderr dq-worker --drain
	worker_ok
	local id
	id=$(jq -r .message.image_id "$BATS_TEST_TMPDIR/sent")
	# 160x120: x 40..80, y 60..90; the empty box is dropped
	assert_equal "$(artifact "$id" | jq -c '.defect_findings | [.bounding_boxes, .confidence]')" \
		'[[{"x":40,"y":60,"width":40,"height":30}],0.8123]'
}

@test "a refusal ends with a failure marker and in the dead-letter queue, its reason logged; no artifact" {
	openai_start '{"answers":[{"refusal":"I cannot help with that."}]}'
	send 1
	run --separate-stderr dq-worker --drain
	assert_equal "$(states)" "1 failed"
	assert_equal "$(dead_count)" 1
	grep -q '"model_refused"' <<<"$stderr"
}

@test "a malformed, an off-schema, an out-of-range or a cut answer never becomes no defect" {
	local a code
	send 1
	for a in 'model_bad_answer {"content":"not json {"}' \
		'model_bad_answer {"content":"{\"defect_detected\":false}"}' \
		'model_bad_answer {"findings":{"defect_detected":false,"defect_type":"dent","severity":"none","description":"","confidence":0.5,"boxes":[]}}' \
		'model_bad_answer {"findings":{"defect_detected":true,"defect_type":"chip","severity":"major","description":"","confidence":0.5,"boxes":[{"x0":0,"y0":0,"x1":1200,"y1":10}]}}' \
		'model_bad_answer {"findings":{"defect_detected":false,"defect_type":"none","severity":"none","description":"","confidence":1.5,"boxes":[]}}' \
		'model_bad_answer {"findings":{"defect_detected":true,"defect_type":"none","severity":"none","description":"","confidence":0.5,"boxes":[]}}' \
		'model_length {"finish_reason":"length"}' 'content_filter {"finish_reason":"content_filter"}' \
		'content_filter {"status":400,"body":"{\"error\":{\"code\":\"content_filter\",\"inner_error\":{\"code\":\"ResponsibleAIPolicyViolation\"}}}"}' \
		'content_filter {"status":400,"body":"{\"error\":{\"code\":\"BadRequest\",\"innererror\":{\"code\":\"ResponsibleAIPolicyViolation\"}}}"}'; do
		code=${a%% *}
		fakes_stop
		openai_start "{\"answers\":[${a#* }]}"
		DQ_RETRY_ATTEMPTS=2 DQ_RETRY_BASE_MS=1 run --separate-stderr dq-analyze <"$BATS_TEST_TMPDIR/sent"
		assert_equal "$(jq -r '[.error.code, (.artifact == null)] | join(" ")' <<<"$output")" "$code true"
	done
}

@test "a bad key stops the stage with 78 after one request; an unknown deployment too" {
	export DQ_LOCK_SECONDS=1
	openai_start
	send 1
	run --separate-stderr env AZURE_AI_API_KEY=wrong dq-worker --drain
	assert_equal "$status" 78
	assert_equal "$(fake_stats openai .requests)" 1
	assert_equal "$(dead_count)" 0
	wait_for 10 leases_expired
	run --separate-stderr env AZURE_VISION_DEPLOYMENT=nosuch dq-worker --drain
	assert_equal "$status" 78
	assert_equal "$(fake_stats openai .requests)" 2
	assert_equal "$(dead_count)" 0
	grep -q deployment_not_found <<<"$stderr"
}

@test "the same message twice against the same answer: identical artifact bytes but the two time fields" {
	openai_start
	send 1
	local a b
	a=$(dq-analyze <"$BATS_TEST_TMPDIR/sent" 2>/dev/null | jq -c '.artifact | del(.timestamps.processed_at, .analysis.duration_ms)')
	b=$(dq-analyze --force <"$BATS_TEST_TMPDIR/sent" 2>/dev/null | jq -c '.artifact | del(.timestamps.processed_at, .analysis.duration_ms)')
	[ -n "$a" ] && [ "$a" != null ]
	assert_equal "$a" "$b"
}
