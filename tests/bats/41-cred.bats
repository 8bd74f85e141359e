#!/usr/bin/env bats
# The credential layer (lib/cred/) through tests/unit/cred-test: managed
# identity against tests/fakes/identity.py (Container Apps, workload
# identity, IMDS), the token cache shared by processes, Shared Key and SAS
# against openssl, connection strings, and where credentials may go.

load helpers
load identity

setup() {
	dq_env
	identity_env
}

teardown() {
	identity_teardown
}

# cache_file: the one token file of the shared cache.
cache_file() {
	local f
	f=$(find "$DQ_STATE_DIR/tokens-$(id -u)" -name '*.json')
	[ "$(grep -c . <<<"$f")" -eq 1 ] || { echo "cache_file: not one token file: $f" >&2; return 1; }
	echo "$f"
}

# past_refresh: the cached token is due for its refresh.
past_refresh() {
	[ "$(date +%s%3N)" -gt "$(jq .refresh_ms "$(cache_file)")" ]
}

# --- managed identity: the fetch and the shared cache --------------------

@test "ten processes started at once with an empty token cache make one call to the identity endpoint" {
	app_service
	fake_config '{"slow_ms": 300}'
	local i pids=()
	for i in 1 2 3 4 5 6 7 8 9 10; do
		"$CRED" token "$SCOPE" >"$BATS_TEST_TMPDIR/t$i" 2>"$BATS_TEST_TMPDIR/e$i" &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i" || fail "a cred-test token failed: $(cat "$BATS_TEST_TMPDIR"/e*)"; done
	assert_equal "$(calls app_service)" 1
	assert_equal "$(cat "$BATS_TEST_TMPDIR"/t* | sort -u | wc -l)" 1
	assert_equal "$(cat "$BATS_TEST_TMPDIR"/t* | wc -l)" 10
	assert_equal "$(calls rejected)" 0
}

@test "ten threads of one process with an empty cache make one call" {
	app_service
	fake_config '{"slow_ms": 200}'
	run --separate-stderr "$CRED" tokens 10 "$SCOPE"
	assert_success
	assert_equal "$stderr" ""
	assert_equal "$(sort -u <<<"$output" | wc -l)" 1
	assert_equal "$(wc -l <<<"$output")" 10
	assert_equal "$(calls app_service)" 1
}

@test "without DQ_STATE_DIR the cache is under XDG_RUNTIME_DIR, else under TMPDIR" {
	app_service
	unset DQ_STATE_DIR
	export XDG_RUNTIME_DIR=$BATS_TEST_TMPDIR/run TMPDIR=$BATS_TEST_TMPDIR/tmp
	mkdir -m 700 "$XDG_RUNTIME_DIR" "$TMPDIR"
	"$CRED" token "$SCOPE" >/dev/null
	"$CRED" token "$SCOPE" >/dev/null
	assert_equal "$(calls app_service)" 1
	assert_equal "$(find "$XDG_RUNTIME_DIR/dq-tokens-$(id -u)" -name '*.json' | wc -l)" 1
	unset XDG_RUNTIME_DIR
	"$CRED" token "$SCOPE" >/dev/null
	"$CRED" token "$SCOPE" >/dev/null
	assert_equal "$(calls app_service)" 2
	assert_equal "$(find "$TMPDIR/dq-tokens-$(id -u)" -name '*.json' | wc -l)" 1
}

@test "Container Apps: api-version 2019-08-01, resource from the scope, the header, client_id from AZURE_CLIENT_ID" {
	export FAKE_CLIENT_ID=11111111-2222-3333-4444-555555555555
	app_service
	export AZURE_CLIENT_ID=$FAKE_CLIENT_ID
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_success
	assert_equal "$stderr" ""
	assert_equal "$(calls app_service)" 1
	assert_equal "$(calls rejected)" 0
	# the fake rejects a wrong identity, as Azure does; no retry of a refusal
	export AZURE_CLIENT_ID=99999999-2222-3333-4444-555555555555
	run --separate-stderr "$CRED" token https://servicebus.azure.net/.default
	assert_failure 78
	assert_equal "$(jq -r .code <<<"$stderr")" identity_refused
	assert_equal "$(calls rejected)" 1
	grep -q 'client_id does not name this identity' "$F/rejected"
}

