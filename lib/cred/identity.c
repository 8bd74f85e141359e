/*
 * identity.c - bearer tokens from managed identity, without an SDK
 * (azure-protocols.md §3): which mechanism, from which variables, and
 * the one request each sends.
 *
 * The choice is one function, dq_mi_choose(), in this order:
 *   1. AZURE_FEDERATED_TOKEN_FILE: workload identity (AKS): the file's
 *      token is a client assertion exchanged at Entra ID
 *      (AZURE_AUTHORITY_HOST, AZURE_TENANT_ID, AZURE_CLIENT_ID all needed);
 *   2. IDENTITY_ENDPOINT: Container Apps / App Service (api-version
 *      2019-08-01, IDENTITY_HEADER needed);
 *   3. otherwise the VM metadata endpoint (IMDS) at 169.254.169.254, or
 *      at AZURE_POD_IDENTITY_AUTHORITY_HOST as Azure's SDKs allow.
 * A set that is incomplete is a configuration error, never a quiet move
 * to the next mechanism.  AZURE_CLIENT_ID picks a user-assigned identity
 * for 2 and 3.
 *
 * The platform rotates IDENTITY_HEADER and the federated token file, so
 * both are read afresh at each fetch and never written anywhere (the
 * token cache holds only the tokens).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "dq.h"

#define IMDS_HOST "http://169.254.169.254"
#define AUTHORITY_HOST "https://login.microsoftonline.com"

static const char *
env(const char *name)
{
	const char *s = getenv(name);

	return s && *s ? s : NULL;
}

int
dq_mi_choose(struct dq_mi *mi, struct dq_err *err)
{
	memset(mi, 0, sizeof *mi);
	mi->client_id = env("AZURE_CLIENT_ID");
	if (env("AZURE_FEDERATED_TOKEN_FILE")) {
		mi->kind = DQ_MI_WORKLOAD;
		mi->name = "workload identity";
		mi->from = "AZURE_FEDERATED_TOKEN_FILE";
		mi->tenant = env("AZURE_TENANT_ID");
		if (!mi->client_id || !mi->tenant) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_identity",
			    "AZURE_FEDERATED_TOKEN_FILE is set: workload identity also needs "
			    "AZURE_CLIENT_ID and AZURE_TENANT_ID");
			return -1;
		}
		if (!dq_safe_token(mi->tenant)) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_identity",
			    "AZURE_TENANT_ID may hold only letters, digits, '.', '_' and '-'");
			return -1;
		}
		mi->endpoint = env("AZURE_AUTHORITY_HOST") ? env("AZURE_AUTHORITY_HOST") : AUTHORITY_HOST;
		return dq_cred_transport_ok(mi->endpoint, "AZURE_AUTHORITY_HOST", err);
	}
	if (env("IDENTITY_ENDPOINT")) {
		mi->kind = DQ_MI_APP_SERVICE;
		mi->name = "Container Apps / App Service managed identity";
		mi->from = "IDENTITY_ENDPOINT";
		mi->endpoint = env("IDENTITY_ENDPOINT");
		if (!env("IDENTITY_HEADER")) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_identity",
			    "IDENTITY_ENDPOINT is set without IDENTITY_HEADER (Service Fabric and "
			    "Azure Arc identities are not supported)");
			return -1;
		}
		return dq_cred_transport_ok(mi->endpoint, "IDENTITY_ENDPOINT", err);
	}
	mi->kind = DQ_MI_IMDS;
	mi->name = "VM metadata endpoint (IMDS)";
	if (env("AZURE_POD_IDENTITY_AUTHORITY_HOST")) {
		mi->from = "AZURE_POD_IDENTITY_AUTHORITY_HOST";
		mi->endpoint = env("AZURE_POD_IDENTITY_AUTHORITY_HOST");
		if (strncmp(mi->endpoint, "http://", 7) && strncmp(mi->endpoint, "https://", 8)) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_identity",
			    "AZURE_POD_IDENTITY_AUTHORITY_HOST must be an http:// or https:// URL");
			return -1;
		}
	} else {
		mi->from = "no identity variable set";
		mi->endpoint = IMDS_HOST;
	}
	return 0;
}

char *
dq_scope_resource(const char *scope)
{
	size_t n = strlen(scope);
	static const char suffix[] = "/.default";

	if (n > sizeof suffix - 1 && strcmp(scope + n - (sizeof suffix - 1), suffix) == 0)
		n -= sizeof suffix - 1;
	char *r = dq_xmalloc(n + 1);

	memcpy(r, scope, n);
	r[n] = '\0';
	return r;
}

char *
dq_mi_cache_key(const struct dq_mi *mi, const char *scope)
{
	return dq_xasprintf("%d|%s|%s|%s|%s", (int)mi->kind, mi->endpoint,
	    mi->tenant ? mi->tenant : "", mi->client_id ? mi->client_id : "", scope);
}

/* A JSON number or a string of digits, as the identity endpoints send both. */
static int
json_seconds(json_t *v, long long *out)
{
	const char *s;
	char *end;

	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return 0;
	}
	if (json_is_real(v)) {
		*out = (long long)json_real_value(v);
		return 0;
	}
	if (!json_is_string(v) || !*(s = json_string_value(v)) || strspn(s, "0123456789") != strlen(s))
		return -1;
	errno = 0;
	*out = strtoll(s, &end, 10);
	return errno ? -1 : 0;
}

