/* dq-ingest - the ingest API (DESIGN §5) as a CGI/1.1 program and a FastCGI responder. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "dq.h"
#include "ingest.h"
/* Last: from here on stdin, stdout and printf are the request's. */
#include <fcgi_stdio.h>

/* Before FCGI_Accept the stdio names are unusable: plain descriptors. */
static void
usage(const char *why)
{
	if (why)
		dprintf(2, "%s: %s\n", dq_prog, why);
	dprintf(why ? 2 : 1,
	    "usage: %s [--print-config] [--version]\n"
	    "  a CGI/1.1 program (or FastCGI responder) run by a web server;\n"
	    "  see dq-ingest(1)\n", dq_prog);
	exit(why ? DQ_EX_USAGE : 0);
}

static long
read_body(void *buf, size_t n, void *arg)
{
	size_t got = fread(buf, 1, n, stdin);

	return got == 0 && ferror(stdin) ? -1 : (long)got;
}

static void
respond(const struct dq_response *r)
{
	printf("Status: %d %s\r\n", r->status, dq_http_reason(r->status));
	if (r->headers)
		fwrite(r->headers, 1, r->hlen, stdout);
	/* libfcgi's printf knows no %zu. */
	printf("Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
	    "Content-Length: %lu\r\n\r\n", (unsigned long)r->blen);
	if (r->blen)
		fwrite(r->body, 1, r->blen, stdout);
	fflush(stdout);
}

/* A header the client may choose, fit for a log: token characters only. */
static const char *
loggable(const char *s)
{
	size_t i;

	if (s == NULL)
		return NULL;
	for (i = 0; s[i]; i++)
		if (i >= 64 || !(s[i] == '-' || s[i] == '_' || s[i] == '.' ||
		    (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z') ||
		    (s[i] >= 'a' && s[i] <= 'z')))
			return NULL;
	return i ? s : NULL;
}

/* A client-chosen string made safe for both log forms: printable ASCII. */
static const char *
printable(const char *s, char *buf, size_t n)
{
	size_t i;

	for (i = 0; s && s[i] && i + 1 < n; i++)
		buf[i] = s[i] > 32 && s[i] < 127 ? s[i] : '?';
	buf[i] = '\0';
	return buf;
}

static void
serve(struct dq_ingest *in, int configured, int httpoxy)
{
	struct dq_request q = { 0 };
	struct dq_response r;
	char method[16], path[160];
	int64_t t0 = dq_now_ms();

	/* httpoxy: a "Proxy:" request header must never become a proxy. */
	if (httpoxy || getenv("HTTP_PROXY")) {
		unsetenv("HTTP_PROXY");
		dq_log(DQ_WARNING, "httpoxy", NULL, "ignored a Proxy request header");
	}
	q.method = getenv("REQUEST_METHOD");
	q.path_info = getenv("PATH_INFO");
	q.query = getenv("QUERY_STRING");
	q.content_type = getenv("CONTENT_TYPE");
	q.content_length = getenv("CONTENT_LENGTH");
	q.remote_addr = getenv("REMOTE_ADDR");
	q.forwarded_for = getenv("HTTP_X_FORWARDED_FOR");
	q.origin = getenv("HTTP_ORIGIN");
	q.api_key = getenv("HTTP_X_API_KEY");
	q.authorization = getenv("HTTP_AUTHORIZATION");
	q.idempotency_key = getenv("HTTP_IDEMPOTENCY_KEY");
	q.read = read_body;
	if (configured)
		dq_ingest_handle(in, &q, &r);
	else {
		memset(&r, 0, sizeof r);
		r.status = 500;
		snprintf(r.code, sizeof r.code, "config");
		r.body = dq_xstrdup("{\"error\":{\"code\":\"internal\","
		    "\"message\":\"the server is misconfigured\"}}\n");
		r.blen = strlen(r.body);
	}
	respond(&r);
	dq_log(r.status >= 500 ? DQ_ERROR : DQ_INFO, "request",
	    json_pack("{s:s*,s:s,s:s,s:i,s:I,s:s*,s:s*,s:s*}",
	    "image_id", r.image_id[0] ? r.image_id : NULL,
	    "method", printable(q.method, method, sizeof method),
	    "path", printable(q.path_info, path, sizeof path),
	    "http_status", r.status, "duration_ms", (json_int_t)(dq_now_ms() - t0),
	    "client", r.client[0] ? printable(r.client, r.client, sizeof r.client) : NULL,
	    "code", r.code[0] ? r.code : NULL,
	    "request_id", loggable(getenv("HTTP_X_REQUEST_ID"))),
	    "%s %s: %d", method, path, r.status);
	dq_response_free(&r);
}

int
main(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "print-config", no_argument, NULL, 'P' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct dq_ingest in = { 0 };
	struct dq_err err;
	char *tmpdir = NULL;
	int c, configured, httpoxy;

	dq_init(argv[0]);
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1)
		switch (c) {
		case 'h': usage(NULL); break;
		case 'P': dq_cli_config(); dq_cli_print_config(); break;
		case 'V': dq_cli_version(); break;
		default: usage("unknown option");
		}
	argc -= optind;
	argv += optind;
	if (argc > 0)
		usage("no arguments expected");
	/* Before anything could read it: a CGI request's Proxy header. */
	httpoxy = getenv("HTTP_PROXY") != NULL;
	unsetenv("HTTP_PROXY");
	if (getenv("GATEWAY_INTERFACE") == NULL && FCGX_IsCGI())
		usage("not started by a web server (no CGI environment)");
	/* Read before the first FastCGI accept replaces the environment:
	 * the configuration, and the log settings (read on first use). */
	dq_log_enabled(DQ_INFO);
	if (!(configured = dq_config_load(&err) == 0))
		dq_log_err(DQ_ERROR, "config", NULL, &err);
	if (getenv("TMPDIR"))
		in.tmpdir = tmpdir = dq_xstrdup(getenv("TMPDIR"));
	while (FCGI_Accept() >= 0) {
		serve(&in, configured, httpoxy);
		httpoxy = 0;
	}
	dq_ingest_close(&in);
	free(tmpdir);
	return 0;
}
