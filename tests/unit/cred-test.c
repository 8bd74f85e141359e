/* cred-test - the credential layer (lib/cred/) over its interface, for 41-cred.bats. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq.h"

/*
 * cred-test token SCOPE
 *	a bearer token for SCOPE (managed identity, the shared cache);
 *	prints the first 16 hex digits of its SHA-256, never the token.
 * cred-test tokens N SCOPE
 *	the same from N threads at once: prints each thread's hash.
 * cred-test call URL SCOPE
 *	GET URL with that token through the HTTP layer (a 401 drops the
 *	token and sends once more); prints the status.
 * cred-test mechanism
 *	the managed-identity mechanism chosen, as JSON.
 * cred-test sharedkey VERB URL [HEADER...]
 *	Shared Key for AZURE_STORAGE_CONNECTION_STRING's account and key:
 *	prints the Authorization value.
 * cred-test string-to-sign ACCOUNT VERB URL [HEADER...]
 *	the string to sign, as is.
 * cred-test sas RESOURCE_URI EXPIRY
 *	a SAS token from AZURE_SERVICEBUS_CONNECTION_STRING's key.
 * cred-test blob-conn | sb-conn
 *	the parsed connection string, secrets as their length.
 * cred-test transport URL
 *	whether a credential may go to URL.
 * Errors are logged; the exit status is the error's.
 */
static void
hash_print(const char *tok)
{
	char hex[65];

	dq_sha256_hex(tok, strlen(tok), hex);
	printf("%.16s\n", hex);
}

static int
fail(const struct dq_err *err)
{
	dq_log_err(DQ_ERROR, "cred_test", NULL, err);
	return err->status;
}

struct worker {
	pthread_t t;
	const char *scope;
	char *token;
	struct dq_err err;
	int rc;
};

static void *
worker(void *arg)
{
	struct worker *w = arg;

	w->rc = dq_token_get(w->scope, &w->token, &w->err);
	return NULL;
}

static int
tokens(int n, const char *scope, struct dq_err *err)
{
	struct worker *w = dq_xcalloc((size_t)n, sizeof *w);
	int rc = 0;

	for (int i = 0; i < n; i++) {
		w[i].scope = scope;
		if (pthread_create(&w[i].t, NULL, worker, &w[i]) != 0)
			dq_die(DQ_EX_TEMPFAIL, "pthread_create failed");
	}
	for (int i = 0; i < n; i++)
		pthread_join(w[i].t, NULL);
	for (int i = 0; i < n; i++) {
		if (w[i].rc < 0) {
			*err = w[i].err;
			rc = -1;
		} else
			hash_print(w[i].token);
		dq_token_free(w[i].token);
	}
	free(w);
	return rc;
}

static int
call(const char *url, const char *scope, struct dq_err *err)
{
	struct dq_bearer b = { .scope = scope };
	struct dq_http_req req = { .url = url, .credentials = 1, .sign = dq_bearer_sign,
	    .unauthorized = dq_bearer_unauthorized, .sign_arg = &b };
	struct dq_http_resp resp = { 0 };
	int rc = dq_http_do(&req, &resp, err);

	if (rc == 0)
		printf("%ld\n", resp.status);
	dq_http_resp_free(&resp);
	dq_bearer_done(&b);
	return rc;
}

