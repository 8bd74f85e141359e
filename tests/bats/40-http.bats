#!/usr/bin/env bats
# The HTTP layer (lib/http/), driven by tests/unit/http-test against the
# scripted fake tests/fakes/httpd.py on loopback: the one retry policy,
# the status classes, connection reuse, the plain-http rule, proxies, TLS,
# and redaction.  Times are measured by the fake (arrival of each request).

load helpers
load fakes

HT="$DQ_BUILD/tests/unit/http-test"

setup() {
	[ -x "$HT" ] || fail "$HT is not built: run 'make tests/unit/http-test'"
	dq_env
	export DQ_RETRY_BASE_MS=20 DQ_RETRY_CAP_MS=5000 DQ_RETRY_BUDGET_MS=30000 DQ_RETRY_ATTEMPTS=10
	unset http_proxy https_proxy HTTPS_PROXY HTTP_PROXY ALL_PROXY all_proxy NO_PROXY no_proxy DQ_CA_FILE
}

teardown() {
	fakes_stop
}

# at_least A B: A >= B, for ms that may have a fraction.
at_least() {
	awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }' || fail "$1 is below $2"
}
at_most() {
	awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }' || fail "$1 is above $2"
}

# retry_log STDERR FIELD: FIELD of each http_retry event, one a line.
retry_log() {
	jq -r "select(.event == \"http_retry\") | .$2" <<<"$1"
}

@test "a 429 with retry-after-ms: 1200 is retried after at least 1.2 s" {
	# the backoff alone would wait at most 1 ms: the hint decides
	export DQ_RETRY_BASE_MS=1
	fake_script f '{"answers":[{"status":429,"headers":{"retry-after-ms":"1200","Retry-After":"5"}},{"status":200,"body":"done"}]}'
	run --separate-stderr "$HT" "$(fake_url f /chat)"
	assert_success
	assert_equal "$(jq -c '[.status, .attempts]' <<<"$output")" '[200,2]'
	at_least "$(fake_gaps f)" 1200
	at_most "$(fake_gaps f)" 3000
	assert_equal "$(retry_log "$stderr" wait_ms)" 1200
	assert_equal "$(retry_log "$stderr" http_status)" 429
}

@test "x-ms-retry-after-ms is honoured before Retry-After" {
	export DQ_RETRY_BASE_MS=1
	fake_script f '{"answers":[{"status":503,"headers":{"x-ms-retry-after-ms":"400","Retry-After":"5"}},{"status":200}]}'
	run --separate-stderr "$HT" "$(fake_url f)"
	assert_success
	assert_equal "$(retry_log "$stderr" wait_ms)" 400
	at_least "$(fake_gaps f)" 400
	at_most "$(fake_gaps f)" 2500
}

@test "a 429 with Retry-After: 2 is retried after at least 2 s" {
	export DQ_RETRY_BASE_MS=1
	fake_script f '{"answers":[{"status":429,"headers":{"Retry-After":"2"}},{"status":200}]}'
	run --separate-stderr "$HT" "$(fake_url f)"
	assert_success
	assert_equal "$(jq .attempts <<<"$output")" 2
	at_least "$(fake_gaps f)" 2000
	at_most "$(fake_gaps f)" 4000
}

@test "a Retry-After HTTP date is honoured" {
	export DQ_RETRY_BASE_MS=1
	# three seconds ahead, to the second: a wait of more than two
	fake_script f '{"answers":[{"status":503,"headers":{"Retry-After":"{http_date+3}"}},{"status":200}]}'
	run --separate-stderr "$HT" "$(fake_url f)"
	assert_success
	assert_equal "$(jq .attempts <<<"$output")" 2
	at_least "$(fake_gaps f)" 1900
	at_most "$(fake_gaps f)" 4500
}

