/*
 * config.c - configuration from the environment, read once and validated.
 *
 * The table of variables is the list of DESIGN §6: name, default, kind,
 * and the concerns that read it; the table of programs says which
 * concerns each program has, so that --print-config shows each program
 * the variables it reads.  Secrets are never printed; --print-config
 * shows them as "<set>".
 *
 * Numbers are plain decimals: digits, and for seconds and milliseconds a
 * fraction ("0.5"); leading zeros mean nothing ("08" is 8).  No sign, no
 * exponent, no hex, no "nan": what strtod alone would take differs from
 * what a shell's arithmetic takes, and dq-worker relies on this rule.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "dq.h"

struct dq_config dq_cfg;

enum kind { STR, SECRET, INT, SIZE, SECS, MS, FLAG, LEVEL, FORMAT };

/* The numbers: whether a fraction is allowed, and what an error calls them. */
static const struct {
	int fraction;
	const char *what;
} numbers[] = {
	[INT] = { 0, "whole number" },
	[SIZE] = { 0, "whole number" },
	[SECS] = { 1, "decimal number" },	/* seconds */
	[MS] = { 1, "decimal number" },		/* milliseconds */
};

/* Who reads a variable. */
enum {
	AN = 1 << 0,	/* the analyzer */
	ST = 1 << 1,	/* the store */
	QU = 1 << 2,	/* the queue */
	AT = 1 << 3,	/* the delivery-attempt limit */
	WK = 1 << 4,	/* dq-worker itself */
	IN = 1 << 5,	/* the ingest endpoint */
	LI = 1 << 6,	/* image limits */
	ID = 1 << 7,	/* managed identity */
	NT = 1 << 8,	/* network backends: CA, retries */
	LG = 1 << 9,	/* logs */
	ALL = (1 << 10) - 1,
};

struct var {
	const char *name;
	const char *def;
	enum kind kind;
	void *dst;
	double min, max;
	int who;
};

/* What each program reads; a program not named here reads everything. */
static const struct prog {
	const char *name;
	int who;
} progs[] = {
	{ "dq-put", ST | LI | AT | ID | NT | LG },
	{ "dq-enqueue", QU | ID | NT | LG },
	{ "dq-dequeue", QU | AT | ID | NT | LG },
	{ "dq-analyze", AN | ST | QU | LI | ID | NT | LG },
	{ "dq-ingest", ST | QU | IN | LI | ID | NT | LG },
	{ "dq-worker", AN | ST | QU | AT | WK | LI | ID | NT | LG },
};

