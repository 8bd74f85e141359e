#!/usr/bin/env bats
# The azure-openai analyzer with managed identity (no key): each request
# carries the identity fake's bearer token, and the token is fetched once
# for many images and many processes (the shared token cache).

load helpers
load worker
load identity
load ../fakes/openai

setup() {
	dq_env
	reference_setup 43 -W 64 -H 48 --refs 1 --good 200 --defects 0
	unset DQ_REFERENCE_DIR AZURE_AI_API_KEY
	export DQ_ANALYZER=azure-openai FAKE_OPENAI_BEARER=1 DQ_WORKER_WAIT_SECONDS=0.2
	identity_env
}

teardown() {
	openai_stop
	identity_teardown
}

@test "with managed identity requests carry the bearer token; two hundred images in four worker batches cause one identity call" {
	app_service
	openai_start
	local i samples=("$S"/samples/*)
	: >"$BATS_TEST_TMPDIR/sent"
	for i in 0 50 100 150; do
		dq-put --sku WK-KN-200 --facility yangjiang "${samples[@]:i:50}" 2>/dev/null |
			tee -a "$BATS_TEST_TMPDIR/sent" | dq-enqueue >/dev/null 2>&1
		run --separate-stderr dq-worker --drain
		worker_ok
	done
	assert_equal "$(states)" "200 analyzed"
	assert_equal "$(openai_stats .requests)" 200
	assert_equal "$(openai_stats '[.log[] | select(.headers.Authorization // "" | startswith("Bearer ") and contains("S3CRET"))] | length')" 200
	assert_equal "$(openai_stats '[.log[] | select(.headers["api-key"])] | length')" 0
	assert_equal "$(calls app_service)" 1
	if grep -q S3CRET <<<"$output$stderr"; then fail "a token in the output"; fi
}