@test "Container Apps: a wrong IDENTITY_HEADER is refused (78), not retried" {
	app_service
	export IDENTITY_HEADER=S3CRET-wrong-$$
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_failure 78
	assert_equal "$output" ""
	assert_equal "$(jq -r .code <<<"$stderr")" identity_refused
	assert_equal "$(jq -r .http_status <<<"$stderr")" 401
	assert_equal "$(calls rejected)" 1
	assert_equal "$(calls app_service)" 0
}

@test "Container Apps: IDENTITY_HEADER is never written to the cache, only the token" {
	app_service
	"$CRED" token "$SCOPE" >/dev/null
	run grep -rl "$IDENTITY_HEADER" "$DQ_STATE_DIR"
	assert_failure 1
	grep -q access_token "$(cache_file)"
}

@test "workload identity: the federated token is exchanged at AZURE_AUTHORITY_HOST/<tenant> with exactly the documented form" {
	workload
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_success
	assert_equal "$stderr" ""
	assert_equal "$(calls workload)" 1
	assert_equal "$(calls rejected)" 0
	# a stale file: the fake rejects the assertion (401), nothing retried
	printf 'S3CRET-stale\n' >"$AZURE_FEDERATED_TOKEN_FILE"
	run --separate-stderr "$CRED" token https://servicebus.azure.net/.default
	assert_failure 78
	assert_equal "$(calls rejected)" 1
	grep -q 'client_assertion does not verify' "$F/rejected"
}

@test "workload identity: the token file is read afresh at each fetch" {
	workload
	printf 'S3CRET-old\n' >"$AZURE_FEDERATED_TOKEN_FILE"
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_failure 78
	printf '%s\n' "$FAKE_ASSERTION" >"$AZURE_FEDERATED_TOKEN_FILE"
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_success
	assert_equal "$(calls workload)" 1
}

@test "workload identity needs AZURE_CLIENT_ID and AZURE_TENANT_ID: a configuration error, no fallback" {
	workload
	unset AZURE_TENANT_ID
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_failure 78
	assert_equal "$(jq -r .code <<<"$stderr")" bad_identity
	assert_output ""
	assert_equal "$(calls workload)$(calls imds)$(calls rejected)" 000
}

@test "IMDS at AZURE_POD_IDENTITY_AUTHORITY_HOST: api-version 2018-02-01, Metadata: true, string numbers" {
	imds
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_success
	assert_equal "$stderr" ""
	assert_equal "$(calls imds)" 1
	assert_equal "$(calls rejected)" 0
}

@test "the mechanism is chosen in one order: workload identity, then IDENTITY_ENDPOINT, then IMDS" {
	export IDENTITY_ENDPOINT=http://127.0.0.1:9/msi/token IDENTITY_HEADER=S3CRET-h
	export AZURE_FEDERATED_TOKEN_FILE=/nonexistent AZURE_CLIENT_ID=c AZURE_TENANT_ID=t
	run --separate-stderr "$CRED" mechanism
	assert_success
	assert_equal "$(jq -r .from <<<"$output")" AZURE_FEDERATED_TOKEN_FILE
	assert_equal "$(jq -r .endpoint <<<"$output")" https://login.microsoftonline.com
	unset AZURE_FEDERATED_TOKEN_FILE
	run --separate-stderr "$CRED" mechanism
	assert_equal "$(jq -r .from <<<"$output")" IDENTITY_ENDPOINT
	unset IDENTITY_ENDPOINT
	run --separate-stderr "$CRED" mechanism
	assert_equal "$(jq -r .endpoint <<<"$output")" http://169.254.169.254
	export IDENTITY_ENDPOINT=http://127.0.0.1:9/msi/token
	unset IDENTITY_HEADER
	run --separate-stderr "$CRED" mechanism
	assert_failure 78
	assert_equal "$(jq -r .code <<<"$stderr")" bad_identity
}

