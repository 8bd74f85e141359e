#!/usr/bin/env bats
# dq-ingest through lighttpd (CGI): CORS, forwarded addresses, the Proxy
# header.

load helpers
load ingest

teardown() {
	ingest_teardown
}

UUID=0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10

@test "preflight from an allowed origin gets the CORS headers, without a key" {
	ingest_env CORS_ORIGINS="https://app.example.com, https://ops.example.com"
	lighttpd_start cgi
	run --separate-stderr req -X OPTIONS -H "Origin: https://ops.example.com" \
		-H "Access-Control-Request-Method: POST" \
		-H "Access-Control-Request-Headers: x-api-key, idempotency-key" "$BASE/ingest"
	assert_success
	assert_output 204
	assert_equal "$(header Access-Control-Allow-Origin)" https://ops.example.com
	assert_equal "$(header Vary)" Origin
	[[ "$(header Access-Control-Allow-Methods)" == *POST* ]]
	[[ "$(header Access-Control-Allow-Headers)" == *X-API-Key* ]]
	[[ "$(header Access-Control-Allow-Headers)" == *Idempotency-Key* ]]
	assert_equal "$(stat -c %s "$BODY")" 0
}

@test "preflight from another origin gets no CORS headers" {
	ingest_env CORS_ORIGINS="https://app.example.com"
	lighttpd_start cgi
	local o
	for o in https://evil.example.com https://app.example.com.evil.com http://app.example.com null; do
		run --separate-stderr req -X OPTIONS -H "Origin: $o" -H "Access-Control-Request-Method: POST" "$BASE/ingest"
		assert_output 204
		assert_equal "$(header Access-Control-Allow-Origin)" ""
		assert_equal "$(header Access-Control-Allow-Methods)" ""
		assert_equal "$(header Vary)" Origin
	done
}

@test "an allowed origin's real request carries Access-Control-Allow-Origin and exposes Location" {
	ingest_env CORS_ORIGINS="https://app.example.com"
	lighttpd_start cgi
	local f
	f=$(fixture a.png png 64 48)
	run --separate-stderr post_multipart "$f" -H "Origin: https://app.example.com"
	assert_output 202
	assert_equal "$(header Access-Control-Allow-Origin)" https://app.example.com
	[[ "$(header Access-Control-Expose-Headers)" == *Location* ]]
	# and the preflight exemption is for OPTIONS only
	run --separate-stderr req -H "Origin: https://app.example.com" "$BASE/images/$UUID"
	assert_error 401 unauthorized
	assert_equal "$(header Access-Control-Allow-Origin)" https://app.example.com
}

@test "a Proxy request header changes nothing" {
	ingest_env
	lighttpd_start cgi
	local f
	f=$(fixture a.jpg jpeg 64 48)
	run --separate-stderr post_multipart "$f" -H "Proxy: http://127.0.0.1:9/"
	assert_output 202
	assert_equal "$(raw_count)" 1
	assert_equal "$(ready_count)" 1
	# lighttpd already withholds it from CGI; dq-ingest drops it as well
	# where a server passes it (35-ingest-cgi-direct.bats)
	run jq -r 'select(.event == "request") | .http_status' <<<"$(server_log)"
	assert_output 202
}

@test "X-Forwarded-For is ignored unless the peer is a trusted proxy" {
	ingest_env RATE_LIMIT_PER_IP=1
	lighttpd_start cgi
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -H "X-Forwarded-For: 203.0.113.5" "$BASE/images/$UUID"
	assert_error 404 not_found
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -H "X-Forwarded-For: 203.0.113.6" "$BASE/images/$UUID"
	assert_error 429 rate_limited
	run jq -r 'select(.event == "request") | .client' <<<"$(server_log)"
	assert_output "$(printf '127.0.0.1\n127.0.0.1')"
}

@test "behind a trusted proxy the client is the right-most forwarded address" {
	ingest_env RATE_LIMIT_PER_IP=1 DQ_TRUSTED_PROXY="127.0.0.0/8, ::1"
	lighttpd_start cgi
	# the left entries are the client's own claims: only the right-most counts
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -H "X-Forwarded-For: 198.51.100.1, 203.0.113.5" "$BASE/images/$UUID"
	assert_error 404 not_found
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -H "X-Forwarded-For: 198.51.100.2, 203.0.113.6" "$BASE/images/$UUID"
	assert_error 404 not_found
	run --separate-stderr req -H "X-API-Key: $API_KEY_CAM" -H "X-Forwarded-For: 198.51.100.3, 203.0.113.5" "$BASE/images/$UUID"
	assert_error 429 rate_limited
	run jq -r 'select(.event == "request") | .client' <<<"$(server_log)"
	assert_output "$(printf '203.0.113.5\n203.0.113.6\n203.0.113.5')"
}
