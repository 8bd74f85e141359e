#!/bin/bash
# worker.sh - what dq-worker costs beside the work, measured side by side in
# one run and printed as ratios:
#
#   1. trivial analysis: messages whose artifacts exist already (redelivered,
#      passed on by --skip-existing), dq-worker --drain beside the same four
#      programs in one long pipeline (the floor), on tmpfs and on disk;
#   2. the reference analyzer on small images: dq-worker --drain beside
#      dq-analyze alone on the same files;
#   3. a slow model (DQ_TEST_ANALYZE_DELAY_MS), of fixed latency and of one
#      that spreads (DQ_TEST_ANALYZE_DELAY_P99_MS: log-normal), for
#      WORKER_MAX_MESSAGES 1, 4 and 16: messages per second over the ideal
#      N / mean latency.
#
# usage: bench/worker.sh        (BENCH_MESSAGES, default 200; BENCH_DELAY_MS,
#                                default 200; BENCH_P99_MS, default 1000;
#                                BENCH_SLOW_MESSAGES, default 64)
# Needs a built tree (make all) and jq; works in scratch directories.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
msgs=${BENCH_MESSAGES:-200}
delay=${BENCH_DELAY_MS:-200}
p99_ms=${BENCH_P99_MS:-1000}
slow=${BENCH_SLOW_MESSAGES:-64}
for p in dq-worker dq-put dq-analyze; do
	[ -x "$top/bin/$p" ] || { echo "worker.sh: build first (make)" >&2; exit 69; }
done
command -v jq >/dev/null || { echo "worker.sh: jq is missing" >&2; exit 69; }
PATH=$top/bin:$top/tools:$PATH
export PATH LOG_LEVEL=ERROR DQ_LOG_FORMAT=json DQ_WORKER_WAIT_SECONDS=0.2
export DQ_DUPLICATE_WINDOW_SECONDS=0 # the same messages are sent again
unset AZURE_STORAGE_CONNECTION_STRING AZURE_STORAGE_ACCOUNT AZURE_SERVICEBUS_CONNECTION_STRING \
	AZURE_SERVICEBUS_NAMESPACE AZURE_AI_PROJECT_ENDPOINT DQ_ANALYZER DQ_TEST_ANALYZE_DELAY_MS

# Scratch directories: one in TMPDIR, and one on tmpfs and one on disk for
# the first measurement.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/dq-bench-worker.XXXXXX")
places=()
for where in /dev/shm /var/tmp; do
	[ -d "$where" ] && [ -w "$where" ] && places+=("$(mktemp -d "$where/dq-bench-worker.XXXXXX")")
