#!/bin/sh
# image-setup.sh api|worker - the image's last step after `make install`:
# its non-root user and the directories it writes, nothing else.  Run as
# root inside the image (Dockerfile.*) or inside the root file system
# rootfs-test.sh assembled (chroot), so that both are set up alike.
set -eu
case "${1:-}" in
api) uid=10001 ;;
worker) uid=10002 ;;
*) echo "usage: image-setup.sh api|worker" >&2; exit 64 ;;
esac
getent passwd dq >/dev/null ||
	useradd --no-log-init --uid "$uid" --user-group --home-dir /var/lib/dq --shell /usr/sbin/nologin dq
install -d -o dq -g dq -m 0750 /var/lib/dq
if [ "$1" = api ]; then
	# DQ_STATE_DIR (rate limits, idempotency, the request spool), the
	# server's empty document root and its FastCGI socket directory
	install -d -o dq -g dq -m 0750 /var/lib/dq/www /run/dq
else
	# DQ_CACHE_DIR, the derived reference models
	install -d -o dq -g dq -m 0750 /var/lib/dq/cache
fi
