/*
 * sign.c - Shared Key signatures for Blob Storage and SAS tokens for
 * Service Bus, as functions over plain inputs (azure-protocols.md §1.3,
 * §2.6), and the one rule for where a credential may be sent.
 *
 * Shared Key signs the request as it goes on the wire, so its input is the
 * request as the backend hands it to libcurl: the verb, the URL and the
 * header lines ("Name: value").  A header written "Name:" with nothing
 * after the colon is libcurl's way of removing one, so it is not sent and
 * signs as absent; "Name;" sends it empty and signs as empty.  The caller
 * sends every signed header itself (Content-Type and Content-Length
 * included, and "Expect:" to keep libcurl from adding one).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "dq.h"

char *
dq_url_encode(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = dq_xmalloc(3 * strlen(s) + 1), *o = out;

	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~')
			*o++ = (char)*p;
		else {
			*o++ = '%';
			*o++ = hex[*p >> 4];
			*o++ = hex[*p & 15];
		}
	*o = '\0';
	return out;
}

static int
unhex(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decode n bytes of s ('+' stays '+': dq percent-encodes it). */
static char *
url_decode(const char *s, size_t n)
{
	char *out = dq_xmalloc(n + 1), *o = out;

	for (size_t i = 0; i < n; i++)
		if (s[i] == '%' && i + 2 < n && unhex(s[i + 1]) >= 0 && unhex(s[i + 2]) >= 0) {
			*o++ = (char)(unhex(s[i + 1]) * 16 + unhex(s[i + 2]));
			i += 2;
		} else
			*o++ = s[i];
	*o = '\0';
	return out;
}

int
dq_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len,
    unsigned char mac[static 32])
{
	size_t n = 0;

	return EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, keylen, msg, len,
	    mac, 32, &n) && n == 32 ? 0 : -1;
}

/* A growing string. */
struct buf {
	char *s;
	size_t len, cap;
};

static void
put(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->s = dq_xrealloc(b->s, b->cap);
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void
puts0(struct buf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* The standard headers of the string to sign, in its order. */
static const char *const standard[] = {
	"Content-Encoding", "Content-Language", "Content-Length", "Content-MD5",
	"Content-Type", "Date", "If-Modified-Since", "If-Match", "If-None-Match",
	"If-Unmodified-Since", "Range",
};
#define NSTANDARD (sizeof standard / sizeof standard[0])

struct hdr {
	char *name;		/* lowercased */
	char *value;		/* trimmed, runs of white space made one space */
};

static int
hdr_cmp(const void *a, const void *b)
{
	return strcmp(((const struct hdr *)a)->name, ((const struct hdr *)b)->name);
}

/* Split "Name: value" / "Name;" into h; 0 for a header not sent. */
static int
hdr_parse(const char *line, struct hdr *h)
{
	const char *colon = strchr(line, ':'), *semi = strchr(line, ';'), *v;
	size_t nl;
	char *o;

	if (colon && (!semi || colon < semi)) {
		nl = (size_t)(colon - line);
		v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		if (*v == '\0')
			return 0;	/* libcurl: remove the header */
	} else if (semi && semi[1] == '\0') {
		nl = (size_t)(semi - line);
		v = "";
	} else
		return -1;
	h->name = dq_xmalloc(nl + 1);
	for (size_t i = 0; i < nl; i++)
		h->name[i] = (char)tolower((unsigned char)line[i]);
	h->name[nl] = '\0';
	h->value = o = dq_xmalloc(strlen(v) + 1);
	for (; *v; v++)
		if (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n') {
			if (o > h->value && o[-1] != ' ')
				*o++ = ' ';
		} else
			*o++ = *v;
	while (o > h->value && o[-1] == ' ')
		o--;
	*o = '\0';
	return 1;
}

/* The query's parameters, one a line as CanonicalizedResource has them. */
static void
canonical_query(struct buf *b, const char *q)
{
	struct hdr *p = NULL;
	size_t n = 0, cap = 0;

	while (q && *q) {
		size_t len = strcspn(q, "&");
		const char *eq = memchr(q, '=', len);

		if (len > 0) {
			if (n == cap)
				p = dq_xrealloc(p, (cap = cap ? 2 * cap : 8) * sizeof *p);
			p[n].name = url_decode(q, eq ? (size_t)(eq - q) : len);
			for (char *c = p[n].name; *c; c++)
				*c = (char)tolower((unsigned char)*c);
			p[n].value = eq ? url_decode(eq + 1, len - (size_t)(eq + 1 - q)) : dq_xstrdup("");
			n++;
		}
		q += len + (q[len] == '&');
	}
	/* By name, and a name's values sorted too, joined with ','. */
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0; j--) {
			int c = strcmp(p[j - 1].name, p[j].name);

			if (c < 0 || (c == 0 && strcmp(p[j - 1].value, p[j].value) <= 0))
				break;
			struct hdr t = p[j - 1];
			p[j - 1] = p[j];
			p[j] = t;
		}
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && strcmp(p[i - 1].name, p[i].name) == 0) {
			puts0(b, ",");
		} else {
			puts0(b, "\n");
			puts0(b, p[i].name);
			puts0(b, ":");
		}
		puts0(b, p[i].value);
	}
	for (size_t i = 0; i < n; i++) {
		free(p[i].name);
		free(p[i].value);
	}
	free(p);
}