@test "503s without headers get growing, jittered waits" {
	export DQ_RETRY_BASE_MS=40
	fake_script f '{"answers":[{"status":503,"times":6},{"status":200}]}'
	run --separate-stderr "$HT" "$(fake_url f)"
	assert_success
	assert_equal "$(jq .attempts <<<"$output")" 7
	# each wait drawn from [0, 40 * 2^n]: the ceilings double, the waits stay under them
	assert_equal "$(retry_log "$stderr" ceiling_ms | paste -sd ' ')" "40 80 160 320 640 1280"
	local waits gaps i
	mapfile -t waits < <(retry_log "$stderr" wait_ms)
	mapfile -t gaps < <(fake_gaps f)
	for i in 0 1 2 3 4 5; do
		at_most "${waits[i]}" $((40 << i))
		at_least "${gaps[i]}" "${waits[i]}"
	done
	# jittered: not every wait is its ceiling, and not all are the same
	[ "$(printf '%s\n' "${waits[@]}" | sort -u | wc -l)" -gt 1 ]
	[ "${waits[*]}" != "40 80 160 320 640 1280" ]
}

@test "no wait is longer than DQ_RETRY_CAP_MS, whatever the server asks" {
	export DQ_RETRY_CAP_MS=300
	fake_script f '{"answers":[{"status":429,"headers":{"Retry-After":"30"}},{"status":200}]}'
	run --separate-stderr "$HT" "$(fake_url f)"
	assert_success
	assert_equal "$(retry_log "$stderr" wait_ms)" 300
	at_most "$(fake_gaps f)" 2000
}

@test "the retries stop at DQ_RETRY_BUDGET_MS: a transient system error, 75" {
	export DQ_RETRY_BASE_MS=200 DQ_RETRY_CAP_MS=400 DQ_RETRY_BUDGET_MS=1500 DQ_RETRY_ATTEMPTS=100
	fake_script f '{"answers":[{"status":503}]}'
	run --separate-stderr "$HT" "$(fake_url f)"
	assert_failure 75
	assert_equal "$(jq -c '.error | [.code, .scope, .status, .retryable, .budget_spent, .http_status]' <<<"$output")" \
		'["unavailable","system",75,true,true,503]'
	at_most "$(jq .ms <<<"$output")" 1800
	# the last request came within the budget
	at_most "$(fake_stats f '.log[-1].t_ms - .log[0].t_ms')" 1500
	assert_equal "$(jq .attempts <<<"$output")" "$(fake_stats f .requests)"
}

@test "no wait crosses the caller's deadline" {
	export DQ_RETRY_ATTEMPTS=100
	fake_script f '{"answers":[{"status":503,"headers":{"retry-after-ms":"300"}}]}'
	run --separate-stderr "$HT" --deadline-ms 1000 "$(fake_url f)"
	assert_failure 75
	# (an attempt under way at the deadline is cut there: a few ms of slack)
	at_most "$(jq .ms <<<"$output")" 1100
	# 300 ms apart within 1000 ms: 4 requests (at 0, 300, 600, 900)
	at_most "$(fake_stats f .requests)" 4
	at_least "$(fake_stats f .requests)" 3
	assert_equal "$(jq .error.budget_spent <<<"$output")" true
}

@test "a hint that ends past the deadline is not waited for: given up at once" {
	fake_script f '{"answers":[{"status":429,"headers":{"Retry-After":"3"}}]}'
	run --separate-stderr "$HT" --deadline-ms 2000 "$(fake_url f)"
	assert_failure 75
	assert_equal "$(fake_stats f .requests)" 1
	at_most "$(jq .ms <<<"$output")" 1000
}

@test "an answer slower than the deadline is cut at the deadline" {
	export DQ_RETRY_ATTEMPTS=100
	fake_script f '{"answers":[{"status":200,"delay_ms":5000}]}'
	run --separate-stderr "$HT" --deadline-ms 700 "$(fake_url f)"
	assert_failure 75
	assert_equal "$(jq -r .error.code <<<"$output")" timeout
	at_most "$(jq .ms <<<"$output")" 1500
}

@test "a 401 is not retried and is a configuration error, 78" {
	fake_script f '{"answers":[{"status":401,"body":"{\"error\":{\"code\":\"PermissionDenied\"}}"}]}'
	run --separate-stderr "$HT" "$(fake_url f)"
	assert_failure 78
	assert_equal "$(jq -c '.error | [.code, .scope, .status, .retryable, .http_status]' <<<"$output")" \
		'["unauthorized","system",78,false,401]'
	assert_equal "$(fake_stats f .requests)" 1
	assert_equal "$(jq -r 'select(.event == "http_failed") | [.code, .http_status, .request_id] | @tsv' <<<"$stderr")" \
		"$(printf 'unauthorized\t401\tfake-1')"
}