int
main(int argc, char *argv[])
{
	struct dq_err err = { 0 };
	const char *cmd = argc > 1 ? argv[1] : "";
	char *s = NULL;
	int rc = 0;

	dq_init(argv[0]);
	if (dq_config_load(&err) < 0)
		return fail(&err);
	if (strcmp(cmd, "token") == 0 && argc == 3) {
		if (dq_token_get(argv[2], &s, &err) < 0)
			return fail(&err);
		hash_print(s);
		dq_token_free(s);
	} else if (strcmp(cmd, "tokens") == 0 && argc == 4 && atoi(argv[2]) > 0) {
		if (tokens(atoi(argv[2]), argv[3], &err) < 0)
			return fail(&err);
	} else if (strcmp(cmd, "call") == 0 && argc == 4) {
		if (call(argv[2], argv[3], &err) < 0)
			return fail(&err);
	} else if (strcmp(cmd, "mechanism") == 0 && argc == 2) {
		const struct dq_mi *mi;
		char *dir;

		if (!dq_mi_mechanism(&mi, &err))
			return fail(&err);
		dir = dq_token_cache_path();
		json_t *o = json_pack("{s:s,s:s,s:s,s:s?,s:s?,s:s?}", "mechanism", mi->name,
		    "from", mi->from, "endpoint", mi->endpoint, "tenant", mi->tenant,
		    "client_id", mi->client_id, "cache", dir);
		dq_write_record(stdout, o);
		json_decref(o);
		free(dir);
	} else if (strcmp(cmd, "sharedkey") == 0 && argc >= 4) {
		struct dq_blob_conn c;
		const char *cs = getenv("AZURE_STORAGE_CONNECTION_STRING");

		if (dq_blob_conn_parse(cs ? cs : "", &c, &err) < 0)
			return fail(&err);
		if (!c.key) {
			dq_blob_conn_free(&c);
			fprintf(stderr, "cred-test: the connection string has no AccountKey\n");
			return DQ_EX_USAGE;
		}
		s = dq_sharedkey_authorization(c.key, c.keylen, argv[2], c.account, argv[3],
		    (const char *const *)argv + 4, &err);
		dq_blob_conn_free(&c);
		if (!s)
			return fail(&err);
		printf("%s\n", s);
		dq_wipe(s, strlen(s));
		free(s);
	} else if (strcmp(cmd, "string-to-sign") == 0 && argc >= 5) {
		if (!(s = dq_sharedkey_string_to_sign(argv[3], argv[2], argv[4],
		    (const char *const *)argv + 5, &err)))
			return fail(&err);
		fputs(s, stdout);
		free(s);
	} else if (strcmp(cmd, "sas") == 0 && argc == 4) {
		struct dq_sb_conn c;
		const char *cs = getenv("AZURE_SERVICEBUS_CONNECTION_STRING");

		if (dq_sb_conn_parse(cs ? cs : "", &c, &err) < 0)
			return fail(&err);
		if (!c.key) {
			dq_sb_conn_free(&c);
			fprintf(stderr, "cred-test: the connection string has no SharedAccessKey\n");
			return DQ_EX_USAGE;
		}
		s = dq_sas_token(argv[2], c.key_name, c.key, strtoll(argv[3], NULL, 10));
		dq_sb_conn_free(&c);
		printf("%s\n", s);
		dq_wipe(s, strlen(s));
		free(s);
	} else if (strcmp(cmd, "blob-conn") == 0 && argc == 2) {
		struct dq_blob_conn c;
		const char *cs = getenv("AZURE_STORAGE_CONNECTION_STRING");

		if (dq_blob_conn_parse(cs ? cs : "", &c, &err) < 0)
			return fail(&err);
		json_t *o = json_pack("{s:s?,s:s,s:b,s:I,s:b}", "account", c.account,
		    "endpoint", c.endpoint, "emulator", c.emulator, "key_bytes",
		    (json_int_t)c.keylen, "sas", c.sas != NULL);
		dq_write_record(stdout, o);
		json_decref(o);
		dq_blob_conn_free(&c);
	} else if (strcmp(cmd, "sb-conn") == 0 && argc == 2) {
		struct dq_sb_conn c;
		const char *cs = getenv("AZURE_SERVICEBUS_CONNECTION_STRING");

		if (dq_sb_conn_parse(cs ? cs : "", &c, &err) < 0)
			return fail(&err);
		json_t *o = json_pack("{s:s,s:s,s:s?,s:b,s:b,s:s?,s:b}", "endpoint", c.endpoint,
		    "host", c.host, "key_name", c.key_name, "key", c.key != NULL, "sas",
		    c.sas != NULL, "entity", c.entity, "emulator", c.emulator);
		dq_write_record(stdout, o);
		json_decref(o);
		dq_sb_conn_free(&c);
	} else if (strcmp(cmd, "transport") == 0 && argc == 3) {
		if (dq_cred_transport_ok(argv[2], argv[2], &err) < 0)
			return fail(&err);
		printf("ok\n");
	} else {
		fprintf(stderr, "usage: cred-test token SCOPE | tokens N SCOPE | call URL SCOPE | mechanism | "
		    "sharedkey VERB URL [HEADER...] | string-to-sign ACCOUNT VERB URL [HEADER...] | "
		    "sas RESOURCE_URI EXPIRY | blob-conn | sb-conn | transport URL\n");
		return DQ_EX_USAGE;
	}
	return dq_finish_stdout(rc);
}
