# users.bash - throwaway users for the tests of a store and queue shared
# by two users (DESIGN §4: the web server's and the worker's).  Needs root
# (CI runs as root); users_teardown removes what users_setup made.
# shellcheck shell=bash

# users_setup: a group DQ_GROUP and two users DQ_WEB and DQ_WORK, each with
# a primary group of its own and DQ_GROUP besides, as a web server's user
# and a worker's user would be; copies of the programs they can run in
# $BATS_TEST_TMPDIR/bin; the test directories reachable by them.
users_setup() {
	[ "$(id -u)" -eq 0 ] || skip "needs root to create throwaway users"
	local tag p
	tag=$(printf '%x%04x' "$$" "$RANDOM")
	DQ_GROUP=dqg$tag DQ_WEB=dqw$tag DQ_WORK=dqk$tag
	groupadd "$DQ_GROUP"
	for u in "$DQ_WEB" "$DQ_WORK"; do
		useradd -M -U -G "$DQ_GROUP" -d /nonexistent -s /usr/sbin/nologin "$u"
	done
	for p in "$BATS_TEST_TMPDIR" "$BATS_FILE_TMPDIR"; do
		while [ "$p" != / ]; do
			[ "$(stat -c %A "$p" | cut -c10)" != - ] || chmod o+x "$p"
			p=$(dirname "$p")
		done
	done
	mkdir -m 755 "$BATS_TEST_TMPDIR/bin"
	cp "$DQ_BUILD"/bin/dq-* "$BATS_TEST_TMPDIR/bin/"
	export DQ_GROUP DQ_WEB DQ_WORK
}

# as USER COMMAND...: COMMAND as USER with its groups and umask 002, the
# programs' copies first in PATH.
as() {
	local u=$1
	shift
	env PATH="$BATS_TEST_TMPDIR/bin:$PATH" setpriv --reuid="$u" --regid="$u" --init-groups \
		bash -c 'umask 002 && exec "$@"' - "$@"
}

users_teardown() {
	[ -n "${DQ_WEB:-}" ] || return 0
	userdel -f "$DQ_WEB" 2>/dev/null || :
	userdel -f "$DQ_WORK" 2>/dev/null || :
	for g in "$DQ_WEB" "$DQ_WORK" "$DQ_GROUP"; do groupdel "$g" 2>/dev/null || :; done
	unset DQ_WEB DQ_WORK DQ_GROUP
	return 0
}
