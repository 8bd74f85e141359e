#!/usr/bin/env bats
# dq-ingest(1)'s server recipes, taken from the page and run against
# Debian's lighttpd, nginx, fcgiwrap, spawn-fcgi and Apache on a free
# loopback port: uploads (multipart and raw, small and over 1 MB), an
# artifact a real worker made, the refusals with bodies over 64 KiB (what a
# server feeding the body through a pipe chokes on when it goes unread),
# CORS, and a log line for every request where the page says it goes.

load helpers
load ingest

setup_file() {
	# over 1 MB: two JPEGs (comment segments), one over DQ_MAX_IMAGE_BYTES
	"$PYTHON" "$MKIMAGE" jpeg 64 48 1 1300000 >"$BATS_FILE_TMPDIR/big.jpg"
	"$PYTHON" "$MKIMAGE" jpeg 64 48 2 1300000 >"$BATS_FILE_TMPDIR/big2.jpg"
	"$PYTHON" "$MKIMAGE" jpeg 64 48 3 3000000 >"$BATS_FILE_TMPDIR/huge.jpg"
	"$PYTHON" "$MKIMAGE" png 64 48 4 >"$BATS_FILE_TMPDIR/small.png"
}

setup() {
	SRV=$BATS_TEST_TMPDIR/srv
	mkdir -p "$SRV/www" "$SRV/tmp" "$SRV/apache"
	ingest_env DQ_MAX_IMAGE_BYTES=2097152 CORS_ORIGINS=https://app.example TMPDIR="$SRV/tmp"
	reference_setup 38 -W 160 -H 120 --refs 2 --good 1 --defects 0
	export DQ_WORKER_WAIT_SECONDS=0.2
	SERVER_PIDS=()
	server_user_setup
}

teardown() {
	if [ -z "${BATS_TEST_COMPLETED:-}" ]; then
		local f
		for f in "$SRV"/*.log; do
			[ -f "$f" ] || continue
			echo "# $f:" >&2
			tail -15 "$f" >&2
		done
	fi
	servers_stop
}

# --- the servers' processes --------------------------------------------

# When the tests run as root the servers run as nobody (Apache will not
# serve as root, and no server here needs privileges): the directories they
# use become theirs, and the ones above them searchable.
server_user_setup() {
	SERVER_AS=()
	[ "$(id -u)" -eq 0 ] || return 0
	SERVER_AS=(setpriv --reuid="$(id -u nobody)" --regid="$(id -g nobody)" --clear-groups --)
	local d=$BATS_TEST_TMPDIR
	while [ "$d" != / ]; do
		chmod o+x "$d"
		d=$(dirname "$d")
	done
	mkdir -p "$DQ_LOCAL_DIR" "$DQ_STATE_DIR"
	if ! "${SERVER_AS[@]}" test -x "$INGEST_CGI" -a -x "$DQ_BUILD/bin/dq-ingest"; then
		# a checkout nobody can reach (under /root, say): serve copies
		mkdir -p "$SRV/bin"
		cp "$INGEST_CGI" "$DQ_BUILD/bin/dq-ingest" "$SRV/bin/"
		INGEST_CGI=$SRV/bin/ingest.cgi
	fi
	served_binary
	chown -R nobody "$SRV" "$DQ_LOCAL_DIR" "$DQ_STATE_DIR" "$INGEST_ENV"
	"${SERVER_AS[@]}" test -x "$INGEST_CGI" -a -x "$(sed -n 's/^DQ_INGEST=//p' "$INGEST_ENV")" ||
		fail "nobody cannot run $INGEST_CGI or the dq-ingest it names"
}

# served_binary: the environment file names the dq-ingest the servers run
# (a copy when the checkout is out of their reach); after each ingest_env.
served_binary() {
	[ ! -x "$SRV/bin/dq-ingest" ] || sed -i "s#^DQ_INGEST=.*#DQ_INGEST=$SRV/bin/dq-ingest#" "$INGEST_ENV"
}

# spawn COMMAND...: start a server process in the background, unprivileged,
# its stderr in $SRV/NAME.log (NAME the command's), its PID remembered.
spawn() {
	"${SERVER_AS[@]}" "$@" 2>>"$SRV/${1##*/}.log" &
	SERVER_PIDS+=($!)
}

