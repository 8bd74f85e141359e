/*
 * ingest.c - one request of the ingest API (DESIGN §5), from the CGI
 * variables to the answer.
 *
 * The order is the policy: CORS preflight (no credentials needed), the
 * per-IP bucket and the failed-authentication budget, authentication,
 * routing, the per-key bucket, then Content-Length (411, 413) — all before
 * one byte of the body is read.  Then the body is spooled to an unlinked
 * temporary file with a cap, the image validated from it, and only a valid
 * request touches the store: upload create-only (dq_raw_store), then
 * enqueue; a send that certainly failed removes the image this request
 * created, one whose outcome is unknown keeps it.  Backends are opened on
 * first use and kept in struct dq_ingest, so a FastCGI process reuses them
 * and a CGI request that is refused never opens them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ingest.h"

/* UUIDv5 namespace of idempotent image ids (a fixed random UUID). */
#define DQ_IDEMPOTENCY_NS "6f1c2d0e-5b7a-4c1e-9a57-2f0d3c8b9e41"
#define MULTIPART_OVERHEAD (256 * 1024)	/* fields, part headers */
#define FIELD_MAX 64
#define METADATA_MAX (64 * 1024)	/* dq_extra_parse has the real bound */
#define RETRY_AFTER_UNAVAILABLE 5

const char *
dq_http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Content";
	case 429: return "Too Many Requests";
	case 503: return "Service Unavailable";
	default: return "Internal Server Error";
	}
}

static void
hdr(struct dq_response *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(r->headers ? r->headers + r->hlen : NULL,
		    r->headers ? r->hcap - r->hlen : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (r->headers && r->hlen + (size_t)n + 2 < r->hcap)
			break;
		r->hcap = r->hcap * 2 + (size_t)n + 256;
		r->headers = dq_xrealloc(r->headers, r->hcap);
	}
	r->hlen += (size_t)n;
	memcpy(r->headers + r->hlen, "\r\n", 3);
	r->hlen += 2;
}

/* The body is a JSON document; steals j. */
static void
body_json(struct dq_response *r, int status, json_t *j)
{
	char *s = j ? dq_json_dumps(j) : NULL;

	json_decref(j);
	if (s == NULL) {
		s = dq_xstrdup("{\"error\":{\"code\":\"internal\",\"message\":\"internal error\"}}");
		status = 500;
	}
	free(r->body);
	r->blen = strlen(s) + 1;
	r->body = dq_xrealloc(s, r->blen + 1);
	r->body[r->blen - 1] = '\n';
	r->body[r->blen] = '\0';
	r->status = status;
	hdr(r, "Content-Type: application/json");
}

static void
fail(struct dq_response *r, int status, const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	char *c;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	/* Messages may quote the client's bytes: printable ASCII only, so
	 * the JSON can always be built. */
	for (c = msg; *c; c++)
		if (*c < 32 || *c > 126)
			*c = '?';
	snprintf(r->code, sizeof r->code, "%s", code);
	body_json(r, status, json_pack("{s:{s:s,s:s}}", "error", "code", code,
	    "message", msg));
}

/*
 * The HTTP status of a record error.  The request's own (multipart.c)
 * carry theirs from where they are made; those of the core (the image's
 * validation, the raw-image store), which knows no HTTP, get it from this
 * one table by their code; any other is 400.
 */
static const struct {
	const char *code;
	int http;
} http_of_code[] = {
	{ "not_an_image", 415 },
	{ "too_large", 413 },
	{ "too_many_pixels", 413 },
	{ "conflict", 409 },
};

static int
http_status_of(const struct dq_err *e)
{
	if (e->http_status)
		return e->http_status;
	for (size_t i = 0; i < sizeof http_of_code / sizeof http_of_code[0]; i++)
		if (strcmp(e->code, http_of_code[i].code) == 0)
			return http_of_code[i].http;
	return 400;
}

static void
fail_err(struct dq_response *r, const struct dq_err *e)
{
	fail(r, http_status_of(e), e->code[0] ? e->code : "error", "%s", e->msg);
}

