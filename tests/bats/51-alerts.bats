#!/usr/bin/env bats
# deploy/alerts.kql against real log lines: each case is run here (a clean
# drain, a failing image, a lost lock at analysis and at settlement, an
# HTTP request throttled by 429 beside one answered 503), its JSON log lines
# captured, and each query's structured @filter (deploy/alerts.sh jq) must
# match exactly the lines of its case and nothing else of any case.  The
# queries' KQL where clauses are the filters' translations, the workbook
# is the queries', and azure.sh makes one alert of each.

load helpers
load fakes

ALERTS="$DQ_TOP/deploy/alerts.sh"
HT="$DQ_BUILD/tests/unit/http-test"

setup() {
	dq_env
	reference_setup 51 -W 320 -H 240 --refs 2 --good 2 --defects 1
	L=$BATS_TEST_TMPDIR/logs
	mkdir -p "$L"
}

teardown() {
	fakes_stop
}

# hits NAME FILE...: the lines of the FILEs the query NAME's filter matches
hits() {
	local name=$1
	shift
	cat "$@" | jq -c "select($(sh "$ALERTS" jq "$name"))"
}

# summary NAME FILE...: "prog event" of each line matched, sorted
summary() {
	hits "$@" | jq -r '"\(.prog) \(.event)"' | sort | tr '\n' ';'
}

# the cases: each leaves its JSON log lines in $L/NAME.log
case_clean() {
	dq-put --sku WK-KN-200 --facility t "$S"/samples/good-00[12].* 2>"$L/clean.log" | dq-enqueue 2>>"$L/clean.log" >/dev/null
	dq-worker --drain >/dev/null 2>>"$L/clean.log"
}
case_failing() {
	# a SKU without references: a permanent failure, dead-lettered at once
	dq-put --sku WK-KN-999 --facility t "$S"/samples/good-001.* 2>"$L/failing.log" | tee "$BATS_TEST_TMPDIR/failing" |
		dq-enqueue 2>>"$L/failing.log" >/dev/null
	dq-worker --drain >/dev/null 2>>"$L/failing.log" || [ $? = 65 ]
}
case_lock() {
	# analysis: a receipt whose lock is gone; settlement: a stale lease
	dq-put --sku WK-KN-200 --facility t "$S"/samples/good-001.* 2>"$L/lock.log" | dq-enqueue 2>>"$L/lock.log" >/dev/null
	dq-dequeue 2>>"$L/lock.log" |
		jq -c '.receipt.lock_token = "stale" | .receipt.locked_until = "2020-01-01T00:00:00.000Z"' >"$BATS_TEST_TMPDIR/r"
	dq-analyze <"$BATS_TEST_TMPDIR/r" >/dev/null 2>>"$L/lock.log" || true
	# (the first message stays locked; a second one is leased for 0.3 s)
	dq-put --sku WK-KN-200 --facility t "$S"/samples/good-002.* 2>>"$L/lock.log" | dq-enqueue 2>>"$L/lock.log" >/dev/null
	DQ_LOCK_SECONDS=0.3 dq-dequeue -w 3 >"$BATS_TEST_TMPDIR/old" 2>>"$L/lock.log"
	DQ_LOCK_SECONDS=0.3 dq-dequeue -w 3 >/dev/null 2>>"$L/lock.log"
	dq-dequeue --settle <"$BATS_TEST_TMPDIR/old" >/dev/null 2>>"$L/lock.log" || true
}
case_throttled() {
	# the http layer's retry log (the azure-openai analyzer's 429s use it)
	[ -x "$HT" ] || fail "$HT is not built: run 'make tests/unit/http-test'"
	export DQ_RETRY_BASE_MS=1
	fake_script f '{"answers":[{"status":429,"headers":{"Retry-After":"0"}},{"status":503},{"status":200}]}'
	"$HT" "$(fake_url f /chat)" >/dev/null 2>"$L/throttled.log"
}
all_cases() {
	case_clean
	case_failing
	case_lock
	case_throttled
}

