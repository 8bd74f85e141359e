#!/bin/sh
# spool.sh - the local spool's send rate with 0 and with IDS ids in the
# duplicate window, this tree beside BASE (default main), side by side in
# one run and printed as ratios.
#
# usage: bench/spool.sh   BASE=rev IDS=100000 SENDS=1000 DIR=/tmp REPEAT=3
# Each figure is the best of REPEAT runs, base and new taking turns; a run
# is one dq-enqueue of SENDS records with fresh ids into a new
# spool under DIR (its file system matters: fsync), after a warm-up send;
# the IDS ids are made beforehand as files of the old layout, ids/<sha256>,
# stamped now, which BASE reads as they are and this tree migrates into its
# buckets with the warm-up send.  Needs python3, git and a built tree.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
base=${BASE:-main}
ids=${IDS:-100000}
sends=${SENDS:-1000}
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
[ -x "$top/bin/dq-enqueue" ] || { echo "spool.sh: build first (make)" >&2; exit 69; }

work=$(mktemp -d "${DIR:-${TMPDIR:-/tmp}}/dq-bench-spool.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# BASE built beside this tree (BASE_TREE: one built already)
rev='' basebin='' # set by base_build
# shellcheck source=bench/base.sh
. "$top/bench/base.sh"
base_build

# records N FILE: N records whose messages have fresh image ids.
"$py" - "$((sends + 1))" "$work/records" <<'EOF'
import json, sys, uuid
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    for _ in range(n):
        i = str(uuid.uuid4())
        f.write(json.dumps({"message": {"image_id": i,
            "ingested_at": "2026-12-01T00:00:00Z",
            "metadata": {"product_sku": "s", "facility": "f",
                "source_blob": {"container": "raw-images", "blob_name": i + ".jpg"},
                "content_type": "image/jpeg", "extra": {}},
            "image": {"size": 1, "sha256": "0" * 64, "width": 1, "height": 1}}}) + "\n")
EOF
head -n 1 "$work/records" >"$work/warm"
tail -n +2 "$work/records" >"$work/timed"

# run BIN NIDS: messages per second of one dq-enqueue of the timed records.
run() {
	rm -rf "$work/local"
	DQ_LOCAL_DIR=$work/local LOG_LEVEL=ERROR "$1/dq-enqueue" -q bench <"$work/warm" >/dev/null
	if [ "$2" -gt 0 ]; then
		"$py" - "$work/local/queues/bench/ids" "$2" <<'EOF'
import hashlib, os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    mid = "old-%d" % i
    with open(os.path.join(d, hashlib.sha256(mid.encode()).hexdigest()), "w") as f:
        f.write(mid + "\n")
EOF
		# the warm-up send: BASE reads the old layout, this tree migrates it
		head -n 1 "$work/timed" |
			DQ_LOCAL_DIR=$work/local LOG_LEVEL=ERROR "$1/dq-enqueue" -q bench --new-id >/dev/null
	fi
	# the files just made are written back now, not by the first timed fsync
	sync -f "$work/local"
	t0=$(date +%s%N)
	DQ_LOCAL_DIR=$work/local LOG_LEVEL=ERROR "$1/dq-enqueue" -q bench <"$work/timed" >/dev/null
	t1=$(date +%s%N)
	echo "$sends $t0 $t1" | awk '{printf "%.0f", $1 / (($3 - $2) / 1e9)}'
}

# best BIN NIDS: the best of REPEAT runs, the two trees taking turns.
best() {
	echo "$@" | tr ' ' '\n' | sort -n | tail -n 1
}
b0='' n0='' bi='' ni=''
r=0
while [ "$r" -lt "${REPEAT:-3}" ]; do
	b0="$b0 $(run "$basebin" 0)"
	n0="$n0 $(run "$top/bin" 0)"
	bi="$bi $(run "$basebin" "$ids")"
	ni="$ni $(run "$top/bin" "$ids")"
	r=$((r + 1))
done
echo "runs: base 0:$b0; new 0:$n0; base $ids:$bi; new $ids:$ni" >&2
# shellcheck disable=SC2086 # the runs' rates, one word each
b0=$(best $b0) n0=$(best $n0) bi=$(best $bi) ni=$(best $ni)

echo "local spool sends per second (best of ${REPEAT:-3}), $sends sends by one dq-enqueue, in $(df -P "$work" | awk 'NR == 2 {print $1}')"
echo "base = $base ($rev), new = this tree"
echo
printf '%-8s %12s %14s %12s\n' tree "0 ids" "$ids ids" "ratio"
printf '%-8s %12s %14s %12s\n' base "$b0" "$bi" "$(echo "$bi $b0" | awk '{printf "%.2f", $1 / $2}')"
printf '%-8s %12s %14s %12s\n' new "$n0" "$ni" "$(echo "$ni $n0" | awk '{printf "%.2f", $1 / $2}')"
echo
echo "new/base with $ids ids: $(echo "$ni $bi" | awk '{printf "%.2f", $1 / $2}')"
