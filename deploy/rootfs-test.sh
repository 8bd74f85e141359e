#!/bin/bash
# rootfs-test.sh - prove the two images without a container engine: build
# the runtime root file system each Dockerfile describes from Debian's
# packages (debootstrap, variant minbase, bookworm, deploy/packages.list),
# install dq into it with `make install DESTDIR=…` as the Dockerfiles do,
# set it up with deploy/image-setup.sh, and run inside it with chroot, as
# the image's non-root user:
#	worker: dq-worker --check, then dq-worker --drain over a few images
#		dq-synth made, with the reference analyzer (local backends)
#	api:	one ingest request through the image's lighttpd.conf (FastCGI)
# A library or file the images lack fails here, not in a deployment.
#
#	deploy/rootfs-test.sh		(make check-rootfs; root; the build done)
#
# Needs root (debootstrap, chroot) and Debian's archive: the mirror is the
# one this machine's apt sources name for bookworm (DQ_DEBIAN_MIRROR says
# another).  Where either is missing it says why and exits 0 with SKIP
# (DQ_ROOTFS_REQUIRE=1: exit 77 instead).  debootstrap's result is cached
# per image under DQ_ROOTFS_CACHE (default /var/cache/dq-rootfs) as a
# tarball named by the hash of its package list, mirror and suite, and its
# .debs beside it: a rerun unpacks in seconds; a changed list builds anew.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${DQ_BUILD:-$top}
suite=bookworm
cache=${DQ_ROOTFS_CACHE:-/var/cache/dq-rootfs}
images=${DQ_ROOTFS_IMAGES:-worker api}

say() { printf 'rootfs-test: %s\n' "$*"; }
skip() {
	say "SKIP: $*"
	[ "${DQ_ROOTFS_REQUIRE:-0}" = 1 ] && exit 77
	exit 0
}
fail() { say "FAIL: $*" >&2; exit 1; }

# The bookworm mirror apt uses here: deb822 .sources files first, then
# one-line sources.list entries; the security archive is not it.
mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		awk '
			/^[ \t]*$/ { if (ok && uri != "") { print uri; exit } ok = 0; uri = ""; next }
			tolower($1) == "uris:" { uri = $2 }
			tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == "bookworm") ok = 1 }
			END { if (ok && uri != "") print uri }
		' "$f"
	done
	cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk '$1 == "deb" { u = $2; s = $3; if ($2 ~ /^\[/) { u = $3; s = $4 } if (s == "bookworm") print u }'
}

[ "$(id -u)" -eq 0 ] || skip "not root: debootstrap and chroot need root"
command -v debootstrap >/dev/null || skip "debootstrap is not installed (make deps-test installs it)"
chroot=$(command -v chroot)
for p in dq-worker dq-analyze dq-ingest; do
	[ -x "$build/bin/$p" ] || fail "$build/bin/$p is not built (make all)"
done
url=${DQ_DEBIAN_MIRROR:-$(mirror | grep -v -- '-security' | head -1 || true)}
[ -n "$url" ] || skip "no apt source names a $suite mirror (set DQ_DEBIAN_MIRROR)"
url=${url%/}
# Reachable: its Release file answers within 20 s.
if ! curl -fsS -o /dev/null --max-time 20 "$url/dists/$suite/Release" 2>"${TMPDIR:-/tmp}/rootfs-test.$$"; then
	why=$(head -c 300 "${TMPDIR:-/tmp}/rootfs-test.$$")
	rm -f "${TMPDIR:-/tmp}/rootfs-test.$$"
	skip "debootstrap cannot reach Debian's archive at $url ($why)"
fi
rm -f "${TMPDIR:-/tmp}/rootfs-test.$$"

