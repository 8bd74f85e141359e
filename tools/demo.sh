#!/bin/bash
# demo.sh - the whole job on the embedded default: synthetic knives in,
# defect findings out, with the offline reference analyzer.
#
#	tools/demo.sh [DIR]	(make demo: DIR is ./demo)
#
# DIR is made afresh: the local store and queue, the references and
# samples, the artifacts, the logs.  Only the build dependencies are used
# (no jq): the table is read from the artifacts' compact, fixed-order JSON.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=${DQ_BUILD:-$top}
dir=${1:-$top/demo}
seed=${DQ_DEMO_SEED:-2026}
sku=WK-KN-200

if [ ! -x "$build/bin/dq-worker" ] || [ ! -x "$build/bin/dq-analyze" ] || [ ! -x "$build/tools/dq-synth" ]; then
	echo "== building (make all)"
	make -s -C "$top" all
fi
PATH="$build/bin:$build/tools:$PATH"

# A fresh directory, but never someone else's: only one made by a demo is removed.
if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ] && [ ! -e "$dir/.dq-demo" ]; then
	echo "demo: $dir exists and was not made by the demo; give another DIR" >&2
	exit 73
fi
rm -rf "$dir"
mkdir -p "$dir/logs" "$dir/annotated"
: >"$dir/.dq-demo"
dir=$(cd "$dir" && pwd)

# The embedded default and nothing else.
unset AZURE_STORAGE_CONNECTION_STRING AZURE_STORAGE_ACCOUNT AZURE_SERVICEBUS_CONNECTION_STRING \
	AZURE_SERVICEBUS_NAMESPACE AZURE_AI_PROJECT_ENDPOINT AZURE_AI_API_KEY
export DQ_LOCAL_DIR=$dir DQ_ANALYZER=reference DQ_REFERENCE_DIR=$dir/data/reference
export DQ_CACHE_DIR=$dir/cache DQ_LOG_FORMAT=json DQ_WORKER_WAIT_SECONDS=${DQ_WORKER_WAIT_SECONDS:-1}

echo "== writing references and samples: dq-synth -s $seed -o $dir/data"
dq-synth -s "$seed" -o "$dir/data" -W 1000 -H 750 --refs 4 --good 4 --defects 6 \
	--kinds chip,wavy,scratch,rust,bent_tip,rust_tint 2>"$dir/logs/synth.log"
cd "$dir/data"
echo "   $(find reference/$sku -type f -name '*.png' | wc -l) references in data/reference/$sku/," \
	"$(find samples -type f | wc -l) samples in data/samples/"

echo "== dq-put --sku $sku --facility yangjiang samples/* | dq-enqueue"
dq-put --sku "$sku" --facility yangjiang samples/* 2>"$dir/logs/put.log" | tee "$dir/put.jsonl" |
	dq-enqueue 2>"$dir/logs/enqueue.log" >/dev/null

echo "== DQ_ANALYZER=reference DQ_REFERENCE_DIR=$DQ_REFERENCE_DIR dq-worker --drain"
start=${EPOCHREALTIME/./}
st=0
dq-worker --drain >"$dir/settled.jsonl" 2>"$dir/logs/worker.log" || st=$?
echo "   $(grep -c '"settled":"completed"' "$dir/settled.jsonl") messages completed in" \
	"$(((${EPOCHREALTIME/./} - start) / 1000)) ms, worker exit status $st"
[ "$st" = 0 ] || { echo "demo: the worker failed; see $dir/logs/worker.log" >&2; exit "$st"; }

# field NAME: the string, number or boolean value of "NAME" in a compact JSON line on stdin.
field() { grep -o "\"$1\":\(\"[^\"]*\"\|[^,}]*\)" | head -1 | sed 's/^"[^"]*"://; s/^"//; s/"$//'; }
# boxes: "x,y wxh" for each bounding box of an artifact or a truth line.
boxes() {
	grep -o "\"$1\":\[[^]]*\]" | grep -o '{[^}]*}' |
		sed 's/.*"x":\([0-9]*\),"y":\([0-9]*\),"width":\([0-9]*\),"height":\([0-9]*\).*/\1,\2 \3x\4/' |
		paste -sd ';' - | sed 's/;/; /g'
}

echo
printf '%-22s %-7s %-18s %-9s %-22s %s\n' IMAGE DEFECT TYPE SEVERITY BOXES "TRUE BOXES"
while IFS= read -r line; do
	file=$(field file <<<"$line")
	id=$(field image_id <<<"$line")
	art=$(cat "$dir/store/processed-images/$id.json" 2>/dev/null || echo '{}')
	truth=$(grep -F "\"file\":\"$file\"" "$dir/data/truth.jsonl" || true)
	det=$(field defect_detected <<<"$art")
	printf '%-22s %-7s %-18s %-9s %-22s %s\n' "${file#samples/}" \
		"$([ "$det" = true ] && echo yes || echo "${det:+no}")" "$(field defect_type <<<"$art")" \
		"$(field severity <<<"$art")" "$(boxes bounding_boxes <<<"$art")" "$(boxes boxes <<<"$truth")"
done <"$dir/put.jsonl"

echo
echo "== drawing the boxes: dq-analyze --annotate annotated samples/*"
dq-analyze --sku "$sku" --annotate "$dir/annotated" samples/* >/dev/null 2>"$dir/logs/annotate.log" || true
echo
echo "artifacts:       $dir/store/processed-images/<image_id>.json"
echo "annotated:       $dir/annotated/*.png"
echo "truth:           $dir/data/truth.jsonl"
echo "records, logs:   $dir/settled.jsonl, $dir/logs/"
echo "queue:           DQ_LOCAL_DIR=$dir $build/bin/dq-dequeue -n 10 -w 0 prints nothing: all settled"
