#!/usr/bin/env bats
# dq-worker's exit statuses: when several apply, the one that wins is the
# first of dq(7)'s EXIT STATUS list, in the script's merge() as in lib's
# dq_status_merge().  The orders are derived from what each merge does,
# pair by pair, and compared with the one the manual states.

load helpers

setup() {
	status_test=$DQ_BUILD/tests/unit/status-test
	[ -x "$status_test" ] || fail "$status_test is not built: run 'make tests/unit/status-test'"
}

# man_order: the statuses of dq(7)'s EXIT STATUS list, in its order.
man_order() {
	sed -n '/^\.Sh EXIT STATUS$/,/^\.Sh /p' "$DQ_TOP/man/dq.7" |
		sed -n 's/^\.It \([0-9][0-9]*\)$/\1/p'
}

# script_merge A B: the winner by the worker's own merge() and status_order,
# taken from the script (running it would start a worker).
script_merge() {
	local definitions merged=$1
	definitions=$(sed -n '/^status_order=(/p; /^merge() {$/,/^}$/p' "$DQ_TOP/cmd/dq-worker/dq-worker")
	eval "$definitions"
	declare -F merge >/dev/null || return 1
	merge merged "$2"
	echo "$merged"
}

c_merge() {
	"$status_test" "$1" "$2"
}

# winner_order MERGE STATUS...: the statuses, the one that beats all the
# others first, as MERGE A B (which prints the winner) ranks them; fails
# when MERGE is not symmetric.
winner_order() {
	local merge=$1 winner other forward backward ranked=() left=()
	shift
	left=("$@")
	while [ ${#left[@]} -gt 0 ]; do
		winner=${left[0]}
		for other in "${left[@]}"; do
			forward=$("$merge" "$winner" "$other") || return 1
			backward=$("$merge" "$other" "$winner") || return 1
			[ "$forward" = "$backward" ] || {
				echo "$merge $winner $other gives $forward, $merge $other $winner gives $backward" >&2
				return 1
			}
			winner=$forward
		done
		ranked+=("$winner")
		for other in "${!left[@]}"; do
			[ "${left[$other]}" != "$winner" ] || unset 'left[other]'
		done
		left=("${left[@]}")
	done
	echo "${ranked[*]}"
}

@test "dq(7) lists the exit statuses in an order that ends with 0" {
	run --separate-stderr man_order
	assert_success
	[ "${#lines[@]}" -ge 7 ] || fail "dq(7)'s EXIT STATUS list not found: $output"
	assert_equal "${lines[-1]}" 0
	assert_equal "$stderr" ""
}

@test "the worker's merge ranks the exit statuses in dq(7)'s order" {
	local expected
	expected=$(man_order | xargs)
	# shellcheck disable=SC2046
	run --separate-stderr winner_order script_merge $(man_order | sort -n)
	assert_success
	assert_output "$expected"
	assert_equal "$stderr" ""
}

@test "lib's dq_status_merge ranks the exit statuses in dq(7)'s order" {
	local expected
	expected=$(man_order | xargs)
	# shellcheck disable=SC2046
	run --separate-stderr winner_order c_merge $(man_order | sort -n)
	assert_success
	assert_output "$expected"
	assert_equal "$stderr" ""
}