/*
 * A backend's failure.  A backend that cannot even be set up (nothing
 * configured) is the server's fault: 500.  An operation that fails is 503
 * with Retry-After whatever the cause, since the client can only retry;
 * the log says which it was.
 */
static void
fail_backend(struct dq_response *r, const char *what, const struct dq_err *e, int opening)
{
	dq_log_err(DQ_ERROR, "backend", r->image_id[0] ?
	    json_pack("{s:s}", "image_id", r->image_id) : NULL, e);
	if (opening && e->scope == DQ_SCOPE_SYSTEM && e->status == DQ_EX_CONFIG) {
		fail(r, 500, "internal", "the %s is not configured", what);
		return;
	}
	hdr(r, "Retry-After: %d", RETRY_AFTER_UNAVAILABLE);
	fail(r, 503, "unavailable", "the %s is unavailable; retry later", what);
}

static int
open_store(struct dq_ingest *in, struct dq_response *r)
{
	struct dq_err e;

	if (in->store == NULL && (in->store = dq_store_open(&e)) == NULL) {
		fail_backend(r, "store", &e, 1);
		return -1;
	}
	return 0;
}

static int
open_queue(struct dq_ingest *in, struct dq_response *r)
{
	struct dq_err e;

	if (in->queue == NULL && (in->queue = dq_queue_open(NULL, &e)) == NULL) {
		fail_backend(r, "queue", &e, 1);
		return -1;
	}
	return 0;
}

/*
 * The path the server mounted the program at, for Location: SCRIPT_NAME,
 * made safe for a header; the documented /api/v1 when the server passed
 * none that can be used.
 */
static const char *
mount(const struct dq_request *q, char *buf, size_t n)
{
	return dq_http_script_path(q->script_name, buf, n) == 0 ? buf : "/api/v1";
}

/* Take from a bucket; 0 go on, -1 answered (429 or 500). */
static int
limit(struct dq_response *r, const char *kind, const char *who, long per_minute,
    int peek)
{
	struct dq_err e;
	char *id;
	int retry, rc;

	if (per_minute <= 0)
		return 0;
	id = dq_xasprintf("%s\n%s", kind, who);
	rc = dq_ratelimit_take(dq_cfg.state_dir, id, per_minute, dq_now_ms(),
	    peek, &retry, &e);
	free(id);
	if (rc < 0) {
		dq_log_err(DQ_ERROR, "ratelimit", NULL, &e);
		fail(r, 500, "internal", "rate limiting is unavailable");
		return -1;
	}
	if (rc == 0) {
		hdr(r, "Retry-After: %d", retry);
		fail(r, 429, "rate_limited", "too many requests; retry in %d s", retry);
		return -1;
	}
	return 0;
}

/* Body reader over the spool: copy a raw body into fd. */
static int
spool_raw(const struct dq_request *q, int fd, long long length, long long max,
    long long *got, struct dq_response *r)
{
	char buf[65536];

	*got = 0;
	while (*got < length) {
		size_t want = length - *got < (long long)sizeof buf ?
		    (size_t)(length - *got) : sizeof buf;
		long n = q->read(buf, want, q->read_arg);

		if (n <= 0) {
			fail(r, 400, "bad_request", "request body shorter than Content-Length");
			return -1;
		}
		if (*got + n > max) {
			fail(r, 413, "image_too_large", "the image is larger than DQ_MAX_IMAGE_BYTES");
			return -1;
		}
		if (dq_write_all(fd, buf, (size_t)n) < 0) {
			dq_log(DQ_ERROR, "spool", NULL, "spool write: %s", strerror(errno));
			fail(r, 500, "internal", "the request body could not be spooled");
			return -1;
		}
		*got += n;
	}
	return 0;
}

static int
spool_open(const char *dir)
{
	char path[4096];
	int fd;

	if (dir == NULL || *dir == '\0')
		dir = "/tmp";
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
		return fd;
	if (snprintf(path, sizeof path, "%s/dq-ingest.XXXXXX", dir) >= (int)sizeof path)
		return -1;
	if ((fd = mkostemp(path, O_CLOEXEC)) >= 0)
		unlink(path);
	return fd;
}

