# shellcheck shell=sh
# base.sh - sourced by the benchmarks that run this tree beside BASE:
# base_build sets basebin (BASE's bin/, exported with git archive and built
# in $work/base) and rev (its short name), from top, base and work.
# BASE_TREE: a tree of BASE already built (its bin/), to save the build.
# shellcheck disable=SC2034,SC2154 # rev and basebin are the caller's
base_build() {
	rev=$(git -C "$top" rev-parse --short "$base")
	basebin=${BASE_TREE:+$BASE_TREE/bin}
	[ -z "${BASE_TREE:-}" ] || { base=$BASE_TREE; rev=prebuilt; }
	[ -z "$basebin" ] || return 0
	echo "building $base ..." >&2
	mkdir "$work/base"
	git -C "$top" archive "$base" | tar -x -C "$work/base"
	make -C "$work/base" -j2 all >"$work/base.log" 2>&1 ||
		{ cat "$work/base.log" >&2; exit 70; }
	basebin=$work/base/bin
}
