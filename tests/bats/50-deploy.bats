#!/usr/bin/env bats
# deploy/azure.sh against the stub az (tests/fakes/az): every call recorded,
# answered from a state file, its arguments checked.  A second run changes
# nothing; no call carries a key, SAS or connection string; every role is
# assigned; an existing queue without duplicate detection is reported.

load helpers

AZURE_SH="$DQ_TOP/deploy/azure.sh"
PARAMS="$DQ_TOP/deploy/params.env.example"

setup() {
	export AZ_FAKE_STATE="$BATS_TEST_TMPDIR/state.json" AZ_FAKE_LOG="$BATS_TEST_TMPDIR/az.log"
	mkdir -p "$BATS_TEST_TMPDIR/bin"
	ln -s "$DQ_TOP/tests/fakes/az" "$BATS_TEST_TMPDIR/bin/az"
	PATH="$BATS_TEST_TMPDIR/bin:$PATH"
	# the registry exists already (made with the images, not here)
	echo '{"acr|crdqprod": {"name": "crdqprod", "id": "/subscriptions/s/resourceGroups/rg-img/providers/Microsoft.ContainerRegistry/registries/crdqprod"}}' \
		>"$AZ_FAKE_STATE"
}

# changes: the calls that create or change something, one a line
changes() {
	jq -r '.[0:(map(startswith("-")) | index(true))] | join(" ")' "$AZ_FAKE_LOG" |
		grep -E ' (create|update|set|add)$' || true
}

# principal NAME: the principal id of the identity NAME in the state
principal() {
	jq -r --arg k "identity|rg-dq-prod|$1" '.[$k].principalId' "$AZ_FAKE_STATE"
}

@test "a first run makes every resource; a second changes nothing" {
	run --separate-stderr "$AZURE_SH" "$PARAMS"
	assert_success
	[ "$(changes | wc -l)" -ge 30 ]
	run changes
	assert_line "group create"
	assert_line "servicebus queue create"
	assert_line "containerapp job create"
	assert_line "monitor app-insights workbook create"
	: >"$AZ_FAKE_LOG"
	cp "$AZ_FAKE_STATE" "$BATS_TEST_TMPDIR/before"
	run --separate-stderr "$AZURE_SH" "$PARAMS"
	assert_success
	[ -s "$AZ_FAKE_LOG" ]
	assert_equal "$(changes)" ""
	cmp "$BATS_TEST_TMPDIR/before" "$AZ_FAKE_STATE"
}

@test "no call carries a key, SAS or connection string; the API key goes to Key Vault by file" {
	run --separate-stderr "$AZURE_SH" "$PARAMS"
	assert_success
	run grep -icE 'connection.?string|accountkey|sharedaccess|account-key|sas-token|workspace-key|primary-key|password|sig=' "$AZ_FAKE_LOG"
	assert_output 0
	# the one secret made: from a file, gone after the run, its value in no call
	assert_equal "$(jq -c 'select(.[0:3] == ["keyvault","secret","set"]) | .[index("--file") + 1] | test("^/")' "$AZ_FAKE_LOG")" true
	refute_regex "$(cat "$AZ_FAKE_LOG")" 'camera:[0-9a-f]{16}'
	# API_KEY is a secret reference to Key Vault through the API's identity
	local app
	app=$(jq -c 'select(.[0:2] == ["containerapp","create"])' "$AZ_FAKE_LOG")
	assert_regex "$app" '"api-key=keyvaultref:https://kv-dq-prod.vault.azure.net/secrets/dq-api-key,identityref:[^"]*/id-dq-api"'
	assert_regex "$app" '"API_KEY=secretref:api-key"'
	assert_regex "$app" '"CORS_ORIGINS=https://qa.example.com"'
	# local auth off where a key could be used
	assert_regex "$(cat "$AZ_FAKE_LOG")" '"--allow-shared-key-access", "false"'
	assert_regex "$(cat "$AZ_FAKE_LOG")" '"--disable-local-auth", "true"'
}

