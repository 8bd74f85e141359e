#!/bin/bash
# azure.sh [PARAMS] - provision dq on Azure, idempotently, with managed
# identities only: no key, SAS or connection string is read, made or passed.
#
#	deploy/azure.sh deploy/params.env	(default: deploy/params.env)
#
# Each resource is looked up first (az ... show) and created only when it
# is missing, or updated only where a setting that can change differs: a
# second run makes no create or update call.  What it cannot make right is
# reported and fails the run (exit 1) after the rest is done: a queue that
# exists without duplicate detection (settable only at creation).  The
# parameters: deploy/params.env.example.  The order: resource group, Log
# Analytics, Application Insights, Container Apps environment (its logs to
# the workspace by a diagnostic setting, not by the workspace's key),
# storage account (shared keys off) and its two containers, Service Bus
# namespace (local auth off) and queue, Key Vault and the API key secret,
# three identities (api, worker, the scaler's), their roles, the API app,
# the worker job, then the alerts of deploy/alerts.kql and the workbook.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
params=${1:-$here/params.env}
[ -r "$params" ] || { echo "azure.sh: cannot read $params (copy deploy/params.env.example)" >&2; exit 66; }
set -a
# shellcheck source=/dev/null
. "$params"
set +a

problems=()
say() { printf 'azure.sh: %s\n' "$*" >&2; }
problem() { say "PROBLEM: $*"; problems+=("$*"); }
need() {
	local v
	for v in "$@"; do
		[ -n "${!v:-}" ] || { say "$params: $v is not set"; exit 78; }
	done
}
need DQ_LOCATION DQ_RESOURCE_GROUP DQ_LOG_WORKSPACE DQ_APP_INSIGHTS DQ_ENVIRONMENT DQ_KEY_VAULT \
	DQ_API_KEY_SECRET AZURE_STORAGE_ACCOUNT AZURE_STORAGE_RAW_CONTAINER AZURE_STORAGE_PROCESSED_CONTAINER \
	AZURE_SERVICEBUS_NAMESPACE AZURE_SERVICEBUS_QUEUE WORKER_MAX_DELIVERY_ATTEMPTS DQ_LOCK_DURATION \
	DQ_DUPLICATE_WINDOW DQ_MESSAGE_TTL DQ_OPENAI_RESOURCE_ID AZURE_AI_PROJECT_ENDPOINT \
	AZURE_VISION_DEPLOYMENT DQ_OPENAI_MAX_COMPLETION_TOKENS DQ_ACR_NAME DQ_API_IMAGE DQ_WORKER_IMAGE CORS_ORIGINS \
	DQ_API_MIN_REPLICAS DQ_API_MAX_REPLICAS WORKER_MAX_MESSAGES DQ_MAX_EXECUTIONS \
	DQ_POLLING_INTERVAL DQ_WORKER_MAX_RUNTIME DQ_REPLICA_TIMEOUT DQ_WORKER_GRACE_SECONDS \
	DQ_ALERT_EMAIL DQ_BACKLOG_THRESHOLD
# The job's replica is killed at the replica timeout: the worker must have
# stopped by itself before, its grace included.
if [ "$DQ_REPLICA_TIMEOUT" -le $((DQ_WORKER_MAX_RUNTIME + DQ_WORKER_GRACE_SECONDS)) ]; then
	say "DQ_REPLICA_TIMEOUT ($DQ_REPLICA_TIMEOUT) must be above DQ_WORKER_MAX_RUNTIME + DQ_WORKER_GRACE_SECONDS ($((DQ_WORKER_MAX_RUNTIME + DQ_WORKER_GRACE_SECONDS)))"
	exit 78
fi

rg=$DQ_RESOURCE_GROUP
# az ARGS: the call, said first (no argument of any call is a secret)
az() {
	say "az $*"
	command az "$@"
}
# q ARGS: a query's answer, quietly (empty when it fails: not there)
q() { command az "$@" -o tsv 2>/dev/null || true; }

# --- extensions: the containerapp one for --scale-rule-identity (preview)
for ext in containerapp application-insights; do
	[ -n "$(q extension show --name "$ext" --query name)" ] ||
		az extension add --name "$ext" --upgrade --allow-preview true -o none
done

