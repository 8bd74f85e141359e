#!/bin/sh
# alerts.sh blocks|jq NAME|where NAME|workbook - read deploy/alerts.kql:
#	blocks		NAME<TAB>SEVERITY<TAB>QUERY (one line) for each block
#	jq NAME		the block's @filter as a jq predicate on one log line
#	where NAME	the filter's translation into the KQL where clause
#	workbook	an Azure Monitor workbook (JSON) with a table per query
# azure.sh and tests/bats/51-alerts.bats use it, so that the alert, the
# test and the workbook read one text.
set -eu
kql=${DQ_ALERTS_KQL:-$(dirname "$0")/alerts.kql}
blocks() {
	awk '
		/^\/\/ @alert / { if (name != "") print name "\t" sev "\t" body; name = $3; sev = $4; body = ""; next }
		/^\/\// || /^[ \t]*$/ { next }
		name != "" { sub(/^[ \t]+/, ""); body = body (body == "" ? "" : " ") $0 }
		END { if (name != "") print name "\t" sev "\t" body }
	' "$kql"
}
filter() {
	awk -v want="$1" '
		/^\/\/ @alert / { name = $3; next }
		/^\/\/ @filter / && name == want { sub(/^\/\/ @filter /, ""); print; found = 1 }
		END { if (!found) { print "alerts.sh: no @filter for " want > "/dev/stderr"; exit 65 } }
	' "$kql"
}
case "${1:-}" in
blocks) blocks ;;
jq)
	f=$(filter "$2")
	# shellcheck disable=SC2016 # jq's variables
	printf '. as $l | (%s) | all(to_entries[]; .key as $k | if $k | startswith("!") then (.value | any(. == $l[$k[1:]]) | not) else (.value | any(. == $l[$k])) end)\n' "$f"
	;;
where)
	filter "$2" | jq -r 'to_entries | map(
		(if .key | startswith("!") then {k: .key[1:], op: "!in"} else {k: .key, op: "in"} end) as $f |
		(if (.value[0] | type) == "number" then "toint(e.\($f.k)) \($f.op) (\(.value | map(tostring) | join(", ")))"
		 else "tostring(e.\($f.k)) \($f.op) (\(.value | map("\"\(.)\"") | join(", ")))" end)) | join(" and ")'
	;;
workbook)
	blocks | jq -R -s '
		split("\n") | map(select(. != "") | split("\t")) |
		{version: "Notebook/1.0",
		 items: ([{type: 1, name: "title", content: {json: "## dq\nThe log queries of deploy/alerts.kql over the last 24 hours; the queue metrics beside them."}}]
		   + map({type: 3, name: .[0],
			  content: {version: "KqlItem/1.0", query: .[2], size: 0, timeContext: {durationMs: 86400000},
				    title: .[0], queryType: 0, resourceType: "microsoft.operationalinsights/workspaces",
				    visualization: "table"}})),
		 fallbackResourceIds: [], "$schema": "https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json"}'
	;;
*) echo "usage: alerts.sh blocks|jq NAME|where NAME|workbook" >&2; exit 64 ;;
esac