/*
 * The idempotency lock of an image id: held for the request, so a second
 * request with the same key on this host while the first runs is 409.  The
 * file is removed by its holder; a process that locked a removed file
 * opens the new one.
 */
static int
idem_lock(const char *id, char *path, size_t n)
{
	char dir[4096], hex[65];
	int i;

	if (dq_cfg.state_dir == NULL || *dq_cfg.state_dir == '\0') {
		errno = EINVAL;
		return -1;
	}
	dq_sha256_hex(id, strlen(id), hex);
	if (snprintf(dir, sizeof dir, "%s/idempotency", dq_cfg.state_dir) >= (int)sizeof dir ||
	    snprintf(path, n, "%s/%.32s.lock", dir, hex) >= (int)n) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (dq_mkdirs(dir, 0700) < 0)
		return -1;
	for (i = 0; i < 8; i++) {
		struct stat st;
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

		if (fd < 0)
			return -1;
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			close(fd);
			return errno == EWOULDBLOCK ? -2 : -1;
		}
		if (fstat(fd, &st) == 0 && st.st_nlink > 0)
			return fd;
		close(fd);	/* removed by the previous holder: again */
	}
	errno = EAGAIN;
	return -1;
}

static void
idem_unlock(int fd, const char *path)
{
	if (fd < 0)
		return;
	unlink(path);
	close(fd);
}

/* m[a][b] (or m[a]) as a string, "" when absent. */
static const char *
str_at(json_t *m, const char *a, const char *b)
{
	json_t *v = json_object_get(m, a);
	const char *s;

	if (b)
		v = json_object_get(v, b);
	s = json_string_value(v);
	return s ? s : "";
}

/*
 * Whether the stored message of an idempotent request's image is this
 * request's: the same fields, metadata and file name (the bytes, and so
 * the type, are the same, or dq_raw_store found a conflict).
 */
static int
same_request(json_t *stored, const struct dq_raw *raw)
{
	json_t *md = json_object_get(stored, "metadata");
	json_t *want = raw->extra ? json_incref(raw->extra) : json_object();
	char fname[DQ_FILE_NAME_MAX + 1];
	int same;

	if (!dq_file_name(raw->file_name, fname))
		fname[0] = '\0';
	same = strcmp(str_at(stored, "image", "sha256"), raw->sha256) == 0 &&
	    strcmp(str_at(md, "product_sku", NULL), raw->sku) == 0 &&
	    strcmp(str_at(md, "facility", NULL), raw->facility) == 0 &&
	    strcmp(str_at(md, "file_name", NULL), fname) == 0 &&
	    json_equal(json_object_get(md, "extra"), want);
	json_decref(want);
	return same;
}

struct fields {
	char *sku, *facility, *metadata;
	size_t metadata_len;
	enum dq_image_type declared;	/* DQ_IMG_UNKNOWN: take what it is */
};

/* The declared type of a multipart image part: its type, else its name. */
static int
declared_type(const struct dq_multipart *m, enum dq_image_type *t)
{
	const char *dot;

	*t = DQ_IMG_UNKNOWN;
	if (m->image_type[0] && strcmp(m->image_type, "application/octet-stream") != 0) {
		if ((*t = dq_image_type_from_mime(m->image_type)) == DQ_IMG_UNKNOWN)
			return -1;
		return 0;
	}
	if ((dot = strrchr(m->image_filename, '.')) != NULL) {
		if (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0)
			*t = DQ_IMG_JPEG;
		else if (strcasecmp(dot, ".png") == 0)
			*t = DQ_IMG_PNG;
		else if (strcasecmp(dot, ".webp") == 0)
			*t = DQ_IMG_WEBP;
	}
	return 0;
}

