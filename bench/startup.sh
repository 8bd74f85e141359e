#!/bin/sh
# startup.sh - what a program costs to start, this tree beside BASE (default
# main), side by side in one run: CPU time (perf stat task-clock, the mean
# of RUNS runs) of a refused CGI request, a local dq-put, --version and -h,
# the ratio new/base, and whether each program loads libcurl.
#
# usage: bench/startup.sh        BASE=rev RUNS=200
# Each row alternates base and new in ROUNDS (5) rounds of RUNS / ROUNDS
# runs.  "libcurl" says whether the program links it (ldd): where it is
# linked, it is loaded at every start.  Needs perf, python3, git and a
# built tree.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
base=${BASE:-main}
runs=${RUNS:-200}
rounds=${ROUNDS:-5}
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
for tool in perf "$py"; do
	command -v "$tool" >/dev/null || { echo "startup.sh: $tool is missing" >&2; exit 69; }
done
[ -x "$top/bin/dq-put" ] || { echo "startup.sh: build first (make)" >&2; exit 69; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

rev='' basebin='' # set by base_build
# shellcheck source=bench/base.sh
. "$top/bench/base.sh"
basebin='' rev=''
base_build
newbin=$top/bin

"$py" "$top/tests/bats/mkimage.py" jpeg 64 48 1 2000 >"$work/a.jpg"
export LOG_LEVEL=ERROR DQ_LOG_FORMAT=json

# ms BIN ARGS...: the mean task-clock of RUNS / ROUNDS runs, in ms.
ms() {
	perf stat -r "$((runs / rounds))" -x, -e task-clock "$@" 2>&1 >/dev/null </dev/null |
		awk -F, '$3 == "task-clock" { printf "%.3f", $1 }'
}

# row NAME SETUP PROG ARGS...: SETUP (a shell function) sets the
# environment; PROG is run from base's bin and from this tree's, in ROUNDS
# rounds that alternate, so that the machine's load falls on both alike.
row() {
	name=$1 setup=$2 prog=$3
	shift 3
	b=0 n=0 r=0
	while [ "$r" -lt "$rounds" ]; do
		b=$(awk -v s="$b" -v x="$($setup; ms "$basebin/$prog" "$@")" 'BEGIN { print s + x }')
		n=$(awk -v s="$n" -v x="$($setup; ms "$newbin/$prog" "$@")" 'BEGIN { print s + x }')
		r=$((r + 1))
	done
	b=$(awk -v s="$b" -v k="$rounds" 'BEGIN { printf "%.2f", s / k }')
	n=$(awk -v s="$n" -v k="$rounds" 'BEGIN { printf "%.2f", s / k }')
	lb=$(ldd "$basebin/$prog" | grep -c libcurl || :)
	ln=$(ldd "$newbin/$prog" | grep -c libcurl || :)
	printf '%-36s %8s %8s %9s %13s %12s\n' "$name" "$b" "$n" \
		"$(awk -v b="$b" -v n="$n" 'BEGIN { printf "%.2f", n / b }')" "$lb" "$ln"
}

none() { :; }
refused() {
	export API_KEY=bench:bench-key GATEWAY_INTERFACE=CGI/1.1 SERVER_PROTOCOL=HTTP/1.1 \
		REQUEST_METHOD=POST PATH_INFO=/ingest CONTENT_TYPE=image/jpeg CONTENT_LENGTH=2000 \
		REMOTE_ADDR=127.0.0.1 DQ_LOCAL_DIR="$work/local" DQ_STATE_DIR="$work/state"
}
local_dir() {
	export DQ_LOCAL_DIR="$work/local"
}

echo "start-up, CPU ms (perf stat task-clock, mean of $runs): base = $base ($rev), new = this tree"
echo
printf '%-36s %8s %8s %9s %13s %12s\n' what base new new/base "base libcurl" "new libcurl"
row "dq-ingest refusing a request (401)" refused dq-ingest
row "dq-put FILE, local store" local_dir dq-put --sku WK-KN-200 --facility yangjiang "$work/a.jpg"
row "dq-ingest --version" none dq-ingest --version
row "dq-put --version" none dq-put --version
row "dq-put -h" none dq-put -h
row "dq-enqueue -h" none dq-enqueue -h
row "dq-analyze --version" none dq-analyze --version

# What linking libcurl would cost (dq-put made to link it, never calling it).
cc -o "$work/empty.c.bin" -x c - <<'C' 2>/dev/null
int main(void) { return 0; }
C
cc -o "$work/curl-linked" -x c - -Wl,--no-as-needed -lcurl <<'C' 2>/dev/null || :
int main(void) { return 0; }
C
if [ -x "$work/curl-linked" ]; then
	e=$(ms "$work/empty.c.bin") c=$(ms "$work/curl-linked")
	echo
	printf 'an empty C program: %s ms; the same linked with libcurl, never calling it: %s ms\n' "$e" "$c"
fi