#define S(f) &dq_cfg.f
static const struct var vars[] = {
	{ "AZURE_AI_PROJECT_ENDPOINT", NULL, STR, S(ai_endpoint), 0, 0, AN },
	{ "AZURE_OPENAI_API_VERSION", "2025-04-01-preview", STR, S(openai_api_version), 0, 0, AN },
	{ "AZURE_AI_API_KEY", NULL, SECRET, S(ai_api_key), 0, 0, AN },
	{ "AZURE_OPENAI_TOKEN_SCOPE", "https://cognitiveservices.azure.com/.default", STR, S(openai_scope), 0, 0, AN },
	{ "AZURE_VISION_DEPLOYMENT", "gpt-5-2", STR, S(vision_deployment), 0, 0, AN },
	{ "AZURE_REASONING_DEPLOYMENT", "gpt-5-2", STR, S(reasoning_deployment), 0, 0, AN },
	{ "AZURE_REPORTS_DEPLOYMENT", "gpt-5-2-chat", STR, S(reports_deployment), 0, 0, AN },
	/* the azure-openai analyzer (lib/analyzer/openai.c) */
	{ "DQ_OPENAI_DETAIL", "high", STR, S(openai_detail), 0, 0, AN },
	{ "DQ_OPENAI_REASONING_EFFORT", NULL, STR, S(openai_effort), 0, 0, AN },
	{ "DQ_OPENAI_MAX_COMPLETION_TOKENS", "8000", INT, S(openai_max_tokens), 256, 128000, AN },
	{ "AZURE_STORAGE_ACCOUNT", NULL, STR, S(storage_account), 0, 0, ST },
	{ "AZURE_STORAGE_CONNECTION_STRING", NULL, SECRET, S(storage_connection_string), 0, 0, ST },
	{ "AZURE_STORAGE_RAW_CONTAINER", "raw-images", STR, S(raw_container), 0, 0, ST },
	{ "AZURE_STORAGE_PROCESSED_CONTAINER", "processed-images", STR, S(processed_container), 0, 0, ST },
	{ "AZURE_SERVICEBUS_NAMESPACE", NULL, STR, S(servicebus_namespace), 0, 0, QU },
	{ "AZURE_SERVICEBUS_CONNECTION_STRING", NULL, SECRET, S(servicebus_connection_string), 0, 0, QU },
	{ "AZURE_SERVICEBUS_QUEUE", "defect-jobs", STR, S(queue), 0, 0, QU },
	{ "WORKER_MAX_MESSAGES", "10", INT, S(max_messages), 1, 1000, WK },
	{ "WORKER_MAX_DELIVERY_ATTEMPTS", "5", INT, S(max_delivery_attempts), 1, 1000, AT },
	{ "DQ_WORKER_WAIT_SECONDS", "5", SECS, S(worker_wait_seconds), 0, 3600, WK },
	{ "DQ_WORKER_GRACE_SECONDS", "25", SECS, S(worker_grace_seconds), 0, 3600, WK },
	{ "API_KEY", NULL, SECRET, S(api_key), 0, 0, IN },
	{ "CORS_ORIGINS", NULL, STR, S(cors_origins), 0, 0, IN },
	{ "RATE_LIMIT_PER_IP", "0", INT, S(rate_limit_per_ip), 0, 1e9, IN },
	{ "RATE_LIMIT_PER_KEY", "0", INT, S(rate_limit_per_key), 0, 1e9, IN },
	{ "LOG_LEVEL", "INFO", LEVEL, S(log_level), 0, 0, LG },
	{ "IDENTITY_ENDPOINT", NULL, STR, S(identity_endpoint), 0, 0, ID },
	{ "IDENTITY_HEADER", NULL, SECRET, S(identity_header), 0, 0, ID },
	{ "AZURE_CLIENT_ID", NULL, STR, S(client_id), 0, 0, ID },
	{ "AZURE_FEDERATED_TOKEN_FILE", NULL, STR, S(federated_token_file), 0, 0, ID },
	{ "AZURE_TENANT_ID", NULL, STR, S(tenant_id), 0, 0, ID },
	{ "AZURE_AUTHORITY_HOST", NULL, STR, S(authority_host), 0, 0, ID },
	{ "AZURE_POD_IDENTITY_AUTHORITY_HOST", NULL, STR, S(pod_identity_host), 0, 0, ID },
	{ "DQ_LOCAL_DIR", NULL, STR, S(local_dir), 0, 0, ST | QU },
	{ "DQ_ANALYZER", NULL, STR, S(analyzer), 0, 0, AN },
	{ "DQ_REFERENCE_DIR", NULL, STR, S(reference_dir), 0, 0, AN },
	{ "DQ_CACHE_DIR", NULL, STR, S(cache_dir), 0, 0, AN },
	{ "DQ_MAX_IMAGE_BYTES", "20971520", SIZE, S(max_image_bytes), 1, 1e12, LI },
	{ "DQ_MAX_IMAGE_PIXELS", "50000000", SIZE, S(max_image_pixels), 1, 1e12, LI },
	{ "DQ_BLOB_ENDPOINT", NULL, STR, S(blob_endpoint), 0, 0, ST },
	{ "DQ_SERVICEBUS_ENDPOINT", NULL, STR, S(servicebus_endpoint), 0, 0, QU },
	{ "DQ_CA_FILE", NULL, STR, S(ca_file), 0, 0, NT },
	{ "DQ_STATE_DIR", NULL, STR, S(state_dir), 0, 0, IN | ID },
	{ "DQ_ENV_FILE", "/etc/dq/env", STR, S(env_file), 0, 0, IN },
	{ "DQ_INSECURE_NO_AUTH", "0", FLAG, S(insecure_no_auth), 0, 0, IN },
	{ "DQ_TRUSTED_PROXY", NULL, STR, S(trusted_proxy), 0, 0, IN },
	{ "DQ_LOG_FORMAT", "auto", FORMAT, S(log_format), 0, 0, LG },
	{ "DQ_LOCK_SECONDS", "300", SECS, S(lock_seconds), 0.1, 86400, QU },
	{ "DQ_DUPLICATE_WINDOW_SECONDS", "600", SECS, S(dup_window_seconds), 0, 7 * 86400, QU },
	{ "DQ_RETRY_BASE_MS", "500", MS, S(retry_base_ms), 0, 600000, NT },
	{ "DQ_RETRY_CAP_MS", "30000", MS, S(retry_cap_ms), 0, 3600000, NT },
	{ "DQ_RETRY_BUDGET_MS", "120000", MS, S(retry_budget_ms), 0, 86400000, NT },
	{ "DQ_RETRY_ATTEMPTS", "10", INT, S(retry_attempts), 1, 1000, NT },
	{ "DQ_HTTP_CONNECT_TIMEOUT_MS", "10000", MS, S(http_connect_timeout_ms), 1, 600000, NT },
	{ "DQ_HTTP_TIMEOUT_MS", "300000", MS, S(http_timeout_ms), 1, 3600000, NT },
	{ "DQ_POLL_MS", "100", MS, S(poll_ms), 1, 60000, QU },
	{ "DQ_INGEST_DRAIN_MS", "5000", MS, S(ingest_drain_ms), 0, 600000, IN },
	{ "DQ_TEST_ANALYZE_DELAY_MS", "0", MS, S(analyze_delay_ms), 0, 3600000, AN },
	{ "DQ_TEST_ANALYZE_DELAY_P99_MS", "0", MS, S(analyze_delay_p99_ms), 0, 3600000, AN },
	{ "DQ_TEST_ANALYZE_SLOW_SKU", NULL, STR, S(analyze_slow_sku), 0, 0, AN },
	{ "DQ_TEST_ANALYZE_SLOW_MS", "0", MS, S(analyze_slow_ms), 0, 3600000, AN },
	{ "DQ_TEST_ANALYZE_URL", NULL, STR, S(test_analyze_url), 0, 0, AN },
	{ "DQ_TEST_SEND_FSYNC_FAIL", "0", FLAG, S(test_send_fsync_fail), 0, 0, QU },
};
#undef S