/*
 * The token in an answer: access_token, and its life from expires_on,
 * else expires_in; refresh_in when given, else half the life (MSAL's
 * rule, DESIGN §6).
 */
int
dq_token_parse(const char *body, size_t len, int64_t now_ms, struct dq_token *t,
    struct dq_err *err)
{
	json_t *o = json_loadb(body, len, 0, NULL), *at;
	long long exp_on, exp_in, refresh_in;
	int64_t life_ms;
	int rc = -1;

	memset(t, 0, sizeof *t);
	if (!json_is_object(o) || !json_is_string(at = json_object_get(o, "access_token")) ||
	    json_string_length(at) == 0 || json_string_length(at) > 16384) {
		dq_err_system(err, DQ_EX_TEMPFAIL, "bad_token",
		    "the identity endpoint's answer holds no access_token");
		goto out;
	}
	if (json_seconds(json_object_get(o, "expires_on"), &exp_on) == 0)
		life_ms = exp_on * 1000 - now_ms;
	else if (json_seconds(json_object_get(o, "expires_in"), &exp_in) == 0)
		life_ms = exp_in * 1000;
	else {
		dq_err_system(err, DQ_EX_TEMPFAIL, "bad_token",
		    "the identity endpoint's answer says neither expires_on nor expires_in");
		goto out;
	}
	if (life_ms <= 0) {
		dq_err_system(err, DQ_EX_TEMPFAIL, "bad_token",
		    "the identity endpoint answered with an expired token");
		goto out;
	}
	t->expires_ms = now_ms + life_ms;
	t->refresh_ms = now_ms + life_ms / 2;
	if (json_seconds(json_object_get(o, "refresh_in"), &refresh_in) == 0 &&
	    refresh_in * 1000 < life_ms)
		t->refresh_ms = now_ms + refresh_in * 1000;
	t->value = dq_xstrdup(json_string_value(at));
	rc = 0;
out:
	json_decref(o);
	return rc;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct dq_mi chosen;
static struct dq_err chosen_err;
static int chosen_rc;

static void
choose_once(void)
{
	chosen_rc = dq_mi_choose(&chosen, &chosen_err);
}

const char *
dq_mi_mechanism(const struct dq_mi **mi, struct dq_err *err)
{
	pthread_once(&once, choose_once);
	if (chosen_rc < 0) {
		if (err)
			*err = chosen_err;
		return NULL;
	}
	if (mi)
		*mi = &chosen;
	return chosen.name;
}