@test "--print-config shows the mechanism a managed-identity backend uses, and no secret" {
	export AZURE_STORAGE_ACCOUNT=acct IDENTITY_ENDPOINT=http://127.0.0.1:9/msi/token IDENTITY_HEADER=S3CRET-h-$$
	run --separate-stderr dq-put --print-config
	assert_success
	assert_equal "$(jq -r .identity.mechanism <<<"$output")" "Container Apps / App Service managed identity"
	assert_equal "$(jq -r .identity.from <<<"$output")" IDENTITY_ENDPOINT
	assert_equal "$(jq -r .identity.token_cache <<<"$output")" "$DQ_STATE_DIR/tokens-$(id -u)"
	assert_equal "$(jq -r .variables.IDENTITY_HEADER <<<"$output")" "<set>"
	refute_output --partial S3CRET
	# the local path shows none and creates nothing
	unset AZURE_STORAGE_ACCOUNT
	run --separate-stderr dq-put --print-config
	assert_equal "$(jq -r .identity <<<"$output")" null
	[ ! -e "$DQ_STATE_DIR/tokens-$(id -u)" ]
}

@test "a token past half its life is refreshed once, and used until then" {
	app_service
	fake_config '{"expires_in": 4}'
	local first i
	first=$("$CRED" token "$SCOPE")
	assert_equal "$("$CRED" token "$SCOPE")" "$first"
	assert_equal "$(calls app_service)" 1
	# past half-life (2 s): rounds of five processes at once, until one refreshed
	refreshed() {
		local j pids=()
		for j in 1 2 3 4 5; do
			"$CRED" token "$SCOPE" >"$BATS_TEST_TMPDIR/r$j" &
			pids+=($!)
		done
		wait "${pids[@]}" # theirs only: the fake runs in the background too
		[ "$(calls app_service)" -ge 2 ]
	}
	wait_for 10 refreshed || fail "no refresh after half the token's life"
	for i in 1 2 3; do refreshed; done
	assert_equal "$(calls app_service)" 2
	[ "$("$CRED" token "$SCOPE")" != "$first" ]
}

@test "refresh_in, when the answer gives it, is when the token is refreshed" {
	app_service
	fake_config '{"expires_in": 3600, "refresh_in": 1}'
	"$CRED" token "$SCOPE" >/dev/null
	wait_for 10 count_is 2 bash -c '"$0" token "$1" >/dev/null && jq .app_service "$2"' \
		"$CRED" "$SCOPE" "$F/counts.json" || fail "refresh_in was not honoured"
}

@test "while one process refreshes, the others keep using the valid token" {
	app_service
	fake_config '{"expires_in": 4}'
	local first pid
	first=$("$CRED" token "$SCOPE")
	wait_for 5 past_refresh || fail "the token's refresh time never came"
	fake_config '{"expires_in": 4, "slow_ms": 1500}'
	"$CRED" token "$SCOPE" >"$BATS_TEST_TMPDIR/slow" &
	pid=$!
	wait_for 5 count_is 2 calls app_service || fail "no refresh began"
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_success
	assert_output "$first"
	kill -0 "$pid" # the refresh is still under way
	wait "$pid"
	[ "$(cat "$BATS_TEST_TMPDIR/slow")" != "$first" ]
	assert_equal "$(calls app_service)" 2
}

@test "a 401 from the service drops the token and costs one refetch, not a loop" {
	app_service
	run --separate-stderr "$CRED" call "http://127.0.0.1:$PORT/service" "$SCOPE"
	assert_success
	assert_output 200
	# revoked: the service refuses the cached token; one new one serves
	fake_config '{"revoke": true}'
	run --separate-stderr "$CRED" call "http://127.0.0.1:$PORT/service" "$SCOPE"
	assert_success
	assert_output 200
	assert_equal "$(calls app_service)" 2
	assert_equal "$(calls service)" 3
	# a service that refuses every token: one refetch, then 78
	fake_config '{"service_401": true}'
	run --separate-stderr "$CRED" call "http://127.0.0.1:$PORT/service" "$SCOPE"
	assert_failure 78
	assert_output ""
	assert_equal "$(calls app_service)" 3
	assert_equal "$(calls service)" 5
}

@test "a 401 in one process makes the next process fetch anew, not reuse the dropped token" {
	app_service
	local first
	first=$("$CRED" token "$SCOPE")
	fake_config '{"revoke": true}'
	"$CRED" call "http://127.0.0.1:$PORT/service" "$SCOPE" >/dev/null
	assert_equal "$(calls app_service)" 2
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_success
	[ "$output" != "$first" ]
	assert_equal "$(calls app_service)" 2
}