@test "a 401 to a signed request drops the credential and sends it once more, never in a loop" {
	fake_script f '{"answers":[{"status":401},{"status":200}]}'
	run --separate-stderr "$HT" --sign "$(fake_url f)"
	assert_success
	assert_equal "$(fake_stats f '[.log[].headers.Authorization]')" '["Bearer token-1","Bearer token-2"]'
	fake_script g '{"answers":[{"status":401}]}'
	run --separate-stderr "$HT" --sign "$(fake_url g)"
	assert_failure 78
	assert_equal "$(jq -c '[.error.code, .attempts]' <<<"$output")" '["unauthorized",2]'
	assert_equal "$(fake_stats g .requests)" 2
	refute_output --partial token-
	[[ "$stderr" != *token-* ]] || fail "a token in the log: $stderr"
}

@test "a signed request is signed anew for every retry" {
	fake_script f '{"answers":[{"status":503,"times":2},{"status":200}]}'
	run --separate-stderr "$HT" --sign "$(fake_url f)"
	assert_success
	assert_equal "$(fake_stats f '[.log[].headers["x-test-signed"]]')" '["1","2","3"]'
}

@test "the fake takes a script at run time and counts only what is not its control" {
	fake_start f
	run --separate-stderr "$HT" -X POST -H 'Content-Type: application/json' \
		-d '{"answers":[{"status":418}]}' "$(fake_url f /_fake/script)"
	assert_success
	assert_equal "$(jq .status <<<"$output")" 204
	run --separate-stderr "$HT" "$(fake_url f /x)"
	assert_failure 65
	assert_equal "$(jq .error.http_status <<<"$output")" 418
	run --separate-stderr "$HT" "$(fake_url f /_fake/stats)"
	assert_success
	assert_equal "$(fake_stats f '[.requests, .connections, .log[0].path]')" '[1,1,"/x"]'
}

@test "the fake answers by method and path, and keeps what was sent" {
	fake_script f '{"answers":[
		{"method":"PUT","path":"/raw/","status":201,"times":1},
		{"method":"PUT","path":"/raw/","status":409},
		{"method":"GET","status":200,"body":"got"}]}'
	run --separate-stderr "$HT" -X PUT -H 'Content-Type: text/plain' -d 'hello' "$(fake_url f /raw/a)"
	assert_equal "$(jq .status <<<"$output")" 201
	run --separate-stderr "$HT" -X PUT -d 'again' "$(fake_url f /raw/a)"
	assert_equal "$(jq .status <<<"$output")" 409
	run --separate-stderr "$HT" "$(fake_url f /anything)"
	assert_equal "$(jq .status <<<"$output")" 200
	# none fits: 404
	run --separate-stderr "$HT" -X DELETE "$(fake_url f /raw/a)"
	assert_success
	assert_equal "$(jq .status <<<"$output")" 404
	assert_equal "$(fake_stats f '[.log[] | [.method, .path, .body]]')" \
		'[["PUT","/raw/a","hello"],["PUT","/raw/a","again"],["GET","/anything",""],["DELETE","/raw/a",""]]'
}

@test "a 403 is not retried either" {
	fake_script f '{"answers":[{"status":403}]}'
	run --separate-stderr "$HT" "$(fake_url f)"
	assert_failure 78
	assert_equal "$(jq -r .error.code <<<"$output")" forbidden
	assert_equal "$(fake_stats f .requests)" 1
}

@test "404, 409 and 412 are answers for the caller; another 4xx is a record error, 65" {
	local st
	for st in 404 409 412; do
		fake_script "f$st" "{\"answers\":[{\"status\":$st}]}"
		run --separate-stderr "$HT" "$(fake_url "f$st")"
		assert_success
		assert_equal "$(jq -c '[.status, .attempts, .error]' <<<"$output")" "[$st,1,null]"
	done
	fake_script f400 '{"answers":[{"status":400,"body":"bad parameter"}]}'
	run --separate-stderr "$HT" "$(fake_url f400)"
	assert_failure 65
	assert_equal "$(jq -c '.error | [.code, .scope, .http_status]' <<<"$output")" '["http_4xx","record",400]'
	assert_equal "$(fake_stats f400 .requests)" 1
}

