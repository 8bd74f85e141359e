/*
 * connstr.c - Azure connection strings, parsed once into what the Blob and
 * Service Bus backends need.
 *
 * A connection string is Key=Value pairs separated by ';' (a trailing ';'
 * allowed), each split on its first '=' only: keys and SAS values hold
 * '=' too.  Keys are matched without regard to case, as the SDKs do.  A
 * key given twice, a pair without '=', or a key this parser does not know
 * is a configuration error naming the key, never the value: a typo in
 * "AccountKey" must not turn into an anonymous request.  Every error
 * message names keys only; values may be secrets.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "dq.h"

/* Azurite's well-known account (azure-protocols.md §1.7). */
#define DEV_ACCOUNT "devstoreaccount1"
#define DEV_KEY "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
#define DEV_BLOB "http://127.0.0.1:10000/" DEV_ACCOUNT

struct pair {
	const char *key;	/* as the table spells it */
	char *value;		/* NULL: absent */
};

/*
 * Split s into the pairs of table (values malloc'd); keys in ignored are
 * taken and dropped (other services' endpoints in a storage string).
 */
static int
split(const char *what, const char *s, struct pair *table, size_t n,
    const char *const *ignored, struct dq_err *err)
{
	char *copy = dq_xstrdup(s), *save = NULL, *item;
	int rc = -1;

	for (item = strtok_r(copy, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
		char *eq = strchr(item, '=');
		size_t i;

		while (*item == ' ')
			item++;
		if (*item == '\0')
			continue;
		if (!eq) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
			    "%s: a part has no '=' (expected Key=Value;...)", what);
			goto out;
		}
		*eq = '\0';
		for (i = 0; i < n; i++)
			if (strcasecmp(item, table[i].key) == 0)
				break;
		if (i == n) {
			const char *const *ig;

			for (ig = ignored; ig && *ig; ig++)
				if (strcasecmp(item, *ig) == 0)
					break;
			if (ig && *ig)
				continue;
			dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
			    "%s: unknown key '%.40s'", what, item);
			goto out;
		}
		if (table[i].value) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
			    "%s: %s given twice", what, table[i].key);
			goto out;
		}
		table[i].value = dq_xstrdup(eq + 1);
	}
	rc = 0;
out:
	dq_wipe(copy, strlen(s));
	free(copy);
	return rc;
}

static void
pairs_free(struct pair *table, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (table[i].value) {
			dq_wipe(table[i].value, strlen(table[i].value));
			free(table[i].value);
		}
}

/* An endpoint without its trailing slashes (malloc'd). */
static char *
endpoint(const char *s)
{
	char *e = dq_xstrdup(s);
	size_t n = strlen(e);

	while (n > 0 && e[n - 1] == '/')
		e[--n] = '\0';
	return e;
}

int
dq_base64_decode(const char *s, unsigned char **out, size_t *len)
{
	size_t n = strlen(s), pad = 0;
	unsigned char *buf;
	int m;

	if (n == 0 || n % 4 != 0 || n > 4096)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (!(s[i] >= 'A' && s[i] <= 'Z') && !(s[i] >= 'a' && s[i] <= 'z') &&
		    !(s[i] >= '0' && s[i] <= '9') && s[i] != '+' && s[i] != '/' &&
		    !(s[i] == '=' && i >= n - 2))
			return -1;
	if (s[n - 1] == '=')
		pad++;
	if (s[n - 2] == '=')
		pad++;
	if (pad == 1 && s[n - 2] == '=')
		return -1;
	buf = dq_xmalloc(n / 4 * 3 + 1);
	/* EVP_DecodeBlock counts the padding in what it returns. */
	if ((m = EVP_DecodeBlock(buf, (const unsigned char *)s, (int)n)) < 0 || (size_t)m < pad) {
		dq_wipe(buf, n / 4 * 3 + 1);
		free(buf);
		return -1;
	}
	*out = buf;
	*len = (size_t)m - pad;
	return 0;
}

