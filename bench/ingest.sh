#!/bin/sh
# ingest.sh - dq-ingest through lighttpd on loopback: a 200 KB upload as CGI
# and as FastCGI, at concurrency 1 and 8, beside lighttpd serving a 200 KB
# static file (the floor), measured side by side and printed as ratios.
#
# usage: bench/ingest.sh        (BENCH_SECONDS per run, default 10)
# Needs lighttpd, wrk, python3 and a built bin/dq-ingest; uses the local
# store and queue in a scratch directory.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
secs=${BENCH_SECONDS:-10}
size=${BENCH_BYTES:-200000}
hz=$(getconf CLK_TCK)
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
for tool in lighttpd wrk "$py"; do
	command -v "$tool" >/dev/null || { echo "ingest.sh: $tool is missing" >&2; exit 69; }
done
[ -x "$top/bin/dq-ingest" ] || { echo "ingest.sh: build first (make)" >&2; exit 69; }

work=$(mktemp -d)
pid=
cleanup() {
	[ -z "$pid" ] || stop_server
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$work/www" "$work/upload"
"$py" "$top/tests/bats/mkimage.py" jpeg 640 480 1 "$size" >"$work/www/part.jpg"
key=bench-$$-secret
cat >"$work/env" <<EOF
DQ_LOCAL_DIR=$work/local
DQ_STATE_DIR=$work/state
TMPDIR=$work
API_KEY=bench:$key
LOG_LEVEL=ERROR
EOF
cat >"$work/upload.lua" <<'EOF'
local f = assert(io.open(os.getenv("BENCH_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "image/jpeg"
wrk.headers["X-API-Key"] = os.getenv("BENCH_KEY")
EOF
cat >>"$work/upload.lua" <<'EOF'
done = function(s, lat)
	local e = s.errors
	io.write(string.format("RESULT %d %d %d %d %d\n", s.requests, s.duration,
	    e.connect + e.read + e.write + e.timeout + e.status,
	    lat:percentile(50), lat:percentile(99)))
end
EOF
sed -n '/^done/,$p' "$work/upload.lua" >"$work/get.lua"

port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

start_server() {
	{
		echo "server.document-root = \"$work/www\""
		echo "server.bind = \"127.0.0.1\""
		echo "server.port = $port"
		echo "server.errorlog = \"$work/error.log\""
		echo "server.upload-dirs = (\"$work/upload\")"
		echo "server.max-request-size = 32768"
		case $1 in
		cgi)
			echo 'server.modules = ("mod_alias", "mod_setenv", "mod_cgi")'
			echo "alias.url = (\"/api/v1\" => \"$top/cmd/dq-ingest/ingest.cgi\")"
			echo '$HTTP["url"] =~ "^/api/v1(/|$)" {'
			echo '  cgi.assign = ("" => "")'
			echo "  setenv.add-environment = (\"DQ_ENV_FILE\" => \"$work/env\")"
			echo '}'
			;;
		fastcgi)
			echo 'server.modules = ("mod_fastcgi")'
			echo "fastcgi.server = (\"/api/v1\" => ((\"socket\" => \"$work/fcgi.sock\","
			echo "  \"bin-path\" => \"$top/cmd/dq-ingest/ingest.cgi\","
			echo "  \"bin-environment\" => (\"DQ_ENV_FILE\" => \"$work/env\"),"
			echo '  "check-local" => "disable", "max-procs" => 2)))'
			;;
		esac
	} >"$work/lighttpd.conf"
	lighttpd -D -f "$work/lighttpd.conf" &
	pid=$!
	i=0
	until curl -sf -o /dev/null "http://127.0.0.1:$port/part.jpg"; do
		i=$((i + 1))
		[ "$i" -lt 200 ] || { echo "ingest.sh: lighttpd did not start" >&2; exit 69; }
		kill -0 "$pid" || exit 69
		sleep 0.05
	done
}

stop_server() {
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	pid=
	rm -rf "$work/local" "$work/state"
}

# CPU ticks of lighttpd, the CGI children it reaped, and its FastCGI children.
cpu_ticks() {
	t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat")
	for c in $(pgrep -P "$pid" || true); do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}

# run MODE CONCURRENCY: one wrk run; prints "mode conc req/s p50 p99 cpu_ms".
run() {
	mode=$1 conc=$2
	threads=1
	[ "$conc" -gt 1 ] && threads=2
	start_server "$mode"
	if [ "$mode" = static ]; then
		url="http://127.0.0.1:$port/part.jpg" script=$work/get.lua
	else
		url="http://127.0.0.1:$port/api/v1/ingest?product_sku=WK-KN-200&facility=yangjiang"
		script=$work/upload.lua
		# one request first: a FastCGI process is started, a first error shows
		code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-API-Key: $key" \
			-H 'Content-Type: image/jpeg' --data-binary "@$work/www/part.jpg" "$url")
		[ "$code" = 202 ] || { echo "ingest.sh: $mode answered $code" >&2; cat "$work/error.log" >&2; exit 70; }
	fi
	c0=$(cpu_ticks)
	out=$(BENCH_FILE="$work/www/part.jpg" BENCH_KEY=$key \
		wrk -t"$threads" -c"$conc" -d"${secs}s" -s "$script" "$url" | grep '^RESULT')
	c1=$(cpu_ticks)
	stop_server
	echo "$out" | awk -v m="$mode" -v c="$conc" -v cpu=$((c1 - c0)) -v hz="$hz" '{
		if ($4 > 0) { printf "ingest.sh: %s c%s: %d failed requests\n", m, c, $4 > "/dev/stderr"; exit 70 }
		printf "%s %s %.1f %.2f %.2f %.3f\n", m, c, $2 / ($3 / 1e6), $5 / 1000, $6 / 1000,
		    cpu * 1000 / hz / $2 }'
}

results=$work/results
for conc in 1 8; do
	for mode in static cgi fastcgi; do
		run "$mode" "$conc" >>"$results"
	done
done

echo "dq-ingest through lighttpd: $(stat -c %s "$work/www/part.jpg")-byte JPEG, ${secs}s per run, $(nproc) CPUs, local store"
awk '
	$1 == "static" { floor_rps[$2] = $3; floor_cpu[$2] = $6 }
	{ row[NR] = $0 }
	END {
		printf "%-8s %4s %9s %8s %8s %10s %9s %9s\n", "mode", "conc", "req/s", "p50 ms",
		    "p99 ms", "CPU ms/req", "rps/floor", "cpu/floor"
		for (i = 1; i <= NR; i++) {
			split(row[i], f, " ")
			printf "%-8s %4s %9.1f %8.2f %8.2f %10.3f %9.3f %9.1f\n", f[1], f[2], f[3], f[4], f[5],
			    f[6], f[3] / floor_rps[f[2]], (floor_cpu[f[2]] > 0 ? f[6] / floor_cpu[f[2]] : 0)
		}
	}' "$results"
