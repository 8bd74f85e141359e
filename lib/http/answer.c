/*
 * answer.c - reading an HTTP answer, and the loopback rule: what needs
 * no libcurl, so that a program that links these links no libcurl.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dq.h"

const char *
dq_http_header(const struct dq_http_resp *resp, const char *name)
{
	size_t n = strlen(name);

	/* the last one wins: a retried answer's headers follow none of another's */
	for (size_t i = resp->nhdr; i-- > 0;) {
		const char *h = resp->hdr[i];

		if (strncasecmp(h, name, n) == 0 && h[n] == ':')
			return h + n + 1 + strspn(h + n + 1, " \t");
	}
	return NULL;
}

void
dq_http_resp_free(struct dq_http_resp *resp)
{
	if (!resp)
		return;
	for (size_t i = 0; i < resp->nhdr; i++)
		free(resp->hdr[i]);
	free(resp->hdr);
	free(resp->body);
	resp->hdr = NULL;
	resp->nhdr = 0;
	resp->body = NULL;
	resp->body_len = 0;
}

int
dq_http_loopback(const char *host)
{
	char buf[64];
	size_t n;
	struct in_addr a4;
	struct in6_addr a6;

	if (!host)
		return 0;
	n = strlen(host);
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
		host++;
		n -= 2;
	}
	if (n == 0 || n >= sizeof buf)
		return 0;
	memcpy(buf, host, n);
	buf[n] = '\0';
	if (strcasecmp(buf, "localhost") == 0)
		return 1;
	if (inet_pton(AF_INET, buf, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, buf, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return 0;
}