@test "each query matches the lines of its case and no other line of any case" {
	all_cases
	# each case logged something, all of it JSON
	for c in clean failing lock throttled; do
		[ -s "$L/$c.log" ] || fail "case $c logged nothing"
		jq -e . "$L/$c.log" >/dev/null || fail "case $c: a line that is not JSON"
	done
	local all=("$L"/*.log)
	assert_equal "$(summary failures "${all[@]}")" "dq-analyze analyze_failed;"
	assert_equal "$(summary poison "${all[@]}")" "dq-dequeue poison;"
	assert_equal "$(summary throttling "${all[@]}")" "http-test http_retry;"
	assert_equal "$(summary lock-losses "${all[@]}")" "dq-analyze lock_lost;dq-dequeue settle_failed;"
	# and from the right case: the failing image, its message, the 429
	local id
	id=$(jq -r .message.image_id "$BATS_TEST_TMPDIR/failing")
	assert_equal "$(hits failures "$L/failing.log" | jq -r '[.image_id, .code] | join(" ")')" "$id no_reference"
	assert_equal "$(hits poison "$L/failing.log" | jq -r '[.image_id, .reason] | join(" ")')" "$id no_reference"
	assert_equal "$(hits throttling "$L/throttled.log" | jq -r .http_status)" 429
	# the 503 retried beside it is not throttling
	assert_equal "$(jq -r 'select(.event == "http_retry") | .http_status' "$L/throttled.log" | tr '\n' ' ')" "429 503 "
	# a lost lock is not an image's failure, though it fails the analysis
	assert_equal "$(jq -r 'select(.event == "analyze_failed") | .code' "$L/lock.log")" lock_lost
	assert_equal "$(hits failures "$L/lock.log" "$L/clean.log" "$L/throttled.log")" ""
}

@test "each query's KQL where clause is its filter's translation" {
	local name n=0
	while IFS=$'\t' read -r name _ query; do
		n=$((n + 1))
		assert_regex "$query" "\\| where $(sh "$ALERTS" where "$name" | sed 's/[][().|*+?{}^$]/\\&/g') \\|"
		assert_regex "$query" '^ContainerAppConsoleLogs \| extend e = parse_json\(Log\) \|'
	done < <(sh "$ALERTS" blocks)
	assert_equal "$n" 4
}

@test "a filter and its KQL disagreeing fails the check above" {
	sed 's/"poison"\]}/"poison", "dead_lettered"]}/' "$DQ_TOP/deploy/alerts.kql" >"$BATS_TEST_TMPDIR/a.kql"
	local q
	q=$(DQ_ALERTS_KQL=$BATS_TEST_TMPDIR/a.kql sh "$ALERTS" blocks | awk -F '\t' '$1 == "poison" { print $3 }')
	refute_regex "$q" "\\| where $(DQ_ALERTS_KQL=$BATS_TEST_TMPDIR/a.kql sh "$ALERTS" where poison | sed 's/[][().|*+?{}^$]/\\&/g') \\|"
}

@test "the workbook holds the same queries, and azure.sh makes one alert of each" {
	assert_equal "$(sh "$ALERTS" workbook | jq -S .)" "$(jq -S . "$DQ_TOP/deploy/workbook.json")"
	assert_equal "$(jq -r '.items[] | select(.type == 3) | .content.query' "$DQ_TOP/deploy/workbook.json")" \
		"$(sh "$ALERTS" blocks | cut -f3)"
	export AZ_FAKE_STATE="$BATS_TEST_TMPDIR/state.json" AZ_FAKE_LOG="$BATS_TEST_TMPDIR/az.log"
	mkdir -p "$BATS_TEST_TMPDIR/bin"
	ln -s "$DQ_TOP/tests/fakes/az" "$BATS_TEST_TMPDIR/bin/az"
	echo '{"acr|crdqprod": {"name": "crdqprod", "id": "/acr/crdqprod"}}' >"$AZ_FAKE_STATE"
	PATH="$BATS_TEST_TMPDIR/bin:$PATH" run --separate-stderr "$DQ_TOP/deploy/azure.sh" "$DQ_TOP/deploy/params.env.example"
	assert_success
	assert_equal "$(jq -r 'select(.[0:3] == ["monitor","scheduled-query","create"]) | .[index("--condition-query") + 1]' "$AZ_FAKE_LOG")" \
		"$(sh "$ALERTS" blocks | cut -f3 | sed 's/^/q=/')"
	assert_equal "$(jq -r 'select(.[0:4] == ["monitor","metrics","alert","create"]) | .[index("--condition") + 1]' "$AZ_FAKE_LOG")" \
		"$(printf '%s\n' 'max DeadletteredMessages > 0 where EntityName includes defect-jobs' 'avg ActiveMessages > 500 where EntityName includes defect-jobs')"
}
