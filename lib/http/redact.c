/*
 * redact.c - the one place that knows what is secret (DESIGN §6).
 *
 * Every URL, header and body fragment that the HTTP and credential layers
 * put in a log line, a record or an error message passes through here.
 * URLs are redacted by an allowlist: a query value is shown only when its
 * name is known to be harmless (api-version, comp, ...), so a SAS of any
 * form (sig, se, skoid, sktid, ...) and a parameter added later are hidden
 * by default.  Headers and free text are redacted by a list of what is
 * known to carry secrets; free text is a last defence (an error body that
 * echoes a credential), not the first.  No libcurl here: --print-config
 * and the credential layer use it without the network.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dq.h"

#define REDACTED "REDACTED"

/* Query parameters whose values are shown (Blob, Service Bus, identity, OpenAI). */
static const char *const harmless[] = {
	"api-version", "restype", "comp", "timeout", "blockid", "prefix", "delimiter",
	"maxresults", "marker", "include", "showonly", "snapshot", "versionid",
	"resource", "client_id", "clientid", "object_id", "principal_id",
	"mi_res_id", "msi_res_id",
};

/* Query parameters that make a URL a credential (SAS and the like). */
static const char *const secret_params[] = {
	"sig", "signature", "skoid", "sktid", "skn", "api-key", "key", "code", "token",
	"access_token", "client_secret", "client_assertion", "password", "secret",
};

/* Free-text markers whose following value is hidden. */
static const char *const markers[] = {
	"Bearer ", "SharedKey ", "SharedAccessSignature ", "sig=", "signature=",
	"AccountKey=", "SharedAccessKey=", "api-key", "apikey", "access_token",
	"refresh_token", "client_secret", "client_assertion", "password", "x-identity-header",
};

static int
in_list(const char *name, size_t n, const char *const *list, size_t count)
{
	for (size_t i = 0; i < count; i++)
		if (strlen(list[i]) == n && strncasecmp(name, list[i], n) == 0)
			return 1;
	return 0;
}

int
dq_redact_header_secret(const char *name)
{
	static const char *const named[] = {
		"cookie", "set-cookie", "x-identity-header", "secret", "metadata-secret",
	};
	size_t n = strcspn(name, ":");

	if (in_list(name, n, named, sizeof named / sizeof named[0]))
		return 1;
	/* Authorization, Proxy-Authorization, ServiceBusAuthorization,
	 * x-ms-copy-source-authorization ... */
	for (size_t i = 0; i + 13 <= n; i++)
		if (strncasecmp(name + i, "authorization", 13) == 0)
			return 1;
	/* api-key, x-api-key, x-ms-encryption-key, Ocp-Apim-Subscription-Key ... */
	if ((n >= 4 && strncasecmp(name + n - 4, "-key", 4) == 0) ||
	    (n == 3 && strncasecmp(name, "key", 3) == 0))
		return 1;
	return 0;
}

/* Append s[0..n) to buf of size cap at *at, cut at the end. */
static void
put(char *buf, size_t cap, size_t *at, const char *s, size_t n)
{
	if (*at + 1 >= cap)
		return;
	if (n > cap - 1 - *at)
		n = cap - 1 - *at;
	memcpy(buf + *at, s, n);
	*at += n;
	buf[*at] = '\0';
}

char *
dq_redact_url(const char *url, char *buf, size_t n)
{
	const char *p = url, *auth, *end, *q;
	size_t at = 0;

	if (n == 0)
		return buf;
	buf[0] = '\0';
	if (!url)
		return buf;
	/* scheme://userinfo@host: the userinfo goes */
	if ((auth = strstr(url, "://"))) {
		auth += 3;
		end = auth + strcspn(auth, "/?#");
		put(buf, n, &at, url, (size_t)(auth - url));
		if ((q = memchr(auth, '@', (size_t)(end - auth)))) {
			put(buf, n, &at, REDACTED "@", strlen(REDACTED) + 1);
			auth = q + 1;
		}
		p = auth;
	}
	end = p + strcspn(p, "?#");
	put(buf, n, &at, p, (size_t)(end - p));
	if (*end != '?')
		return buf;	/* a fragment is dropped */
	p = end + 1;
	put(buf, n, &at, "?", 1);
	while (*p && *p != '#') {
		size_t len = strcspn(p, "&#"), name = strcspn(p, "=&#");

		if (name < len && !in_list(p, name, harmless, sizeof harmless / sizeof harmless[0])) {
			put(buf, n, &at, p, name + 1);
			put(buf, n, &at, REDACTED, strlen(REDACTED));
		} else
			put(buf, n, &at, p, len);
		p += len;
		if (*p == '&') {
			put(buf, n, &at, "&", 1);
			p++;
		}
	}
	return buf;
}

int
dq_redact_url_secret(const char *url)
{
	const char *q, *auth, *end;

	if (!url)
		return 0;
	if ((auth = strstr(url, "://"))) {
		auth += 3;
		end = auth + strcspn(auth, "/?#");
		if (memchr(auth, '@', (size_t)(end - auth)))
			return 1;
	}
	if (!(q = strchr(url, '?')))
		return 0;
	for (q++; *q && *q != '#';) {
		size_t len = strcspn(q, "&#"), name = strcspn(q, "=&#");

		if (in_list(q, name < len ? name : len, secret_params,
		    sizeof secret_params / sizeof secret_params[0]))
			return 1;
		q += len;
		if (*q == '&')
			q++;
	}
	return 0;
}

char *
dq_redact_text(const char *text)
{
	/* a value of at least 1 byte after a marker of at least 4 becomes
	 * REDACTED: the text at most triples */
	size_t cap = strlen(text) * 3 + sizeof REDACTED + 16, at = 0;
	char *out = dq_xmalloc(cap);
	const char *p = text;

	out[0] = '\0';
	while (*p) {
		size_t best = 0, mlen = 0;
		const char *hit = NULL;

		for (size_t i = 0; i < sizeof markers / sizeof markers[0]; i++) {
			const char *h = strcasestr(p, markers[i]);

			if (h && (!hit || h < hit)) {
				hit = h;
				mlen = strlen(markers[i]);
				best = i;
			}
		}
		if (!hit) {
			put(out, cap, &at, p, strlen(p));
			break;
		}
		put(out, cap, &at, p, (size_t)(hit - p) + mlen);
		p = hit + mlen;
		/* the separators, then the value: up to a space, a quote or a delimiter */
		{
			size_t sep = strspn(p, " \t:=\"'"), val;
			const char *stop = markers[best][mlen - 1] == '=' ? " \t\r\n\"'<>,;&" : " \t\r\n\"'<>,;";

			put(out, cap, &at, p, sep);
			p += sep;
			val = strcspn(p, stop);
			if (val > 0) {
				put(out, cap, &at, REDACTED, strlen(REDACTED));
				p += val;
			}
		}
	}
	return out;
}