@test "the identity endpoint's 500s are retried within the budget, then the token comes" {
	app_service
	fake_config '{"fail": 500, "fail_times": 2}'
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_success
	assert_equal "$(calls app_service)" 3
}

@test "an identity endpoint down for good is a transient system error (75) after one budget" {
	app_service
	fake_config '{"fail": 503, "fail_times": 1000}'
	export DQ_RETRY_ATTEMPTS=4
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_failure 75
	assert_output ""
	assert_equal "$(calls app_service)" 4
}

@test "an identity endpoint that keeps answering 429 is transient (75), not a refusal" {
	app_service
	fake_config '{"fail": 429, "fail_times": 1000}'
	export DQ_RETRY_ATTEMPTS=3
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_failure 75
	assert_output ""
	assert_equal "$(calls app_service)" 3
}

@test "a malformed answer, an expired token or no expiry is refused (75), never cached" {
	app_service
	local cfg
	for cfg in '{"malformed": true}' '{"expired": true}' '{"only": "none_of_them", "expires_in": 1, "expired": true}'; do
		fake_config "$cfg"
		run --separate-stderr "$CRED" token "$SCOPE"
		assert_failure 75
		assert_equal "$(jq -r .code <<<"$stderr")" bad_token
	done
	run find "$DQ_STATE_DIR" -name '*.json'
	assert_output ""
}

@test "expires_on alone, expires_in alone, numbers or strings: all give a token" {
	app_service
	local cfg
	for cfg in '{"only": "expires_on"}' '{"only": "expires_in"}' '{"numbers": true}'; do
		fake_config "$cfg"
		rm -rf "$DQ_STATE_DIR"/tokens-*
		run --separate-stderr "$CRED" token "$SCOPE"
		assert_success
	done
	assert_equal "$(calls app_service)" 3
}

@test "a slow identity endpoint times out (75) within the configured time" {
	app_service
	fake_config '{"slow_ms": 5000}'
	export DQ_HTTP_TIMEOUT_MS=300 DQ_RETRY_ATTEMPTS=2
	local t0=$SECONDS
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_failure 75
	[ $((SECONDS - t0)) -lt 4 ]
}

# --- the cache's files are trusted only when they are whole and ours ----

@test "the cache is a 0700 directory of 0600 files, whatever the umask" {
	app_service
	(umask 000 && "$CRED" token "$SCOPE" >/dev/null)
	assert_equal "$(stat -c %a "$DQ_STATE_DIR/tokens-$(id -u)")" 700
	assert_equal "$(stat -c %a "$(cache_file)")" 600
	# no temporary file left behind
	run find "$DQ_STATE_DIR" -name '.tmp.*'
	assert_output ""
}

@test "a corrupt cache file is ignored and replaced" {
	app_service
	local f
	"$CRED" token "$SCOPE" >/dev/null
	f=$(cache_file)
	printf '{"v":1,"access_token":' >"$f"
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_success
	assert_equal "$(log_events "$stderr")" token_cache_untrusted
	assert_equal "$(calls app_service)" 2
	jq -e .access_token "$f" >/dev/null
}

@test "a cache file of the wrong mode is not trusted" {
	app_service
	local f
	"$CRED" token "$SCOPE" >/dev/null
	f=$(cache_file)
	chmod 644 "$f"
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_success
	assert_equal "$(log_events "$stderr")" token_cache_untrusted
	assert_equal "$(calls app_service)" 2
	assert_equal "$(stat -c %a "$f")" 600
}

@test "a cache file owned by another user is not trusted, nor a symbolic link" {
	[ "$(id -u)" -eq 0 ] || skip "needs root to give a file away"
	app_service
	local f
	"$CRED" token "$SCOPE" >/dev/null
	f=$(cache_file)
	chown 65534 "$f"
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_success
	assert_equal "$(log_events "$stderr")" token_cache_untrusted
	assert_equal "$(calls app_service)" 2
	assert_equal "$(stat -c %u "$f")" 0
	mv "$f" "$BATS_TEST_TMPDIR/elsewhere.json"
	ln -s "$BATS_TEST_TMPDIR/elsewhere.json" "$f"
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_success
	assert_equal "$(log_events "$stderr")" token_cache_untrusted
	assert_equal "$(calls app_service)" 3
	[ ! -L "$f" ]
}

