/*
 * ingest.h - private to dq-ingest and its fuzzer: HTTP request parsing and
 * the ingest policy (auth, rate limits, CORS, idempotency).
 *
 * Nothing here keeps global state or touches stdin/stdout: the request
 * comes in as a struct dq_request with a read callback, the answer goes out
 * as a struct dq_response, so the same code serves CGI, FastCGI and the
 * fuzzer.
 */
#ifndef DQ_INGEST_H
#define DQ_INGEST_H

#include "dq.h"

/* Reads up to n bytes of the request body; 0 at its end, -1 on error. */
typedef long (*dq_read_fn)(void *buf, size_t n, void *arg);

/* request.c: the pieces of a CGI request. */

/* Strict decimal Content-Length; 0 or -1 when malformed. */
int dq_http_content_length(const char *s, long long *out);
/*
 * Media type of a Content-Type value, lowercased, into type; the boundary
 * parameter (quoted or not) into boundary when asked and present.  0, or -1
 * when malformed or a buffer is too small.
 */
int dq_http_ctype(const char *ct, char *type, size_t tn, char *boundary, size_t bn);
/*
 * The value of query parameter name, percent-decoded ('+' is a space) into
 * *out (malloc'd, NUL-terminated, at most max bytes).  1 found, 0 absent,
 * -1 malformed, duplicated, containing NUL or too long.
 */
int dq_http_query(const char *qs, const char *name, size_t max, char **out, size_t *outlen);
/*
 * The client address: remote_addr, or, when remote_addr is in trusted (a
 * comma-separated list of addresses and CIDR blocks, "" or NULL for none),
 * the right-most X-Forwarded-For entry that is not itself a trusted proxy.
 */
void dq_http_client_addr(const char *remote_addr, const char *xff,
    const char *trusted, char *out, size_t n);
/* Whether addr is in a comma-separated list of addresses and CIDR blocks. */
int dq_http_addr_in(const char *addr, const char *list);
/*
 * The credential presented: X-API-Key, else "Authorization: Bearer"; NULL
 * when none.  Points into the arguments; *len set.
 */
const char *dq_http_credential(const char *x_api_key, const char *authorization, size_t *len);
/*
 * Check a credential against API_KEY (entries "name:secret" or a bare
 * secret, comma-separated).  Every entry is compared, in constant time.
 * 1 with the caller's name in name ("" for a bare secret), 0 refused.
 */
int dq_http_auth(const char *api_keys, const char *cred, size_t credlen,
    char *name, size_t n);
/* Whether origin is exactly one of the comma-separated allowed origins. */
int dq_http_origin_allowed(const char *allowlist, const char *origin);
/* An Idempotency-Key value: 1..255 visible ASCII characters. */
int dq_http_idem_key_valid(const char *);
/*
 * Where the server mounted the program, for the URLs of its answers: the
 * CGI SCRIPT_NAME (decoded by the server) percent-encoded wherever a byte
 * is not a URL path character, so it is safe in a header, without a
 * trailing '/' ("" for the root).  0, or -1 when absent, not starting with
 * '/' or longer than n.
 */
int dq_http_script_path(const char *script_name, char *out, size_t n);
/*
 * Check each comma-separated entry of list (trimmed) with ok: 0, or -1 with
 * the first bad entry copied into bad.  The entry checks below are those
 * of DQ_TRUSTED_PROXY, CORS_ORIGINS and API_KEY.
 */
int dq_http_list_check(const char *list, int (*ok)(const char *, size_t),
    char *bad, size_t n);
int dq_http_proxy_entry_ok(const char *, size_t);
int dq_http_origin_entry_ok(const char *, size_t);
int dq_http_key_entry_ok(const char *, size_t);
/*
 * Read and throw away up to want bytes (want < 0: to the end) from fd,
 * until deadline_ms (dq_now_ms's clock).  Returns the bytes read; *eof
 * when the end was reached.
 */
long long dq_http_discard(int fd, long long want, int64_t deadline_ms, int *eof);

/* multipart.c: a streaming multipart/form-data parser. */
struct dq_multipart {
	/* given */
	const char *boundary;
	int image_fd;			/* the image part is written here */
	long long image_max;		/* its cap: over it, 413 */
	size_t field_max;		/* cap of product_sku and facility */
	size_t metadata_max;		/* cap of metadata */
	/* found */
	char *sku, *facility, *metadata;	/* malloc'd, NUL-terminated */
	size_t sku_len, facility_len, metadata_len;
	int image_seen;
	long long image_len;
	char image_type[128];		/* the part's Content-Type, lowercased */
	char image_filename[256];	/* informative only: names come from the id */
	int parts;
};
/*
 * Parse a body of exactly length bytes read through rd.  0, or -1 with err:
 * http_status 400 (malformed), 413 (image part over image_max) or 500 (the
 * spool file could not be written).
 */
int dq_multipart_parse(struct dq_multipart *, dq_read_fn rd, void *arg,
    long long length, struct dq_err *err);
void dq_multipart_free(struct dq_multipart *);

/* ratelimit.c: token buckets shared by the processes of one host. */
/*
 * Take a token from the bucket named id (hashed into the file name under
 * dir) holding per_minute tokens, refilled continuously.  peek only looks.
 * 1 allowed, 0 empty with *retry_after (seconds), -1 with err on an I/O
 * error.
 */
int dq_ratelimit_take(const char *dir, const char *id, long per_minute,
    int64_t now_ms, int peek, int *retry_after, struct dq_err *err);

/* ingest.c: one request, start to answer. */
struct dq_request {
	const char *method, *path_info, *query, *content_type, *content_length;
	const char *script_name;		/* the mount point, for Location */
	const char *remote_addr, *forwarded_for, *origin;
	const char *api_key, *authorization, *idempotency_key;
	dq_read_fn read;
	void *read_arg;
};
struct dq_response {
	int status;
	char *headers;			/* "Name: value\r\n"..., malloc'd */
	size_t hlen, hcap;
	char *body;			/* malloc'd, may be NULL */
	size_t blen;
	char image_id[37];		/* for the request log */
	char code[48];			/* the error code, "" on success */
	char client[64];
};
/* Backends kept across the requests of one process (FastCGI). */
struct dq_ingest {
	struct dq_store *store;
	struct dq_queue *queue;
	const char *tmpdir;		/* where request bodies are spooled */
};
void dq_ingest_handle(struct dq_ingest *, const struct dq_request *, struct dq_response *);
/* The ingest settings requests depend on (--check): 0, or -1 with err
 * (78).  Looks only: creates nothing. */
int dq_ingest_check(struct dq_err *err);
void dq_response_free(struct dq_response *);
void dq_ingest_close(struct dq_ingest *);
const char *dq_http_reason(int status);

#endif
