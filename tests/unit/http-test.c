/* http-test - lib/http/ driven directly: N threads x M requests to a URL, one JSON line per request. */
#include <getopt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "dq.h"

static const char synopsis[] =
    "usage: http-test [-n THREADS] [-m REQUESTS] [-X METHOD] [-H 'Name: value']... [-d BODY]\n"
    "           [--upload FILE] [--download FILE] [--deadline-ms MS] [--credentials] [--sign]\n"
    "           [--no-proxy] [--max-body BYTES] [--return STATUS]... [--retry STATUS]... URL\n"
    "       http-test --redact-url URL | --redact-text TEXT | --secret-header NAME\n";

static struct dq_http_req req;
static int returned_st[16], retried_st[16];

/*
 * --sign: a credential layer's stand-in.  Each attempt is signed with
 * "Authorization: Bearer token-<generation>" and x-test-signed, the
 * count of this thread's signatures; a 401 drops the token (the next
 * generation is fetched), as the token cache does.
 */
static int generation = 1;
static _Thread_local int signed_count;
static pthread_mutex_t gen_lock = PTHREAD_MUTEX_INITIALIZER;

static int
sign(const struct dq_http_req *r, struct dq_http_hdrs *h, void *arg, struct dq_err *err)
{
	int g;

	pthread_mutex_lock(&gen_lock);
	g = generation;
	pthread_mutex_unlock(&gen_lock);
	dq_http_add(h, "Authorization", "Bearer token-%d", g);
	dq_http_add(h, "x-test-signed", "%d", ++signed_count);	/* as x-ms-date changes */
	return 0;
}

static int
unauthorized(void *arg)
{
	pthread_mutex_lock(&gen_lock);
	generation++;
	pthread_mutex_unlock(&gen_lock);
	return 1;
}
static const char *headers[64];
static int threads = 1, per_thread = 1, status;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

/* One request, one line: status, timings, request id, and the error. */
static void
one(int t, int i, int64_t deadline_rel)
{
	struct dq_http_resp resp;
	struct dq_http_req r = req;
	struct dq_err err;
	int64_t t0 = dq_now_ms();
	int rc;
	json_t *o;

	if (deadline_rel > 0)
		r.deadline_ms = t0 + deadline_rel;
	rc = dq_http_do(&r, &resp, &err);
	o = json_pack("{s:i,s:i,s:I,s:i,s:I,s:I}", "thread", t, "i", i,
	    "status", (json_int_t)resp.status, "attempts", resp.attempts,
	    "waited_ms", (json_int_t)resp.waited_ms, "ms", (json_int_t)(dq_now_ms() - t0));
	if (resp.request_id[0])
		json_object_set_new(o, "request_id", json_string(resp.request_id));
	if (resp.body && !req.download)
		json_object_set_new(o, "body_len", json_integer((json_int_t)resp.body_len));
	if (rc < 0) {
		json_object_set_new(o, "error", json_pack("{s:s,s:s,s:i,s:b,s:b,s:s,s:i}",
		    "code", err.code, "scope", err.scope == DQ_SCOPE_SYSTEM ? "system" : "record",
		    "status", err.status, "retryable", err.retryable, "budget_spent", err.budget_spent,
		    "message", err.msg, "http_status", err.http_status));
		dq_log_err(DQ_ERROR, "http_failed", NULL, &err);
	}
	pthread_mutex_lock(&out_lock);
	dq_write_record(stdout, o);
	if (rc < 0)
		status = dq_status_merge(status, err.status);
	pthread_mutex_unlock(&out_lock);
	json_decref(o);
	dq_http_resp_free(&resp);
}

static int64_t deadline_rel;

/* --return ST, --retry ST: a status into a 0-terminated list. */
static void
add_status(int *list, const char *s)
{
	int i = 0;

	while (list[i] && i < 14)
		i++;
	list[i] = atoi(s);
}

static void *
run(void *arg)
{
	int t = (int)(intptr_t)arg;

	for (int i = 0; i < per_thread; i++)
		one(t, i, deadline_rel);
	return NULL;
}

int
main(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "upload", required_argument, NULL, 'u' },
		{ "download", required_argument, NULL, 'o' },
		{ "deadline-ms", required_argument, NULL, 'D' },
		{ "credentials", no_argument, NULL, 'c' },
		{ "sign", no_argument, NULL, 'g' },
		{ "no-proxy", no_argument, NULL, 'N' },
		{ "max-body", required_argument, NULL, 'M' },
		{ "return", required_argument, NULL, 'r' },
		{ "retry", required_argument, NULL, 't' },
		{ "redact-url", required_argument, NULL, 'R' },
		{ "redact-text", required_argument, NULL, 'T' },
		{ "secret-header", required_argument, NULL, 'S' },
		{ NULL, 0, NULL, 0 },
	};
	pthread_t tid[256];
	int c, nh = 0;
	struct dq_err err;
	char buf[2048], *s;

	dq_init(argv[0]);
	if (dq_config_load(&err) < 0)
		dq_die(err.status, "%s", err.msg);
	while ((c = getopt_long(argc, argv, "n:m:X:H:d:", opts, NULL)) != -1) {
		switch (c) {
		case 'n': threads = atoi(optarg); break;
		case 'm': per_thread = atoi(optarg); break;
		case 'X': req.method = optarg; break;
		case 'H':
			if (nh + 1 >= (int)(sizeof headers / sizeof headers[0]))
				dq_die(DQ_EX_USAGE, "too many headers");
			headers[nh++] = optarg;
			req.headers = headers;
			break;
		case 'd': req.body = optarg; req.body_len = strlen(optarg); break;
		case 'u':
			if (!(req.upload = fopen(optarg, "rb")) || fseeko(req.upload, 0, SEEK_END) < 0 ||
			    (req.upload_len = ftello(req.upload)) < 0 || fseeko(req.upload, 0, SEEK_SET) < 0)
				dq_die(DQ_EX_NOINPUT, "%s: cannot read", optarg);
			break;
		case 'o':
			if (!(req.download = fopen(optarg, "w+b")))
				dq_die(DQ_EX_IOERR, "%s: cannot write", optarg);
			break;
		case 'D': deadline_rel = atoll(optarg); break;
		case 'c': req.credentials = 1; break;
		case 'g': req.sign = sign; req.unauthorized = unauthorized; break;
		case 'N': req.no_proxy = 1; break;
		case 'M': req.max_body = (size_t)atol(optarg); break;
		case 'r': add_status(returned_st, optarg); req.returned = returned_st; break;
		case 't': add_status(retried_st, optarg); req.retried = retried_st; break;
		case 'R': puts(dq_redact_url(optarg, buf, sizeof buf)); return 0;
		case 'T': puts(s = dq_redact_text(optarg)); free(s); return 0;
		case 'S': printf("%d\n", dq_redact_header_secret(optarg)); return 0;
		default: fputs(synopsis, stderr); return DQ_EX_USAGE;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 1 || threads < 1 || threads > 256 || per_thread < 1) {
		fputs(synopsis, stderr);
		return DQ_EX_USAGE;
	}
	req.url = argv[0];
	for (int t = 0; t < threads; t++)
		if (pthread_create(&tid[t], NULL, run, (void *)(intptr_t)t) != 0)
			dq_die(DQ_EX_TEMPFAIL, "pthread_create failed");
	for (int t = 0; t < threads; t++)
		pthread_join(tid[t], NULL);
	if (req.download && fclose(req.download) == EOF)
		status = dq_status_merge(status, DQ_EX_IOERR);
	return dq_finish_stdout(status);
}
