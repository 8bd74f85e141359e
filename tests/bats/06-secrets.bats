#!/usr/bin/env bats
# Secrets come from the environment and never come out: not in records,
# logs, --print-config or error messages.

load helpers

setup() {
	dq_env
	export API_KEY="ops:S3CRET-api-$$" AZURE_AI_API_KEY="S3CRET-ai-$$" IDENTITY_HEADER="S3CRET-id-$$"
}

no_secret() {
	if grep -q "S3CRET" "$@"; then
		grep -n "S3CRET" "$@" >&3
		fail "a secret was printed"
	fi
}

@test "no program prints a secret, whatever it does" {
	local out=$BATS_TEST_TMPDIR/out
	{
		dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg" "$FIXTURES/text.txt" | dq-enqueue
		dq-dequeue -n 5 | dq-dequeue --settle
		for p in dq-put dq-enqueue dq-dequeue dq-analyze dq-ingest dq-worker; do "$p" --print-config; "$p" --check; done
		DQ_LOG_FORMAT=text dq-put --bogus
	} >"$out" 2>&1 || true
	[ -s "$out" ]
	no_secret "$out"
}

@test "a connection string with a key is never echoed back" {
	export AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=https;AccountName=a;AccountKey=S3CRETkey$$;EndpointSuffix=core.windows.net"
	export AZURE_SERVICEBUS_CONNECTION_STRING="Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=S3CRETsb$$"
	run dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg"
	assert_failure 78
	printf '%s\n' "$output" >"$BATS_TEST_TMPDIR/o1"
	run dq-dequeue --print-config
	assert_success
	assert_equal "$(jq -r .variables.AZURE_SERVICEBUS_CONNECTION_STRING <<<"$output")" "<set>"
	assert_equal "$(jq -r .queue.credentials <<<"$output")" "connection string (AZURE_SERVICEBUS_CONNECTION_STRING)"
	printf '%s\n' "$output" >>"$BATS_TEST_TMPDIR/o1"
	run dq-enqueue --check
	assert_failure 78
	printf '%s\n' "$output" >>"$BATS_TEST_TMPDIR/o1"
	no_secret "$BATS_TEST_TMPDIR/o1"
}
