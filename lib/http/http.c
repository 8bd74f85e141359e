/*
 * http.c - the request, over libcurl (DESIGN §6).
 *
 * libcurl is loaded and initialised by the first request (curl.c: dlopen
 * under pthread_once), never at start: a program that makes none - the
 * local backends, --version, -h, a refused CGI request - pays nothing
 * for it.  All threads share one
 * pool of connections, TLS sessions and DNS answers (a share handle
 * whose locks guard only the pool, never a request under way); each
 * thread has its own easy handle, made on its first request and reused,
 * freed when the thread ends.  So N threads have N requests in flight
 * over at most N connections, and one thread reuses one connection
 * (HTTP/1.1 keep-alive; HTTP/2 where the server offers it over TLS).
 *
 * Every attempt is made with TLS verified (DQ_CA_FILE added to the
 * system's trust store, not replacing it), no redirect followed, only
 * http and https, and a proxy only for https:// from libcurl's own
 * reading of https_proxy / HTTPS_PROXY (and ALL_PROXY, NO_PROXY): a plain
 * http:// request, which dq makes only to loopback emulators and the
 * metadata endpoint, never goes through one, so neither http_proxy nor a
 * CGI request's Proxy: header (HTTP_PROXY, which libcurl never reads
 * anyway) can redirect it.  The retries are retry.c's policy; what is
 * logged passes through redact.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "dq.h"
#include "http/http.h"

#define C dq_curl	/* libcurl's functions, as curl.c loaded them */

#define MAX_BODY_DEFAULT (16u * 1024 * 1024)
#define MAX_HEADERS 256
#define MAX_CONNECTIONS 1024	/* kept open in the pool, idle or not */

struct dq_http_hdrs {
	struct curl_slist *list;
	int oom;
};

/* ---- one attempt ---- */

struct attempt {
	const struct dq_http_req *req;
	struct dq_http_resp *resp;
	size_t max_body;
	long status;		/* from the last status line */
	int too_large, write_failed;
};

static size_t
on_header(char *line, size_t size, size_t n, void *arg)
{
	struct attempt *a = arg;
	struct dq_http_resp *r = a->resp;
	size_t len = size * n, keep = len;
	char *h;

	while (keep > 0 && (line[keep - 1] == '\n' || line[keep - 1] == '\r'))
		keep--;
	if (keep >= 5 && strncmp(line, "HTTP/", 5) == 0) {
		/* a new answer (after a 100 or a proxy's): its headers only */
		const char *sp = memchr(line, ' ', keep);

		a->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		for (size_t i = 0; i < r->nhdr; i++)
			free(r->hdr[i]);
		r->nhdr = 0;
		return len;
	}
	if (keep == 0 || !memchr(line, ':', keep) || r->nhdr >= MAX_HEADERS)
		return len;
	h = dq_xmalloc(keep + 1);
	memcpy(h, line, keep);
	h[keep] = '\0';
	r->hdr = dq_xrealloc(r->hdr, (r->nhdr + 1) * sizeof *r->hdr);
	r->hdr[r->nhdr++] = h;
	return len;
}

static size_t
on_body(char *data, size_t size, size_t n, void *arg)
{
	struct attempt *a = arg;
	struct dq_http_resp *r = a->resp;
	size_t len = size * n;

	if (a->req->download && a->status >= 200 && a->status < 300) {
		if (fwrite(data, 1, len, a->req->download) != len) {
			a->write_failed = errno ? errno : EIO;
			return 0;
		}
		return len;
	}
	if (r->body_len + len > a->max_body) {
		a->too_large = 1;
		return 0;
	}
	r->body = dq_xrealloc(r->body, r->body_len + len + 1);
	memcpy(r->body + r->body_len, data, len);
	r->body_len += len;
	r->body[r->body_len] = '\0';
	return len;
}

static size_t
on_read(char *buf, size_t size, size_t n, void *arg)
{
	struct attempt *a = arg;
	size_t got = fread(buf, 1, size * n, a->req->upload);

	return got == 0 && ferror(a->req->upload) ? CURL_READFUNC_ABORT : got;
}

static int
listed(const int *list, long status)
{
	for (const int *s = list; s && *s; s++)
		if (*s == status)
			return 1;
	return 0;
}