work=$(mktemp -d "${TMPDIR:-/tmp}/dq-rootfs.XXXXXX")
server_pid=''
cleanup() {
	[ -z "$server_pid" ] || { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }
	rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# rootfs IMAGE DIR: the image's root file system in DIR, from the cache or
# debootstrapped (then cached).
rootfs() {
	local image=$1 dir=$2 pkgs key tarball
	pkgs=$(sh "$top/deploy/packages.sh" "$image")
	key=$(printf '%s\n' "$suite" "$url" minbase "$pkgs" | sha256sum | cut -c1-16)
	tarball=$cache/$suite-$image-$key.tar
	mkdir -p "$cache/debs"
	if [ ! -s "$tarball" ]; then
		say "$image: debootstrap --variant=minbase $suite (${pkgs// /,}): first run, a few minutes"
		local tmp=$work/bootstrap-$image
		if ! debootstrap --variant=minbase --cache-dir="$cache/debs" --include="${pkgs// /,}" \
			"$suite" "$tmp" "$url" >"$work/debootstrap-$image.log" 2>&1; then
			tail -20 "$work/debootstrap-$image.log" >&2
			if grep -q 'Failed getting release file\|Couldn.t download\|Temporary failure' "$work/debootstrap-$image.log"; then
				skip "debootstrap cannot reach Debian's archive at $url (log above)"
			fi
			fail "$image: debootstrap failed (log above)"
		fi
		rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"* 2>/dev/null || true
		tar -C "$tmp" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
		rm -rf --one-file-system "$tmp"
		# older tarballs of this image are of another list
		find "$cache" -maxdepth 1 -name "$suite-$image-*.tar" ! -name "${tarball##*/}" -delete
	else
		say "$image: root file system from the cache ($tarball)"
	fi
	mkdir -p "$dir"
	tar -C "$dir" --numeric-owner -xf "$tarball"
	# the Dockerfile's steps: make install, then image-setup.sh
	make -s -C "$top" install B="$build" PREFIX=/usr/local DESTDIR="$dir" >/dev/null
	cp "$top/deploy/image-setup.sh" "$dir/tmp/image-setup.sh"
	chroot "$dir" sh /tmp/image-setup.sh "$image"
	rm -f "$dir/tmp/image-setup.sh"
	if [ "$image" = worker ]; then
		install -m 755 "$top/deploy/worker-entry.sh" "$dir/usr/local/libexec/dq/worker-entry"
	else
		mkdir -p "$dir/etc/dq" && cp "$top/deploy/lighttpd.conf" "$dir/etc/dq/lighttpd.conf"
	fi
	# libcurl is loaded at the first HTTP request: the loader must find it
	chroot "$dir" /sbin/ldconfig -p | grep -q 'libcurl\.so\.4 ' ||
		fail "$image: libcurl.so.4 is not in the root file system"
}

# in DIR CMD...: CMD in the root file system as the image's user (dq), in
# the image's clean environment plus the variables in the array env.
in_root() {
	local dir=$1
	shift
	env -i PATH=/usr/local/bin:/usr/bin:/bin "${env[@]}" \
		"$chroot" --userspec=dq:dq "$dir" "$@"
}

worker() {
	local root=$work/worker n
	rootfs worker "$root"
	env=(HOME=/var/lib/dq TMPDIR=/var/lib/dq DQ_LOG_FORMAT=json DQ_LOCAL_DIR=/var/lib/dq/local
		DQ_ANALYZER=reference DQ_REFERENCE_DIR=/var/lib/dq/data/reference
		DQ_CACHE_DIR=/var/lib/dq/cache DQ_WORKER_WAIT_SECONDS=1)
	in_root "$root" dq-synth -s 2026 -o /var/lib/dq/data -W 320 -H 240 --refs 2 --good 1 --defects 2 \
		2>"$work/synth.log" || { cat "$work/synth.log" >&2; fail "worker: dq-synth failed"; }
	in_root "$root" sh -c 'cd /var/lib/dq/data && dq-put --sku WK-KN-200 --facility test samples/* | dq-enqueue' \
		>"$work/enqueued.jsonl" 2>"$work/put.log" || { cat "$work/put.log" >&2; fail "worker: dq-put | dq-enqueue failed"; }
	n=$(wc -l <"$work/enqueued.jsonl")
	[ "$n" -ge 3 ] || fail "worker: $n messages enqueued, not 3"
	in_root "$root" /usr/bin/tini -s -- /usr/local/libexec/dq/worker-entry --check >"$work/check.out" 2>"$work/check.log" ||
		{ cat "$work/check.log" >&2; fail "worker: dq-worker --check failed"; }
	say "worker: tini -- worker-entry --check (dq-worker --check): ok"
	# the image's entry point with no arguments: dq-worker --drain --max-runtime
	env+=(DQ_WORKER_MAX_RUNTIME=120)
	in_root "$root" /usr/bin/tini -s -- /usr/local/libexec/dq/worker-entry >"$work/settled.jsonl" 2>"$work/worker.log" ||
		{ tail -20 "$work/worker.log" >&2; fail "worker: dq-worker --drain failed"; }
	local done_n arts id
	done_n=$(grep -c '"settled":"completed"' "$work/settled.jsonl" || true)
	# each message's artifact, by its image id, in the local store
	arts=0
	while read -r id; do
		[ -s "$root/var/lib/dq/local/store/processed-images/$id.json" ] && arts=$((arts + 1))
	done < <(sed -n 's/.*"image_id":"\([^"]*\)".*/\1/p' "$work/enqueued.jsonl")
	if [ "$done_n" != "$n" ] || [ "$arts" != "$n" ]; then
		tail -20 "$work/worker.log" >&2
		fail "worker: $done_n of $n completed, $arts artifacts"
	fi
	say "worker: tini -- worker-entry (dq-worker --drain --max-runtime 120): $n images analyzed (reference), $arts artifacts"
}

api() {
	local root=$work/api port try code id
	rootfs api "$root"
	env=(HOME=/var/lib/dq TMPDIR=/var/lib/dq DQ_LOG_FORMAT=json DQ_LOCAL_DIR=/var/lib/dq/local
		DQ_STATE_DIR=/var/lib/dq API_KEY=rootfs-test-key DQ_HTTP_BIND=127.0.0.1)
	in_root "$root" mkdir -p /var/lib/dq/local
	cp "$top/tests/bats/fixtures/b.png" "$work/part.png"
	for try in 1 2 3; do
		: "attempt $try"
		port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
		env+=(DQ_HTTP_PORT="$port")
		in_root "$root" /usr/sbin/lighttpd -D -f /etc/dq/lighttpd.conf 2>"$work/lighttpd.log" &
		server_pid=$!
		for _ in $(seq 50); do
			curl -s -o /dev/null "http://127.0.0.1:$port/" && break
			kill -0 "$server_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$server_pid" 2>/dev/null && break
		wait "$server_pid" 2>/dev/null || true
		server_pid=''
		unset 'env[${#env[@]}-1]'
	done
	[ -n "$server_pid" ] || { cat "$work/lighttpd.log" >&2; fail "api: lighttpd did not start"; }
	code=$(curl -s -o "$work/answer.json" -w '%{http_code}' -H 'X-API-Key: rootfs-test-key' \
		-H 'Content-Type: image/png' --data-binary @"$work/part.png" \
		"http://127.0.0.1:$port/api/v1/ingest?product_sku=WK-KN-200&facility=test")
	kill "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
	server_pid=''
	[ "$code" = 202 ] || { cat "$work/answer.json" "$work/lighttpd.log" >&2; fail "api: ingest answered $code, not 202"; }
	id=$(sed -n 's/.*"image_id":"\([^"]*\)".*/\1/p' "$work/answer.json")
	grep -q "\"event\":\"request\"" "$work/lighttpd.log" ||
		{ cat "$work/lighttpd.log" >&2; fail "api: dq-ingest's request log line is not in the server's log"; }
	in_root "$root" dq-dequeue --peek 2>/dev/null | grep -q "\"image_id\":\"$id\"" ||
		fail "api: the ingested image $id is not queued"
	say "api: lighttpd + dq-ingest (FastCGI): 202, image $id stored and queued"
}

for image in $images; do
	case "$image" in
	worker) worker ;;
	api) api ;;
	*) fail "unknown image $image" ;;
	esac
done
say "PASS: $images"