static void
ingest(struct dq_ingest *in, const struct dq_request *q, struct dq_response *r,
    const char *caller)
{
	char type[128], boundary[128], id[37];
	char lockpath[4096], prefix[1024];
	struct dq_multipart mp;
	struct dq_image_info info;
	struct dq_raw up = { 0 };
	struct dq_err e;
	struct fields f = { 0 };
	long long length, max = dq_cfg.max_image_bytes, got = 0;
	json_t *extra = NULL;
	unsigned char *data = MAP_FAILED;
	int fd = -1, lock = -1, raw, sent;
	const char *idem = q->idempotency_key;

	memset(&mp, 0, sizeof mp);
	if (q->content_length == NULL || *q->content_length == '\0') {
		fail(r, 411, "length_required", "Content-Length is required");
		return;
	}
	if (dq_http_content_length(q->content_length, &length) < 0) {
		fail(r, 400, "bad_request", "malformed Content-Length");
		return;
	}
	if (q->content_type == NULL || *q->content_type == '\0') {
		fail(r, 415, "unsupported_media_type",
		    "Content-Type must be multipart/form-data or image/jpeg, image/png, image/webp");
		return;
	}
	if (dq_http_ctype(q->content_type, type, sizeof type, boundary, sizeof boundary) < 0) {
		fail(r, 400, "bad_request", "malformed Content-Type");
		return;
	}
	raw = dq_image_type_from_mime(type) != DQ_IMG_UNKNOWN;
	if (!raw && strcmp(type, "multipart/form-data") != 0) {
		fail(r, 415, "unsupported_media_type",
		    "Content-Type must be multipart/form-data or image/jpeg, image/png, image/webp");
		return;
	}
	if (length > max + (raw ? 0 : MULTIPART_OVERHEAD)) {
		fail(r, 413, "payload_too_large",
		    "request body of %lld bytes exceeds the limit (DQ_MAX_IMAGE_BYTES=%lld)",
		    length, max);
		return;
	}
	if (!raw && boundary[0] == '\0') {
		fail(r, 400, "malformed_multipart", "multipart/form-data without a boundary");
		return;
	}
	if (idem && !dq_http_idem_key_valid(idem)) {
		fail(r, 400, "bad_idempotency_key",
		    "Idempotency-Key must be 1 to 255 visible ASCII characters");
		return;
	}
	if (raw) {
		int a, b, c;

		f.declared = dq_image_type_from_mime(type);
		a = dq_http_query(q->query, "product_sku", FIELD_MAX, &f.sku, NULL);
		b = dq_http_query(q->query, "facility", FIELD_MAX, &f.facility, NULL);
		c = dq_http_query(q->query, "metadata", METADATA_MAX, &f.metadata,
		    &f.metadata_len);
		if (a < 0 || b < 0 || c < 0) {
			fail(r, 400, "bad_query", "malformed, duplicated or oversized query parameter");
			goto out;
		}
		if (a == 0 || b == 0) {
			/* no need to read a body that cannot be taken */
			fail(r, 400, "missing_field", "product_sku and facility are required");
			goto out;
		}
	}
	if ((fd = spool_open(in->tmpdir)) < 0) {
		dq_log(DQ_ERROR, "spool", NULL, "spool file in %s: %s",
		    in->tmpdir ? in->tmpdir : "/tmp", strerror(errno));
		fail(r, 500, "internal", "the request body could not be spooled");
		goto out;
	}
	if (raw) {
		if (spool_raw(q, fd, length, max, &got, r) < 0)
			goto out;
	} else {
		mp.boundary = boundary;
		mp.image_fd = fd;
		mp.image_max = max;
		mp.field_max = FIELD_MAX;
		mp.metadata_max = METADATA_MAX;
		if (dq_multipart_parse(&mp, q->read, q->read_arg, length, &e) < 0) {
			fail_err(r, &e);
			goto out;
		}
		if (!mp.image_seen) {
			fail(r, 400, "missing_field", "multipart part \"image\" is required");
			goto out;
		}
		if (declared_type(&mp, &f.declared) < 0) {
			fail(r, 415, "unsupported_media_type",
			    "image part of type %s: only image/jpeg, image/png, image/webp",
			    mp.image_type);
			goto out;
		}
		f.sku = mp.sku;
		f.facility = mp.facility;
		f.metadata = mp.metadata;
		f.metadata_len = mp.metadata_len;
		got = mp.image_len;
	}
	if (f.sku == NULL || f.facility == NULL) {
		fail(r, 400, "missing_field", "product_sku and facility are required");
		goto out;
	}
	if (!dq_safe_token(f.sku) || !dq_safe_token(f.facility)) {
		fail(r, 400, "bad_field",
		    "product_sku and facility: 1 to 64 of A-Z a-z 0-9 . _ -");
		goto out;
	}
	if (f.metadata && (extra = dq_extra_parse("metadata", f.metadata, f.metadata_len, &e)) == NULL) {
		fail_err(r, &e);
		goto out;
	}
	if (got == 0) {
		fail(r, 400, "empty_image", "the image is empty");
		goto out;
	}
	data = mmap(NULL, (size_t)got, PROT_READ, MAP_PRIVATE, fd, 0);
	if (data == MAP_FAILED) {
		dq_log(DQ_ERROR, "spool", NULL, "mmap spool: %s", strerror(errno));
		fail(r, 500, "internal", "the request body could not be read back");
		goto out;
	}
	/* What it is first (415), then whether it is whole and small enough. */
	if (dq_image_sniff(data, (size_t)got, &info, &e) < 0) {
		fail_err(r, &e);
		goto out;
	}
	if (f.declared != DQ_IMG_UNKNOWN && f.declared != info.type) {
		fail(r, 415, "type_mismatch", "declared %s but the bytes are %s",
		    dq_image_mime(f.declared), dq_image_mime(info.type));
		goto out;
	}
	up.sku = f.sku;
	up.facility = f.facility;
	up.extra = extra;
	up.file_name = raw ? NULL : mp.image_filename;
	up.data = data;
	up.len = (size_t)got;
	if (dq_raw_prepare(&up, &e) < 0) {
		fail_err(r, &e);
		goto out;
	}
	if (idem) {
		char *name = dq_xasprintf("%s\n%s", caller, idem);

		dq_uuid_v5(DQ_IDEMPOTENCY_NS, name, id);
		free(name);
		memcpy(r->image_id, id, sizeof id);
	}
	if (open_store(in, r) < 0 || open_queue(in, r) < 0)
		goto out;
	if (idem) {
		if ((lock = idem_lock(id, lockpath, sizeof lockpath)) == -2) {
			fail(r, 409, "conflict",
			    "a request with this Idempotency-Key is in progress");
			goto out;
		}
		if (lock < 0) {
			dq_log(DQ_ERROR, "idempotency", NULL, "lock: %s", strerror(errno));
			fail(r, 500, "internal", "idempotency state is unavailable");
			goto out;
		}
	}
	if (dq_raw_store(in->store, &up, idem ? id : NULL, &e) < 0) {
		memcpy(r->image_id, up.image_id, sizeof up.image_id);
		/* Another image under the id (409): with a key, another request. */
		if (e.scope == DQ_SCOPE_RECORD && http_status_of(&e) == 409 && idem)
			fail(r, 422, "idempotency_key_reused",
			    "this Idempotency-Key was used with another request");
		else if (e.scope == DQ_SCOPE_RECORD && http_status_of(&e) == 409)
			fail_err(r, &e);
		else
			fail_backend(r, "store", &e, 0);
		goto out;
	}
	memcpy(r->image_id, up.image_id, sizeof up.image_id);
	if (up.existing && !same_request(up.msg, &up)) {
		fail(r, 422, "idempotency_key_reused",
		    "this Idempotency-Key was used with another request");
		goto out;
	}
	/* Sent again on a retry: the queue drops a duplicate message id. */
	sent = dq_queue_send(in->queue, up.msg, up.image_id, &e);
	if (sent < 0) {
		struct dq_err e2;

		/*
		 * Only an image whose message was certainly not sent is
		 * removed: a message without its image is lost for good, an
		 * image without a message is reconciled (dq-put --stored).
		 */
		if (up.created && sent == DQ_SEND_UNKNOWN)
			dq_log(DQ_WARNING, "send_unknown", json_pack("{s:s,s:s}",
			    "image_id", up.image_id, "blob", up.blob),
			    "the message may have been sent: %s/%s is kept "
			    "(reconcile with dq-put --stored)", dq_cfg.raw_container, up.blob);
		else if (up.created &&
		    dq_store_del(in->store, dq_cfg.raw_container, up.blob, &e2) < 0)
			dq_log_err(DQ_ERROR, "orphan", json_pack("{s:s}",
			    "image_id", up.image_id), &e2);
		fail_backend(r, "queue", &e, 0);
		goto out;
	}
	hdr(r, "Location: %s/images/%s", mount(q, prefix, sizeof prefix), up.image_id);
	body_json(r, 202, json_pack("{s:s,s:s,s:s}", "image_id", up.image_id,
	    "status", "queued", "ingested_at", str_at(up.msg, "ingested_at", NULL)));
out:
	if (data != MAP_FAILED)
		munmap(data, (size_t)got);
	if (fd >= 0)
		close(fd);
	idem_unlock(lock, lockpath);
	dq_raw_free(&up);
	json_decref(extra);
	if (raw) {
		free(f.sku);
		free(f.facility);
		free(f.metadata);
	}
	dq_multipart_free(&mp);
}

