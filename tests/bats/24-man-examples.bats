#!/usr/bin/env bats
# The EXAMPLES of dq-analyze(1), dq-worker(1) and dq-synth(1) run as
# written, and make install puts in place what the pages name.

load helpers

setup() {
	dq_env
	export DQ_WORKER_WAIT_SECONDS=0.5
	cd "$BATS_TEST_TMPDIR" || exit 1
}

# The "$ command" lines of a page's EXAMPLES section, mdoc escapes undone.
examples() {
	awk '/^\.Sh /{ex = ($2 == "EXAMPLES")} ex && /^\$ /{sub(/^\$ /, ""); gsub(/\\e/, "\\"); print}' "$DQ_TOP/man/$1"
}

@test "dq-analyze(1) examples run" {
	run --separate-stderr bash -euo pipefail -c "$(examples dq-analyze.1)"
	assert_success
	# the chipped knife from a terminal, then two messages settled
	assert_line --regexp '^\{"defect_detected":true,"defect_type":"[a-z_]+","severity":"(minor|major|critical)"'
	assert_equal "$(grep -c '"settled":"completed"' <<<"$output")" 2
	assert_equal "$(analyzed_count)" 2
	assert_equal "$(ready_count) $(locked_count)" "0 0"
}

@test "dq-worker(1) examples run" {
	run --separate-stderr bash -euo pipefail -c "$(examples dq-worker.1)"
	assert_success
	# dq-synth's summary, then the worker's two settled records
	assert_equal "$(grep '^\[' <<<"$output" | jq -r '.[1]' | sort | uniq -c | sed 's/^ *//')" "2 completed"
	assert_equal "$(analyzed_count)" 2
}

@test "dq-synth(1) examples run" {
	run --separate-stderr bash -euo pipefail -c "$(examples dq-synth.1)"
	assert_success
	# the two defects of truth.jsonl, then one line per sample analyzed
	assert_equal "$(grep -c '^\["samples/' <<<"$output")" 2
	assert_equal "$(grep -c '^\["parts/samples/' <<<"$output")" 4
	assert_equal "$(grep '^\["parts/samples/good' <<<"$output" | jq -r '.[1]' | sort -u)" none
	assert_equal "$(find parts/reference/WK-KN-200 -name 'ref-*.png' | wc -l)" 3
}

@test "make install DESTDIR=... installs every program and page the manual names" {
	local root=$BATS_TEST_TMPDIR/root name sec missing=''
	run make -s -C "$DQ_TOP" install DESTDIR="$root" PREFIX=/usr B="$DQ_BUILD"
	assert_success
	# every page, as named by its file and by .Xr in the others
	for f in "$DQ_TOP"/man/*.[0-9]; do
		name=${f##*/}
		[ -f "$root/usr/share/man/man${name##*.}/$name" ] || missing+=" page:$name"
	done
	while read -r name sec; do
		[ -f "$root/usr/share/man/man$sec/$name.$sec" ] || missing+=" xr:$name($sec)"
	done < <(grep -oh '^\.Xr dq[a-z-]* [0-9]' "$DQ_TOP"/man/* | cut -d' ' -f2,3 | sort -u)
	# every program a section-1 page documents, or an example runs
	while read -r name; do
		[ -x "$root/usr/bin/$name" ] || missing+=" bin:$name"
	done < <({
		for f in "$DQ_TOP"/man/*.1; do name=${f##*/}; echo "${name%.1}"; done
		for f in "$DQ_TOP"/man/*; do examples "${f##*/}"; done | tr '|' '\n' | awk '$1 ~ /^dq-/ {print $1}'
	} | sort -u)
	[ -x "$root/usr/libexec/dq/ingest.cgi" ] || missing+=" libexec:ingest.cgi"
	assert_equal "$missing" ""
}