/* The statuses returned to the caller: its own lists win over the defaults. */
static int
returned(const struct dq_http_req *req, long status)
{
	if (listed(req->retried, status))
		return 0;
	return listed(req->returned, status) || (status >= 200 && status < 400) ||
	    status == 404 || status == 409 || status == 412;
}

static int
retried(const struct dq_http_req *req, long status)
{
	return listed(req->retried, status) ||
	    (!listed(req->returned, status) && dq_retry_status(status));
}

/* curl errors that mean the connection failed and trying again may help. */
static int
transient(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_WEIRD_SERVER_REPLY:
		return 1;
	default:
		return 0;
	}
}

static const char *
method_of(const struct dq_http_req *req)
{
	return req->method ? req->method : "GET";
}

/* A request id fit for a log line: printable, no spaces. */
static void
request_id(struct dq_http_resp *r)
{
	static const char *const names[] = { "x-ms-request-id", "apim-request-id", "x-request-id" };
	const char *v = NULL;
	size_t n = 0;

	r->request_id[0] = '\0';
	for (size_t i = 0; i < sizeof names / sizeof names[0] && !v; i++)
		v = dq_http_header(r, names[i]);
	if (!v)
		return;
	while (v[n] > ' ' && v[n] < 127 && v[n] != '"' && n + 1 < sizeof r->request_id) {
		r->request_id[n] = v[n];
		n++;
	}
	r->request_id[n] = '\0';
}

/* Whether the request carries a credential (for the plain-http rule). */
static int
has_credentials(const struct dq_http_req *req)
{
	if (req->credentials || req->sign || dq_redact_url_secret(req->url))
		return 1;
	for (const char *const *h = req->headers; h && *h; h++)
		if (dq_redact_header_secret(*h))
			return 1;
	return 0;
}

enum outcome { DONE, FAILED, AGAIN };

/* Where the streamed files start, kept for the retries. */
struct files {
	off_t up, down;
};

/* What a failed transfer (rc) is, in err; AGAIN when a retry may help. */
static enum outcome
curl_failure(CURLcode rc, const struct attempt *a, const char *m, const char *shown,
    const char *ebuf, struct dq_err *err)
{
	/* libcurl's words name hosts, not queries; redacted all the same */
	char *why = dq_redact_text(*ebuf ? ebuf : C.easy_strerror(rc));
	enum outcome out = FAILED;

	switch (rc) {
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_ISSUER_ERROR:
		dq_err_system(err, DQ_EX_CONFIG, "tls", "%s %s: TLS: %s%s", m, shown, why,
		    rc == CURLE_SSL_CACERT_BADFILE && dq_cfg.ca_file ? " (DQ_CA_FILE)" : "");
		goto out;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		dq_err_system(err, DQ_EX_CONFIG, "bad_url", "%s %s: %s", m, shown, why);
		goto out;
	case CURLE_WRITE_ERROR:
		if (a->too_large) {
			dq_err_record(err, "too_large", "%s %s: the answer is over %zu bytes",
			    m, shown, a->max_body);
			goto out;
		}
		if (a->write_failed) {
			dq_err_system(err, dq_errno_status(a->write_failed, NULL), "io_error",
			    "%s %s: writing the answer: %s", m, shown, strerror(a->write_failed));
			goto out;
		}
		break;
	case CURLE_READ_ERROR:
	case CURLE_ABORTED_BY_CALLBACK:
		dq_err_system(err, DQ_EX_IOERR, "io_error", "%s %s: reading the body to send: %s",
		    m, shown, why);
		goto out;
	case CURLE_OUT_OF_MEMORY:
		dq_err_system(err, DQ_EX_TEMPFAIL, "no_memory", "%s %s: %s", m, shown, why);
		goto out;
	default:
		break;
	}
	dq_err_system(err, DQ_EX_TEMPFAIL,
	    rc == CURLE_OPERATION_TIMEDOUT ? "timeout" : "connect_failed", "%s %s: %s", m, shown, why);
	out = transient(rc) || rc == CURLE_WRITE_ERROR ? AGAIN : FAILED;
out:
	free(why);
	return out;
}

/*
 * The start of an error body for a message: redacted, one line of
 * printable ASCII (a log line stays one line and valid UTF-8), at most
 * 200 bytes and "..." when cut.
 */