# --- resource group, Log Analytics, Application Insights
[ -n "$(q group show --name "$rg" --query id)" ] ||
	az group create --name "$rg" --location "$DQ_LOCATION" -o none
ws_id=$(q monitor log-analytics workspace show --resource-group "$rg" --workspace-name "$DQ_LOG_WORKSPACE" --query id)
if [ -z "$ws_id" ]; then
	az monitor log-analytics workspace create --resource-group "$rg" --workspace-name "$DQ_LOG_WORKSPACE" \
		--location "$DQ_LOCATION" --retention-time 30 -o none
	ws_id=$(q monitor log-analytics workspace show --resource-group "$rg" --workspace-name "$DQ_LOG_WORKSPACE" --query id)
fi
[ -n "$(q monitor app-insights component show --resource-group "$rg" --app "$DQ_APP_INSIGHTS" --query id)" ] ||
	az monitor app-insights component create --resource-group "$rg" --app "$DQ_APP_INSIGHTS" \
		--location "$DQ_LOCATION" --workspace "$ws_id" --kind web --application-type web -o none

# --- Container Apps environment; its console logs reach the workspace
# through a diagnostic setting (the log-analytics destination would need
# the workspace's shared key on the command line)
env_id=$(q containerapp env show --resource-group "$rg" --name "$DQ_ENVIRONMENT" --query id)
if [ -z "$env_id" ]; then
	az containerapp env create --resource-group "$rg" --name "$DQ_ENVIRONMENT" --location "$DQ_LOCATION" \
		--logs-destination azure-monitor -o none
	env_id=$(q containerapp env show --resource-group "$rg" --name "$DQ_ENVIRONMENT" --query id)
fi
[ -n "$(q monitor diagnostic-settings show --name dq-logs --resource "$env_id" --query id)" ] ||
	az monitor diagnostic-settings create --name dq-logs --resource "$env_id" --workspace "$ws_id" \
		--logs '[{"category":"ContainerAppConsoleLogs","enabled":true},{"category":"ContainerAppSystemLogs","enabled":true}]' \
		-o none

# --- storage: shared keys off, so that only Entra ID reaches it
st_id=$(q storage account show --resource-group "$rg" --name "$AZURE_STORAGE_ACCOUNT" --query id)
if [ -z "$st_id" ]; then
	az storage account create --resource-group "$rg" --name "$AZURE_STORAGE_ACCOUNT" --location "$DQ_LOCATION" \
		--sku Standard_ZRS --kind StorageV2 --min-tls-version TLS1_2 --allow-blob-public-access false \
		--allow-shared-key-access false --https-only true -o none
	st_id=$(q storage account show --resource-group "$rg" --name "$AZURE_STORAGE_ACCOUNT" --query id)
fi
for c in "$AZURE_STORAGE_RAW_CONTAINER" "$AZURE_STORAGE_PROCESSED_CONTAINER"; do
	[ -n "$(q storage container show --account-name "$AZURE_STORAGE_ACCOUNT" --name "$c" --auth-mode login --query name)" ] ||
		az storage container create --account-name "$AZURE_STORAGE_ACCOUNT" --name "$c" --auth-mode login \
			--public-access off -o none
done

# --- Service Bus: Standard (duplicate detection), local (SAS) auth off
ns=$AZURE_SERVICEBUS_NAMESPACE
queue=$AZURE_SERVICEBUS_QUEUE
ns_id=$(q servicebus namespace show --resource-group "$rg" --name "$ns" --query id)
if [ -z "$ns_id" ]; then
	az servicebus namespace create --resource-group "$rg" --name "$ns" --location "$DQ_LOCATION" \
		--sku Standard --disable-local-auth true -o none
	ns_id=$(q servicebus namespace show --resource-group "$rg" --name "$ns" --query id)
fi
qprops=$(q servicebus queue show --resource-group "$rg" --namespace-name "$ns" --name "$queue" \
	--query '[id, requiresDuplicateDetection, duplicateDetectionHistoryTimeWindow, maxDeliveryCount, lockDuration, deadLetteringOnMessageExpiration, defaultMessageTimeToLive]')