@test "the stub refuses a connection string, an unknown flag and a missing required one" {
	run az storage account show --name x --connection-string 'DefaultEndpointsProtocol=https;AccountKey=abc'
	assert_failure 2
	assert_output --partial 'carries a secret'
	run az group create --name g --location l --colour red
	assert_failure 2
	assert_output --partial 'unrecognized arguments: --colour'
	run az servicebus queue create --resource-group g --name q
	assert_failure 2
	assert_output --partial 'required: --namespace-name'
	run az group show --name nowhere
	assert_failure 3
}

@test "every role assignment the issue lists, on its scope, and no other" {
	run --separate-stderr "$AZURE_SH" "$PARAMS"
	assert_success
	local api worker scaler sub=/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/rg-dq-prod/providers
	api=$(principal id-dq-api) worker=$(principal id-dq-worker) scaler=$(principal id-dq-scaler)
	local q=$sub/Microsoft.ServiceBus/namespaces/sb-dq-prod/queues/defect-jobs
	local st=$sub/Microsoft.Storage/storageAccounts/stdqprod
	local acr=/subscriptions/s/resourceGroups/rg-img/providers/Microsoft.ContainerRegistry/registries/crdqprod
	run jq -r 'to_entries[] | select(.key | startswith("role|")) | .value | [.principalId, .roleDefinitionName, .scope] | join(" ")' \
		"$AZ_FAKE_STATE"
	assert_equal "$(sort <<<"$output")" "$(sort <<-EOF
	$api Storage Blob Data Contributor $st
	$worker Storage Blob Data Contributor $st
	$api Azure Service Bus Data Sender $q
	$worker Azure Service Bus Data Receiver $q
	$scaler Azure Service Bus Data Owner $q
	$worker Cognitive Services OpenAI User /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/aoai-dq
	$api Key Vault Secrets User $sub/Microsoft.KeyVault/vaults/kv-dq-prod
	$api AcrPull $acr
	$worker AcrPull $acr
	EOF
	)"
}

@test "the queue: duplicate detection 10 min, MaxDeliveryCount = WORKER_MAX_DELIVERY_ATTEMPTS, 5-min lock, dead-lettering on expiry" {
	run --separate-stderr "$AZURE_SH" "$PARAMS"
	assert_success
	assert_equal "$(jq -c '.["servicebus queue|rg-dq-prod|sb-dq-prod|defect-jobs"] | [.requiresDuplicateDetection, .duplicateDetectionHistoryTimeWindow, .maxDeliveryCount, .lockDuration, .deadLetteringOnMessageExpiration]' "$AZ_FAKE_STATE")" \
		'[true,"PT10M",5,"PT5M",true]'
}

@test "the worker job: event-triggered by the Service Bus rule with the scaler's identity, replica timeout above the run's" {
	run --separate-stderr "$AZURE_SH" "$PARAMS"
	assert_success
	local job
	job=$(jq -c 'select(.[0:3] == ["containerapp","job","create"])' "$AZ_FAKE_LOG")
	assert_regex "$job" '"--trigger-type","Event"'
	assert_regex "$job" '"--scale-rule-type","azure-servicebus"'
	assert_regex "$job" '"--scale-rule-identity","[^"]*/id-dq-scaler"'
	assert_regex "$job" '"queueName=defect-jobs","namespace=sb-dq-prod","messageCount=10"'
	assert_regex "$job" '"--replica-timeout","1900"'
	assert_regex "$job" '"DQ_WORKER_MAX_RUNTIME=1500"'
	refute_regex "$job" 'scale-rule-auth|secretref'
}