char *
dq_base64_encode(const unsigned char *data, size_t len)
{
	char *out = dq_xmalloc(4 * ((len + 2) / 3) + 1);

	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

/* A storage account name: lowercase letters and digits (a host label). */
static int
account_name(const char *s)
{
	size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789");

	return n > 0 && n <= 63 && s[n] == '\0';
}

enum { B_PROTO, B_NAME, B_KEY, B_BLOB, B_SUFFIX, B_SAS, B_DEV, B_NPAIRS };

int
dq_blob_conn_parse(const char *s, struct dq_blob_conn *c, struct dq_err *err)
{
	static const char *const ignored[] = {
		"QueueEndpoint", "TableEndpoint", "FileEndpoint", "QueueSecondaryEndpoint",
		"TableSecondaryEndpoint", "FileSecondaryEndpoint", "BlobSecondaryEndpoint",
		NULL,
	};
	static const char what[] = "AZURE_STORAGE_CONNECTION_STRING";
	struct pair p[B_NPAIRS] = {
		[B_PROTO] = { "DefaultEndpointsProtocol", NULL },
		[B_NAME] = { "AccountName", NULL },
		[B_KEY] = { "AccountKey", NULL },
		[B_BLOB] = { "BlobEndpoint", NULL },
		[B_SUFFIX] = { "EndpointSuffix", NULL },
		[B_SAS] = { "SharedAccessSignature", NULL },
		[B_DEV] = { "UseDevelopmentStorage", NULL },
	};
	const char *proto, *key;
	int rc = -1;

	memset(c, 0, sizeof *c);
	if (split(what, s, p, B_NPAIRS, ignored, err) < 0)
		goto out;
	if (p[B_DEV].value) {
		if (strcasecmp(p[B_DEV].value, "true") != 0) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
			    "%s: UseDevelopmentStorage takes only 'true'", what);
			goto out;
		}
		for (int i = 0; i < B_NPAIRS; i++)
			if (i != B_DEV && p[i].value) {
				dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
				    "%s: UseDevelopmentStorage=true takes no %s (write the "
				    "explicit form instead)", what, p[i].key);
				goto out;
			}
		c->emulator = 1;
		c->account = dq_xstrdup(DEV_ACCOUNT);
		c->endpoint = dq_xstrdup(DEV_BLOB);
		key = DEV_KEY;
	} else {
		proto = p[B_PROTO].value ? p[B_PROTO].value : "https";
		if (strcmp(proto, "https") != 0 && strcmp(proto, "http") != 0) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
			    "%s: DefaultEndpointsProtocol must be https or http", what);
			goto out;
		}
		if (p[B_NAME].value && !account_name(p[B_NAME].value)) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
			    "%s: AccountName may hold only lowercase letters and digits", what);
			goto out;
		}
		if (p[B_BLOB].value)
			c->endpoint = endpoint(p[B_BLOB].value);
		else if (p[B_NAME].value)
			c->endpoint = dq_xasprintf("%s://%s.blob.%s", proto, p[B_NAME].value,
			    p[B_SUFFIX].value ? p[B_SUFFIX].value : "core.windows.net");
		else {
			dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
			    "%s: needs AccountName or BlobEndpoint", what);
			goto out;
		}
		if (strncmp(c->endpoint, "https://", 8) != 0 && strncmp(c->endpoint, "http://", 7) != 0) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
			    "%s: BlobEndpoint must be an http:// or https:// URL", what);
			goto out;
		}
		if (p[B_NAME].value)
			c->account = dq_xstrdup(p[B_NAME].value);
		key = p[B_KEY].value;
		if (key && !c->account) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
			    "%s: AccountKey needs AccountName", what);
			goto out;
		}
		if (key && p[B_SAS].value) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
			    "%s: give AccountKey or SharedAccessSignature, not both", what);
			goto out;
		}
		if (!key && !p[B_SAS].value) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
			    "%s: needs AccountKey or SharedAccessSignature (for managed identity "
			    "set AZURE_STORAGE_ACCOUNT instead)", what);
			goto out;
		}
		if (p[B_SAS].value)
			c->sas = dq_xstrdup(p[B_SAS].value + (p[B_SAS].value[0] == '?'));
	}
	if (key && dq_base64_decode(key, &c->key, &c->keylen) < 0) {
		dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
		    "%s: AccountKey is not base64", what);
		goto out;
	}
	if (dq_cred_transport_ok(c->endpoint, what, err) < 0)
		goto out;
	rc = 0;
out:
	pairs_free(p, B_NPAIRS);
	if (rc < 0)
		dq_blob_conn_free(c);
	return rc;
}