if [ -z "$qprops" ]; then
	az servicebus queue create --resource-group "$rg" --namespace-name "$ns" --name "$queue" \
		--enable-duplicate-detection true --duplicate-detection-history-time-window "$DQ_DUPLICATE_WINDOW" \
		--max-delivery-count "$WORKER_MAX_DELIVERY_ATTEMPTS" --lock-duration "$DQ_LOCK_DURATION" \
		--enable-dead-lettering-on-message-expiration true --default-message-time-to-live "$DQ_MESSAGE_TTL" -o none
	q_id=$(q servicebus queue show --resource-group "$rg" --namespace-name "$ns" --name "$queue" --query id)
else
	read -r -d '' q_id dup window mdc lock dle ttl <<<"$qprops" || true
	if [ "${dup,,}" != true ]; then
		problem "queue $queue exists without duplicate detection, which can only be set when a queue is created: a re-sent message would be analyzed twice; drain it, delete it (az servicebus queue delete --resource-group $rg --namespace-name $ns --name $queue) and run azure.sh again"
	elif [ "$window" != "$DQ_DUPLICATE_WINDOW" ]; then
		az servicebus queue update --resource-group "$rg" --namespace-name "$ns" --name "$queue" \
			--duplicate-detection-history-time-window "$DQ_DUPLICATE_WINDOW" -o none
	fi
	if [ "$mdc" != "$WORKER_MAX_DELIVERY_ATTEMPTS" ] || [ "$lock" != "$DQ_LOCK_DURATION" ] ||
		[ "${dle,,}" != true ] || [ "$ttl" != "$DQ_MESSAGE_TTL" ]; then
		az servicebus queue update --resource-group "$rg" --namespace-name "$ns" --name "$queue" \
			--max-delivery-count "$WORKER_MAX_DELIVERY_ATTEMPTS" --lock-duration "$DQ_LOCK_DURATION" \
			--enable-dead-lettering-on-message-expiration true --default-message-time-to-live "$DQ_MESSAGE_TTL" -o none
	fi
fi

# --- Key Vault (RBAC) and the ingest API key: made here once, from
# openssl's random bytes through a file only this user reads, never argv
kv_id=$(q keyvault show --resource-group "$rg" --name "$DQ_KEY_VAULT" --query id)
if [ -z "$kv_id" ]; then
	az keyvault create --resource-group "$rg" --name "$DQ_KEY_VAULT" --location "$DQ_LOCATION" \
		--enable-rbac-authorization true -o none
	kv_id=$(q keyvault show --resource-group "$rg" --name "$DQ_KEY_VAULT" --query id)
fi
kv_uri=$(q keyvault show --resource-group "$rg" --name "$DQ_KEY_VAULT" --query properties.vaultUri)
if [ -z "$(q keyvault secret show --vault-name "$DQ_KEY_VAULT" --name "$DQ_API_KEY_SECRET" --query id)" ]; then
	keyfile=$(umask 077 && mktemp)
	trap 'rm -f "$keyfile"' EXIT
	printf 'camera:%s' "$(openssl rand -hex 32)" >"$keyfile"
	az keyvault secret set --vault-name "$DQ_KEY_VAULT" --name "$DQ_API_KEY_SECRET" --file "$keyfile" -o none
	rm -f "$keyfile"
fi
secret_uri="${kv_uri%/}/secrets/$DQ_API_KEY_SECRET"

# --- identities: the API's, the worker's, and the scaler's (Data Owner on
# the queue only; the worker stays at Data Receiver)
declare -A mi_id mi_principal mi_client
for who in api worker scaler; do
	name="id-dq-$who"
	if [ -z "$(q identity show --resource-group "$rg" --name "$name" --query id)" ]; then
		az identity create --resource-group "$rg" --name "$name" --location "$DQ_LOCATION" -o none
	fi
	read -r -d '' mi_id[$who] mi_principal[$who] mi_client[$who] <<<"$(q identity show --resource-group "$rg" \
		--name "$name" --query '[id, principalId, clientId]')" || true
done