static void
status_of(struct dq_ingest *in, const char *id, struct dq_response *r)
{
	char name[64];
	unsigned char *data = NULL;
	size_t len;
	struct dq_err e;
	int got, i;

	memcpy(r->image_id, id, 37);
	if (open_store(in, r) < 0)
		return;
	dq_artifact_name(id, name, sizeof name);
	got = dq_store_get(in->store, dq_cfg.processed_container, name,
	    &data, &len, NULL, &e);
	if (got > 0) {
		r->status = 200;
		r->body = (char *)data;
		r->blen = len;
		hdr(r, "Content-Type: application/json");
		return;
	}
	if (got == 0) {
		dq_marker_name(id, name, sizeof name);
		got = dq_store_get(in->store, dq_cfg.processed_container, name,
		    &data, &len, NULL, &e);
	}
	if (got > 0) {
		json_t *m = json_loadb((char *)data, len, 0, NULL), *o;

		free(data);
		o = json_pack("{s:s,s:s}", "image_id", id, "status", "failed");
		if (json_object_get(m, "error"))
			json_object_set(o, "error", json_object_get(m, "error"));
		if (json_object_get(m, "attempts"))
			json_object_set(o, "attempts", json_object_get(m, "attempts"));
		if (json_object_get(m, "failed_at"))
			json_object_set(o, "failed_at", json_object_get(m, "failed_at"));
		json_decref(m);
		body_json(r, 200, o);
		return;
	}
	for (i = DQ_IMG_JPEG; got == 0 && i <= DQ_IMG_WEBP; i++) {
		snprintf(name, sizeof name, "%s.%s", id, dq_image_ext((enum dq_image_type)i));
		got = dq_store_exists(in->store, dq_cfg.raw_container, name, &e);
	}
	if (got < 0) {
		fail_backend(r, "store", &e, 0);
		return;
	}
	if (got > 0) {
		body_json(r, 202, json_pack("{s:s,s:s}", "image_id", id, "status", "pending"));
		return;
	}
	fail(r, 404, "not_found", "no image %s", id);
}