@test "an error body in a message is one line of printable text, cut at 200 bytes" {
	fake_script f "{\"answers\":[{\"status\":400,\"body\":\"first line\\nsecond \\u00e9t\\u00e9 $(printf 'x%.0s' $(seq 300))\"}]}"
	run --separate-stderr "$HT" "$(fake_url f)"
	assert_failure 65
	assert_equal "$(jq -r .error.message <<<"$output" | sed 's/127\.0\.0\.1:[0-9]*/HOST/')" \
		"GET http://HOST/: 400 first line second ??t?? $(printf 'x%.0s' $(seq 175))..."
}

@test "a caller's own lists of statuses win over the defaults" {
	export DQ_RETRY_BASE_MS=1 DQ_RETRY_ATTEMPTS=3
	fake_script a '{"answers":[{"status":404}]}'
	run --separate-stderr "$HT" --retry 404 "$(fake_url a)"
	assert_failure 75
	assert_equal "$(fake_stats a .requests)" 3
	fake_script b '{"answers":[{"status":503}]}'
	run --separate-stderr "$HT" --return 503 --return 400 "$(fake_url b)"
	assert_success
	assert_equal "$(jq -c '[.status, .attempts]' <<<"$output")" '[503,1]'
}

@test "an answer over max_body is the record's error, not retried" {
	fake_script f '{"answers":[{"status":200,"body":"0123456789abcdefghij"}]}'
	run --separate-stderr "$HT" --max-body 10 "$(fake_url f)"
	assert_failure 65
	assert_equal "$(jq -c '[.error.code, .error.scope, .attempts]' <<<"$output")" '["too_large","record",1]'
	run --separate-stderr "$HT" --max-body 20 "$(fake_url f)"
	assert_success
	assert_equal "$(jq .body_len <<<"$output")" 20
}

@test "a dropped connection is retried" {
	fake_script f '{"answers":[{"drop":true},{"status":200,"body":"ok"}]}'
	run --separate-stderr "$HT" "$(fake_url f)"
	assert_success
	assert_equal "$(jq -c '[.status, .attempts]' <<<"$output")" '[200,2]'
	assert_equal "$(retry_log "$stderr" code)" connect_failed
}

@test "a server that is not there is retried, then a transient error" {
	local port
	port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	export DQ_RETRY_ATTEMPTS=3
	run --separate-stderr "$HT" "http://127.0.0.1:$port/"
	assert_failure 75
	assert_equal "$(jq -c '[.attempts, .error.code, .error.budget_spent]' <<<"$output")" '[3,"connect_failed",true]'
}

@test "a 503-forever server sees exactly the requests of one budget" {
	export DQ_RETRY_BASE_MS=1 DQ_RETRY_ATTEMPTS=4
	fake_script f '{"answers":[{"status":503}]}'
	run --separate-stderr "$HT" "$(fake_url f)"
	assert_failure 75
	assert_equal "$(fake_stats f .requests)" 4
	assert_equal "$(jq -c '[.attempts, .error.budget_spent]' <<<"$output")" '[4,true]'
}

@test "200 requests from 10 threads open at most 10 connections; one thread opens 1" {
	fake_script par '{"answers":[{"status":200,"body":"ok","delay_ms":5}]}'
	run --separate-stderr "$HT" -n 10 -m 20 "$(fake_url par)"
	assert_success
	assert_equal "$(grep -c '"status":200' <<<"$output")" 200
	assert_equal "$(fake_stats par .requests)" 200
	at_most "$(fake_stats par .connections)" 10
	at_least "$(fake_stats par .connections)" 2
	fake_script seq '{"answers":[{"status":200,"body":"ok"}]}'
	run --separate-stderr "$HT" -n 1 -m 200 "$(fake_url seq)"
	assert_success
	assert_equal "$(fake_stats seq .requests)" 200
	assert_equal "$(fake_stats seq .connections)" 1
}

