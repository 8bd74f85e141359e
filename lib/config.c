/*
 * config.c - configuration from the environment, read once and validated.
 *
 * The table below is the list of DESIGN §6: name, default, kind.  Secrets
 * are never printed; --print-config shows them as "<set>".
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dq.h"

struct dq_config dq_cfg;

enum kind { STR, SECRET, INT, SIZE, SECS, FLAG, LEVEL, FORMAT };

struct var {
	const char *name;
	const char *def;
	enum kind kind;
	void *dst;
	double min, max;
};

#define S(f) &dq_cfg.f
static const struct var vars[] = {
	{ "AZURE_AI_PROJECT_ENDPOINT", NULL, STR, S(ai_endpoint), 0, 0 },
	{ "AZURE_OPENAI_API_VERSION", "2025-04-01-preview", STR, S(openai_api_version), 0, 0 },
	{ "AZURE_AI_API_KEY", NULL, SECRET, S(ai_api_key), 0, 0 },
	{ "AZURE_OPENAI_TOKEN_SCOPE", "https://cognitiveservices.azure.com/.default", STR, S(openai_scope), 0, 0 },
	{ "AZURE_VISION_DEPLOYMENT", "gpt-5-2", STR, S(vision_deployment), 0, 0 },
	{ "AZURE_REASONING_DEPLOYMENT", "gpt-5-2", STR, S(reasoning_deployment), 0, 0 },
	{ "AZURE_REPORTS_DEPLOYMENT", "gpt-5-2-chat", STR, S(reports_deployment), 0, 0 },
	{ "AZURE_STORAGE_ACCOUNT", NULL, STR, S(storage_account), 0, 0 },
	{ "AZURE_STORAGE_CONNECTION_STRING", NULL, SECRET, S(storage_connection_string), 0, 0 },
	{ "AZURE_STORAGE_RAW_CONTAINER", "raw-images", STR, S(raw_container), 0, 0 },
	{ "AZURE_STORAGE_PROCESSED_CONTAINER", "processed-images", STR, S(processed_container), 0, 0 },
	{ "AZURE_SERVICEBUS_NAMESPACE", NULL, STR, S(servicebus_namespace), 0, 0 },
	{ "AZURE_SERVICEBUS_CONNECTION_STRING", NULL, SECRET, S(servicebus_connection_string), 0, 0 },
	{ "AZURE_SERVICEBUS_QUEUE", "defect-jobs", STR, S(queue), 0, 0 },
	{ "WORKER_MAX_MESSAGES", "10", INT, S(max_messages), 1, 1000 },
	{ "WORKER_MAX_DELIVERY_ATTEMPTS", "5", INT, S(max_delivery_attempts), 1, 1000 },
	{ "DQ_WORKER_WAIT_SECONDS", "5", SECS, S(worker_wait_seconds), 0, 3600 },
	{ "DQ_WORKER_GRACE_SECONDS", "25", SECS, S(worker_grace_seconds), 0, 3600 },
	{ "API_KEY", NULL, SECRET, S(api_key), 0, 0 },
	{ "CORS_ORIGINS", NULL, STR, S(cors_origins), 0, 0 },
	{ "RATE_LIMIT_PER_IP", "0", INT, S(rate_limit_per_ip), 0, 1e9 },
	{ "RATE_LIMIT_PER_KEY", "0", INT, S(rate_limit_per_key), 0, 1e9 },
	{ "LOG_LEVEL", "INFO", LEVEL, S(log_level), 0, 0 },
	{ "IDENTITY_ENDPOINT", NULL, STR, S(identity_endpoint), 0, 0 },
	{ "IDENTITY_HEADER", NULL, SECRET, S(identity_header), 0, 0 },
	{ "AZURE_CLIENT_ID", NULL, STR, S(client_id), 0, 0 },
	{ "AZURE_FEDERATED_TOKEN_FILE", NULL, STR, S(federated_token_file), 0, 0 },
	{ "AZURE_TENANT_ID", NULL, STR, S(tenant_id), 0, 0 },
	{ "AZURE_AUTHORITY_HOST", NULL, STR, S(authority_host), 0, 0 },
	{ "DQ_LOCAL_DIR", NULL, STR, S(local_dir), 0, 0 },
	{ "DQ_ANALYZER", NULL, STR, S(analyzer), 0, 0 },
	{ "DQ_REFERENCE_DIR", NULL, STR, S(reference_dir), 0, 0 },
	{ "DQ_CACHE_DIR", NULL, STR, S(cache_dir), 0, 0 },
	{ "DQ_MAX_IMAGE_BYTES", "20971520", SIZE, S(max_image_bytes), 1, 1e12 },
	{ "DQ_MAX_IMAGE_PIXELS", "50000000", SIZE, S(max_image_pixels), 1, 1e12 },
	{ "DQ_BLOB_ENDPOINT", NULL, STR, S(blob_endpoint), 0, 0 },
	{ "DQ_SERVICEBUS_ENDPOINT", NULL, STR, S(servicebus_endpoint), 0, 0 },
	{ "DQ_CA_FILE", NULL, STR, S(ca_file), 0, 0 },
	{ "DQ_STATE_DIR", NULL, STR, S(state_dir), 0, 0 },
	{ "DQ_ENV_FILE", "/etc/dq/env", STR, S(env_file), 0, 0 },
	{ "DQ_INSECURE_NO_AUTH", "0", FLAG, S(insecure_no_auth), 0, 0 },
	{ "DQ_TRUSTED_PROXY", NULL, STR, S(trusted_proxy), 0, 0 },
	{ "DQ_LOG_FORMAT", "auto", FORMAT, S(log_format), 0, 0 },
	{ "DQ_LOCK_SECONDS", "300", SECS, S(lock_seconds), 0.1, 86400 },
	{ "DQ_DUPLICATE_WINDOW_SECONDS", "600", SECS, S(dup_window_seconds), 0, 7 * 86400 },
	{ "DQ_RETRY_BASE_MS", "500", SECS, S(retry_base_ms), 0, 600000 },
	{ "DQ_RETRY_CAP_MS", "30000", SECS, S(retry_cap_ms), 0, 3600000 },
	{ "DQ_RETRY_BUDGET_MS", "120000", SECS, S(retry_budget_ms), 0, 86400000 },
	{ "DQ_POLL_MS", "100", SECS, S(poll_ms), 1, 60000 },
	{ "DQ_INGEST_DRAIN_MS", "5000", SECS, S(ingest_drain_ms), 0, 600000 },
	{ "DQ_TEST_ANALYZE_DELAY_MS", "0", SECS, S(analyze_delay_ms), 0, 3600000 },
	{ "DQ_TEST_SEND_FSYNC_FAIL", "0", FLAG, S(test_send_fsync_fail), 0, 0 },
};
#undef S

static const char *
value_of(const struct var *v)
{
	const char *s = getenv(v->name);

	return s && *s ? s : v->def;
}

int
dq_config_load(struct dq_err *err)
{
	for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
		const struct var *v = &vars[i];
		const char *s = value_of(v);
		char *end;
		double d;

		switch (v->kind) {
		case STR:
		case SECRET:
			*(const char **)v->dst = s;
			break;
		case LEVEL:
			if (strcasecmp(s, "DEBUG") && strcasecmp(s, "INFO") &&
			    strcasecmp(s, "WARNING") && strcasecmp(s, "WARN") &&
			    strcasecmp(s, "ERROR"))
				goto bad;
			*(const char **)v->dst = s;
			break;
		case FORMAT:
			if (strcmp(s, "auto") && strcmp(s, "json") && strcmp(s, "text"))
				goto bad;
			*(const char **)v->dst = s;
			break;
		case FLAG:
			if (strcmp(s, "0") && strcmp(s, "1"))
				goto bad;
			*(int *)v->dst = *s == '1';
			break;
		case INT:
		case SIZE:
		case SECS:
			errno = 0;
			d = strtod(s, &end);
			if (errno || end == s || *end || d < v->min || d > v->max)
				goto bad;
			if (v->kind == INT) {
				if (d != (long)d)
					goto bad;
				*(long *)v->dst = (long)d;
			} else if (v->kind == SIZE) {
				if (d != (long long)d)
					goto bad;
				*(long long *)v->dst = (long long)d;
			} else
				*(double *)v->dst = d;
			break;
		}
		continue;
bad:
		if (v->min != v->max)
			dq_err_system(err, DQ_EX_CONFIG, "bad_config",
			    "%s=%s: expected a number from %g to %g", v->name,
			    v->kind == SECRET ? "<secret>" : s, v->min, v->max);
		else
			dq_err_system(err, DQ_EX_CONFIG, "bad_config",
			    "%s=%s: not a valid value", v->name, s);
		return -1;
	}
	if (dq_cfg.analyzer && strcmp(dq_cfg.analyzer, "reference") &&
	    strcmp(dq_cfg.analyzer, "azure-openai")) {
		dq_err_system(err, DQ_EX_CONFIG, "bad_config",
		    "DQ_ANALYZER=%s: expected reference or azure-openai", dq_cfg.analyzer);
		return -1;
	}
	if (!dq_safe_token(dq_cfg.raw_container) || !dq_safe_token(dq_cfg.processed_container) ||
	    !dq_safe_token(dq_cfg.queue)) {
		dq_err_system(err, DQ_EX_CONFIG, "bad_config",
		    "container and queue names may hold only letters, digits, '.', '_' and '-'");
		return -1;
	}
	return 0;
}

void
dq_config_print(FILE *fp)
{
	json_t *o = json_object();

	for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
		const struct var *v = &vars[i];
		const char *s = value_of(v);

		if (!s)
			json_object_set_new(o, v->name, json_null());
		else if (v->kind == SECRET)
			json_object_set_new(o, v->name, json_string("<set>"));
		else
			json_object_set_new(o, v->name, json_string(s));
	}
	dq_write_record(fp, o);
	json_decref(o);
}
