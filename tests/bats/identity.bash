# identity.bash - managed identity against tests/fakes/identity.py, for the
# suites of the credential layer (41-cred, 06-secrets).  identity_env in
# setup, identity_teardown in teardown; then one of app_service, workload
# or imds starts the fake and points that mechanism's variables at it.
# shellcheck shell=bash

CRED="$DQ_BUILD/tests/unit/cred-test"
# shellcheck disable=SC2034 # used by the suites that load this
SCOPE=https://storage.azure.com/.default

# identity_env: no identity variable of the caller's, a fresh token cache
# under DQ_STATE_DIR, fast retries, and what the fake will expect.
identity_env() {
	[ -x "$CRED" ] || fail "$CRED is not built: run 'make tests/unit/cred-test'"
	unset IDENTITY_ENDPOINT IDENTITY_HEADER AZURE_CLIENT_ID AZURE_FEDERATED_TOKEN_FILE \
		AZURE_TENANT_ID AZURE_AUTHORITY_HOST AZURE_POD_IDENTITY_AUTHORITY_HOST \
		XDG_RUNTIME_DIR MSI_ENDPOINT MSI_SECRET FAKE_CLIENT_ID
	export DQ_STATE_DIR=$BATS_TEST_TMPDIR/state
	mkdir -p "$DQ_STATE_DIR"
	export DQ_RETRY_BASE_MS=10 DQ_RETRY_CAP_MS=50 DQ_RETRY_BUDGET_MS=3000
	F=$BATS_TEST_TMPDIR/fake
	mkdir -p "$F"
	export FAKE_IDENTITY_HEADER="S3CRET-header-$$" FAKE_TENANT=tenant-1
	export FAKE_ASSERTION="S3CRET-assertion-$$"
}

identity_teardown() {
	[ -z "${FAKE_PID:-}" ] || kill "$FAKE_PID" 2>/dev/null || true
}

# fake_start: the identity fake on a free port of 127.0.0.1; sets PORT.
fake_start() {
	python3 "$DQ_TOP/tests/fakes/identity.py" "$F" 2>"$F/stderr" &
	FAKE_PID=$!
	wait_for 10 test -s "$F/port" || fail "the identity fake did not start: $(cat "$F/stderr")"
	PORT=$(cat "$F/port")
}

# fake_config JSON: the fake's faults and token shapes from now on.
fake_config() {
	printf '%s\n' "$1" >"$F/config.tmp" && mv "$F/config.tmp" "$F/config.json"
}

# calls WHAT: the fake's count of WHAT (app_service, workload, imds,
# rejected, service).
calls() {
	jq -r ".$1" "$F/counts.json"
}

app_service() {
	fake_start
	export IDENTITY_ENDPOINT="http://127.0.0.1:$PORT/msi/token" IDENTITY_HEADER=$FAKE_IDENTITY_HEADER
}

workload() {
	fake_start
	printf '%s\n' "$FAKE_ASSERTION" >"$BATS_TEST_TMPDIR/sa-token"
	export AZURE_FEDERATED_TOKEN_FILE=$BATS_TEST_TMPDIR/sa-token AZURE_TENANT_ID=tenant-1 \
		AZURE_CLIENT_ID=fake-client AZURE_AUTHORITY_HOST="http://127.0.0.1:$PORT/"
}

imds() {
	fake_start
	export AZURE_POD_IDENTITY_AUTHORITY_HOST="http://127.0.0.1:$PORT"
}
