/*
 * request.c - the pieces of a CGI request: lengths, media types, query
 * strings, the client address, credentials, origins, the program's mount
 * point, the checks of the settings that hold lists.  Every input here is
 * hostile; every function but dq_http_discard (which reads a descriptor)
 * is pure so the fuzzer can call it.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "ingest.h"

int
dq_http_content_length(const char *s, long long *out)
{
	long long v = 0;

	if (s == NULL || *s == '\0' || strlen(s) > 18)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
	}
	*out = v;
	return 0;
}

static int
is_tchar(int c)
{
	return c > 32 && c < 127 && strchr("()<>@,;:\\\"/[]?={}", c) == NULL;
}

static const char *
skip_ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

int
dq_http_ctype(const char *ct, char *type, size_t tn, char *boundary, size_t bn)
{
	const char *p = skip_ows(ct ? ct : "");
	size_t i = 0;

	if (boundary && bn)
		boundary[0] = '\0';
	/* type "/" subtype */
	while (is_tchar((unsigned char)*p) || *p == '/') {
		if (i + 1 >= tn)
			return -1;
		type[i++] = (char)tolower((unsigned char)*p++);
	}
	type[i] = '\0';
	if (i == 0 || strchr(type, '/') == NULL)
		return -1;
	for (;;) {
		char pname[64], pval[256];
		size_t ni = 0, vi = 0;

		p = skip_ows(p);
		if (*p == '\0')
			return 0;
		if (*p++ != ';')
			return -1;
		p = skip_ows(p);
		if (*p == '\0')
			return 0;	/* a trailing ';' is tolerated */
		while (is_tchar((unsigned char)*p)) {
			if (ni + 1 >= sizeof pname)
				return -1;
			pname[ni++] = (char)tolower((unsigned char)*p++);
		}
		pname[ni] = '\0';
		if (ni == 0 || *p++ != '=')
			return -1;
		if (*p == '"') {
			for (p++; *p != '"'; p++) {
				if (*p == '\0')
					return -1;
				if (*p == '\\' && p[1] != '\0')
					p++;
				if (vi + 1 >= sizeof pval)
					return -1;
				pval[vi++] = *p;
			}
			p++;
		} else {
			while (is_tchar((unsigned char)*p)) {
				if (vi + 1 >= sizeof pval)
					return -1;
				pval[vi++] = *p++;
			}
		}
		pval[vi] = '\0';
		if (strcmp(pname, "boundary") == 0 && boundary) {
			/* RFC 2046: 1..70 characters, no trailing space. */
			if (vi == 0 || vi > 70 || vi + 1 > bn || pval[vi - 1] == ' ')
				return -1;
			if (boundary[0] != '\0')
				return -1;	/* two boundaries */
			memcpy(boundary, pval, vi + 1);
		}
	}
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Percent-decode [s, s+n) into a new string; -1 on a bad escape or NUL. */
static int
pct_decode(const char *s, size_t n, size_t max, char **out, size_t *outlen)
{
	char *d;
	size_t i, j = 0;

	d = dq_xmalloc(n + 1);
	for (i = 0; i < n; i++) {
		int c = (unsigned char)s[i];

		if (c == '+')
			c = ' ';
		else if (c == '%') {
			int h, l;

			if (i + 2 >= n)
				goto bad;
			h = hexval((unsigned char)s[i + 1]);
			l = hexval((unsigned char)s[i + 2]);
			if (h < 0 || l < 0)
				goto bad;
			c = h * 16 + l;
			i += 2;
		}
		if (c == 0 || j >= max)
			goto bad;
		d[j++] = (char)c;
	}
	d[j] = '\0';
	*out = d;
	if (outlen)
		*outlen = j;
	return 0;
bad:
	free(d);
	return -1;
}

int
dq_http_query(const char *qs, const char *name, size_t max, char **out, size_t *outlen)
{
	const char *p = qs ? qs : "";
	size_t nlen = strlen(name);
	int found = 0;

	*out = NULL;
	while (*p) {
		const char *amp = strchr(p, '&'), *eq;
		size_t len = amp ? (size_t)(amp - p) : strlen(p);
		char *key;
		size_t klen;

		eq = memchr(p, '=', len);
		if (pct_decode(p, eq ? (size_t)(eq - p) : len, 256, &key, &klen) == 0) {
			if (klen == nlen && memcmp(key, name, nlen) == 0) {
				free(key);
				if (found)
					goto bad;	/* duplicated */
				found = 1;
				if (pct_decode(eq ? eq + 1 : p + len,
				    eq ? len - (size_t)(eq - p) - 1 : 0, max, out, outlen) < 0)
					goto bad;
			} else
				free(key);
		} else
			goto bad;
		p += len;
		if (*p == '&')
			p++;
	}
	return found;
bad:
	free(*out);
	*out = NULL;
	return -1;
}

