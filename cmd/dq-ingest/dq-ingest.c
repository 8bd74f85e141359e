/* dq-ingest - the ingest API (DESIGN §5) as a CGI/1.1 program and a FastCGI responder. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dq.h"
#include "ingest/ingest.h"
/* Last: from here on stdin, stdout, stderr and printf are the request's. */
#include <fcgi_stdio.h>

/* The most of a refused CGI body read and thrown away (see discard_rest). */
#define DISCARD_MAX (64LL * 1024 * 1024)

static const char synopsis[] =
    "usage: dq-ingest [--check] [--print-config] [--version]\n"
    "  a CGI/1.1 program (or FastCGI responder) run by a web server;\n"
    "  see dq-ingest(1)\n";

/* The request body as read so far; a CGI body is read from fd 0 itself,
 * so that what is left can be thrown away with a deadline. */
struct body {
	int cgi;
	long long got;
};

static long
read_body(void *buf, size_t n, void *arg)
{
	struct body *b = arg;
	long got;

	if (b->cgi) {
		ssize_t r;

		while ((r = read(0, buf, n)) < 0 && errno == EINTR)
			;
		got = (long)r;
	} else {
		size_t m = fread(buf, 1, n, stdin);

		got = m == 0 && ferror(stdin) ? -1 : (long)m;
	}
	if (got > 0)
		b->got += got;
	return got;
}

/*
 * A CGI program answered before it read the whole body (a refusal, or a
 * body it stopped reading): read the rest and throw it away before the
 * answer.  fcgiwrap and Apache's mod_cgid write all of the body into the
 * program's pipe before they read its answer, and a program that exits
 * with the body unread gets the client a 502 or an empty reply.  Bounded:
 * at most DISCARD_MAX bytes (a larger rest is not read at all) and
 * DQ_INGEST_DRAIN_MS; past either, the answer goes out anyway.  A chunked
 * body (Apache passes no CONTENT_LENGTH for it) is read to its end.
 * As FastCGI nothing is read: libfcgi ends the request (FCGX_Finish_r)
 * without the rest of its stdin, and nginx, lighttpd and Apache's
 * mod_proxy_fcgi take the answer all the same (38-ingest-servers.bats).
 */