@test "the request id is kept: x-ms-request-id, then apim-request-id, then x-request-id" {
	fake_script a '{"answers":[{"status":200,"headers":{"apim-request-id":"apim-7","x-request-id":"xr-7"}}]}'
	run --separate-stderr "$HT" "$(fake_url a)"
	assert_success
	assert_equal "$(jq -r .request_id <<<"$output")" apim-7
	fake_script b '{"answers":[{"status":200,"headers":{"x-request-id":"xr-8","x-ms-request-id":"ms-8"}}]}'
	run --separate-stderr "$HT" "$(fake_url b)"
	assert_equal "$(jq -r .request_id <<<"$output")" ms-8
}

@test "a body streamed from a file is sent whole on every attempt" {
	head -c 100000 /dev/urandom >"$BATS_TEST_TMPDIR/up"
	fake_script f '{"answers":[{"status":503},{"status":201}]}'
	run --separate-stderr "$HT" -X PUT -H 'Content-Type: application/octet-stream' \
		--upload "$BATS_TEST_TMPDIR/up" "$(fake_url f /c/b)"
	assert_success
	assert_equal "$(jq .status <<<"$output")" 201
	assert_equal "$(fake_stats f '[.log[] | [.method, .body_len]]')" '[["PUT",100000],["PUT",100000]]'
	assert_equal "$(fake_stats f '.log[0].headers["Content-Type"]')" '"application/octet-stream"'
}

@test "an answer downloaded to a file holds one answer's body, after a retry too" {
	fake_script f '{"answers":[{"status":200,"body":"a first body, cut short","truncate":true},{"status":200,"body":"the whole body"}]}'
	run --separate-stderr "$HT" --download "$BATS_TEST_TMPDIR/down" "$(fake_url f)"
	assert_success
	assert_equal "$(jq -c '[.status, .attempts]' <<<"$output")" '[200,2]'
	assert_equal "$(cat "$BATS_TEST_TMPDIR/down")" "the whole body"
}

@test "a small body from memory; PUT and DELETE without one send Content-Length: 0" {
	fake_script f '{"answers":[{"status":201}]}'
	run --separate-stderr "$HT" -X POST -H 'Content-Type: application/json' -d '{"a":1}' "$(fake_url f)"
	assert_success
	run --separate-stderr "$HT" -X DELETE "$(fake_url f)"
	assert_success
	run --separate-stderr "$HT" -X PUT "$(fake_url f)"
	assert_success
	# no Expect: 100-continue, and no content type but the caller's (libcurl
	# would add a form's to a body: a Shared Key signature must see what is sent)
	assert_equal "$(fake_stats f '[.log[] | [.method, .body_len, .headers["Content-Length"], .headers.Expect, .headers["Content-Type"]]]')" \
		'[["POST",7,"7",null,"application/json"],["DELETE",0,"0",null,null],["PUT",0,"0",null,null]]'
}

@test "credentials over plain http to a non-loopback host are refused before any connection" {
	local run_isolated=()
	# in a network namespace of its own when one can be made: no packet can leave
	if unshare -rn true 2>/dev/null; then run_isolated=(unshare -rn); fi
	export DQ_HTTP_CONNECT_TIMEOUT_MS=1
	run --separate-stderr "${run_isolated[@]}" "$HT" --credentials http://192.0.2.1:9/x
	assert_failure 78
	assert_equal "$(jq -c '[.error.code, .attempts]' <<<"$output")" '["insecure_transport",0]'
	# a key header, a SAS in the query: the same without being told
	run --separate-stderr "${run_isolated[@]}" "$HT" -H 'api-key: S3CRET-k' http://example.invalid/x
	assert_failure 78
	assert_equal "$(jq -r .error.code <<<"$output")" insecure_transport
	run --separate-stderr "${run_isolated[@]}" "$HT" 'http://10.1.2.3/c/b?sv=2023&sig=S3CRETsig'
	assert_failure 78
	assert_equal "$(jq -r .error.code <<<"$output")" insecure_transport
	refute_output --partial S3CRET
	# without credentials the rule does not apply (the failure is the connection's)
	export DQ_RETRY_ATTEMPTS=1
	run --separate-stderr "${run_isolated[@]}" "$HT" http://192.0.2.1:9/x
	refute_output --partial insecure_transport
}