/* Parse an address, or a CIDR block when bits is given; family or -1. */
static int
parse_addr(const char *s, size_t n, unsigned char a[16], int *bits)
{
	char buf[64];
	const char *slash;
	int fam;

	if (n == 0 || n >= sizeof buf)
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	slash = strchr(buf, '/');
	if (slash) {
		char *end;
		long b;

		if (bits == NULL)
			return -1;
		errno = 0;
		b = strtol(slash + 1, &end, 10);
		if (*end != '\0' || end == slash + 1 || b < 0 || b > 128)
			return -1;
		*bits = (int)b;
		buf[slash - buf] = '\0';
	} else if (bits)
		*bits = -1;
	if (inet_pton(AF_INET, buf, a) == 1)
		fam = AF_INET;
	else if (inet_pton(AF_INET6, buf, a) == 1)
		fam = AF_INET6;
	else
		return -1;
	if (bits && *bits > (fam == AF_INET ? 32 : 128))
		return -1;
	if (bits && *bits < 0)
		*bits = fam == AF_INET ? 32 : 128;
	return fam;
}

static void
trim(const char **s, size_t *n)
{
	while (*n && (**s == ' ' || **s == '\t'))
		(*s)++, (*n)--;
	while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
		(*n)--;
}

/* The next entry of a comma-separated list, trimmed (maybe empty): 1, or 0
 * at the end; *p moves past it and its comma. */
static int
list_next(const char **p, const char **e, size_t *elen)
{
	const char *c;
	size_t len;

	if (**p == '\0')
		return 0;
	c = strchr(*p, ',');
	len = c ? (size_t)(c - *p) : strlen(*p);
	*e = *p;
	*elen = len;
	trim(e, elen);
	*p += len;
	if (**p == ',')
		(*p)++;
	return 1;
}

static int
addr_in_n(const char *addr, size_t alen, const char *list)
{
	unsigned char a[16], b[16];
	int fa, bits;
	const char *p = list, *e;
	size_t elen;

	if (list == NULL)
		return 0;
	trim(&addr, &alen);
	if ((fa = parse_addr(addr, alen, a, NULL)) < 0)
		return 0;
	while (list_next(&p, &e, &elen)) {
		if (parse_addr(e, elen, b, &bits) == fa) {
			int full = bits / 8, rest = bits % 8;

			if (memcmp(a, b, (size_t)full) == 0 && (rest == 0 ||
			    ((a[full] ^ b[full]) & (0xff << (8 - rest)) & 0xff) == 0))
				return 1;
		}
	}
	return 0;
}

int
dq_http_addr_in(const char *addr, const char *list)
{
	return addr ? addr_in_n(addr, strlen(addr), list) : 0;
}

void
dq_http_client_addr(const char *remote_addr, const char *xff,
    const char *trusted, char *out, size_t n)
{
	const char *use = remote_addr ? remote_addr : "";
	size_t len = strlen(use);

	if (n == 0)
		return;
	if (xff && trusted && *trusted && dq_http_addr_in(use, trusted)) {
		/* From the right: each entry was added by the hop after it. */
		const char *end = xff + strlen(xff);

		for (;;) {
			const char *start = end, *e;
			size_t elen;
			unsigned char tmp[16];

			while (start > xff && start[-1] != ',')
				start--;
			e = start;
			elen = (size_t)(end - start);
			trim(&e, &elen);
			if (parse_addr(e, elen, tmp, NULL) < 0)
				break;	/* garbage: keep the last good hop */
			use = e;
			len = elen;
			if (!addr_in_n(e, elen, trusted) || start == xff)
				break;
			end = start - 1;
		}
	}
	if (len >= n)
		len = n - 1;
	memcpy(out, use, len);
	out[len] = '\0';
}

