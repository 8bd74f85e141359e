#!/usr/bin/env bats
# make demo: tools/demo.sh runs the whole job into a fresh directory and
# prints the table of findings.

load helpers
load local # the demo keeps its own local store, and prints where

@test "the demo runs to the end and prints a row per sample, defects found where they were drawn" {
	dq_env
	# the demo makes its own backends, whatever the suites run on
	no_backend
	unset DQ_POLL_MS
	local d=$BATS_TEST_TMPDIR/demo
	run --separate-stderr bash "$DQ_TOP/tools/demo.sh" "$d"
	assert_success
	assert_line --regexp '^== writing references and samples: dq-synth -s [0-9]+ -o '
	assert_line --regexp '^   10 messages completed in [0-9]+ ms, worker exit status 0$'
	assert_line --regexp '^IMAGE +DEFECT +TYPE +SEVERITY +BOXES +TRUE BOXES$'
	assert_line "artifacts:       $(DQ_LOCAL_DIR=$d local_container processed-images)/<image_id>.json"
	# one row per sample, and its verdict agrees with the truth file
	local f want row
	while IFS=$'\t' read -r f want; do
		row=$(grep -E "^${f#samples/} " <<<"$output")
		if [ "$want" = true ]; then
			assert_regex "$row" '^[a-z_]+-[0-9]{3}\.jpg +yes +[a-z_]+ +(minor|major|critical) +[0-9]+,[0-9]+ [0-9]+x[0-9]+'
		else
			assert_regex "$row" '^good-[0-9]{3}\.jpg +no +none +none *$'
		fi
	done < <(jq -r '[.file, .defect] | @tsv' "$d/data/truth.jsonl")
	assert_equal "$(jq -s length "$d/data/truth.jsonl")" 10
	assert_equal "$(DQ_LOCAL_DIR=$d analyzed_count)" 10
	assert_equal "$(find "$d/annotated" -name '*.png' | wc -l)" 10
	# nothing left on the queue
	DQ_LOCAL_DIR=$d run --separate-stderr dq-dequeue -n 10 -w 0
	assert_success
	assert_output ""
}

@test "the demo refuses a directory it did not make" {
	dq_env
	mkdir "$BATS_TEST_TMPDIR/mine"
	echo keep >"$BATS_TEST_TMPDIR/mine/file"
	run --separate-stderr bash "$DQ_TOP/tools/demo.sh" "$BATS_TEST_TMPDIR/mine"
	assert_failure 73
	assert_equal "$(cat "$BATS_TEST_TMPDIR/mine/file")" keep
}