/* The one rule for numbers (top of file): digits, a fraction if frac. */
static int
decimal(const char *s, int frac)
{
	size_t n = strspn(s, "0123456789");

	if (n == 0)
		return 0;
	if (s[n] == '.' && frac) {
		size_t f = strspn(s + n + 1, "0123456789");

		return f > 0 && s[n + 1 + f] == '\0';
	}
	return s[n] == '\0';
}

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
		case MS:
			if (!decimal(s, numbers[v->kind].fraction))
				goto bad;
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
			    "%s=%s: expected a %s from %g to %g", v->name, s,
			    numbers[v->kind].what, v->min, v->max);
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
	if (dq_cfg.analyze_delay_p99_ms > 0 && dq_cfg.analyze_delay_p99_ms < dq_cfg.analyze_delay_ms) {
		dq_err_system(err, DQ_EX_CONFIG, "bad_config",
		    "DQ_TEST_ANALYZE_DELAY_P99_MS (%g) is below the median DQ_TEST_ANALYZE_DELAY_MS (%g)",
		    dq_cfg.analyze_delay_p99_ms, dq_cfg.analyze_delay_ms);
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

/* What the program will use, as DESIGN §1 chooses it. */
static json_t *
store_use(void)
{
	struct dq_err err;
	const char *cred;
	const char *b = dq_store_choice(&cred, &err);

	if (!b)
		return json_pack("{s:n,s:s}", "backend", "problem", err.msg);
	if (strcmp(b, "local") == 0)
		return json_pack("{s:s,s:s+,s:s,s:s,s:s}", "backend", b,
		    "dir", dq_cfg.local_dir, "/store",
		    "raw_container", dq_cfg.raw_container,
		    "processed_container", dq_cfg.processed_container,
		    "credentials", cred);
	return json_pack("{s:s,s:s?,s:s,s:s,s:s}", "backend", b,
	    "account", dq_cfg.storage_account,
	    "raw_container", dq_cfg.raw_container,
	    "processed_container", dq_cfg.processed_container, "credentials", cred);
}

static json_t *
queue_use(void)
{
	struct dq_err err;
	const char *cred;
	const char *b = dq_queue_choice(&cred, &err);

	if (!b)
		return json_pack("{s:n,s:s}", "backend", "problem", err.msg);
	if (strcmp(b, "local") == 0)
		return json_pack("{s:s,s:s,s:s+++,s:s}", "backend", b,
		    "queue", dq_cfg.queue, "dir", dq_cfg.local_dir, "/queues/",
		    dq_cfg.queue, "", "credentials", cred);
	return json_pack("{s:s,s:s?,s:s,s:s}", "backend", b,
	    "namespace", dq_cfg.servicebus_namespace, "queue", dq_cfg.queue,
	    "credentials", cred);
}

static json_t *
analyzer_use(void)
{
	struct dq_err err;
	const char *b = dq_analyzer_choice(&err);
	char *cache, url[1024];
	json_t *o;

	if (!b)
		return json_pack("{s:n,s:s}", "backend", "problem", err.msg);
	if (strcmp(b, "reference") == 0) {
		cache = dq_cache_dir(dq_cfg.cache_dir);
		o = json_pack("{s:s,s:s?,s:s?,s:s}", "backend", b,
		    "reference_dir", dq_cfg.reference_dir, "cache_dir", cache,
		    "credentials", "none (local)");
		free(cache);
		return o;
	}
	return json_pack("{s:s,s:s?,s:s,s:s}", "backend", b,
	    "endpoint", dq_cfg.ai_endpoint ? dq_redact_url(dq_cfg.ai_endpoint, url, sizeof url) : NULL,
	    "deployment", dq_cfg.vision_deployment,
	    "credentials", dq_cfg.ai_api_key ? "API key (AZURE_AI_API_KEY)" : "managed identity");
}

/*
 * The managed identity a backend that uses one will take its tokens from
 * (lib/cred/identity.c chooses): the mechanism, the variable that chose
 * it, its endpoint, and the shared token cache.  Never a secret.
 */
static json_t *
identity_use(void)
{
	struct dq_err err;
	const struct dq_mi *mi;
	char *cache;
	json_t *o;

	if (!dq_mi_mechanism(&mi, &err))
		return json_pack("{s:n,s:s}", "mechanism", "problem", err.msg);
	cache = dq_token_cache_path();
	o = json_pack("{s:s,s:s,s:s,s:s?,s:s?,s:s?}", "mechanism", mi->name, "from", mi->from,
	    "endpoint", mi->endpoint, "tenant", mi->tenant, "client_id", mi->client_id,
	    "token_cache", cache);
	free(cache);
	return o;
}

/* Whether a use object takes managed identity. */
static int
uses_identity(json_t *use)
{
	const char *c = json_string_value(json_object_get(use, "credentials"));

	return c && strcmp(c, "managed identity") == 0;
}

void
dq_config_print(FILE *fp, const char *prog)
{
	json_t *o = json_pack("{s:s}", "program", prog), *vs = json_object();
	int who = ALL;
	char url[1024];

	for (size_t i = 0; i < sizeof progs / sizeof progs[0]; i++)
		if (strcmp(progs[i].name, prog) == 0)
			who = progs[i].who;
	/* First what it will use, then the variables it reads. */
	if (who & ST)
		json_object_set_new(o, "store", store_use());
	if (who & QU)
		json_object_set_new(o, "queue", queue_use());
	if (who & AN)
		json_object_set_new(o, "analyzer", analyzer_use());
	if (uses_identity(json_object_get(o, "store")) || uses_identity(json_object_get(o, "queue")) ||
	    uses_identity(json_object_get(o, "analyzer")))
		json_object_set_new(o, "identity", identity_use());
	for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
		const struct var *v = &vars[i];
		const char *s = value_of(v);

		if (!(v->who & who))
			continue;
		if (!s)
			json_object_set_new(vs, v->name, json_null());
		else if (v->kind == SECRET)
			json_object_set_new(vs, v->name, json_string("<set>"));
		else if (strstr(s, "://"))	/* a URL may hold a SAS: redact.c's rule */
			json_object_set_new(vs, v->name, json_string(dq_redact_url(s, url, sizeof url)));
		else
			json_object_set_new(vs, v->name, json_string(s));
	}
	json_object_set_new(o, "variables", vs);
	/* a record for jq; indented for a person at a terminal */
	if (isatty(fileno(fp))) {
		json_dumpf(o, fp, JSON_INDENT(2));
		fputc('\n', fp);
	} else
		dq_write_record(fp, o);
	json_decref(o);
}