@test "a replica timeout not above --max-runtime and the grace is refused before any call (78)" {
	sed 's/^DQ_REPLICA_TIMEOUT=.*/DQ_REPLICA_TIMEOUT=1830/' "$PARAMS" >"$BATS_TEST_TMPDIR/p.env"
	run --separate-stderr "$AZURE_SH" "$BATS_TEST_TMPDIR/p.env"
	assert_failure 78
	assert_regex "$stderr" 'DQ_REPLICA_TIMEOUT \(1830\) must be above'
	[ ! -s "$AZ_FAKE_LOG" ]
}

@test "an existing queue without duplicate detection is reported, not accepted; the rest is still made" {
	jq '. + {"servicebus namespace|rg-dq-prod|sb-dq-prod": {"name": "sb-dq-prod", "id": "/ns/sb-dq-prod"},
		"servicebus queue|rg-dq-prod|sb-dq-prod|defect-jobs": {"name": "defect-jobs", "id": "/ns/sb-dq-prod/queues/defect-jobs",
		"requiresDuplicateDetection": false, "duplicateDetectionHistoryTimeWindow": "PT10M", "maxDeliveryCount": 5,
		"lockDuration": "PT5M", "deadLetteringOnMessageExpiration": true, "defaultMessageTimeToLive": "P14D"}}' \
		"$AZ_FAKE_STATE" >"$BATS_TEST_TMPDIR/s" && mv "$BATS_TEST_TMPDIR/s" "$AZ_FAKE_STATE"
	run --separate-stderr "$AZURE_SH" "$PARAMS"
	assert_failure 1
	assert_regex "$stderr" 'PROBLEM: queue defect-jobs exists without duplicate detection, which can only be set when a queue is created'
	assert_regex "$stderr" '1 problem\(s\) left as they are'
	refute_regex "$(changes)" 'servicebus queue'
	assert_regex "$(changes)" 'containerapp job create'
	# and again: still reported
	run --separate-stderr "$AZURE_SH" "$PARAMS"
	assert_failure 1
}

@test "an existing queue with other settings is updated once, then left alone" {
	jq '. + {"servicebus namespace|rg-dq-prod|sb-dq-prod": {"name": "sb-dq-prod", "id": "/ns/sb-dq-prod"},
		"servicebus queue|rg-dq-prod|sb-dq-prod|defect-jobs": {"name": "defect-jobs", "id": "/ns/sb-dq-prod/queues/defect-jobs",
		"requiresDuplicateDetection": true, "duplicateDetectionHistoryTimeWindow": "PT10M", "maxDeliveryCount": 10,
		"lockDuration": "PT1M", "deadLetteringOnMessageExpiration": false, "defaultMessageTimeToLive": "P14D"}}' \
		"$AZ_FAKE_STATE" >"$BATS_TEST_TMPDIR/s" && mv "$BATS_TEST_TMPDIR/s" "$AZ_FAKE_STATE"
	run --separate-stderr "$AZURE_SH" "$PARAMS"
	assert_success
	assert_equal "$(changes | grep -c 'servicebus queue')" 1
	assert_equal "$(jq -c '.["servicebus queue|rg-dq-prod|sb-dq-prod|defect-jobs"] | [.maxDeliveryCount, .lockDuration, .deadLetteringOnMessageExpiration]' "$AZ_FAKE_STATE")" \
		'[5,"PT5M",true]'
	: >"$AZ_FAKE_LOG"
	run --separate-stderr "$AZURE_SH" "$PARAMS"
	assert_success
	assert_equal "$(changes)" ""
}

@test "a new image is one update of the app and of the job" {
	run --separate-stderr "$AZURE_SH" "$PARAMS"
	assert_success
	sed 's/:1\.0\.0$/:1.0.1/' "$PARAMS" >"$BATS_TEST_TMPDIR/p.env"
	: >"$AZ_FAKE_LOG"
	run --separate-stderr "$AZURE_SH" "$BATS_TEST_TMPDIR/p.env"
	assert_success
	assert_equal "$(changes | sort | tr '\n' ',')" "containerapp job update,containerapp update,"
}
