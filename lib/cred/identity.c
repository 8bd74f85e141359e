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

/* A URL without its trailing slashes (malloc'd). */
static char *
base(const char *url)
{
	char *s = dq_xstrdup(url);
	size_t n = strlen(s);

	while (n > 0 && s[n - 1] == '/')
		s[--n] = '\0';
	return s;
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

/* The service's error text, for the message: Entra's error_description
 * or error, redacted and cut short. */
static void
answer_error(const struct dq_http_resp *r, char *buf, size_t n)
{
	json_t *o = r->body ? json_loadb((const char *)r->body, r->body_len, 0, NULL) : NULL;
	json_t *d = json_object_get(o, "error_description");
	char *red;

	if (!json_is_string(d))
		d = json_object_get(o, "error");
	if (json_is_object(d))
		d = json_object_get(d, "message");
	if (!json_is_string(d)) {
		*buf = '\0';
		json_decref(o);
		return;
	}
	red = dq_redact_text(json_string_value(d));
	snprintf(buf, n, ": %.200s", red);
	free(red);
	json_decref(o);
}

/* The federated token, read afresh (kubelet rotates it), trimmed. */
static char *
assertion(struct dq_err *err)
{
	const char *path = env("AZURE_FEDERATED_TOKEN_FILE");
	unsigned char *data = NULL;
	size_t len = 0, b = 0;
	char *s;

	if (dq_read_file(path, 64 * 1024, &data, &len) < 0) {
		dq_err_system(err, dq_errno_status(errno, NULL) == DQ_EX_TEMPFAIL ? DQ_EX_TEMPFAIL :
		    DQ_EX_CONFIG, "bad_identity", "AZURE_FEDERATED_TOKEN_FILE %s: %s", path,
		    strerror(errno));
		return NULL;
	}
	while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r' ||
	    data[len - 1] == ' ' || data[len - 1] == '\t'))
		len--;
	while (b < len && (data[b] == ' ' || data[b] == '\n' || data[b] == '\t'))
		b++;
	if (b == len) {
		free(data);
		dq_err_system(err, DQ_EX_CONFIG, "bad_identity", "AZURE_FEDERATED_TOKEN_FILE %s "
		    "is empty", path);
		return NULL;
	}
	s = dq_xmalloc(len - b + 1);
	memcpy(s, data + b, len - b);
	s[len - b] = '\0';
	dq_wipe(data, len);
	free(data);
	return s;
}

int
dq_mi_fetch(const struct dq_mi *mi, const char *scope, struct dq_token *t, struct dq_err *err)
{
	static const int returned[] = { 400, 0 };
	struct dq_http_req req = { 0 };
	struct dq_http_resp resp = { 0 };
	const char *headers[4] = { NULL };
	char *url = NULL, *body = NULL, *hdr = NULL, *resource = dq_scope_resource(scope);
	char *e_res = dq_url_encode(resource), *e_client = NULL, *b = base(mi->endpoint);
	char detail[256];
	int rc = -1;

	if (mi->client_id)
		e_client = dq_url_encode(mi->client_id);
	req.returned = returned;
	req.credentials = 1;
	switch (mi->kind) {
	case DQ_MI_WORKLOAD: {
		char *a, *e_scope = dq_url_encode(scope), *e_a;

		if (!(a = assertion(err))) {
			free(e_scope);
			goto out;
		}
		e_a = dq_url_encode(a);
		dq_wipe(a, strlen(a));
		free(a);
		url = dq_xasprintf("%s/%s/oauth2/v2.0/token", b, mi->tenant);
		body = dq_xasprintf("grant_type=client_credentials&client_id=%s&scope=%s"
		    "&client_assertion_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Aclient-assertion-type"
		    "%%3Ajwt-bearer&client_assertion=%s", e_client, e_scope, e_a);
		dq_wipe(e_a, strlen(e_a));
		free(e_a);
		free(e_scope);
		req.method = "POST";
		req.body = body;
		req.body_len = strlen(body);
		headers[0] = "Content-Type: application/x-www-form-urlencoded";
		headers[1] = "Accept: application/json";
		break;
	}
	case DQ_MI_APP_SERVICE: {
		const char *h = env("IDENTITY_HEADER");	/* rotated: read now */

		if (!h) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_identity",
			    "IDENTITY_ENDPOINT is set without IDENTITY_HEADER");
			goto out;
		}
		url = dq_xasprintf("%s%capi-version=2019-08-01&resource=%s%s%s", mi->endpoint,
		    strchr(mi->endpoint, '?') ? '&' : '?', e_res, e_client ? "&client_id=" : "",
		    e_client ? e_client : "");
		hdr = dq_xasprintf("X-IDENTITY-HEADER: %s", h);
		headers[0] = hdr;
		headers[1] = "Accept: application/json";
		break;
	}
	case DQ_MI_IMDS:
		url = dq_xasprintf("%s/metadata/identity/oauth2/token?api-version=2018-02-01"
		    "&resource=%s%s%s", b, e_res, e_client ? "&client_id=" : "",
		    e_client ? e_client : "");
		headers[0] = "Metadata: true";
		headers[1] = "Accept: application/json";
		/* IMDS is link-local, sends no secret, and is never proxied;
		 * off Azure it does not answer: fail fast. */
		req.credentials = 0;
		req.no_proxy = 1;
		req.connect_timeout_ms = 2000;
		break;
	default:
		dq_err_system(err, DQ_EX_CONFIG, "bad_identity", "no managed identity mechanism");
		goto out;
	}
	req.url = url;
	req.headers = headers;
	req.max_body = 64 * 1024;
	if (dq_http_do(&req, &resp, err) < 0) {
		/* A token fetch is nobody's record: every failure is the system's. */
		if (err->scope == DQ_SCOPE_RECORD || err->status == DQ_EX_CONFIG) {
			answer_error(&resp, detail, sizeof detail);
			dq_err_system(err, DQ_EX_CONFIG, "identity_refused",
			    "%s refused a token for %s (HTTP %ld)%s", mi->name, resource, resp.status,
			    detail);
			err->http_status = (int)resp.status;
		}
		goto out;
	}
	if (resp.status != 200) {
		answer_error(&resp, detail, sizeof detail);
		dq_err_system(err, DQ_EX_CONFIG, "identity_refused",
		    "%s gave no token for %s (HTTP %ld)%s%s", mi->name, resource, resp.status,
		    detail, resp.status == 400 && mi->kind == DQ_MI_IMDS ?
		    " (no managed identity assigned, or not the one AZURE_CLIENT_ID names)" : "");
		err->http_status = (int)resp.status;
		goto out;
	}
	if (dq_token_parse((const char *)resp.body, resp.body_len, dq_now_ms(), t, err) < 0)
		goto out;
	rc = 0;
out:
	if (hdr) {
		dq_wipe(hdr, strlen(hdr));
		free(hdr);
	}
	if (body) {
		dq_wipe(body, strlen(body));
		free(body);
	}
	if (resp.body)
		dq_wipe(resp.body, resp.body_len);
	dq_http_resp_free(&resp);
	free(url);
	free(resource);
	free(e_res);
	free(e_client);
	free(b);
	return rc;
}