static void
detail_of(const struct dq_http_resp *resp, char *out, size_t n)
{
	char *body = resp->body ? dq_redact_text((const char *)resp->body) : NULL;
	size_t at = 0, max = n > 205 ? 200 : n - 5;
	const char *p = body;

	out[0] = '\0';
	if (!body)
		return;
	out[at++] = ' ';
	for (; *p && at < max; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '\n' || c == '\r' || c == '\t')
			c = ' ';
		else if (c < 0x20 || c >= 0x7f)
			c = '?';
		if (c == ' ' && out[at - 1] == ' ')
			continue;
		out[at++] = (char)c;
	}
	if (*p)
		out[at++] = '.', out[at++] = '.', out[at++] = '.';
	out[at] = '\0';
	if (at == 1)
		out[0] = '\0';
	free(body);
}

/* What an answer's status is: DONE for the caller, else err. */
static enum outcome
status_failure(const struct dq_http_req *req, struct dq_http_resp *resp, const char *m,
    const char *shown, struct dq_err *err)
{
	long st = resp->status;
	char detail[208];
	enum outcome out = FAILED;

	detail_of(resp, detail, sizeof detail);

	if (returned(req, st))
		out = DONE;
	else if (retried(req, st)) {
		dq_err_system(err, DQ_EX_TEMPFAIL, "unavailable", "%s %s: %ld%s", m, shown, st, detail);
		out = AGAIN;
	} else if (st == 401 || st == 403)
		dq_err_system(err, DQ_EX_CONFIG, st == 401 ? "unauthorized" : "forbidden",
		    "%s %s: %ld (check the credentials and the identity's role)%s", m, shown, st,
		    detail);
	else if (st >= 400 && st < 500)
		dq_err_record(err, "http_4xx", "%s %s: %ld%s", m, shown, st, detail);
	else
		dq_err_system(err, DQ_EX_UNAVAILABLE, "http_5xx", "%s %s: %ld%s", m, shown, st, detail);
	if (out != DONE) {
		err->http_status = (int)st;
		snprintf(err->request_id, sizeof err->request_id, "%s", resp->request_id);
	}
	return out;
}

/*
 * One attempt.  DONE: resp holds an answer for the caller; FAILED: err
 * is final; AGAIN: err says what failed, for the retry policy.
 */
