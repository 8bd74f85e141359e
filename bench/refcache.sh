#!/bin/sh
# refcache.sh - the start of dq-analyze on a warm model cache, this tree
# beside BASE (default main), side by side in one run: the reference
# analyzer on a SKU of REFS (20) references of W x H (1600x1000) pixels.
#
# usage: bench/refcache.sh     BASE=rev RUNS=15 REFS=20 W=1600 H=1000
# Both trees share one cache (the model's file name is the same: BASE's
# warm start must build nothing, which is checked).  Two rows: a start that
# stops once the model is loaded (a 64x64 image, refused for its aspect),
# and a start that analyzes one W x H image.  Runs alternate between the
# trees; the medians of wall and CPU time (perf's task-clock) are printed,
# and the references each start opens (strace).  Needs perf, strace,
# python3, git and a built tree.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
base=${BASE:-main}
runs=${RUNS:-15}
refs=${REFS:-20}
w=${W:-1600}
h=${H:-1000}
sku=WK-KN-200
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
for tool in perf strace "$py"; do
	command -v "$tool" >/dev/null || { echo "refcache.sh: $tool is missing" >&2; exit 69; }
done
[ -x "$top/bin/dq-analyze" ] || { echo "refcache.sh: build first (make)" >&2; exit 69; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# BASE built beside this tree (BASE_TREE: one built already)
rev='' basebin='' # set by base_build
# shellcheck source=bench/base.sh
. "$top/bench/base.sh"
base_build

echo "drawing $refs references of ${w}x$h ..." >&2
"$top/tools/dq-synth" -s 10 -o "$work/synth" -W "$w" -H "$h" --refs "$refs" --good 1 \
	--defects 0 >/dev/null
"$py" "$top/tests/bats/mkimage.py" jpeg 64 64 1 >"$work/small.jpg"
sample=$work/synth/samples/good-001.jpg
DQ_ANALYZER=reference DQ_REFERENCE_DIR=$work/synth/reference DQ_CACHE_DIR=$work/cache
LOG_LEVEL=INFO DQ_LOG_FORMAT=json
export DQ_ANALYZER DQ_REFERENCE_DIR DQ_CACHE_DIR LOG_LEVEL DQ_LOG_FORMAT

# the model, once; then the index, once the references are older than its
# two-second margin (dq-reference(7)), so that it vouches for them
echo "building the model ..." >&2
"$top/bin/dq-analyze" --sku "$sku" "$sample" >/dev/null 2>&1
newest=$(stat -c %Z "$DQ_REFERENCE_DIR/$sku"/* | sort -n | tail -n 1)
while [ "$(date +%s)" -lt $((newest + 3)) ]; do sleep 0.2; done
"$top/bin/dq-analyze" --sku "$sku" "$sample" >/dev/null 2>&1
for bin in "$basebin" "$top/bin"; do
	if "$bin/dq-analyze" --sku "$sku" "$sample" 2>&1 >/dev/null | grep -q '"event":"reference_model"'; then
		echo "refcache.sh: $bin/dq-analyze built a model on the warm cache" >&2
		exit 70
	fi
done

# one BIN FILE: "wall_ms cpu_ms" of one start of BIN/dq-analyze on FILE.
one() {
	t0=$(date +%s%N)
	perf stat -x, -e task-clock -o "$work/perf" "$1/dq-analyze" --sku "$sku" "$2" \
		>/dev/null 2>&1 || true
	t1=$(date +%s%N)
	cpu=$(awk -F, '/task-clock/ { print $1 }' "$work/perf")
	echo "$(((t1 - t0) / 1000)) $cpu" | awk '{ printf "%.1f %.1f\n", $1 / 1000, $2 }'
}

# median: of the numbers on stdin.
median() {
	sort -n | awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# opened BIN: how many reference files one start of BIN opens.
opened() {
	strace -f -qq -e trace=open,openat -o "$work/trace" "$1/dq-analyze" --sku "$sku" \
		"$work/small.jpg" >/dev/null 2>&1 || true
	grep -c "/reference/$sku/ref-" "$work/trace" || true
}

echo "measuring, $runs runs each ..." >&2
for what in small sample; do
	file=$work/small.jpg
	[ "$what" = small ] || file=$sample
	: >"$work/base.$what"
	: >"$work/new.$what"
	i=0
	while [ "$i" -lt "$runs" ]; do
		one "$basebin" "$file" >>"$work/base.$what"
		one "$top/bin" "$file" >>"$work/new.$what"
		i=$((i + 1))
	done
done

bytes=$(cat "$DQ_REFERENCE_DIR/$sku"/* | wc -c)
echo "dq-analyze on a warm cache: $refs references of ${w}x$h ($((bytes / 1000000)) MB)"
echo "base = $base ($rev), new = this tree; medians of $runs runs, alternating"
echo
printf '%-34s %-5s %9s %9s %11s\n' start tree "wall ms" "CPU ms" "refs opened"
for what in small sample; do
	label="model loaded, image refused"
	[ "$what" = small ] || label="one ${w}x$h image analyzed"
	for tree in base new; do
		bin=$basebin
		[ "$tree" = base ] || bin=$top/bin
		printf '%-34s %-5s %9s %9s %11s\n' "$label" "$tree" \
			"$(cut -d' ' -f1 "$work/$tree.$what" | median)" \
			"$(cut -d' ' -f2 "$work/$tree.$what" | median)" "$(opened "$bin")"
	done
done
echo
for what in small sample; do
	bw=$(cut -d' ' -f1 "$work/base.$what" | median)
	nw=$(cut -d' ' -f1 "$work/new.$what" | median)
	bc=$(cut -d' ' -f2 "$work/base.$what" | median)
	nc=$(cut -d' ' -f2 "$work/new.$what" | median)
	echo "$what $bw $nw $bc $nc" | awk '{
		printf "new/base, %s: wall %.2f, CPU %.2f\n",
		    $1 == "small" ? "model loaded" : "one image analyzed", $3 / $2, $5 / $4 }'
done
