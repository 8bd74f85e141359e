#!/usr/bin/env bats
# The azure-openai analyzer against the strict fake (tests/fakes/openai.py):
# artifacts that match the schema with the response's model name, boxes on
# the stored image's pixels, fail-closed answers, and the system errors
# that stop the stage.

load helpers
load worker
load ../fakes/openai

setup() {
	dq_env
	reference_setup 42 -W 160 -H 120 --refs 1 --good 50 --defects 0
	export DQ_WORKER_WAIT_SECONDS=0.2
	export DQ_ANALYZER=azure-openai AZURE_AI_API_KEY=k3y-S3CRET-openai FAKE_OPENAI_KEY=k3y-S3CRET-openai
	unset DQ_REFERENCE_DIR
}

teardown() {
	openai_stop
}

@test "fifty images through dq-worker --drain: fifty artifacts of the schema, model_version from the response" {
	openai_start
	send 50
	run --separate-stderr dq-worker --drain
	worker_ok
	assert_equal "$(states)" "50 analyzed"
	assert_equal "$(ready_count) $(locked_count) $(dead_count)" "0 0 0"
	assert_equal "$(openai_stats .requests)" 50
	local id a
	for id in $(jq -r .message.image_id "$BATS_TEST_TMPDIR/sent"); do
		a=$(artifact "$id")
		assert_equal "$(jq -r '[.model_version, .analysis.analyzer, .analysis.deployment, .analysis.api_version,
			.defect_findings.defect_type, .defect_findings.severity, (.analysis.usage.prompt_tokens > 0),
			(.analysis.prompt_sha256 | length), .analysis.image.sent_width, .analysis.image.detail] | join(" ")' <<<"$a")" \
			"gpt-5.2-2025-12-11 azure-openai gpt-5-2 2025-04-01-preview none none true 64 160 high"
	done
	# the deployment path with its api-version, the key as api-key, GPT-5's parameters only
	run openai_stats '.log[0] | [.path, .headers["api-key"] != null, (.body | contains("\"temperature\"") | not)] | join(" ")'
	assert_output "/openai/deployments/gpt-5-2/chat/completions?api-version=2025-04-01-preview true true"
	# no secret in any output
	if grep -q S3CRET <<<"$output$stderr"; then fail "a secret in the output"; fi
}

@test "the v1 path: model in the body, no api-version" {
	openai_start
	export AZURE_OPENAI_API_VERSION=v1
	send 2
	LOG_LEVEL=DEBUG run --separate-stderr dq-worker --drain
	worker_ok
	# the quota headers at debug level
	assert_equal "$(jq -r 'select(.event == "openai_ratelimit") | .remaining_requests' <<<"$stderr" | sort -u)" 99
	assert_equal "$(states)" "2 analyzed"
	assert_equal "$(openai_stats '.log[0].path')" /openai/v1/chat/completions
}

@test "a Foundry project endpoint: its /openai/v1 base" {
	openai_start
	AZURE_AI_PROJECT_ENDPOINT+=api/projects/p1
	send 1
	run --separate-stderr dq-worker --drain
	worker_ok
	assert_equal "$(states)" "1 analyzed"
	assert_equal "$(openai_stats '.log[0].path')" /api/projects/p1/openai/v1/chat/completions
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
		openai_stop
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
	assert_equal "$(openai_stats .requests)" 1
	assert_equal "$(dead_count)" 0
	wait_for 10 leases_expired
	run --separate-stderr env AZURE_VISION_DEPLOYMENT=nosuch dq-worker --drain
	assert_equal "$status" 78
	assert_equal "$(openai_stats .requests)" 2
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

@test "under 30% injected 429/500 faults every image gets one artifact and one successful call; the faults retried by the HTTP layer" {
	export DQ_RETRY_BASE_MS=1 DQ_RETRY_CAP_MS=2000
	openai_start '{"answers":[
		{"status":429,"headers":{"retry-after-ms":"300"},"body":"{\"error\":{\"code\":\"429\"}}"},
		{"findings":{"defect_detected":false,"defect_type":"none","severity":"none","description":"ok","confidence":0.9,"boxes":[]},"times":2},
		{"status":500,"body":"{}"},
		{"findings":{"defect_detected":false,"defect_type":"none","severity":"none","description":"ok","confidence":0.9,"boxes":[]},"times":2},
		{"status":429,"headers":{"Retry-After":"1"},"body":"{}"},
		{"findings":{"defect_detected":false,"defect_type":"none","severity":"none","description":"ok","confidence":0.9,"boxes":[]},"times":1000}]}'
	send 8
	run --separate-stderr dq-worker --drain
	worker_ok
	assert_equal "$(states)" "8 analyzed"
	# eleven requests: eight answered, three faults each retried once
	assert_equal "$(openai_stats .requests)" 11
	assert_equal "$(dead_count)" 0
}

@test "503 longer than the retry budget stops the worker with 75 and dead-letters nothing" {
	export DQ_RETRY_BASE_MS=10 DQ_RETRY_CAP_MS=50 DQ_RETRY_BUDGET_MS=500
	openai_start '{"answers":[{"status":503,"body":"{}"}]}'
	send 2
	run --separate-stderr dq-worker --drain
	assert_equal "$status" 75
	assert_equal "$(dead_count)" 0
	assert_equal "$(states)" "2 pending"
}

@test "the fake refuses what GPT-5.2 refuses: a bad reasoning_effort is refused at start-up, before any request" {
	openai_start
	send 1
	DQ_OPENAI_REASONING_EFFORT=minimal run --separate-stderr dq-analyze <"$BATS_TEST_TMPDIR/sent"
	assert_equal "$status" 78
	grep -q 'DQ_OPENAI_REASONING_EFFORT=minimal' <<<"$stderr"
	assert_equal "$(openai_stats .requests)" 0
	# and the fake itself says no to temperature, max_tokens and minimal
	local url=${AZURE_AI_PROJECT_ENDPOINT}openai/v1/chat/completions b
	for b in '{"model":"gpt-5-2","temperature":0.2}' '{"model":"gpt-5-2","max_tokens":10}' '{"model":"gpt-5-2","reasoning_effort":"minimal"}'; do
		run curl -s -H "api-key: $FAKE_OPENAI_KEY" -d "$b" "$url"
		[[ "$output" == *unsupported_* ]] || fail "the fake took $b: $output"
	done
}