static void
preflight(struct dq_response *r, int allowed)
{
	r->status = 204;
	if (!allowed)
		return;
	hdr(r, "Access-Control-Allow-Methods: GET, POST, OPTIONS");
	hdr(r, "Access-Control-Allow-Headers: Authorization, Content-Type, "
	    "Idempotency-Key, X-API-Key");
	hdr(r, "Access-Control-Max-Age: 600");
}

/*
 * The identity of a caller whose API_KEY entry is a bare secret (no name):
 * "key:" and the first 16 hex digits of HMAC-SHA256 keyed with the secret
 * over a fixed label.  Unique to the key, so two bare-secret cameras never
 * share image ids or a bucket, yet it tells nothing of the secret; a name
 * ends at the first ':', so no named entry can have it.
 */
static void
bare_identity(const char *secret, size_t len, char *out, size_t n)
{
	static const char label[] = "dq ingest caller identity";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char hex[17];

	if (HMAC(dq_md_sha256(), secret, (int)len, (const unsigned char *)label,
	    sizeof label - 1, md, &mdlen) == NULL || mdlen < 8) {
		/* never without an identity: the whole-key hash, truncated */
		char full[65];

		dq_sha256_hex(secret, len, full);
		snprintf(out, n, "key:%.16s", full);
		return;
	}
	for (int i = 0; i < 8; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	snprintf(out, n, "key:%s", hex);
	dq_wipe(md, sizeof md);
}

void
dq_ingest_handle(struct dq_ingest *in, const struct dq_request *q, struct dq_response *r)
{
	const char *method = q->method ? q->method : "";
	const char *path = q->path_info ? q->path_info : "";
	const char *cred;
	char caller[128], bucket[200];
	size_t credlen;
	long fail_limit;
	int allowed = 0;

	memset(r, 0, sizeof *r);
	r->status = 500;
	dq_http_client_addr(q->remote_addr, q->forwarded_for, dq_cfg.trusted_proxy,
	    r->client, sizeof r->client);
	if (dq_cfg.cors_origins && *dq_cfg.cors_origins) {
		hdr(r, "Vary: Origin");
		if ((allowed = dq_http_origin_allowed(dq_cfg.cors_origins, q->origin))) {
			hdr(r, "Access-Control-Allow-Origin: %s", q->origin);
			hdr(r, "Access-Control-Expose-Headers: Location, Retry-After");
		}
	}
	if (strcmp(method, "OPTIONS") == 0) {
		preflight(r, allowed);
		return;
	}
	if (limit(r, "ip", r->client, dq_cfg.rate_limit_per_ip, 0) < 0)
		return;
	/* Failed authentications spend a per-IP budget: guessing keys is slow. */
	fail_limit = dq_cfg.rate_limit_per_key > 0 ? dq_cfg.rate_limit_per_key :
	    dq_cfg.rate_limit_per_ip;
	if (dq_cfg.api_key && *dq_cfg.api_key) {
		if (limit(r, "authfail", r->client, fail_limit, 1) < 0)
			return;
		cred = dq_http_credential(q->api_key, q->authorization, &credlen);
		if (!dq_http_auth(dq_cfg.api_key, cred, credlen, caller, sizeof caller)) {
			if (limit(r, "authfail", r->client, fail_limit, 0) < 0)
				return;
			hdr(r, "WWW-Authenticate: Bearer realm=\"dq\"");
			fail(r, 401, "unauthorized", cred ? "invalid API key" :
			    "an API key is required (X-API-Key or Authorization: Bearer)");
			return;
		}
		if (!caller[0])
			bare_identity(cred, credlen, caller, sizeof caller);
		snprintf(bucket, sizeof bucket, "name:%s", caller);
	} else if (dq_cfg.insecure_no_auth) {
		caller[0] = '\0';
		snprintf(bucket, sizeof bucket, "anonymous");
	} else {
		dq_log(DQ_ERROR, "config", NULL,
		    "API_KEY is not set: refusing every request (DQ_INSECURE_NO_AUTH=1 for development)");
		hdr(r, "WWW-Authenticate: Bearer realm=\"dq\"");
		fail(r, 401, "unauthorized", "authentication is not configured");
		return;
	}
	if (strcmp(path, "/ingest") == 0) {
		if (strcmp(method, "POST") != 0) {
			hdr(r, "Allow: POST, OPTIONS");
			fail(r, 405, "method_not_allowed", "%s: use POST", path);
			return;
		}
	} else if (strncmp(path, "/images/", 8) == 0) {
		if (strcmp(method, "GET") != 0) {
			hdr(r, "Allow: GET, OPTIONS");
			fail(r, 405, "method_not_allowed", "%s: use GET", path);
			return;
		}
		if (!dq_uuid_valid(path + 8)) {
			fail(r, 404, "not_found", "no such image");
			return;
		}
	} else {
		fail(r, 404, "not_found", "no such resource");
		return;
	}
	if (limit(r, "key", bucket, dq_cfg.rate_limit_per_key, 0) < 0)
		return;
	if (path[1] == 'i' && path[2] == 'n')
		ingest(in, q, r, caller);
	else
		status_of(in, path + 8, r);
	/* A backend that failed is opened afresh by the next request. */
	if (r->status == 503)
		dq_ingest_close(in);
}

void
dq_response_free(struct dq_response *r)
{
	free(r->headers);
	free(r->body);
	r->headers = r->body = NULL;
}

void
dq_ingest_close(struct dq_ingest *in)
{
	dq_queue_close(in->queue);
	dq_store_close(in->store);
	in->queue = NULL;
	in->store = NULL;
}

/*
 * A directory requests write in: a writable directory, or, when they
 * create it (creatable), one whose nearest existing parent is writable.
 */
static int
writable_dir(const char *name, const char *dir, int creatable, struct dq_err *err)
{
	char path[4096], *slash;
	struct stat st;
	const char *why = NULL;

	if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
		why = strerror(ENAMETOOLONG);
	while (why == NULL && stat(path, &st) < 0) {
		if (errno != ENOENT || !creatable || (slash = strrchr(path, '/')) == NULL)
			why = strerror(errno);
		else if (slash == path)
			path[1] = '\0';
		else
			*slash = '\0';
	}
	if (why == NULL && !S_ISDIR(st.st_mode))
		why = "not a directory";
	if (why == NULL && access(path, W_OK | X_OK) < 0)
		why = strerror(errno);
	if (why == NULL)
		return 0;
	dq_err_system(err, DQ_EX_CONFIG, "config", "%s: %s: %s", name, path, why);
	return -1;
}

int
dq_ingest_check(struct dq_err *err)
{
	char bad[256];
	const char *tmp = getenv("TMPDIR");

	if ((dq_cfg.api_key == NULL || *dq_cfg.api_key == '\0') && !dq_cfg.insecure_no_auth) {
		dq_err_system(err, DQ_EX_CONFIG, "config", "API_KEY is not set: every request "
		    "would be refused (DQ_INSECURE_NO_AUTH=1 for development)");
		return -1;
	}
	/* Never the entry itself: it holds a secret. */
	if (dq_http_list_check(dq_cfg.api_key, dq_http_key_entry_ok, NULL, 0) < 0) {
		dq_err_system(err, DQ_EX_CONFIG, "config",
		    "API_KEY: an entry is empty or has no secret after its name");
		return -1;
	}
	if (dq_http_list_check(dq_cfg.cors_origins, dq_http_origin_entry_ok, bad, sizeof bad) < 0) {
		dq_err_system(err, DQ_EX_CONFIG, "config", "CORS_ORIGINS: \"%s\" is not an "
		    "origin as browsers send it (scheme://host[:port], lowercase, no path)", bad);
		return -1;
	}
	if (dq_http_list_check(dq_cfg.trusted_proxy, dq_http_proxy_entry_ok, bad, sizeof bad) < 0) {
		dq_err_system(err, DQ_EX_CONFIG, "config",
		    "DQ_TRUSTED_PROXY: \"%s\" is not an address or CIDR block", bad);
		return -1;
	}
	if (dq_cfg.state_dir == NULL || *dq_cfg.state_dir == '\0') {
		if (dq_cfg.rate_limit_per_ip > 0 || dq_cfg.rate_limit_per_key > 0) {
			dq_err_system(err, DQ_EX_CONFIG, "config",
			    "DQ_STATE_DIR is not set: the rate limits need it");
			return -1;
		}
		dq_log(DQ_WARNING, "config", NULL, "DQ_STATE_DIR is not set: requests "
		    "with an Idempotency-Key will be answered 500");
	} else if (writable_dir("DQ_STATE_DIR", dq_cfg.state_dir, 1, err) < 0)
		return -1;
	return writable_dir("TMPDIR", tmp && *tmp ? tmp : "/tmp", 0, err);
}