@test "credentials over plain http to loopback are sent (emulators)" {
	fake_script f '{"answers":[{"status":200}]}'
	local port
	port=$(fake_port f)
	for url in "http://127.0.0.1:$port/" "http://localhost:$port/" "http://127.0.0.2:$port/"; do
		run --separate-stderr "$HT" --credentials -H 'Authorization: Bearer S3CRET-t' "$url"
		[ "$url" = "http://127.0.0.2:$port/" ] && [ "$status" -eq 75 ] && continue # not bound there
		assert_success
	done
	assert_equal "$(fake_stats f '.log[0].headers.Authorization')" '"Bearer S3CRET-t"'
}

@test "a CGI request's Proxy: header (HTTP_PROXY) never becomes a proxy, nor does http_proxy for plain http" {
	fake_script target '{"answers":[{"status":200}]}'
	fake_script proxy '{"answers":[{"status":502}]}'
	run --separate-stderr env GATEWAY_INTERFACE=CGI/1.1 HTTP_PROXY="$(fake_url proxy)" \
		http_proxy="$(fake_url proxy)" ALL_PROXY="$(fake_url proxy)" "$HT" "$(fake_url target)"
	assert_success
	assert_equal "$(fake_stats target .requests)" 1
	assert_equal "$(fake_stats proxy .requests)" 0
}

# tls_fake NAME: fake NAME over https with a new self-signed certificate for
# 127.0.0.1 in $BATS_TEST_TMPDIR/tls (cert.pem, key.pem), answering 200.
tls_fake() {
	local d=$BATS_TEST_TMPDIR/tls
	mkdir -p "$d"
	[ -f "$d/cert.pem" ] || openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/key.pem" \
		-out "$d/cert.pem" -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null ||
		fail "openssl could not make a certificate"
	printf '%s\n' '{"answers":[{"status":200,"body":"over tls"}]}' >"$d/script.json"
	fake_start "$1" --script "$d/script.json" --tls-cert "$d/cert.pem" --tls-key "$d/key.pem"
}

@test "https goes through HTTPS_PROXY as libcurl reads it, unless the request says no_proxy" {
	export DQ_RETRY_ATTEMPTS=1
	tls_fake target
	fake_script proxy '{"answers":[{"status":403,"body":"no tunnel"}]}'
	local url
	url="https://127.0.0.1:$(fake_port target)/"
	HTTPS_PROXY=$(fake_url proxy) DQ_CA_FILE=$BATS_TEST_TMPDIR/tls/cert.pem run --separate-stderr "$HT" "$url"
	assert_failure 75
	assert_equal "$(fake_stats proxy '[.requests, .log[0].method, .log[0].path]')" \
		"[1,\"CONNECT\",\"127.0.0.1:$(fake_port target)\"]"
	assert_equal "$(fake_stats target .requests)" 0
	HTTPS_PROXY=$(fake_url proxy) DQ_CA_FILE=$BATS_TEST_TMPDIR/tls/cert.pem run --separate-stderr "$HT" --no-proxy "$url"
	assert_success
	assert_equal "$(fake_stats proxy .requests)" 1
	assert_equal "$(fake_stats target .requests)" 1
}

@test "TLS is verified; DQ_CA_FILE adds a CA to the trust store" {
	local d=$BATS_TEST_TMPDIR/tls
	tls_fake tls
	local url
	url="https://127.0.0.1:$(fake_port tls)/"
	run --separate-stderr "$HT" "$url"
	assert_failure 78
	assert_equal "$(jq -c '[.error.code, .attempts]' <<<"$output")" '["tls",1]'
	DQ_CA_FILE=$d/cert.pem run --separate-stderr "$HT" -m 5 "$url"
	assert_success
	assert_equal "$(jq -s -c '[.[].status]' <<<"$output")" '[200,200,200,200,200]'
	# one handshake for the five, the connection kept (the refused one made no request)
	assert_equal "$(fake_stats tls '[.requests, .connections]')" '[5,1]'
	# added, not substituted: the system's CAs stay (a bundle that is no CA at all is refused)
	DQ_CA_FILE=$d/key.pem run --separate-stderr "$HT" "$url"
	assert_failure 78
	assert_equal "$(jq -r .error.code <<<"$output")" tls
}