# role WHO ROLE SCOPE: the assignment, made when it is not there
role() {
	local who=$1 role=$2 scope=$3
	[ -n "$(q role assignment list --assignee "${mi_principal[$who]}" --role "$role" --scope "$scope" --query '[].id')" ] ||
		az role assignment create --assignee-object-id "${mi_principal[$who]}" --assignee-principal-type ServicePrincipal \
			--role "$role" --scope "$scope" -o none
}
acr_id=$(q acr show --name "$DQ_ACR_NAME" --query id)
[ -n "$acr_id" ] || { say "the registry $DQ_ACR_NAME does not exist (DQ_ACR_NAME)"; exit 69; }
role api "Storage Blob Data Contributor" "$st_id"
role worker "Storage Blob Data Contributor" "$st_id"
role api "Azure Service Bus Data Sender" "$q_id"
role worker "Azure Service Bus Data Receiver" "$q_id"
role scaler "Azure Service Bus Data Owner" "$q_id"
role worker "Cognitive Services OpenAI User" "$DQ_OPENAI_RESOURCE_ID"
role api "Key Vault Secrets User" "$kv_id"
role api AcrPull "$acr_id"
role worker AcrPull "$acr_id"

registry="$DQ_ACR_NAME.azurecr.io"
common_env=(AZURE_STORAGE_ACCOUNT="$AZURE_STORAGE_ACCOUNT"
	AZURE_STORAGE_RAW_CONTAINER="$AZURE_STORAGE_RAW_CONTAINER"
	AZURE_STORAGE_PROCESSED_CONTAINER="$AZURE_STORAGE_PROCESSED_CONTAINER"
	AZURE_SERVICEBUS_NAMESPACE="$ns" AZURE_SERVICEBUS_QUEUE="$queue"
	WORKER_MAX_DELIVERY_ATTEMPTS="$WORKER_MAX_DELIVERY_ATTEMPTS" DQ_LOG_FORMAT=json LOG_LEVEL=INFO)

# --- the API: ingress on 8080, API_KEY from the Key Vault secret through
# the API's identity, CORS by dq-ingest itself (CORS_ORIGINS)
api_image=$(q containerapp show --resource-group "$rg" --name dq-api --query 'properties.template.containers[0].image')
if [ -z "$api_image" ]; then
	az containerapp create --resource-group "$rg" --name dq-api --environment "$DQ_ENVIRONMENT" \
		--image "$DQ_API_IMAGE" --user-assigned "${mi_id[api]}" \
		--registry-server "$registry" --registry-identity "${mi_id[api]}" \
		--ingress external --target-port 8080 --transport http \
		--min-replicas "$DQ_API_MIN_REPLICAS" --max-replicas "$DQ_API_MAX_REPLICAS" \
		--secrets "api-key=keyvaultref:$secret_uri,identityref:${mi_id[api]}" \
		--env-vars API_KEY=secretref:api-key AZURE_CLIENT_ID="${mi_client[api]}" CORS_ORIGINS="$CORS_ORIGINS" \
		"${common_env[@]}" -o none
elif [ "$api_image" != "$DQ_API_IMAGE" ]; then
	az containerapp update --resource-group "$rg" --name dq-api --image "$DQ_API_IMAGE" -o none
fi
api_cors=$(q containerapp show --resource-group "$rg" --name dq-api \
	--query "properties.template.containers[0].env[?name=='CORS_ORIGINS'].value | [0]")
if [ -n "$api_image" ] && [ "$api_cors" != "$CORS_ORIGINS" ]; then
	az containerapp update --resource-group "$rg" --name dq-api --set-env-vars CORS_ORIGINS="$CORS_ORIGINS" -o none
fi

# --- the worker job: event-triggered by the azure-servicebus scale rule,
# the scaler authenticated by its own identity; each execution drains
# the queue and stops by itself before the replica timeout
job=$(q containerapp job show --resource-group "$rg" --name dq-worker \
	--query '[properties.template.containers[0].image, properties.configuration.replicaTimeout]')
