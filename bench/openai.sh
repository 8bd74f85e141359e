#!/bin/bash
# openai.sh - the azure-openai analyzer against the fake (tests/fakes/openai.py):
# dq-analyze -j N for N = 1, 4, 16 at model latencies 0 and BENCH_LATENCY_MS
# (default 1000), images per second and, at latency L > 0, the ratio to the
# ideal N / L; at latency 0 the per-message cost (ms).  Not yet: the quota
# mode and the adaptive limit (they are not built).
#
# usage: bench/openai.sh   (BENCH_MESSAGES, default 64; BENCH_LATENCY_MS)
# Needs a built tree (make all), python3 and jq; works in a scratch directory.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
msgs=${BENCH_MESSAGES:-64}
lat=${BENCH_LATENCY_MS:-1000}
for p in dq-put dq-analyze dq-synth; do
	[ -x "$top/bin/$p" ] || [ -x "$top/tools/$p" ] || { echo "openai.sh: build first (make)" >&2; exit 69; }
done
work=$(mktemp -d)
fake_pid=
cleanup() {
	[ -z "$fake_pid" ] || kill "$fake_pid" 2>/dev/null || :
	rm -rf "$work"
}
trap cleanup EXIT
PATH=$top/bin:$top/tools:$PATH
export DQ_LOCAL_DIR=$work/dq DQ_ANALYZER=azure-openai AZURE_AI_API_KEY=bench-key FAKE_OPENAI_KEY=bench-key
unset DQ_REFERENCE_DIR AZURE_OPENAI_API_VERSION
dq-synth -s 7 -o "$work/synth" -W 160 -H 120 --refs 1 --good "$msgs" --defects 0 >/dev/null 2>&1
dq-put --sku WK-KN-200 --facility bench "$work"/synth/samples/* 2>/dev/null >"$work/records"

# fake DELAY_MS: the fake answering every request after DELAY_MS
fake() {
	[ -z "$fake_pid" ] || kill "$fake_pid" 2>/dev/null || :
	rm -f "$work/port"
	printf '{"answers":[{"delay_ms":%s,"times":1000000}]}\n' "$1" >"$work/script.json"
	python3 "$top/tests/fakes/openai.py" --port-file "$work/port" --script "$work/script.json" \
		>/dev/null 2>&1 &
	fake_pid=$!
	for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
	AZURE_AI_PROJECT_ENDPOINT="http://127.0.0.1:$(cat "$work/port")/"
	export AZURE_AI_PROJECT_ENDPOINT
}

printf '%-8s %4s %10s %10s %14s\n' latency -j images/s ideal ratio_or_ms
for l in 0 "$lat"; do
	fake "$l"
	for j in 1 4 16; do
		t0=$(date +%s%N)
		dq-analyze -j "$j" --force <"$work/records" >"$work/out" 2>/dev/null
		t1=$(date +%s%N)
		ok=$(jq -s '[.[] | select(.artifact)] | length' "$work/out")
		[ "$ok" -eq "$msgs" ] || { echo "openai.sh: $ok of $msgs analyzed" >&2; exit 70; }
		awk -v n="$msgs" -v ns=$((t1 - t0)) -v j="$j" -v l="$l" 'BEGIN {
			s = ns / 1e9; r = n / s
			if (l > 0) printf "%-8s %4d %10.2f %10.2f %14.3f\n", l "ms", j, r, j * 1000 / l, r / (j * 1000 / l)
			else printf "%-8s %4d %10.2f %10s %12.2fms\n", "0", j, r, "-", s * 1000 / n }'
	done
done