@test "a cache directory owned by another user is not used" {
	[ "$(id -u)" -eq 0 ] || skip "needs root to give a directory away"
	app_service
	local d
	d=$DQ_STATE_DIR/tokens-$(id -u)
	mkdir -m 700 "$d"
	chown 65534 "$d"
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_success
	assert_equal "$(log_events "$stderr")" token_cache_untrusted
	run find "$d" -type f
	assert_output ""
	# each process then fetches its own
	"$CRED" token "$SCOPE" >/dev/null 2>&1
	assert_equal "$(calls app_service)" 2
}

# --- Shared Key and SAS equal openssl's ---------------------------------

# The reference's worked example (azure-protocols.md §1.3), computed here
# with printf and openssl.
@test "a Shared Key string to sign is the reference's, byte for byte" {
	local want=$BATS_TEST_TMPDIR/want
	printf 'PUT\n\n\n11\n\ntext/plain\n\n\n\n*\n\n\nx-ms-blob-type:BlockBlob\nx-ms-date:Mon, 01 Jan 2024 00:00:00 GMT\nx-ms-version:2023-11-03\n/devstoreaccount1/devstoreaccount1/mycontainer/myblob' >"$want"
	"$CRED" string-to-sign devstoreaccount1 put http://127.0.0.1:10000/devstoreaccount1/mycontainer/myblob \
		'x-ms-version: 2023-11-03' 'Content-Type: text/plain' 'X-MS-Date: Mon, 01 Jan 2024 00:00:00 GMT' \
		'Content-Length: 11' 'If-None-Match: *' 'x-ms-blob-type:  BlockBlob' 'Expect:' >"$BATS_TEST_TMPDIR/got"
	cmp "$want" "$BATS_TEST_TMPDIR/got"
}

# sharedkey_openssl KEY_B64 FILE: the signature of FILE's bytes.
sharedkey_openssl() {
	openssl dgst -sha256 -mac HMAC -macopt "hexkey:$(base64 -d <<<"$1" | od -An -v -tx1 | tr -d ' \n')" -binary <"$2" | base64
}

@test "a Shared Key signature equals openssl's, for a request with a query and empty headers" {
	local key want
	key=$(head -c 64 /dev/urandom | base64 -w0)
	export AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=https;AccountName=myaccount;AccountKey=$key;EndpointSuffix=core.windows.net"
	printf 'GET\n\n\n\n\n\n\n\n\n\n\nbytes=0-99\nx-ms-date:Tue, 02 Jan 2024 10:00:00 GMT\nx-ms-meta-empty:\nx-ms-meta-z:a b\nx-ms-version:2023-11-03\n/myaccount/c1/dir/b%%20x.jpg\nblockid:QUFB+/==\ncomp:block,list\ntimeout:30' >"$BATS_TEST_TMPDIR/sts"
	want="SharedKey myaccount:$(sharedkey_openssl "$key" "$BATS_TEST_TMPDIR/sts")"
	run --separate-stderr "$CRED" sharedkey GET 'https://myaccount.blob.core.windows.net/c1/dir/b%20x.jpg?timeout=30&comp=list&blockid=QUFB%2B%2F%3D%3D&COMP=block' \
		'x-ms-version: 2023-11-03' 'x-ms-meta-z: a   b ' 'x-ms-meta-empty;' 'Range: bytes=0-99' \
		'Content-Length: 0' 'x-ms-date: Tue, 02 Jan 2024 10:00:00 GMT'
	assert_success
	assert_equal "$stderr" ""
	assert_equal "$output" "$want"
}

