/*
 * fetch.c - the one request each managed-identity mechanism sends
 * (azure-protocols.md §3.2, §3.4, §3.5), over the HTTP layer.  Apart
 * from identity.c so that a program that only prints its configuration
 * links no HTTP code.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dq.h"

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
		req.connect_timeout_ms = 1000;
		req.deadline_ms = dq_now_ms() + 15000;
		break;
	default:
		dq_err_system(err, DQ_EX_CONFIG, "bad_identity", "no managed identity mechanism");
		goto out;
	}
	req.url = url;
	req.headers = headers;
	req.max_body = 64 * 1024;
	if (dq_http_do(&req, &resp, err) < 0) {
		if (mi->kind == DQ_MI_IMDS && resp.status == 0) {
			/* Off Azure nothing answers there: a configuration error. */
			char why[160];

			snprintf(why, sizeof why, "%s", err->code);
			dq_err_system(err, DQ_EX_CONFIG, "no_identity",
			    "no managed identity: the VM metadata endpoint %s did not answer (%s); "
			    "on Container Apps or App Service IDENTITY_ENDPOINT is set, on AKS "
			    "AZURE_FEDERATED_TOKEN_FILE; else use a connection string or key",
			    mi->endpoint, why);
			goto out;
		}
		/* A refusal of a token is nobody's record: the system's, 78.
		 * Anything else (TLS, the endpoint down) keeps its kind. */
		if (resp.status >= 400 && resp.status < 500 && !dq_retry_status(resp.status)) {
			answer_error(&resp, detail, sizeof detail);
			dq_err_system(err, DQ_EX_CONFIG, "identity_refused",
			    "%s refused a token for %s (HTTP %ld)%s", mi->name, resource, resp.status,
			    detail);
			err->http_status = (int)resp.status;
		} else if (err->scope == DQ_SCOPE_RECORD) {
			/* an answer too large, say: no token in it */
			char why[sizeof err->msg];

			memcpy(why, err->msg, sizeof why);
			dq_err_system(err, DQ_EX_TEMPFAIL, "bad_token", "%s: %s", mi->name, why);
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
