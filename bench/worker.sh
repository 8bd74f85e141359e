#!/bin/bash
# worker.sh - what dq-worker costs beside the work, this tree beside BASE
# (default b188c1d, the last worker of batches), measured side by side in
# one run and printed as ratios:
#
#   1. trivial analysis: messages whose artifacts exist already (redelivered,
#      passed on by --skip-existing), dq-worker --drain beside the same four
#      programs in one long pipeline (the floor), on tmpfs and on disk,
#      over the whole run and beyond the worker's fixed cost (a drain of
#      an empty queue: the preflight, the start, the last empty receive);
#   2. the reference analyzer on small images: dq-worker --drain beside
#      dq-analyze alone on the same files;
#   3. a slow model (DQ_TEST_ANALYZE_DELAY_MS), of fixed latency and of one
#      that spreads (DQ_TEST_ANALYZE_DELAY_P99_MS: log-normal), for
#      WORKER_MAX_MESSAGES 1, 4 and 16: messages per second over the ideal
#      N / mean latency (the mean of the delays drawn in the run), on 120 N
#      messages (at least BENCH_SLOW_MESSAGES, at most 960).
# The worker's own costs are measured on tiny images (96x72), whose
# analysis costs next to nothing; the reference analyzer on small ones.
#
# usage: bench/worker.sh        (BASE=rev or BASE_TREE=dir as in base.sh;
#                                BENCH_MESSAGES, default 200 (reference);
#                                BENCH_TRIVIAL_MESSAGES, default 900; BENCH_DELAY_MS,
#                                default 200; BENCH_P99_MS, default 1000;
#                                BENCH_SLOW_MESSAGES, default 64)
# Needs a built tree (make all), git and jq; works in scratch directories.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck disable=SC2034 # read by base.sh
base=${BASE:-b188c1d}
msgs=${BENCH_MESSAGES:-200}
trivial=${BENCH_TRIVIAL_MESSAGES:-900}
delay=${BENCH_DELAY_MS:-200}
p99_ms=${BENCH_P99_MS:-1000}
slow=${BENCH_SLOW_MESSAGES:-64}
for p in dq-worker dq-put dq-analyze; do
	[ -x "$top/bin/$p" ] || { echo "worker.sh: build first (make)" >&2; exit 69; }
done
command -v jq >/dev/null || { echo "worker.sh: jq is missing" >&2; exit 69; }
PATH=$top/tools:$PATH
export PATH LOG_LEVEL=ERROR DQ_LOG_FORMAT=json DQ_WORKER_WAIT_SECONDS=0.2
tools_path=$PATH
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

# BASE built beside this tree
# shellcheck disable=SC2034 # read by base.sh
work=$scratch
rev='' basebin='' # set by base_build
# shellcheck source=bench/base.sh
. "$top/bench/base.sh"
base_build
trees=("base:$basebin" "new:$top/bin")