void
dq_blob_conn_free(struct dq_blob_conn *c)
{
	if (c->key)
		dq_wipe(c->key, c->keylen);
	if (c->sas)
		dq_wipe(c->sas, strlen(c->sas));
	free(c->key);
	free(c->sas);
	free(c->account);
	free(c->endpoint);
	memset(c, 0, sizeof *c);
}

enum { S_ENDPOINT, S_KEYNAME, S_KEY, S_SAS, S_ENTITY, S_DEV, S_NPAIRS };

int
dq_sb_conn_parse(const char *s, struct dq_sb_conn *c, struct dq_err *err)
{
	static const char what[] = "AZURE_SERVICEBUS_CONNECTION_STRING";
	struct pair p[S_NPAIRS] = {
		[S_ENDPOINT] = { "Endpoint", NULL },
		[S_KEYNAME] = { "SharedAccessKeyName", NULL },
		[S_KEY] = { "SharedAccessKey", NULL },
		[S_SAS] = { "SharedAccessSignature", NULL },
		[S_ENTITY] = { "EntityPath", NULL },
		[S_DEV] = { "UseDevelopmentEmulator", NULL },
	};
	const char *e, *host;
	int rc = -1;

	memset(c, 0, sizeof *c);
	if (split(what, s, p, S_NPAIRS, NULL, err) < 0)
		goto out;
	if (!(e = p[S_ENDPOINT].value)) {
		dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string", "%s: needs Endpoint", what);
		goto out;
	}
	if (p[S_DEV].value) {
		if (strcasecmp(p[S_DEV].value, "true") == 0)
			c->emulator = 1;
		else if (strcasecmp(p[S_DEV].value, "false") != 0) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
			    "%s: UseDevelopmentEmulator takes true or false", what);
			goto out;
		}
	}
	/* sb://, https:// or (the emulator) a host; REST goes over https,
	 * or plain HTTP for the emulator, which the loopback rule then
	 * confines to this machine. */
	if (strncmp(e, "sb://", 5) == 0)
		host = e + 5;
	else if (strncmp(e, "https://", 8) == 0)
		host = e + 8;
	else if (strncmp(e, "http://", 7) == 0 && c->emulator)
		host = e + 7;
	else {
		dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
		    "%s: Endpoint must be sb://<namespace>.servicebus.windows.net/", what);
		goto out;
	}
	c->host = endpoint(host);
	if (*c->host == '\0' || strchr(c->host, '/') || strchr(c->host, '?') || strchr(c->host, '@')) {
		dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
		    "%s: Endpoint must name a host and nothing else", what);
		goto out;
	}
	c->endpoint = dq_xasprintf("%s://%s", c->emulator ? "http" : "https", c->host);
	if (p[S_SAS].value) {
		if (p[S_KEY].value || p[S_KEYNAME].value) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
			    "%s: give SharedAccessKeyName and SharedAccessKey, or "
			    "SharedAccessSignature, not both", what);
			goto out;
		}
		c->sas = p[S_SAS].value;
		p[S_SAS].value = NULL;
	} else if (p[S_KEY].value && p[S_KEYNAME].value) {
		c->key_name = p[S_KEYNAME].value;
		c->key = p[S_KEY].value;
		p[S_KEYNAME].value = p[S_KEY].value = NULL;
	} else {
		dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
		    "%s: needs SharedAccessKeyName and SharedAccessKey (for managed identity "
		    "set AZURE_SERVICEBUS_NAMESPACE instead)", what);
		goto out;
	}
	if (p[S_ENTITY].value) {
		c->entity = p[S_ENTITY].value;
		p[S_ENTITY].value = NULL;
		if (!dq_safe_token(c->entity)) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_connection_string",
			    "%s: EntityPath may hold only letters, digits, '.', '_' and '-'", what);
			goto out;
		}
	}
	if (dq_cred_transport_ok(c->endpoint, what, err) < 0)
		goto out;
	rc = 0;
out:
	pairs_free(p, S_NPAIRS);
	if (rc < 0)
		dq_sb_conn_free(c);
	return rc;
}

void
dq_sb_conn_free(struct dq_sb_conn *c)
{
	if (c->key)
		dq_wipe(c->key, strlen(c->key));
	if (c->sas)
		dq_wipe(c->sas, strlen(c->sas));
	free(c->key);
	free(c->sas);
	free(c->key_name);
	free(c->entity);
	free(c->host);
	free(c->endpoint);
	memset(c, 0, sizeof *c);
}
