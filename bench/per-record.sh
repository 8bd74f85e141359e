#!/bin/sh
# per-record.sh - what one image costs dq-put beyond the process's start:
# system calls (all, failing mkdir, those spent on ids, fsync of a
# directory), SHA-256 passes, OpenSSL digest fetches and instructions, this
# tree beside BASE (default main), side by side in one run.
#
# usage: bench/per-record.sh     BASE=rev N=50 BYTES=200000
# Each figure is the difference between dq-put of N images and of one
# image, over N - 1: the cost of a record, start-up left out.  System calls
# are counted by strace -f, calls and instructions by valgrind's callgrind
# (deterministic: the machine's load does not change them).  Needs strace,
# valgrind, python3, git and a built tree.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
base=${BASE:-main}
n=${N:-50}
bytes=${BYTES:-200000}
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3
for tool in strace valgrind callgrind_annotate "$py"; do
	command -v "$tool" >/dev/null || { echo "per-record.sh: $tool is missing" >&2; exit 69; }
done
[ -x "$top/bin/dq-put" ] || { echo "per-record.sh: build first (make)" >&2; exit 69; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# BASE built beside this tree (BASE_TREE: one built already)
rev='' basebin='' # set by base_build
# shellcheck source=bench/base.sh
. "$top/bench/base.sh"
base_build

mkdir "$work/img"
i=1
while [ "$i" -le "$n" ]; do
	"$py" "$top/tests/bats/mkimage.py" jpeg 640 480 "$i" "$bytes" >"$work/img/$i.jpg"
	i=$((i + 1))
done

# measure BIN K: "syscalls mkdir_failed id_calls dir_fsyncs sha256 fetches Ir"
# for dq-put of the first K images into a new store.
measure() {
	files=$(i=1; while [ "$i" -le "$2" ]; do printf '%s ' "$work/img/$i.jpg"; i=$((i + 1)); done)
	rm -rf "$work/local"
	# shellcheck disable=SC2086 # one word per file
	DQ_LOCAL_DIR=$work/local LOG_LEVEL=ERROR strace -f -qq -o "$work/trace" \
		"$1/dq-put" --sku s --facility f $files >/dev/null
	rm -rf "$work/local"
	# shellcheck disable=SC2086
	DQ_LOCAL_DIR=$work/local LOG_LEVEL=ERROR valgrind -q --tool=callgrind \
		--callgrind-out-file="$work/cg" "$1/dq-put" --sku s --facility f $files >/dev/null
	callgrind_annotate --inclusive=yes --tree=caller "$work/cg" >"$work/cg.txt" 2>/dev/null
	# calls of a function: the sum of its callers' counts ("< f (Nx)") above
	# its own line ("*  f") in callgrind_annotate's tree
	awk -v cg="$work/cg.txt" '
	/ resumed>/ { next }
	{ calls++ }
	/ mkdir(at)?\(.*= -1 EEXIST/ { mk++ }
	/ (getrandom|getpid|getppid|getuid|gettid)\(/ { idc++ }
	/ openat\(.*O_DIRECTORY.*= [0-9]+$/ { dirfd[$NF] = 1 }
	/ fsync\([0-9]+\)/ { fd = $0; sub(/.*fsync\(/, "", fd); sub(/\).*/, "", fd); if (fd in dirfd) dfs++ }
	/ close\([0-9]+\)/ { fd = $0; sub(/.*close\(/, "", fd); sub(/\).*/, "", fd); delete dirfd[fd] }
	END {
		while ((getline line < cg) > 0) {
			if (line ~ /^ *$/) { up = 0; continue }
			if (line ~ / < .*\([0-9]+x\)/) { c = line; sub(/.*\(/, "", c); up += c + 0; continue }
			if (line ~ /\*  \?\?\?:EVP_Digest /) sha = up
			if (line ~ /\*  \?\?\?:EVP_MD_fetch /) fetch = up
			if (line ~ /PROGRAM TOTALS/) { c = line; gsub(/[ ,]/, "", c); sub(/\(.*/, "", c); ir = c + 0 }
		}
		printf "%d %d %d %d %d %d %.0f\n", calls, mk, idc, dfs, sha, fetch, ir
	}' "$work/trace"
}

# per RUN1 RUNN: the figures per record, (RUNN - RUN1) / (n - 1).
per() {
	echo "$1 $2" | awk -v n="$n" '{
		for (i = 1; i <= 7; i++) d[i] = ($(i + 7) - $i) / (n - 1)
		printf "%.1f %.1f %.1f %.1f %.2f %.2f %.0f\n", d[1], d[2], d[3], d[4], d[5], d[6], d[7]
	}'
}

echo "measuring ..." >&2
b=$(per "$(measure "$basebin" 1)" "$(measure "$basebin" "$n")")
t=$(per "$(measure "$top/bin" 1)" "$(measure "$top/bin" "$n")")

echo "dq-put, per image beyond start-up ($n JPEGs of $bytes bytes, local store)"
echo "base = $base ($rev), new = this tree"
echo
printf '%-8s %10s %12s %12s %12s %10s %10s %14s\n' tree syscalls "mkdir EEXIST" "id syscalls" "dir fsyncs" "SHA-256" fetches instructions
# shellcheck disable=SC2086 # the seven figures
printf '%-8s %10s %12s %12s %12s %10s %10s %14s\n' base $b
# shellcheck disable=SC2086
printf '%-8s %10s %12s %12s %12s %10s %10s %14s\n' new $t
echo
echo "$b $t" | awk '{printf "new/base: syscalls %.2f, instructions %.2f\n", $8 / $1, $14 / $7}'