@test "a Service Bus SAS token equals openssl's" {
	local key=S3CRETsbkey$$ uri=https://myns.servicebus.windows.net/defect-jobs se=1767225600 sr sig
	export AZURE_SERVICEBUS_CONNECTION_STRING="Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=$key"
	sr=$(jq -rn --arg s "$uri" '$s|@uri')
	sig=$(printf '%s\n%s' "$sr" "$se" | openssl dgst -sha256 -hmac "$key" -binary | base64)
	sig=$(jq -rn --arg s "$sig" '$s|@uri')
	run --separate-stderr "$CRED" sas "$uri" "$se"
	assert_success
	assert_equal "$stderr" ""
	assert_equal "$output" "SharedAccessSignature sr=$sr&sig=$sig&se=$se&skn=RootManageSharedAccessKey"
	assert_equal "$sr" https%3A%2F%2Fmyns.servicebus.windows.net%2Fdefect-jobs
}

# --- connection strings -------------------------------------------------

@test "Blob connection strings: Azurite's shorthand, the explicit form, a suffix, a SAS" {
	export AZURE_STORAGE_CONNECTION_STRING='UseDevelopmentStorage=true'
	run --separate-stderr "$CRED" blob-conn
	assert_success
	assert_json_equal "$output" '{"account":"devstoreaccount1","endpoint":"http://127.0.0.1:10000/devstoreaccount1","emulator":true,"key_bytes":64,"sas":false}'
	export AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;'
	run --separate-stderr "$CRED" blob-conn
	assert_success
	assert_json_equal "$output" '{"account":"devstoreaccount1","endpoint":"http://127.0.0.1:10000/devstoreaccount1","emulator":false,"key_bytes":64,"sas":false}'
	export AZURE_STORAGE_CONNECTION_STRING='accountname=acct;ACCOUNTKEY=AAAA;EndpointSuffix=core.chinacloudapi.cn'
	run --separate-stderr "$CRED" blob-conn
	assert_success
	assert_json_equal "$output" '{"account":"acct","endpoint":"https://acct.blob.core.chinacloudapi.cn","emulator":false,"key_bytes":3,"sas":false}'
	export AZURE_STORAGE_CONNECTION_STRING='BlobEndpoint=https://acct.blob.core.windows.net/;QueueEndpoint=https://acct.queue.core.windows.net/;SharedAccessSignature=sv=2022-11-02&ss=b&sig=S3CRET%3D'
	run --separate-stderr "$CRED" blob-conn
	assert_success
	assert_json_equal "$output" '{"account":null,"endpoint":"https://acct.blob.core.windows.net","emulator":false,"key_bytes":0,"sas":true}'
}

@test "a bad Blob connection string is a configuration error naming the key, never a value" {
	local cs
	for cs in 'AccountName=a;AccountKey=S3CRET!!' 'AccountName=a;AccountKey=AAAA;AccountKey=S3CRETAA' \
		'AccountName=a;AcountKey=S3CRET' 'AccountName=a;S3CRET' 'AccountName=a' \
		'UseDevelopmentStorage=true;AccountKey=S3CRET' 'DefaultEndpointsProtocol=ftp;AccountName=a;AccountKey=S3CRET'; do
		AZURE_STORAGE_CONNECTION_STRING=$cs run --separate-stderr "$CRED" blob-conn
		assert_failure 78
		assert_output ""
		assert_equal "$(jq -r .code <<<"$stderr")" bad_connection_string
		[[ $stderr != *S3CRET* ]] || fail "a value was echoed: $stderr"
	done
}

@test "Service Bus connection strings: sb:// to https, EntityPath, the emulator over plain HTTP to loopback" {
	export AZURE_SERVICEBUS_CONNECTION_STRING='Endpoint=sb://MyNs.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=S3CRET=x=;EntityPath=defect-jobs'
	run --separate-stderr "$CRED" sb-conn
	assert_success
	assert_json_equal "$output" '{"endpoint":"https://MyNs.servicebus.windows.net","host":"MyNs.servicebus.windows.net","key_name":"k","key":true,"sas":false,"entity":"defect-jobs","emulator":false}'
	export AZURE_SERVICEBUS_CONNECTION_STRING='Endpoint=sb://localhost:5300;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;'
	run --separate-stderr "$CRED" sb-conn
	assert_success
	assert_json_equal "$output" '{"endpoint":"http://localhost:5300","host":"localhost:5300","key_name":"RootManageSharedAccessKey","key":true,"sas":false,"entity":null,"emulator":true}'
	export AZURE_SERVICEBUS_CONNECTION_STRING='Endpoint=sb://sb.example.net;SharedAccessKeyName=k;SharedAccessKey=S3CRET;UseDevelopmentEmulator=true'
	run --separate-stderr "$CRED" sb-conn
	assert_failure 78
	assert_equal "$(jq -r .code <<<"$stderr")" insecure_transport
	for cs in 'Endpoint=sb://x/;SharedAccessKey=S3CRET' 'SharedAccessKeyName=k;SharedAccessKey=S3CRET' \
		'Endpoint=ftp://x/;SharedAccessKeyName=k;SharedAccessKey=S3CRET'; do
		AZURE_SERVICEBUS_CONNECTION_STRING=$cs run --separate-stderr "$CRED" sb-conn
		assert_failure 78
		[[ $stderr != *S3CRET* ]] || fail "a value was echoed: $stderr"
	done
}