# Two sets of images and references, drawn once: small ones for the
# reference analyzer, and tiny ones whose analysis costs next to nothing,
# for the measures of the worker itself.
small=$scratch/small tiny=$scratch/tiny
need=$trivial
[ "$need" -ge 960 ] || need=960
dq-synth -s 7 -o "$small" -W 320 -H 240 --refs 3 --good "$msgs" --defects 0 >/dev/null
dq-synth -s 8 -o "$tiny" -W 96 -H 72 --refs 3 --good "$need" --defects 0 >/dev/null
small_files=("$small"/samples/*)
tiny_files=("$tiny"/samples/*)
# use SET: the reference set of small or tiny
use() {
	export DQ_REFERENCE_DIR=$scratch/$1/reference DQ_CACHE_DIR=$scratch/$1/cache
}

# TIMED LABEL COMMAND...: wall, user and system seconds of COMMAND and its
# children, appended to $times as "LABEL wall cpu".
timed() {
	local label=$1 out
	shift
	local TIMEFORMAT='%3R %3U %3S' wall user sys
	out=$({ time "$@" >/dev/null 2>"$scratch/${label//\//_}.err"; } 2>&1)
	read -r wall user sys <<<"${out##*$'\n'}"
	printf '%s %s %s\n' "$label" "$wall" "$(echo "$user + $sys" | bc)" >>"$times"
}

# setup DIR FILE...: a local store and spool in DIR holding the images,
# their messages sent.
setup() {
	export DQ_LOCAL_DIR=$1/dq
	shift
	dq-put --sku WK-KN-200 --facility yangjiang "$@" >"$DQ_LOCAL_DIR.messages"
	dq-enqueue <"$DQ_LOCAL_DIR.messages" >/dev/null
}
resend() { dq-put --stored --all | dq-enqueue >/dev/null; }
floor() {
	dq-dequeue -n "$trivial" -w 0.2 | dq-analyze -j 10 --skip-existing | dq-put |
		dq-dequeue --settle --require stored
}

# slow_count N: the messages of the slow runs for N in flight.
slow_count() {
	local c=$((120 * $1))
	[ "$c" -ge "$slow" ] || c=$slow
	[ "$c" -le 960 ] || c=960
	echo "$c"
}

# mean_delay LABEL: the mean of the delays the spread hook drew in that run.
mean_delay() {
	jq -s 'map(select(.event == "test_delay") | .delay_ms) | add / length * 10 | round / 10' "$scratch/$1.err"
}

times=$scratch/times
# the model caches built once
for set in small tiny; do
	use "$set"
	DQ_LOCAL_DIR=$scratch/warm "$top/bin/dq-analyze" "$scratch/$set/samples/good-001.jpg" >/dev/null
done

# Each measurement for BASE and this tree in turn, each in its own spool.
for tree in "${trees[@]}"; do
	t=${tree%%:*}
	PATH=${tree#*:}:$tools_path

	# 1. trivial analysis, on tmpfs and on disk
	for d in "${places[@]}"; do
		where=${d%/*}
		mkdir "$d/$t"
		use tiny
		setup "$d/$t" "${tiny_files[@]:0:$trivial}"
		WORKER_MAX_MESSAGES=10 dq-worker --drain >/dev/null 2>&1 # the artifacts
		resend
		timed "$t-trivial-worker-$where" env WORKER_MAX_MESSAGES=10 dq-worker --drain
		resend
		timed "$t-trivial-floor-$where" floor
		# the worker's fixed cost: its preflight, start and last empty receive
		timed "$t-trivial-empty-$where" env WORKER_MAX_MESSAGES=10 dq-worker --drain
	done

	# 2. the reference analyzer: the worker beside dq-analyze alone
	d=$scratch/reference-$t
	mkdir "$d"
	use small
	setup "$d" "${small_files[@]}"
	timed "$t-reference-worker" env WORKER_MAX_MESSAGES=10 dq-worker --drain
	timed "$t-reference-analyze" dq-analyze -j 10 <"$DQ_LOCAL_DIR.messages"

	# 3. a slow model, N in flight: a fixed latency, then one that spreads
	# (log-normal, median BENCH_DELAY_MS, p99 BENCH_P99_MS)
	use tiny
	for n in 1 4 16; do
		for kind in fixed spread; do
			export DQ_LOCAL_DIR=$scratch/slow-$t-$kind-$n/dq
			dq-put --sku WK-KN-200 --facility yangjiang "${tiny_files[@]:0:$(slow_count "$n")}" | dq-enqueue >/dev/null
			p99=0
			[ "$kind" = fixed ] || p99=$p99_ms
			timed "$t-slow-$kind-$n" env WORKER_MAX_MESSAGES="$n" DQ_TEST_ANALYZE_DELAY_MS="$delay" \
				DQ_TEST_ANALYZE_DELAY_P99_MS="$p99" LOG_LEVEL=DEBUG dq-worker --drain
		done
	done
done

# The table: BASE beside this tree.
get() { awk -v l="$1" -v f="$2" '$1 == l { print $f }' "$times"; }
ratio() { echo "scale=3; $1 / $2" | bc; }
rate() { echo "scale=1; $1 / $2" | bc; }
echo "dq-worker ($(nproc) cores): $rev (batches) beside this tree (one stream)"
echo
printf '%-30s %8s %11s %13s %9s %14s\n' "trivial analysis, $trivial msgs" "msg/s" "CPU ms/msg" "worker/floor" \
	"fixed s" "beyond fixed"
for where in /dev/shm /var/tmp; do
	for t in base new; do
		w=$(get "$t-trivial-worker-$where" 2)
		[ -n "$w" ] || continue
		f=$(get "$t-trivial-floor-$where" 2)
		e=$(get "$t-trivial-empty-$where" 2)
		printf '%-30s %8s %11s %13s %9s %14s\n' "$t worker ($where)" "$(rate "$trivial" "$w")" \
			"$(echo "scale=2; $(get "$t-trivial-worker-$where" 3) * 1000 / $trivial" | bc)" "$(ratio "$f" "$w")" \
			"$e" "$(ratio "$f" "$(echo "$w - $e" | bc)")"
		printf '%-30s %8s %11s\n' "$t one pipeline ($where)" "$(rate "$trivial" "$f")" \
			"$(echo "scale=2; $(get "$t-trivial-floor-$where" 3) * 1000 / $trivial" | bc)"
	done
done
echo
printf '%-34s %10s %10s %14s\n' "reference analyzer, $msgs messages" "worker s" "alone s" "worker/alone"
for t in base new; do
	w=$(get "$t-reference-worker" 2) a=$(get "$t-reference-analyze" 2)
	printf '%-34s %10s %10s %14s\n' "$t" "$w" "$a" "$(ratio "$w" "$a")"
done
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
	printf '%-24s %5s %6s %12s %6s %12s\n' "$label" "msgs" "ideal" "base/s (of)" "ideal" "new/s (of)"
	for n in 1 4 16; do
		# ideal: N over the mean latency, of the distribution for a fixed
		# one, of the delays drawn in that very run for one that spreads
		for t in base new; do
			m=$mean
			[ "$kind" = fixed ] || m=$(mean_delay "$t-slow-$kind-$n")
			printf -v "ideal_$t" %s "$(echo "scale=1; $n * 1000 / $m" | bc)"
			printf -v "rate_$t" %s "$(rate "$(slow_count "$n")" "$(get "$t-slow-$kind-$n" 2)")"
		done
		# shellcheck disable=SC2154 # set by printf -v
		printf '%-24s %5s %6s %12s %6s %12s\n' "WORKER_MAX_MESSAGES=$n" "$(slow_count "$n")" \
			"$ideal_base" "$rate_base ($(ratio "$rate_base" "$ideal_base"))" \
			"$ideal_new" "$rate_new ($(ratio "$rate_new" "$ideal_new"))"
	done
	echo
done