static json_t *
discard_rest(struct body *b, const struct dq_request *q)
{
	long long length, want, got;
	int eof;

	if (!b->cgi)
		return NULL;
	if (q->content_length && *q->content_length) {
		if (dq_http_content_length(q->content_length, &length) < 0 ||
		    length <= b->got)
			return NULL;
		want = length - b->got;
	} else if (getenv("HTTP_TRANSFER_ENCODING"))
		want = -1;
	else
		return NULL;
	if (want > DISCARD_MAX)
		return json_pack("{s:b}", "body_unread", 1);
	got = dq_http_discard(0, want < 0 ? DISCARD_MAX : want,
	    dq_now_ms() + (int64_t)dq_cfg.ingest_drain_ms, &eof);
	if (want < 0 ? eof : (got == want || eof))
		return got ? json_pack("{s:I}", "body_discarded", (json_int_t)got) : NULL;
	return json_pack("{s:I,s:b}", "body_discarded", (json_int_t)got, "body_unread", 1);
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

/*
 * FastCGI: the log lines of a request go to its error stream, which the
 * web server writes to its own error log, wherever the process was started
 * from (spawn-fcgi sends the process's stderr to /dev/null).
 */
static void
fcgi_log(const char *line)
{
	fprintf(stderr, "%s\n", line);
	fflush(stderr);
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

/* A Proxy request header arrives as HTTP_PROXY; nginx's recipe sets it "". */
static int
proxy_header(void)
{
	const char *p = getenv("HTTP_PROXY");

	return p && *p;
}

static void
serve(struct dq_ingest *in, const struct dq_err *config_err, int httpoxy)
{
	struct dq_request q = { 0 };
	struct dq_response r;
	struct body b = { .cgi = FCGX_IsCGI() };
	char method[16], path[160];
	int64_t t0 = dq_now_ms();
	json_t *ctx;

	/* httpoxy: a "Proxy:" request header must never become a proxy. */
	if (httpoxy || proxy_header())
		dq_log(DQ_WARNING, "httpoxy", NULL, "ignored a Proxy request header");
	unsetenv("HTTP_PROXY");
	q.method = getenv("REQUEST_METHOD");
	q.path_info = getenv("PATH_INFO");
	q.script_name = getenv("SCRIPT_NAME");
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
	q.read_arg = &b;
	if (config_err == NULL)
		dq_ingest_handle(in, &q, &r);
	else {
		/* Logged with each request: a FastCGI process's start-up
		 * stderr may lead nowhere. */
		dq_log_err(DQ_ERROR, "config", NULL, config_err);
		memset(&r, 0, sizeof r);
		r.status = 500;
		snprintf(r.code, sizeof r.code, "config");
		r.body = dq_xstrdup("{\"error\":{\"code\":\"internal\","
		    "\"message\":\"the server is misconfigured\"}}\n");
		r.blen = strlen(r.body);
	}
	ctx = discard_rest(&b, &q);
	/* Logged before the answer: once a server has the whole answer it
	 * may drop what the program writes on its error stream. */
	if (ctx == NULL)
		ctx = json_object();
	json_object_update_missing_new(ctx, json_pack("{s:s*,s:s,s:s,s:i,s:I,s:s*,s:s*,s:s*}",
	    "image_id", r.image_id[0] ? r.image_id : NULL,
	    "method", printable(q.method, method, sizeof method),
	    "path", printable(q.path_info, path, sizeof path),
	    "http_status", r.status, "duration_ms", (json_int_t)(dq_now_ms() - t0),
	    "client", r.client[0] ? printable(r.client, r.client, sizeof r.client) : NULL,
	    "code", r.code[0] ? r.code : NULL,
	    "request_id", loggable(getenv("HTTP_X_REQUEST_ID"))));
	dq_log(r.status >= 500 ? DQ_ERROR : DQ_INFO, "request", ctx,
	    "%s %s: %d", method, path, r.status);
	respond(&r);
	dq_response_free(&r);
}

/*
 * --check: the configuration as a request would use it, then the store
 * and the queue; 0, 69 or 78 (dq_cli_check).  It creates nothing.
 */
static _Noreturn void
check(void)
{
	struct dq_err err;

	dq_cli_config();
	if (dq_ingest_check(&err) < 0) {
		dq_log_err(DQ_ERROR, "check_failed", NULL, &err);
		exit(err.status);
	}
	dq_cli_check(1, 1, NULL);
	exit(0);
}

int
main(int argc, char *argv[])
{
	static const struct option opts[] = {
		DQ_COMMON_OPTIONS,
		{ NULL, 0, NULL, 0 },
	};
	struct dq_ingest in = { 0 };
	struct dq_err err;
	char *tmpdir = NULL;
	int c, configured, httpoxy;

	dq_init(argv[0]);
	/* In a CGI request the arguments are a query's words (RFC 3875
	 * §4.4), the client's: never options. */
	if (getenv("GATEWAY_INTERFACE") == NULL) {
		while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1)
			switch (c) {
			case 'C': check();
			case 'P': dq_cli_config(); /* FALLTHROUGH */
			default: dq_cli_option(c, synopsis);
			}
		if (argc > optind)
			dq_usage(synopsis, "no arguments expected");
	}
	/* Before anything could read it: a CGI request's Proxy header. */
	httpoxy = proxy_header();
	unsetenv("HTTP_PROXY");
	if (getenv("GATEWAY_INTERFACE") == NULL && FCGX_IsCGI())
		dq_usage(synopsis, "not started by a web server (no CGI environment)");
	/* Read before the first FastCGI accept replaces the environment:
	 * the configuration, and the log settings (read on first use). */
	dq_log_enabled(DQ_INFO);
	configured = dq_config_load(&err) == 0;
	if (getenv("TMPDIR"))
		in.tmpdir = tmpdir = dq_xstrdup(getenv("TMPDIR"));
	if (!FCGX_IsCGI())
		dq_log_sink(fcgi_log);
	while (FCGI_Accept() >= 0) {
		serve(&in, configured ? NULL : &err, httpoxy);
		httpoxy = 0;
	}
	dq_log_sink(NULL);
	dq_ingest_close(&in);
	free(tmpdir);
	return 0;
}