# servers_stop: the processes this test started, by PID, newest first.
servers_stop() {
	local i pid
	local spawned=()
	[ -f "$SRV/spawn.pids" ] && mapfile -t spawned <"$SRV/spawn.pids"
	SERVER_PIDS+=("${spawned[@]}")
	for ((i = ${#SERVER_PIDS[@]} - 1; i >= 0; i--)); do
		pid=${SERVER_PIDS[i]}
		kill "$pid" 2>/dev/null || continue
		wait_for 10 gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	SERVER_PIDS=()
	rm -f "$SRV/spawn.pids"
}

gone() {
	! kill -0 "$1" 2>/dev/null
}

# up: the server on $PORT serves this test's token (a port another process
# took is no answer).
up() {
	[ "$(curl -s "http://127.0.0.1:$PORT/static.bin")" = "$TOKEN" ]
}

# start KIND MOUNT: the web server KIND (lighttpd, nginx, apache) with the
# configuration lines in $SRV/recipe, on a free port; BASE is its API root.
start() {
	local kind=$1 try
	TOKEN="dq-ingest-test-$$-$RANDOM"
	echo "$TOKEN" >"$SRV/www/static.bin"
	for try in 1 2 3; do
		: "attempt $try"
		PORT=$(free_port)
		"${kind}_conf" >"$SRV/$kind.conf"
		case $kind in
		lighttpd) spawn lighttpd -D -f "$SRV/lighttpd.conf" ;;
		nginx) spawn nginx -e "$SRV/error.log" -p "$SRV" -c "$SRV/nginx.conf" -g 'daemon off;' ;;
		apache) spawn apache2 -f "$SRV/apache.conf" -DFOREGROUND ;;
		esac
		BASE="http://127.0.0.1:$PORT$2"
		wait_for 10 up && return 0
		servers_stop
	done
	fail "$kind did not start: $(cat "$SRV"/*.log)"
}

lighttpd_conf() {
	cat <<-EOF
	server.document-root = "$SRV/www"
	server.bind = "127.0.0.1"
	server.port = $PORT
	server.errorlog = "$SRV/error.log"
	server.upload-dirs = ("$SRV/tmp")
	server.modules = ()
	EOF
	cat "$SRV/recipe"
}

nginx_conf() {
	cp /etc/nginx/fastcgi_params "$SRV/"
	cat <<-EOF
	worker_processes 1;
	pid $SRV/nginx.pid;
	events { worker_connections 64; }
	http {
	    access_log off;
	    client_body_temp_path $SRV/tmp/nginx-body;
	    fastcgi_temp_path $SRV/tmp/nginx-fastcgi;
	    proxy_temp_path $SRV/tmp/nginx-proxy;
	    uwsgi_temp_path $SRV/tmp/nginx-uwsgi;
	    scgi_temp_path $SRV/tmp/nginx-scgi;
	    server {
	        listen 127.0.0.1:$PORT;
	        location / { root $SRV/www; }
	EOF
	cat "$SRV/recipe"
	echo '    }'
	echo '}'
}

# The modules Debian's apache2 enables by default that the recipes use.
apache_conf() {
	ln -sfn /usr/lib/apache2/modules "$SRV/apache/modules"
	cat <<-EOF
	ServerRoot $SRV/apache
	ServerName 127.0.0.1
	Listen 127.0.0.1:$PORT
	PidFile $SRV/apache/httpd.pid
	DefaultRuntimeDir $SRV/apache
	ErrorLog $SRV/error.log
	LoadModule mpm_event_module modules/mod_mpm_event.so
	LoadModule authz_core_module modules/mod_authz_core.so
	LoadModule alias_module modules/mod_alias.so
	LoadModule env_module modules/mod_env.so
	DocumentRoot $SRV/www
	EOF
	cat "$SRV/recipe"
	printf '<IfModule mod_cgid.c>\nScriptSock %s\n</IfModule>\n' "$SRV/apache/cgid.sock"
}

# recipe TEXT: the page's block starting with TEXT, with this test's paths,
# into $SRV/recipe (and on stdout).
recipe() {
	example_with "$1" | sed -e :a -e '/\\$/N; s/\\\n *//; ta' |
		sed "s#/usr/local/libexec/dq/ingest.cgi#$INGEST_CGI#g; s#/etc/dq/env#$INGEST_ENV#g;
			s#/run/lighttpd/dq-ingest.sock#$SRV/lighttpd.sock#g; s#/run/fcgiwrap.socket#$SRV/fcgiwrap.socket#g;
			s#/run/dq/ingest.sock#$SRV/ingest.sock#g; s#/var/log/lighttpd/dq-ingest.log#$SRV/breakage.log#g" |
		tee "$SRV/recipe"
}

# spawn_fcgi: the page's spawn-fcgi command (its PIDs in $SRV/spawn.pids).
spawn_fcgi() {
	local cmd
	cmd=$(recipe '# spawn-fcgi' | grep -v '^#' | sed "s#spawn-fcgi #spawn-fcgi -P $SRV/spawn.pids #")
	run --separate-stderr "${SERVER_AS[@]}" sh -c "$cmd"
	assert_success
	[ -S "$SRV/ingest.sock" ]
}

# fcgiwrap: the page's fcgiwrap command, its stderr in $SRV/fcgiwrap.log.
fcgiwrap_start() {
	local cmd
	cmd=$(recipe '# fcgiwrap' | grep -v '^#')
	# shellcheck disable=SC2086
	spawn $cmd
	wait_for 10 test -S "$SRV/fcgiwrap.socket"
}

# --- what every recipe must serve ----------------------------------------

Q='product_sku=WK-KN-200&facility=yangjiang'

# ask [curl options...] URL: req, and remember the status when dq-ingest
# answered (its answers say nosniff; a server's own do not).
ask() {
	local code
	code=$(req "$@")
	if [ "$(header X-Content-Type-Options)" = nosniff ]; then
		echo "$code" >>"$BATS_TEST_TMPDIR/answered"
	fi
	echo "$code"
}

# is STATUS [CODE]: the last ask's status, and its JSON error code.
is() {
	assert_output "$1"
	if [ -n "${2:-}" ]; then
		assert_equal "$(jq -r .error.code "$BODY")" "$2"
	fi
}

# The request lines of dq-ingest in LOG (whatever the server puts around them).
request_lines() {
	grep -ao '{"ts".*}' "$1" | jq -c 'select(.event == "request")'
}

logged_all() {
	[ "$(request_lines "$1" | wc -l)" -eq "$(wc -l <"$BATS_TEST_TMPDIR/answered")" ]
}

# serves MOUNT LOG: the contract through the server at $BASE, mounted at
# MOUNT, its request log lines in LOG.
serves() {
	local mount=$1 log=$2 id raw sample
	sample=$(echo "$S"/samples/good-*.jpg)
	: >"$BATS_TEST_TMPDIR/answered"

	# a form; Location where the server mounted the program; a real artifact
	run ask -H "X-API-Key: $API_KEY_CAM" -F "image=@$sample" -F product_sku=WK-KN-200 \
		-F facility=yangjiang -F 'metadata={"line":"L3"}' "$BASE/ingest"
	is 202
	id=$(jq -r .image_id "$BODY")
	assert_equal "$(header Location)" "$mount/images/$id"
	run ask -H "X-API-Key: $API_KEY_CAM" "http://127.0.0.1:$PORT$mount/images/$id"
	is 202
	assert_equal "$(jq -r .status "$BODY")" pending
	run --separate-stderr dq-worker --drain
	assert_success
	run ask -H "Authorization: Bearer $API_KEY_OPS" "http://127.0.0.1:$PORT$mount/images/$id"
	is 200
	assert_equal "$(jq -r '.image_id, .metadata.extra.line, (.defect_findings | type)' "$BODY")" \
		"$(printf '%s\nL3\nobject' "$id")"

	# over 1 MB, raw with a Bearer key and as a form; small raw
	run ask -H "Authorization: Bearer $API_KEY_CAM" -H 'Content-Type: image/jpeg' \
		--data-binary "@$BATS_FILE_TMPDIR/big.jpg" "$BASE/ingest?$Q"
	is 202
	raw=$(jq -r .image_id "$BODY")
	run ask -H "X-API-Key: $API_KEY_CAM" -F "image=@$BATS_FILE_TMPDIR/big2.jpg" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	is 202
	run ask -H "X-API-Key: $API_KEY_CAM" -H 'Content-Type: image/png' \
		--data-binary "@$BATS_FILE_TMPDIR/small.png" "$BASE/ingest?$Q"
	is 202
	run ask -H "X-API-Key: $API_KEY_CAM" "http://127.0.0.1:$PORT$mount/images/$raw"
	is 202
	run --separate-stderr dq-dequeue --peek -n 10 -w 0
	assert_equal "$(jq -r 'select(.message.image_id == "'"$raw"'") | .message.image.sha256' <<<"$output")" \
		"$(sha256sum "$BATS_FILE_TMPDIR/big.jpg" | cut -d' ' -f1)"
	assert_equal "$(grep -c . <<<"$output")" 3

	# refusals, each with a body over 64 KiB: an answer, not a 502 or nothing
	run ask -H "X-API-Key: wrong" -H 'Content-Type: image/jpeg' \
		--data-binary "@$BATS_FILE_TMPDIR/big.jpg" "$BASE/ingest?$Q"
	is 401 unauthorized
	assert_equal "$(header WWW-Authenticate)" 'Bearer realm="dq"'
	run ask -H "X-API-Key: $API_KEY_CAM" -H 'Content-Type: image/jpeg' \
		--data-binary "@$BATS_FILE_TMPDIR/big.jpg" "$BASE/ingest?$Q&facility=twice"
	is 400 bad_query
	run ask -H "X-API-Key: $API_KEY_CAM" -H 'Content-Type: text/plain' \
		--data-binary "@$BATS_FILE_TMPDIR/big.jpg" "$BASE/ingest?$Q"
	is 415 unsupported_media_type
	run ask -H "X-API-Key: $API_KEY_CAM" -H 'Content-Type: image/jpeg' \
		--data-binary "@$BATS_FILE_TMPDIR/huge.jpg" "$BASE/ingest?$Q"
	is 413 payload_too_large
	run ask -H "X-API-Key: $API_KEY_CAM" -F "image=@$BATS_FILE_TMPDIR/big.jpg;type=image/png" \
		-F product_sku=WK-KN-200 -F facility=yangjiang "$BASE/ingest"
	is 415 type_mismatch
	# no Content-Length: whoever answers says 411
	run ask -X POST -H "X-API-Key: $API_KEY_CAM" -H 'Content-Type: image/jpeg' "$BASE/ingest?$Q"
	is 411

	# CORS: a preflight and a real request from an allowed origin, one from another
	run ask -X OPTIONS -H 'Origin: https://app.example' -H 'Access-Control-Request-Method: POST' \
		-H 'Access-Control-Request-Headers: x-api-key' "$BASE/ingest"
	is 204
	assert_equal "$(header Access-Control-Allow-Origin)" https://app.example
	[[ "$(header Access-Control-Allow-Headers)" == *X-API-Key* ]]
	run ask -H 'Origin: https://app.example' -H "X-API-Key: $API_KEY_CAM" \
		"http://127.0.0.1:$PORT$mount/images/$id"
	is 200
	assert_equal "$(header Access-Control-Allow-Origin)" https://app.example
	assert_equal "$(header Vary)" Origin
	run ask -X OPTIONS -H 'Origin: https://evil.example' -H 'Access-Control-Request-Method: POST' "$BASE/ingest"
	is 204
	assert_equal "$(header Access-Control-Allow-Origin)" ""

	# nothing of the refusals was kept
	run --separate-stderr dq-dequeue --peek -n 10 -w 0
	assert_equal "$(grep -c . <<<"$output")" 3

	# one request line for each answer of dq-ingest, where the page says
	wait_for 5 logged_all "$log" || true
	assert_equal "$(request_lines "$log" | jq -r .http_status | sort | uniq -c)" \
		"$(sort "$BATS_TEST_TMPDIR/answered" | uniq -c)"
	assert_equal "$(request_lines "$log" | jq -r 'select(.http_status == 202) | .image_id' | head -1)" "$id"
}

# --- the recipes ------------------------------------------------------------

@test "the manual's lighttpd CGI recipe: log lines in server.breakagelog" {
	recipe 'server.modules += ("mod_alias"' >/dev/null
	start lighttpd /api/v1
	serves /api/v1 "$SRV/breakage.log"
}

@test "the manual's lighttpd FastCGI recipe: log lines in server.errorlog" {
	recipe 'server.modules += ("mod_fastcgi")' >/dev/null
	start lighttpd /api/v1
	serves /api/v1 "$SRV/error.log"
}

@test "the manual's nginx + fcgiwrap recipe: log lines in fcgiwrap's stderr" {
	fcgiwrap_start
	recipe '# nginx, CGI through fcgiwrap' >/dev/null
	start nginx /api/v1
	serves /api/v1 "$SRV/fcgiwrap.log"
}

@test "the manual's nginx + spawn-fcgi recipe: log lines in nginx's error_log" {
	spawn_fcgi
	recipe '# nginx, FastCGI responders' >/dev/null
	start nginx /api/v1
	serves /api/v1 "$SRV/error.log"
	# the responders started once and served every request
	assert_equal "$(request_lines "$SRV/error.log" | wc -l)" "$(wc -l <"$BATS_TEST_TMPDIR/answered")"
	for pid in $(cat "$SRV/spawn.pids"); do kill -0 "$pid"; done
}

@test "spawn-fcgi: a configuration error is logged with every request, where the server logs it" {
	ingest_env DQ_MAX_IMAGE_BYTES=lots TMPDIR="$SRV/tmp"
	served_binary
	[ "$(id -u)" -ne 0 ] || chown nobody "$INGEST_ENV"
	spawn_fcgi
	recipe '# nginx, FastCGI responders' >/dev/null
	start nginx /api/v1
	run ask -H "X-API-Key: $API_KEY_CAM" "$BASE/images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10"
	is 500 internal
	run ask -H "X-API-Key: $API_KEY_CAM" "$BASE/images/0b8f3c52-6a55-4bd6-9a6e-3b1f7d2c9e10"
	is 500 internal
	wait_for 5 count_is 2 config_lines
	grep -ao '{"ts".*}' "$SRV/error.log" | jq -r 'select(.event == "config") | .msg' | sort -u >"$BATS_TEST_TMPDIR/why"
	assert_equal "$(wc -l <"$BATS_TEST_TMPDIR/why")" 1
	assert_regex "$(cat "$BATS_TEST_TMPDIR/why")" '^DQ_MAX_IMAGE_BYTES=lots: '
}

config_lines() {
	grep -ao '{"ts".*}' "$SRV/error.log" | jq -c 'select(.event == "config")' | wc -l
}

@test "the manual's Apache mod_cgid recipe: log lines in the ErrorLog" {
	recipe 'LoadModule cgid_module' >/dev/null
	start apache /api/v1
	serves /api/v1 "$SRV/error.log"
}

@test "the manual's Apache mod_proxy_fcgi + spawn-fcgi recipe: log lines in the ErrorLog" {
	spawn_fcgi
	recipe '# Apache, FastCGI responders' >/dev/null
	start apache /api/v1
	serves /api/v1 "$SRV/error.log"
}

@test "mod_proxy_fcgi without the page's ProxyFCGISetEnvIf lines: every request is 404, as the page warns" {
	spawn_fcgi
	recipe '# Apache, FastCGI responders' | grep -v ProxyFCGISetEnvIf >"$SRV/recipe.without"
	mv "$SRV/recipe.without" "$SRV/recipe"
	start apache /api/v1
	run ask -H "X-API-Key: $API_KEY_CAM" -H 'Content-Type: image/png' \
		--data-binary "@$BATS_FILE_TMPDIR/small.png" "$BASE/ingest?$Q"
	is 404 not_found
	assert_equal "$(request_lines "$SRV/error.log" | jq -r .path)" ""
}

@test "Apache serving CGI only under /cgi-bin/ (Debian's serve-cgi-bin.conf): Location follows" {
	mkdir -p "$SRV/cgi-bin"
	cp "$INGEST_CGI" "$SRV/cgi-bin/ingest.cgi"
	[ "$(id -u)" -ne 0 ] || chown -R nobody "$SRV/cgi-bin"
	{
		echo 'LoadModule cgid_module modules/mod_cgid.so'
		sed "s#/usr/lib/cgi-bin#$SRV/cgi-bin#g" /etc/apache2/conf-available/serve-cgi-bin.conf
		# the page: for Authorization, CGIPassAuth in that directory (and
		# this test's environment file in place of /etc/dq/env)
		printf '<Directory "%s">\n  CGIPassAuth On\n  SetEnv DQ_ENV_FILE %s\n</Directory>\n' \
			"$SRV/cgi-bin" "$INGEST_ENV"
	} >"$SRV/recipe"
	start apache /cgi-bin/ingest.cgi
	serves /cgi-bin/ingest.cgi "$SRV/error.log"
}

@test "tools/deps.sh installs the servers with their services kept from starting, and leaves nothing behind" {
	local fake=$BATS_TEST_TMPDIR/fake log=$BATS_TEST_TMPDIR/apt.log
	mkdir -p "$fake"
	# nothing installed, run as root; apt-get asks the policy as a
	# package's maintainer script would before starting its service
	printf '#!/bin/sh\nexit 1\n' >"$fake/dpkg-query"
	printf '#!/bin/sh\necho 0\n' >"$fake/id"
	cat >"$fake/apt-get" <<-EOF
	#!/bin/sh
	echo "apt-get \$*" >>"$log"
	if [ -x "\$DQ_POLICY_RC_D" ]; then "\$DQ_POLICY_RC_D" nginx start; echo "policy \$?" >>"$log"; fi
	EOF
	chmod +x "$fake"/*
	export DQ_POLICY_RC_D=$BATS_TEST_TMPDIR/policy-rc.d
	run --separate-stderr env PATH="$fake:$PATH" sh "$DQ_TOP/tools/deps.sh" test
	assert_success
	run grep -c '^apt-get install .* nginx fcgiwrap apache2 spawn-fcgi ' "$log"
	assert_output 1
	assert_equal "$(grep -c '^policy 101$' "$log")" 2
	[ ! -e "$DQ_POLICY_RC_D" ]
	# a policy the machine has already is used and left as it was
	printf '#!/bin/sh\nexit 104\n' >"$DQ_POLICY_RC_D"
	chmod +x "$DQ_POLICY_RC_D"
	: >"$log"
	run --separate-stderr env PATH="$fake:$PATH" sh "$DQ_TOP/tools/deps.sh" test
	assert_success
	assert_equal "$(grep -c '^policy 104$' "$log")" 2
	assert_equal "$(cat "$DQ_POLICY_RC_D")" "$(printf '#!/bin/sh\nexit 104')"
}