@test "redaction: SAS values, keys and tokens never show, harmless query values do" {
	run "$HT" --redact-url 'https://a.blob.core.windows.net/c/b?sv=2023-11-03&se=2026&sp=r&sig=S3CRET%2B&skoid=S3CRET-oid&comp=block&blockid=QUFB'
	assert_success
	assert_output 'https://a.blob.core.windows.net/c/b?sv=REDACTED&se=REDACTED&sp=REDACTED&sig=REDACTED&skoid=REDACTED&comp=block&blockid=QUFB'
	run "$HT" --redact-url 'https://user:S3CRET@h/p?api-version=2025-04-01-preview&api-key=S3CRET#frag'
	assert_output 'https://REDACTED@h/p?api-version=2025-04-01-preview&api-key=REDACTED'
	run "$HT" --redact-text 'Authorization: Bearer S3CRET.a.b failed; SharedAccessSignature sr=x&sig=S3CRET&se=1 and {"access_token":"S3CRET"} AccountKey=S3CRET=='
	refute_output --partial S3CRET
	assert_output --partial 'Bearer REDACTED'
	local h
	for h in Authorization Proxy-Authorization api-key x-api-key x-ms-encryption-key X-IDENTITY-HEADER Cookie; do
		assert_equal "$("$HT" --secret-header "$h")" 1
	done
	for h in x-ms-version Content-Type x-ms-date x-ms-client-request-id; do
		assert_equal "$("$HT" --secret-header "$h")" 0
	done
}

@test "no secret in any output: keys in headers, a SAS in the URL, an answer that echoes them" {
	export LOG_LEVEL=DEBUG
	fake_script f '{"answers":[
		{"status":503,"body":"busy, your token Bearer S3CRET-token was fine"},
		{"status":403,"body":"AuthenticationFailed: sig=S3CRET-sig is wrong for api-key S3CRET-key"}]}'
	run --separate-stderr "$HT" -H 'Authorization: Bearer S3CRET-token' -H 'api-key: S3CRET-key' \
		"$(fake_url f '/c/b?sv=2023-11-03&sig=S3CRET-sig&se=2030-01-01&api-version=1')"
	assert_failure 78
	[ -n "$stderr" ]
	assert_equal "$(jq -r .error.code <<<"$output")" forbidden
	refute_output --partial S3CRET
	if grep -q S3CRET <<<"$stderr"; then
		fail "a secret in the log: $(grep S3CRET <<<"$stderr")"
	fi
	# what was logged still says where: the path and the harmless parameter
	assert_equal "$(jq -r 'select(.event == "http_retry") | .url' <<<"$stderr" | sed 's/127\.0\.0\.1:[0-9]*/127.0.0.1:PORT/')" \
		'http://127.0.0.1:PORT/c/b?sv=REDACTED&sig=REDACTED&se=REDACTED&api-version=1'
}

# analyze_one: a message record of one image of the reference set, in $BATS_TEST_TMPDIR/m.
analyze_one() {
	reference_setup 40 -W 320 -H 240 --refs 2 --good 1 --defects 1
	dq-put --sku WK-KN-200 --facility yangjiang "$S/samples/good-001.jpg" >"$BATS_TEST_TMPDIR/m" 2>/dev/null ||
		fail "dq-put failed"
}

@test "dq-analyze does not retry what the HTTP layer retried: a 503-forever model costs one budget" {
	analyze_one
	export DQ_RETRY_BASE_MS=1 DQ_RETRY_ATTEMPTS=3
	fake_script model '{"answers":[{"status":503}]}'
	DQ_TEST_ANALYZE_URL=$(fake_url model /chat) run --separate-stderr dq-analyze <"$BATS_TEST_TMPDIR/m"
	assert_failure 75
	assert_equal "$(jq -c '.error | [.code, .retryable, .http_status]' <<<"$output")" '["test_model_unavailable",true,503]'
	# three attempts of one budget, not three of three
	assert_equal "$(fake_stats model .requests)" 3
	assert_equal "$(log_events "$stderr" | grep -c '^http_retry$')" 2
	refute_line --partial analyze_retry <<<"$(log_events "$stderr")"
}

