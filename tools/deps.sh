#!/bin/sh
# deps.sh build|test - install what dq needs from Debian's archive when run
# as root; otherwise print the apt-get line to run.  Never installs what is
# already there (dpkg-query), never touches Node.js installed elsewhere, and
# starts no service of what it installs.
set -eu

build="gcc make pkg-config libcurl4-openssl-dev libjansson-dev libssl-dev uuid-dev
libjpeg62-turbo-dev libpng-dev libwebp-dev libfcgi-dev"
test="bats bats-support bats-assert jq lighttpd nginx fcgiwrap apache2 spawn-fcgi python3
mandoc shellcheck wrk clang libclang-rt-14-dev valgrind parallel curl procps util-linux
coreutils"
# deploy/rootfs-test.sh (make check-rootfs): the images' root file systems
test="$test debootstrap"

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
	# as root, so that the servers installed do not start (below)
	echo "run: sudo sh tools/deps.sh $1" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The web servers' packages start their services (on port 80) when they are
# installed; the tests run their own on free ports.  A policy-rc.d that says
# no (101) keeps them stopped, for this install only: one the machine has
# already is left as it is, one made here is removed at the end.
policy=${DQ_POLICY_RC_D:-/usr/sbin/policy-rc.d}	# (another for its test)
if [ ! -e "$policy" ]; then
	trap 'rm -f "$policy"' EXIT
	trap 'exit 130' INT TERM
	printf '#!/bin/sh\n# made by dq tools/deps.sh while it installs packages\nexit 101\n' >"$policy"
	chmod 755 "$policy"
fi
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