char *
dq_sharedkey_string_to_sign(const char *verb, const char *account, const char *url,
    const char *const *headers, struct dq_err *err)
{
	struct buf b = { 0 };
	struct hdr *h = NULL;
	size_t n = 0, nh = 0;
	const char *p, *path, *query;
	char *ok = NULL;

	while (headers && headers[nh])
		nh++;
	h = dq_xcalloc(nh ? nh : 1, sizeof *h);
	for (size_t i = 0; i < nh; i++) {
		int r = hdr_parse(headers[i], &h[n]);

		if (r < 0) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_request", "Shared Key: a header line "
			    "is not 'Name: value' or 'Name;'");
			goto out;
		}
		n += (size_t)r;
	}
	/* The path as sent: after scheme://authority, up to the query. */
	if (!(p = strstr(url, "://"))) {
		dq_err_system(err, DQ_EX_CONFIG, "bad_request", "Shared Key: not a URL");
		goto out;
	}
	path = p + 3 + strcspn(p + 3, "/?");
	query = strchr(path, '?');
	for (const char *v = verb; *v; v++) {
		char c = (char)toupper((unsigned char)*v);

		put(&b, &c, 1);
	}
	puts0(&b, "\n");
	for (size_t s = 0; s < NSTANDARD; s++) {
		const char *value = "";

		for (size_t i = 0; i < n; i++)
			if (strcasecmp(h[i].name, standard[s]) == 0)
				value = h[i].value;
		/* From 2015-02-21 a zero Content-Length signs as empty. */
		if (strcmp(standard[s], "Content-Length") == 0 && strcmp(value, "0") == 0)
			value = "";
		puts0(&b, value);
		puts0(&b, "\n");
	}
	qsort(h, n, sizeof *h, hdr_cmp);
	for (size_t i = 0; i < n; i++) {
		if (strncmp(h[i].name, "x-ms-", 5) != 0)
			continue;
		if (i + 1 < n && strcmp(h[i].name, h[i + 1].name) == 0) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_request",
			    "Shared Key: header %s given twice", h[i].name);
			goto out;
		}
		puts0(&b, h[i].name);
		puts0(&b, ":");
		puts0(&b, h[i].value);
		puts0(&b, "\n");
	}
	puts0(&b, "/");
	puts0(&b, account);
	if (query)
		put(&b, path, (size_t)(query - path));
	else
		puts0(&b, *path ? path : "/");
	if (query)
		canonical_query(&b, query + 1);
	ok = b.s;
	b.s = NULL;
out:
	for (size_t i = 0; i < n; i++) {
		free(h[i].name);
		free(h[i].value);
	}
	free(h);
	free(b.s);
	return ok;
}

char *
dq_sharedkey_authorization(const unsigned char *key, size_t keylen, const char *verb,
    const char *account, const char *url, const char *const *headers, struct dq_err *err)
{
	unsigned char mac[32];
	char *sts, *sig, *auth;

	if (!(sts = dq_sharedkey_string_to_sign(verb, account, url, headers, err)))
		return NULL;
	if (dq_hmac_sha256(key, keylen, sts, strlen(sts), mac) < 0) {
		free(sts);
		dq_err_system(err, DQ_EX_TEMPFAIL, "crypto", "HMAC-SHA256 failed");
		return NULL;
	}
	free(sts);
	sig = dq_base64_encode(mac, sizeof mac);
	auth = dq_xasprintf("SharedKey %s:%s", account, sig);
	dq_wipe(mac, sizeof mac);
	dq_wipe(sig, strlen(sig));
	free(sig);
	return auth;
}

char *
dq_sas_token(const char *resource_uri, const char *key_name, const char *key,
    long long expiry)
{
	char *sr = dq_url_encode(resource_uri), *sts, *sig, *esig, *skn, *tok;
	unsigned char mac[32];

	sts = dq_xasprintf("%s\n%lld", sr, expiry);
	/* The key as written is the HMAC key: it is not base64-decoded. */
	if (dq_hmac_sha256(key, strlen(key), sts, strlen(sts), mac) < 0)
		dq_die(DQ_EX_TEMPFAIL, "HMAC-SHA256 failed");
	sig = dq_base64_encode(mac, sizeof mac);
	esig = dq_url_encode(sig);
	skn = dq_url_encode(key_name);
	tok = dq_xasprintf("SharedAccessSignature sr=%s&sig=%s&se=%lld&skn=%s", sr, esig,
	    expiry, skn);
	dq_wipe(mac, sizeof mac);
	dq_wipe(sig, strlen(sig));
	dq_wipe(esig, strlen(esig));
	free(sr);
	free(sts);
	free(sig);
	free(esig);
	free(skn);
	return tok;
}

/*
 * The one rule for where a credential may go (DESIGN §6): https, or plain
 * http to this machine's loopback (Azurite, the emulator, a platform's
 * identity endpoint on localhost), as dq_http_loopback() knows it.
 * Decided from the URL before any connection is made.
 */
int
dq_cred_transport_ok(const char *url, const char *what, struct dq_err *err)
{
	char host[256];
	const char *h;
	size_t n;

	if (strncasecmp(url, "https://", 8) == 0)
		return 0;
	if (strncasecmp(url, "http://", 7) == 0) {
		h = url + 7;
		n = strcspn(h, "/?#");
		/* userinfo would hide the host: never loopback */
		if (!memchr(h, '@', n)) {
			if (*h == '[') {
				const char *close = memchr(h, ']', n);

				n = close ? (size_t)(close - h) + 1 : 0;
			} else
				n = strcspn(h, ":/?#");
			if (n > 0 && n < sizeof host) {
				memcpy(host, h, n);
				host[n] = '\0';
				if (dq_http_loopback(host))
					return 0;
			}
		}
	}
	dq_err_system(err, DQ_EX_CONFIG, "insecure_transport",
	    "%s: credentials are sent only over https:// (plain http:// only to "
	    "127.0.0.1, ::1 or localhost)", what);
	return -1;
}
