#!/bin/sh
# validate.sh - what the decoding validation of every image costs (dq(7),
# Images), beside what the same image costs anyway: CPU time per call.
#
# usage: bench/validate.sh [RUNS]
# Run from the source tree; builds dq-synth, image-test and reference-test when
# missing.  Images are dq-synth's 4000x3000 good part in JPEG (quality 90),
# PNG and WebP.
set -eu

RUNS=${1:-10}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
make -s tools/dq-synth tests/unit/image-test tests/unit/reference-test >/dev/null
command -v jq >/dev/null || { echo "validate: jq is needed" >&2; exit 69; }
one=""
command -v taskset >/dev/null && one="taskset -c 0"
export LOG_LEVEL=WARNING

t=$(mktemp -d "${TMPDIR:-/tmp}/dq-validate.XXXXXX")
trap 'rm -rf "$t"' EXIT INT TERM

for f in jpeg png webp; do
	tools/dq-synth -s 7 -o "$t/$f" -f "$f" -W 4000 -H 3000 --refs 1 --good 1 --defects 0 >/dev/null
	$one tests/unit/image-test time "$t/$f/samples/good-001.$(echo "$f" | sed 's/jpeg/jpg/')" "$RUNS" >>"$t/time.jsonl"
done
# The whole reference analysis of the JPEG (decode at 2/8 included), wall
# time on one core: the model in memory, after a warm-up.
ana=$(DQ_CACHE_DIR=$t/cache $one tests/unit/reference-test -r "$t/jpeg/reference" time "$t/jpeg/samples/good-001.jpg" "$RUNS" |
	jq .ms_per_image)

echo "validation of a 4000x3000 image, CPU ms per call over $RUNS runs, one core"
jq -r --argjson ana "$ana" -s '
	(["type", "bytes", "sha256", "sniff", "validate", "decode_2_8", "decode_full",
	  "val/dec_2_8", "val/dec_full", "val/analysis"] | @tsv),
	(.[] | .cpu_ms as $c | [(.file | sub(".*\\."; "")), .bytes, $c.sha256, $c.sniff, $c.validate,
	  $c.decode_2_8, $c.decode_full,
	  ($c.validate / $c.decode_2_8 * 100 | round / 100),
	  ($c.validate / $c.decode_full * 100 | round / 100),
	  (if (.file | test("jpg$")) then ($c.validate / $ana * 100 | round / 100) else "-" end)] | @tsv)
' "$t/time.jsonl" | column -t
echo "analysis: the reference analyzer on the JPEG, $ana ms per image (wall, one core)"