static enum outcome
attempt(CURL *h, const struct dq_http_req *req, struct dq_http_resp *resp,
    const struct files *f, int https, int64_t timeout_ms, const char *shown, struct dq_err *err)
{
	struct attempt a = { .req = req, .resp = resp };
	struct dq_http_hdrs hd = { 0 };
	const char *m = method_of(req);
	char ebuf[CURL_ERROR_SIZE] = "";
	int has_type = 0, body;
	CURLcode rc;
	enum outcome out = FAILED;
	int64_t t0 = dq_now_ms();

	a.max_body = req->max_body ? req->max_body : MAX_BODY_DEFAULT;
	dq_http_resp_free(resp);
	resp->status = 0;
	resp->request_id[0] = '\0';
	if (req->sign && req->sign(req, &hd, req->sign_arg, err) < 0)
		goto out;
	for (const char *const *p = req->headers; p && *p; p++)
		hd.list = C.slist_append(hd.list, *p);
	for (struct curl_slist *s = hd.list; s; s = s->next)
		has_type |= strncasecmp(s->data, "content-type:", 13) == 0;
	hd.list = C.slist_append(hd.list, "Expect:");
	/* libcurl would add a form's content type to a body: send only what was signed */
	if (!has_type)
		hd.list = C.slist_append(hd.list, "Content-Type:");
	if (hd.oom || !hd.list) {
		dq_err_system(err, DQ_EX_TEMPFAIL, "no_memory", "%s %s: out of memory", m, shown);
		goto out;
	}
	if ((req->upload && fseeko(req->upload, f->up, SEEK_SET) < 0) ||
	    (req->download && (fflush(req->download) == EOF ||
	    ftruncate(fileno(req->download), f->down) < 0 ||
	    fseeko(req->download, f->down, SEEK_SET) < 0))) {
		dq_err_system(err, dq_errno_status(errno, NULL), "io_error",
		    "%s %s: rewinding a file for the request: %s", m, shown, strerror(errno));
		goto out;
	}

	C.easy_setopt(h, CURLOPT_URL, req->url);
	C.easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	C.easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	C.easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	C.easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
	C.easy_setopt(h, CURLOPT_USERAGENT, "dq/" DQ_VERSION);
	C.easy_setopt(h, CURLOPT_HTTPHEADER, hd.list);
	C.easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	C.easy_setopt(h, CURLOPT_HEADERDATA, &a);
	C.easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	C.easy_setopt(h, CURLOPT_WRITEDATA, &a);
	C.easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(req->connect_timeout_ms > 0 ?
	    req->connect_timeout_ms : (int64_t)dq_cfg.http_connect_timeout_ms));
	C.easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	C.easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	/* the pool is the process's: room for every thread's connection (the
	 * default, 5, would close a busy thread's on each return) */
	C.easy_setopt(h, CURLOPT_MAXCONNECTS, (long)MAX_CONNECTIONS);
	C.easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	C.easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	C.easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	if (!https || req->no_proxy)
		C.easy_setopt(h, CURLOPT_PROXY, "");	/* none for plain http, nor when asked */
	dq_curl_ca(h);
	body = req->body || req->upload || strcmp(m, "PUT") == 0 || strcmp(m, "POST") == 0 ||
	    strcmp(m, "PATCH") == 0 || strcmp(m, "DELETE") == 0;
	if (strcmp(m, "HEAD") == 0)
		C.easy_setopt(h, CURLOPT_NOBODY, 1L);
	else if (req->upload) {
		C.easy_setopt(h, CURLOPT_UPLOAD, 1L);
		C.easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		C.easy_setopt(h, CURLOPT_READDATA, &a);
		C.easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->upload_len);
		C.easy_setopt(h, CURLOPT_CUSTOMREQUEST, m);
	} else if (body) {
		/* from memory; an empty body is sent with Content-Length: 0 */
		C.easy_setopt(h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
		C.easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
		C.easy_setopt(h, CURLOPT_CUSTOMREQUEST, m);
	} else if (strcmp(m, "GET") != 0)
		C.easy_setopt(h, CURLOPT_CUSTOMREQUEST, m);

	rc = C.easy_perform(h);
	resp->attempts++;
	if (rc == CURLE_OK) {
		long st = 0;

		C.easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
		resp->status = st;
	} else
		resp->status = a.status;
	request_id(resp);
	if (dq_log_enabled(DQ_DEBUG))
		dq_log(DQ_DEBUG, "http_request", json_pack("{s:s,s:s,s:i,s:I,s:i,s:s?}", "method", m,
		    "url", shown, "http_status", (int)resp->status,
		    "duration_ms", (json_int_t)(dq_now_ms() - t0), "attempt", resp->attempts,
		    "request_id", resp->request_id[0] ? resp->request_id : NULL),
		    "%s %s: %ld", m, shown, resp->status);
	if (rc != CURLE_OK) {
		if (rc == CURLE_WRITE_ERROR && !a.too_large && !a.write_failed)
			rc = CURLE_RECV_ERROR;
		out = curl_failure(rc, &a, m, shown, ebuf, err);
		snprintf(err->request_id, sizeof err->request_id, "%s", resp->request_id);
		goto out;
	}
	out = status_failure(req, resp, m, shown, err);
out:
	C.slist_free_all(hd.list);
	return out;
}

void
dq_http_add(struct dq_http_hdrs *hd, const char *name, const char *fmt, ...)
{
	struct curl_slist *l;
	va_list ap;
	char *v, *line;

	va_start(ap, fmt);
	if (vasprintf(&v, fmt, ap) < 0)
		v = NULL;
	va_end(ap);
	if (!v) {
		hd->oom = 1;
		return;
	}
	line = dq_xasprintf("%s: %s", name, v);
	dq_wipe(v, strlen(v));
	free(v);
	if ((l = C.slist_append(hd->list, line)))
		hd->list = l;
	else
		hd->oom = 1;
	dq_wipe(line, strlen(line));
	free(line);
}