if [ -z "$job" ]; then
	az containerapp job create --resource-group "$rg" --name dq-worker --environment "$DQ_ENVIRONMENT" \
		--trigger-type Event --replica-timeout "$DQ_REPLICA_TIMEOUT" --replica-retry-limit 0 \
		--replica-completion-count 1 --parallelism 1 \
		--min-executions 0 --max-executions "$DQ_MAX_EXECUTIONS" --polling-interval "$DQ_POLLING_INTERVAL" \
		--image "$DQ_WORKER_IMAGE" --cpu 1.0 --memory 2Gi \
		--mi-user-assigned "${mi_id[worker]}" "${mi_id[scaler]}" \
		--registry-server "$registry" --registry-identity "${mi_id[worker]}" \
		--scale-rule-name servicebus --scale-rule-type azure-servicebus \
		--scale-rule-metadata "queueName=$queue" "namespace=$ns" "messageCount=$WORKER_MAX_MESSAGES" \
		--scale-rule-identity "${mi_id[scaler]}" \
		--env-vars AZURE_CLIENT_ID="${mi_client[worker]}" DQ_ANALYZER=azure-openai \
		AZURE_AI_PROJECT_ENDPOINT="$AZURE_AI_PROJECT_ENDPOINT" AZURE_VISION_DEPLOYMENT="$AZURE_VISION_DEPLOYMENT" \
		WORKER_MAX_MESSAGES="$WORKER_MAX_MESSAGES" DQ_WORKER_GRACE_SECONDS="$DQ_WORKER_GRACE_SECONDS" \
		DQ_WORKER_MAX_RUNTIME="$DQ_WORKER_MAX_RUNTIME" \
		DQ_OPENAI_MAX_COMPLETION_TOKENS="$DQ_OPENAI_MAX_COMPLETION_TOKENS" \
		"${common_env[@]}" -o none
else
	read -r -d '' job_image job_timeout <<<"$job" || true
	if [ "$job_image" != "$DQ_WORKER_IMAGE" ] || [ "$job_timeout" != "$DQ_REPLICA_TIMEOUT" ]; then
		az containerapp job update --resource-group "$rg" --name dq-worker --image "$DQ_WORKER_IMAGE" \
			--replica-timeout "$DQ_REPLICA_TIMEOUT" -o none
	fi
fi

# --- alerts: an action group, the log queries of alerts.kql, the metric
# alerts, and the workbook over the same queries
ag_id=$(q monitor action-group show --resource-group "$rg" --name ag-dq --query id)
if [ -z "$ag_id" ]; then
	az monitor action-group create --resource-group "$rg" --name ag-dq --short-name dq \
		--action email ops "$DQ_ALERT_EMAIL" -o none
	ag_id=$(q monitor action-group show --resource-group "$rg" --name ag-dq --query id)
fi
# alerts.kql's blocks (alerts.sh): NAME, SEVERITY, the query
while IFS=$'\t' read -r name severity query; do
	[ -n "$(q monitor scheduled-query show --resource-group "$rg" --name "dq-$name" --query id)" ] ||
		az monitor scheduled-query create --resource-group "$rg" --name "dq-$name" --scopes "$ws_id" \
			--condition "count 'q' > 0" --condition-query "q=$query" \
			--evaluation-frequency 5m --window-size 15m --severity "$severity" \
			--action-groups "$ag_id" --description "dq: $name (deploy/alerts.kql)" -o none
done < <(sh "$here/alerts.sh" blocks)
metric() {
	local name=$1 condition=$2
	[ -n "$(q monitor metrics alert show --resource-group "$rg" --name "dq-$name" --query id)" ] ||
		az monitor metrics alert create --resource-group "$rg" --name "dq-$name" --scopes "$ns_id" \
			--condition "$condition" --window-size 15m --evaluation-frequency 5m --severity 2 \
			--action "$ag_id" --description "dq: $name (deploy/alerts.kql)" -o none
}
metric dead-letter-growth "max DeadletteredMessages > 0 where EntityName includes $queue"
metric queue-backlog "avg ActiveMessages > $DQ_BACKLOG_THRESHOLD where EntityName includes $queue"
# a workbook's name is a GUID: this one is derived from the group's name
h=$(printf 'dq-workbook:%s' "$rg" | sha1sum | cut -c1-32)
wb="${h:0:8}-${h:8:4}-${h:12:4}-${h:16:4}-${h:20:12}"
[ -n "$(q monitor app-insights workbook show --resource-group "$rg" --name "$wb" --query id)" ] ||
	az monitor app-insights workbook create --resource-group "$rg" --name "$wb" --location "$DQ_LOCATION" \
		--display-name "dq" --kind shared --category workbook --source-id "$ws_id" \
		--serialized-data "@$here/workbook.json" -o none

if [ "${#problems[@]}" -gt 0 ]; then
	say "${#problems[@]} problem(s) left as they are (above)"
	exit 1
fi
say "done: $rg"
