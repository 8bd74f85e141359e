# openai.bash - the Azure OpenAI fake (tests/fakes/openai.py) for the
# 42-44 suites: started per test on a free loopback port, stopped by its
# own PID, the azure-openai analyzer pointed at it.
# shellcheck shell=bash

# openai_start [SCRIPT-JSON]: the fake answering from the script (httpd.py's
# form; none: "no defect" to every image); sets AZURE_AI_PROJECT_ENDPOINT.
openai_start() {
	local dir=$BATS_TEST_TMPDIR/fake-openai
	mkdir -p "$dir"
	rm -f "$dir/port"
	printf '%s\n' "${1:-{\}}" >"$dir/script.json"
	python3 "$DQ_TOP/tests/fakes/openai.py" --port-file "$dir/port" --stats-file "$dir/stats" \
		--script "$dir/script.json" >"$dir/out" 2>"$dir/err" &
	echo $! >"$dir/pid"
	wait_for 10 test -s "$dir/port" || fail "the openai fake did not start: $(cat "$dir/err")"
	export AZURE_AI_PROJECT_ENDPOINT
	AZURE_AI_PROJECT_ENDPOINT="http://127.0.0.1:$(cat "$dir/port")/"
}

# openai_stop: the fake, by its PID.
openai_stop() {
	local p=$BATS_TEST_TMPDIR/fake-openai/pid
	[ -f "$p" ] || return 0
	kill "$(cat "$p")" 2>/dev/null || :
	rm -f "$p"
}

# openai_stats [JQ-FILTER]: what the fake saw ({requests, connections, log}), raw.
openai_stats() {
	jq -r "${1:-.}" "$BATS_TEST_TMPDIR/fake-openai/stats"
}

# answer FINDINGS-JSON: a script whose every answer is those findings.
answer() {
	jq -nc --argjson f "$1" '{answers: [{findings: $f}]}'
}
