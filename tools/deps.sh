#!/bin/sh
# deps.sh build|test - install what dq needs from Debian's archive when run
# as root; otherwise print the apt-get line to run.  Never installs what is
# already there (dpkg-query) and never touches Node.js installed elsewhere.
set -eu

build="gcc make pkg-config libcurl4-openssl-dev libjansson-dev libssl-dev uuid-dev
libjpeg62-turbo-dev libpng-dev libwebp-dev libfcgi-dev"
test="bats bats-support bats-assert jq lighttpd python3 mandoc shellcheck wrk clang
libclang-rt-14-dev valgrind parallel curl procps util-linux coreutils"

case "${1:-}" in
build) want=$build ;;
test) want="$build $test" ;;
*) echo "usage: deps.sh build|test" >&2; exit 64 ;;
esac

missing=""
for p in $want; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing="$missing $p"
	fi
done
[ -n "$missing" ] || exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "dq: missing packages:$missing" >&2
	echo "run: sudo apt-get update && sudo apt-get install -y$missing" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
