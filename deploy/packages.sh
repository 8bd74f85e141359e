#!/bin/sh
# packages.sh api|worker|all - the package names packages.list gives an
# image (all: both images' together), on one line.
set -eu
want=${1:-}
case "$want" in
api | worker | all) ;;
*) echo "usage: packages.sh api|worker|all" >&2; exit 64 ;;
esac
list=${DQ_PACKAGES_LIST:-$(dirname "$0")/packages.list}
awk -v want="$want" '
	/^[ \t]*(#|$)/ { next }
	NF != 2 || ($1 != "both" && $1 != "api" && $1 != "worker") {
		printf "packages.list:%d: not IMAGE PACKAGE: %s\n", NR, $0 > "/dev/stderr"; bad = 1; next
	}
	want == "all" || $1 == "both" || $1 == want { out = out (out == "" ? "" : " ") $2 }
	END { if (bad) exit 65; print out }
' "$list"