@test "a SAS in a model's URL reaches neither the record nor the log" {
	analyze_one
	export DQ_RETRY_BASE_MS=1 DQ_RETRY_ATTEMPTS=2 LOG_LEVEL=DEBUG
	fake_script model '{"answers":[{"status":503,"body":"try again, sig=S3CRET-sig"}]}'
	DQ_TEST_ANALYZE_URL=$(fake_url model '/chat?sv=1&sig=S3CRET-sig') run --separate-stderr dq-analyze <"$BATS_TEST_TMPDIR/m"
	assert_failure 75
	assert_equal "$(jq -r .error.code <<<"$output")" test_model_unavailable
	assert_output --partial 'sig=REDACTED'
	refute_output --partial S3CRET
	[[ "$stderr" != *S3CRET* ]] || fail "a secret in the log: $stderr"
	[[ "$stderr" == *sig=REDACTED* ]] || fail "the log does not say which URL: $stderr"
}

@test "dq-analyze still retries a transient failure nobody retried, by the same policy" {
	analyze_one
	export DQ_RETRY_BASE_MS=1 DQ_RETRY_ATTEMPTS=3
	fake_script model '{"answers":[{"status":409,"times":2},{"status":200}]}'
	DQ_TEST_ANALYZE_URL=$(fake_url model /chat) run --separate-stderr dq-analyze <"$BATS_TEST_TMPDIR/m"
	assert_success
	assert_equal "$(jq -r '.artifact.analysis.analyzer' <<<"$output")" reference
	assert_equal "$(fake_stats model .requests)" 3
	assert_equal "$(log_events "$stderr" | grep -c '^analyze_retry$')" 2
	# and gives up after DQ_RETRY_ATTEMPTS
	fake_script busy '{"answers":[{"status":409}]}'
	DQ_TEST_ANALYZE_URL=$(fake_url busy /chat) run --separate-stderr dq-analyze <"$BATS_TEST_TMPDIR/m"
	assert_failure 75
	assert_equal "$(jq -r .error.code <<<"$output")" test_model_busy
	assert_equal "$(fake_stats busy .requests)" 3
}

@test "--print-config shows a URL's SAS or key redacted" {
	export DQ_BLOB_ENDPOINT='https://acct.blob.core.windows.net/?sv=2023-11-03&sig=S3CRET-sig' \
		AZURE_AI_PROJECT_ENDPOINT='https://res.openai.azure.com/?api-key=S3CRET-key&api-version=1'
	run --separate-stderr dq-analyze --print-config
	assert_success
	refute_output --partial S3CRET
	assert_equal "$(jq -r '.variables.DQ_BLOB_ENDPOINT' <<<"$output")" \
		'https://acct.blob.core.windows.net/?sv=REDACTED&sig=REDACTED'
	assert_equal "$(jq -r '.analyzer.endpoint' <<<"$output")" \
		'https://res.openai.azure.com/?api-key=REDACTED&api-version=1'
}

@test "libcurl is loaded by the first request only: never on the local path, --version or -h" {
	local p
	for p in dq-put dq-enqueue dq-dequeue dq-analyze dq-ingest; do
		run --separate-stderr ldd "$DQ_BUILD/bin/$p"
		refute_output --partial libcurl
	done
	run --separate-stderr env LD_DEBUG=files dq-put --sku WK-KN-200 --facility yangjiang "$FIXTURES/a.jpg"
	assert_success
	[[ "$stderr" != *libcurl* ]] || fail "dq-put loaded libcurl"
	run --separate-stderr env LD_DEBUG=files dq-analyze --version
	assert_success
	[[ "$stderr" != *libcurl* ]] || fail "dq-analyze --version loaded libcurl"
	# the first request does
	fake_script f '{"answers":[{"status":200}]}'
	run --separate-stderr env LD_DEBUG=files "$HT" "$(fake_url f)"
	assert_success
	[[ "$stderr" == *file=libcurl* ]] || fail "no libcurl loaded for a request"
}