# --- credentials go only over https, or plain http to loopback ----------

@test "credentials are refused over http:// to a non-loopback address, before any connection" {
	local u
	for u in http://127.0.0.1:10000/a http://127.1.2.3/ 'http://[::1]:8080/x' http://localhost/ https://a.example/; do
		run --separate-stderr "$CRED" transport "$u"
		assert_success
	done
	for u in http://192.0.2.1/ http://127.0.0.1.example.com/ http://127.0.0.1@192.0.2.1/ http://localhost.example/ ftp://127.0.0.1/; do
		run --separate-stderr "$CRED" transport "$u"
		assert_failure 78
		assert_equal "$(jq -r .code <<<"$stderr")" insecure_transport
	done
	# an identity header, a client assertion, an account key: refused at once
	IDENTITY_ENDPOINT=http://192.0.2.1:9/msi/token IDENTITY_HEADER=S3CRET run --separate-stderr "$CRED" token "$SCOPE"
	assert_failure 78
	assert_equal "$(jq -r .code <<<"$stderr")" insecure_transport
	printf 'S3CRET\n' >"$BATS_TEST_TMPDIR/sa"
	AZURE_FEDERATED_TOKEN_FILE=$BATS_TEST_TMPDIR/sa AZURE_CLIENT_ID=c AZURE_TENANT_ID=t \
		AZURE_AUTHORITY_HOST=http://192.0.2.1/ run --separate-stderr "$CRED" token "$SCOPE"
	assert_failure 78
	assert_equal "$(jq -r .code <<<"$stderr")" insecure_transport
	AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=AAAA' \
		run --separate-stderr "$CRED" blob-conn
	assert_failure 78
	assert_equal "$(jq -r .code <<<"$stderr")" insecure_transport
	run find "$DQ_STATE_DIR" -name '*.json'
	assert_output ""
}

@test "no metadata endpoint answering (off Azure, nothing configured) is a configuration error (78), within seconds" {
	export AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:9 DQ_RETRY_ATTEMPTS=3
	run --separate-stderr "$CRED" token "$SCOPE"
	assert_failure 78
	assert_output ""
	assert_equal "$(jq -rs 'map(select(.level == "ERROR")) | .[0].code' <<<"$stderr")" no_identity
}

@test "the identity fake rejects what Azure would: no Metadata header, another api-version, a JSON body, a scope for a resource" {
	fake_start
	local base=http://127.0.0.1:$PORT
	run curl -s -o /dev/null -w '%{http_code}' "$base/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://storage.azure.com"
	assert_output 400
	run curl -s -o /dev/null -w '%{http_code}' -H "X-IDENTITY-HEADER: $FAKE_IDENTITY_HEADER" "$base/msi/token?api-version=2017-09-01&resource=https://storage.azure.com"
	assert_output 400
	run curl -s -o /dev/null -w '%{http_code}' -H "X-IDENTITY-HEADER: $FAKE_IDENTITY_HEADER" "$base/msi/token?api-version=2019-08-01&resource=https://storage.azure.com/.default"
	assert_output 400
	run curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d '{}' "$base/tenant-1/oauth2/v2.0/token"
	assert_output 400
	assert_equal "$(calls rejected)" 4
	assert_equal "$(calls app_service)$(calls imds)$(calls workload)" 000
	# and takes the documented request
	run curl -s -H 'Metadata: true' "$base/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fstorage.azure.com"
	assert_equal "$(jq -r .token_type <<<"$output")" Bearer
}