done
cleanup() { rm -rf "$scratch" "${places[@]}"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# One set of small images and references, drawn once.
images=$scratch/images
dq-synth -s 7 -o "$images" -W 320 -H 240 --refs 3 --good "$msgs" --defects 0 >/dev/null
export DQ_REFERENCE_DIR=$images/reference DQ_CACHE_DIR=$images/cache
files=("$images"/samples/*)

# TIMED LABEL COMMAND...: wall, user and system seconds of COMMAND and its
# children, appended to $times as "LABEL wall cpu".
timed() {
	local label=$1 out
	shift
	local TIMEFORMAT='%3R %3U %3S' wall user sys
	out=$({ time "$@" >/dev/null 2>&1; } 2>&1)
	read -r wall user sys <<<"${out##*$'\n'}"
	printf '%s %s %s\n' "$label" "$wall" "$(echo "$user + $sys" | bc)" >>"$times"
}

# setup DIR: a local store and spool in DIR holding every image, its
# message sent; the model cache warm.
setup() {
	export DQ_LOCAL_DIR=$1/dq
	dq-put --sku WK-KN-200 --facility yangjiang "${files[@]}" >"$1/messages"
	dq-enqueue <"$1/messages" >/dev/null
}
resend() { dq-put --stored --all | dq-enqueue >/dev/null; }
floor() {
	dq-dequeue -n "$msgs" -w 0.2 | dq-analyze -j 10 --skip-existing | dq-put |
		dq-dequeue --settle --require stored
}

times=$scratch/times
DQ_LOCAL_DIR=$scratch/warm dq-analyze "${files[0]}" >/dev/null # builds the model cache once

# 1. trivial analysis, on tmpfs and on disk
for d in "${places[@]}"; do
	where=${d%/*}
	setup "$d"
	WORKER_MAX_MESSAGES=10 dq-worker --drain >/dev/null 2>&1 # the artifacts
	resend
	timed "trivial-worker-$where" env WORKER_MAX_MESSAGES=10 dq-worker --drain
	resend
	timed "trivial-floor-$where" floor
done

# 2. the reference analyzer: the worker beside dq-analyze alone
d=$scratch/reference
mkdir "$d"
setup "$d"
timed reference-worker env WORKER_MAX_MESSAGES=10 dq-worker --drain
export DQ_LOCAL_DIR=$d/dq
timed reference-analyze dq-analyze -j 10 <"$d/messages"

# 3. a slow model, N in flight: a fixed latency, then one that spreads
# (log-normal, median BENCH_DELAY_MS, p99 BENCH_P99_MS)
for n in 1 4 16; do
	for kind in fixed spread; do
		export DQ_LOCAL_DIR=$scratch/slow-$kind-$n/dq
		dq-put --sku WK-KN-200 --facility yangjiang "${files[@]:0:$slow}" | dq-enqueue >/dev/null
		p99=0
		[ "$kind" = fixed ] || p99=$p99_ms
		timed "slow-$kind-$n" env WORKER_MAX_MESSAGES="$n" DQ_TEST_ANALYZE_DELAY_MS="$delay" \
			DQ_TEST_ANALYZE_DELAY_P99_MS="$p99" dq-worker --drain
	done
done

# The table.
get() { awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$times"; }
ratio() { echo "scale=3; $1 / $2" | bc; }
rate() { echo "scale=1; $1 / $2" | bc; }
echo "dq-worker, $msgs messages ($(nproc) cores)"
echo
printf '%-30s %10s %12s %14s\n' "trivial analysis" "msg/s" "CPU ms/msg" "worker/floor"
for where in /dev/shm /var/tmp; do
	w=$(get "trivial-worker-$where" 2) || continue
	[ -n "$w" ] || continue
	f=$(get "trivial-floor-$where" 2)
	printf '%-30s %10s %12s\n' "worker ($where)" "$(rate "$msgs" "$w")" \
		"$(echo "scale=2; $(get "trivial-worker-$where" 3) * 1000 / $msgs" | bc)"
	printf '%-30s %10s %12s %14s\n' "one pipeline ($where)" "$(rate "$msgs" "$f")" \
		"$(echo "scale=2; $(get "trivial-floor-$where" 3) * 1000 / $msgs" | bc)" \
		"$(ratio "$f" "$w")"
done
echo
w=$(get reference-worker 2) a=$(get reference-analyze 2)
printf '%-30s %10s %14s\n' "reference analyzer" "wall s" "worker/alone"
printf '%-30s %10s\n' "dq-analyze -j 10 alone" "$a"
printf '%-30s %10s %14s\n' "dq-worker --drain" "$w" "$(ratio "$w" "$a")"
echo
# the mean of the log-normal latency: median * exp(sigma^2 / 2), sigma = ln(p99 / median) / z99
mean_spread=$(echo "s = l($p99_ms / $delay) / 2.3263; m = $delay * e(s * s / 2); scale = 1; m / 1" | bc -l)
for kind in fixed spread; do
	mean=$delay
	label="model latency ${delay} ms"
	if [ "$kind" = spread ]; then
		mean=$mean_spread
		label="median ${delay}, p99 ${p99_ms} ms"
	fi
	printf '%-30s %10s %10s %14s\n' "$label" "msg/s" "ideal" "of ideal"
	for n in 1 4 16; do
		s=$(get "slow-$kind-$n" 2)
		r=$(rate "$slow" "$s")
		ideal=$(echo "scale=1; $n * 1000 / $mean" | bc)
		printf '%-30s %10s %10s %14s\n' "WORKER_MAX_MESSAGES=$n" "$r" "$ideal" "$(ratio "$r" "$ideal")"
	done
	echo
done