const char *
dq_http_credential(const char *x_api_key, const char *authorization, size_t *len)
{
	if (x_api_key && *x_api_key) {
		*len = strlen(x_api_key);
		return x_api_key;
	}
	if (authorization && strncasecmp(authorization, "Bearer ", 7) == 0) {
		const char *t = skip_ows(authorization + 7);
		size_t n = strlen(t);

		while (n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
			n--;
		if (n) {
			*len = n;
			return t;
		}
	}
	*len = 0;
	return NULL;
}

int
dq_http_auth(const char *api_keys, const char *cred, size_t credlen,
    char *name, size_t n)
{
	char want[65], got[65];
	const char *p = api_keys, *e;
	size_t elen;
	int ok = 0;

	if (n)
		name[0] = '\0';
	if (api_keys == NULL || cred == NULL)
		return 0;
	/* Hashes first: equal lengths, so the comparison leaks no length. */
	dq_sha256_hex(cred, credlen, got);
	while (list_next(&p, &e, &elen)) {
		const char *colon, *secret;
		size_t slen, nlen = 0;

		colon = memchr(e, ':', elen);
		secret = colon ? colon + 1 : e;
		slen = colon ? elen - (size_t)(colon - e) - 1 : elen;
		if (colon)
			nlen = (size_t)(colon - e);
		if (slen > 0) {
			dq_sha256_hex(secret, slen, want);
			if (dq_ct_equal(want, 64, got, 64) && !ok) {
				ok = 1;
				if (nlen >= n)
					nlen = n ? n - 1 : 0;
				if (n) {
					memcpy(name, e, nlen);
					name[nlen] = '\0';
				}
			}
		}
	}
	dq_wipe(want, sizeof want);
	dq_wipe(got, sizeof got);
	return ok;
}

int
dq_http_origin_allowed(const char *allowlist, const char *origin)
{
	const char *p = allowlist, *e;
	size_t olen, elen;

	if (allowlist == NULL || origin == NULL || *origin == '\0')
		return 0;
	olen = strlen(origin);
	while (list_next(&p, &e, &elen))
		if (elen == olen && memcmp(e, origin, olen) == 0)
			return 1;
	return 0;
}

int
dq_http_idem_key_valid(const char *s)
{
	size_t n = 0;

	if (s == NULL)
		return 0;
	for (; *s; s++, n++)
		if (*s < 33 || *s > 126 || n >= 255)
			return 0;
	return n > 0;
}

int
dq_http_script_path(const char *script_name, char *out, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i, j = 0, len;

	if (script_name == NULL || (*script_name != '\0' && *script_name != '/'))
		return -1;
	len = strlen(script_name);
	while (len > 0 && script_name[len - 1] == '/')
		len--;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)script_name[i];

		/* RFC 3986 pchar and '/', less '%': SCRIPT_NAME is decoded. */
		if ((c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z') ||
		    strchr("-._~!$&'()*+,;=:@/", c)) {
			if (j + 1 >= n)
				return -1;
			out[j++] = (char)c;
		} else {
			if (j + 3 >= n)
				return -1;
			out[j++] = '%';
			out[j++] = hex[c >> 4];
			out[j++] = hex[c & 15];
		}
	}
	if (n == 0)
		return -1;
	out[j] = '\0';
	return 0;
}

long long
dq_http_discard(int fd, long long want, int64_t deadline_ms, int *eof)
{
	char buf[65536];
	long long got = 0;

	*eof = 0;
	while (want < 0 || got < want) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int64_t left = deadline_ms - dq_now_ms();
		size_t n = want < 0 || want - got > (long long)sizeof buf ?
		    sizeof buf : (size_t)(want - got);
		ssize_t r;

		if (left <= 0)
			break;
		if ((r = poll(&p, 1, left > 1000 ? 1000 : (int)left)) < 0 && errno != EINTR)
			break;
		if (r <= 0)
			continue;
		if ((r = read(fd, buf, n)) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			break;
		}
		if (r == 0) {
			*eof = 1;
			break;
		}
		got += r;
	}
	return got;
}

/* An entry of DQ_TRUSTED_PROXY: an address or a CIDR block. */
int
dq_http_proxy_entry_ok(const char *s, size_t n)
{
	unsigned char a[16];
	int bits;

	return parse_addr(s, n, a, &bits) >= 0;
}

/* An entry of CORS_ORIGINS as browsers send Origin: http(s)://host[:port]. */
int
dq_http_origin_entry_ok(const char *s, size_t n)
{
	size_t i, host;

	if (n > 8 && strncmp(s, "https://", 8) == 0)
		host = i = 8;
	else if (n > 7 && strncmp(s, "http://", 7) == 0)
		host = i = 7;
	else
		return 0;
	if (s[i] == '[') {
		while (i < n && s[i] != ']')
			if (!(isxdigit((unsigned char)s[i]) || s[i] == ':' || s[i] == '.' ||
			    s[i] == '['))
				return 0;
			else
				i++;
		if (i == n)
			return 0;
		i++;
	} else
		while (i < n && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
		    s[i] == '-' || s[i] == '.'))
			i++;
	if (i == host)
		return 0;
	if (i < n && s[i] == ':') {
		size_t p = ++i;

		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == p || i - p > 5)
			return 0;
	}
	return i == n;
}

/* An entry of API_KEY: "name:secret" or a bare secret, never empty. */
int
dq_http_key_entry_ok(const char *s, size_t n)
{
	const char *colon = memchr(s, ':', n);

	return colon ? (size_t)(colon - s) + 1 < n : n > 0;
}

int
dq_http_list_check(const char *list, int (*ok)(const char *, size_t),
    char *bad, size_t n)
{
	const char *p = list ? list : "", *e;
	size_t elen;

	while (list_next(&p, &e, &elen)) {
		if (!ok(e, elen)) {
			if (n) {
				if (elen >= n)
					elen = n - 1;
				memcpy(bad, e, elen);
				bad[elen] = '\0';
			}
			return -1;
		}
	}
	return 0;
}