/* The scheme and host of url: 1 https, 0 http, -1 neither; host into buf. */
static int
scheme_host(const char *url, char *host, size_t n)
{
	const char *p;
	size_t len;
	int https;

	if (strncasecmp(url, "https://", 8) == 0)
		https = 1, p = url + 8;
	else if (strncasecmp(url, "http://", 7) == 0)
		https = 0, p = url + 7;
	else
		return -1;
	len = strcspn(p, "/?#");
	/* userinfo@host:port */
	for (size_t i = len; i-- > 0;)
		if (p[i] == '@') {
			p += i + 1;
			len -= i + 1;
			break;
		}
	if (len > 0 && p[0] == '[') {
		const char *close = memchr(p, ']', len);

		len = close ? (size_t)(close - p) + 1 : len;
	} else {
		const char *colon = memchr(p, ':', len);

		len = colon ? (size_t)(colon - p) : len;
	}
	if (len == 0 || len >= n)
		return -1;
	memcpy(host, p, len);
	host[len] = '\0';
	return https;
}

int
dq_http_do(const struct dq_http_req *req, struct dq_http_resp *resp, struct dq_err *err)
{
	struct dq_retry r;
	struct files f = { 0, 0 };
	char shown[1024], host[256], what[1100];
	const char *m = method_of(req);
	int https, reauthed = 0;
	CURL *h;

	memset(resp, 0, sizeof *resp);
	memset(err, 0, sizeof *err);
	dq_redact_url(req->url ? req->url : "", shown, sizeof shown);
	if (!req->url || (https = scheme_host(req->url, host, sizeof host)) < 0) {
		dq_err_system(err, DQ_EX_CONFIG, "bad_url", "%s %s: not an http:// or https:// URL",
		    m, shown);
		return -1;
	}
	/* Credentials over plain http only to loopback: refused before any connection. */
	if (!https && !dq_http_loopback(host) && has_credentials(req)) {
		dq_err_system(err, DQ_EX_CONFIG, "insecure_transport",
		    "%s %s: credentials are never sent over plain http:// except to loopback; use https://",
		    m, shown);
		return -1;
	}
	if ((req->upload && (f.up = ftello(req->upload)) < 0) ||
	    (req->download && (f.down = ftello(req->download)) < 0)) {
		dq_err_system(err, DQ_EX_IOERR, "io_error", "%s %s: a file for the request: %s", m,
		    shown, strerror(errno));
		return -1;
	}
	snprintf(what, sizeof what, "%s %s", m, shown);
	if (!(h = dq_curl_handle(what, err)))
		return -1;
	dq_retry_init(&r, req->deadline_ms);
	for (;;) {
		int64_t timeout = req->timeout_ms > 0 ? req->timeout_ms : (int64_t)dq_cfg.http_timeout_ms;
		int64_t wait, left = req->deadline_ms > 0 ? req->deadline_ms - dq_now_ms() : timeout;
		enum outcome o;

		if (left < timeout)
			timeout = left;
		if (timeout <= 0) {
			if (resp->attempts == 0)
				dq_err_system(err, DQ_EX_TEMPFAIL, "timeout",
				    "%s %s: the deadline has passed: not sent", m, shown);
			err->budget_spent = 1;
			err->retryable = 1;
			return -1;
		}
		o = attempt(h, req, resp, &f, https, timeout, shown, err);
		if (o == DONE)
			return 0;
		if (o == FAILED && resp->status == 401 && req->sign && req->unauthorized &&
		    !reauthed && req->unauthorized(req->sign_arg)) {
			reauthed = 1;	/* the credential was dropped: once more, signed anew */
			continue;
		}
		if (o == FAILED)
			return -1;
		if ((wait = dq_retry_next(&r, dq_retry_after_ms(resp))) < 0) {
			char was[sizeof err->msg];

			snprintf(was, sizeof was, "%s", err->msg);
			snprintf(err->msg, sizeof err->msg, "%.400s (given up after %d attempts in %.1f s)",
			    was, resp->attempts, (double)(dq_now_ms() - r.start_ms) / 1000);
			err->budget_spent = 1;
			return -1;
		}
		dq_log(DQ_WARNING, "http_retry", json_pack("{s:s,s:s,s:i,s:s,s:i,s:I,s:I,s:s?}",
		    "method", m, "url", shown, "http_status", (int)resp->status, "code", err->code,
		    "attempt", resp->attempts, "wait_ms", (json_int_t)wait,
		    "ceiling_ms", (json_int_t)r.last_ceiling_ms,
		    "request_id", resp->request_id[0] ? resp->request_id : NULL),
		    "%s; again in %lld ms", err->msg, (long long)wait);
		dq_sleep_ms(wait);
		resp->waited_ms += wait;
	}
}
