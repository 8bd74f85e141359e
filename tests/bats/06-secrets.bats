#!/usr/bin/env bats
# Secrets come from the environment and never come out: not in records,
# logs, --print-config or error messages.

load helpers
load identity

setup() {
	dq_env
	identity_env
	export API_KEY="ops:S3CRET-api-$$" AZURE_AI_API_KEY="S3CRET-ai-$$" IDENTITY_HEADER="S3CRET-id-$$"
}

teardown() {
	identity_teardown
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

# The credential layer (41-cred): tokens, the identity header, the federated
# assertion and keys marked S3CRET, through every path that logs or fails.
@test "no token, identity header, assertion or key comes out of the credential layer" {
	local out=$BATS_TEST_TMPDIR/out m cfg
	app_service
	export LOG_LEVEL=DEBUG AZURE_STORAGE_ACCOUNT=acct AZURE_SERVICEBUS_NAMESPACE=ns
	{
		for p in dq-put dq-enqueue dq-dequeue dq-analyze dq-ingest dq-worker; do "$p" --print-config; done
		"$CRED" mechanism
		"$CRED" token "$SCOPE"
		"$CRED" call "http://127.0.0.1:$PORT/service" "$SCOPE"
		fake_config '{"revoke": true}'
		"$CRED" call "http://127.0.0.1:$PORT/service" "$SCOPE"
		fake_config '{"service_401": true}'
		"$CRED" call "http://127.0.0.1:$PORT/service" "$SCOPE"
		for cfg in '{"malformed": true}' '{"expired": true}' '{"fail": 500, "fail_times": 99}'; do
			fake_config "$cfg"
			"$CRED" token https://servicebus.azure.net/.default
		done
		fake_config '{}'
		IDENTITY_HEADER=S3CRET-wrong "$CRED" token https://cognitiveservices.azure.com/.default
		chmod 644 "$DQ_STATE_DIR"/tokens-*/*.json
		"$CRED" token "$SCOPE"
		IDENTITY_ENDPOINT=http://192.0.2.1/msi/token "$CRED" token "$SCOPE"
		unset IDENTITY_ENDPOINT IDENTITY_HEADER
		for m in workload imds; do
			kill "$FAKE_PID"
			rm -f "$F/port"
			"$m"
			"$CRED" token "$SCOPE"
			fake_config '{"fail": 400, "fail_times": 99}'
			"$CRED" token https://servicebus.azure.net/.default
			fake_config '{}'
			unset AZURE_FEDERATED_TOKEN_FILE AZURE_POD_IDENTITY_AUTHORITY_HOST
		done
		AZURE_STORAGE_CONNECTION_STRING="AccountName=a;AccountKey=S3CRET$$" "$CRED" blob-conn
		AZURE_SERVICEBUS_CONNECTION_STRING="Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=S3CRET$$;Bogus=S3CRET" "$CRED" sb-conn
	} >"$out" 2>&1 || true
	[ "$(grep -c . "$out")" -gt 20 ]
	no_secret "$out"
	# the tokens were there to leak: the cache holds them
	grep -qr S3CRET "$DQ_STATE_DIR"
}
