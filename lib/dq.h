/*
 * dq.h - the map of libdq.
 *
 * Declarations are grouped by folder (the core at lib/, then http/,
 * store/, queue/, analyzer/ and the code over them), then by the file that
 * defines them; the private headers of ingest/ and analyzer/reference/
 * are named where their folder is.  Jansson
 * references: a function taking a json_t * borrows it unless its comment
 * says "steals"; a function returning a json_t * gives the caller a new
 * reference.
 */
#ifndef DQ_H
#define DQ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <jansson.h>

#define DQ_VERSION "0.1.0"

/* Exit status, <sysexits.h>; precedence in dq_status_merge(). */
enum {
	DQ_EX_OK = 0,
	DQ_EX_USAGE = 64,
	DQ_EX_DATAERR = 65,	/* some records failed permanently */
	DQ_EX_NOINPUT = 66,	/* an input file missing */
	DQ_EX_UNAVAILABLE = 69,	/* backend down in a start-up check */
	DQ_EX_IOERR = 74,	/* I/O error, stdout too */
	DQ_EX_TEMPFAIL = 75,	/* transient failure, retry budget spent */
	DQ_EX_CONFIG = 78,	/* configuration or authorisation */
};

/*
 * An error as the library reports it.  scope tells a record error (one
 * record's fault: the stage writes it into the record and goes on) from a
 * system error (configuration or backend: the stage stops with status).
 */
enum dq_scope { DQ_SCOPE_RECORD, DQ_SCOPE_SYSTEM };

struct dq_err {
	enum dq_scope scope;
	int status;		/* DQ_EX_* this error maps to */
	int retryable;
	int http_status;	/* 0 when no HTTP was involved */
	char code[48];		/* machine-readable: "not_an_image", ... */
	char msg[512];		/* human-readable, no secrets */
	/* Set by the HTTP layer (lib/http/): */
	char request_id[80];	/* the service's request id, for the log line; "" none */
	int budget_spent;	/* the retry budget was spent on this failure:
				 * a caller never retries it again (DESIGN §6) */
};

/* The interfaces, declared here so the core can name them. */
struct dq_store;
struct dq_queue;
struct dq_analyzer;

/*
 * lib/: the core, one file per concern.
 */

/* util.c */
extern const char *dq_prog;		/* set by dq_init() */
void dq_init(const char *argv0);	/* sets dq_prog, locale-free, loads log settings */
void *dq_xmalloc(size_t);
void *dq_xcalloc(size_t, size_t);
void *dq_xrealloc(void *, size_t);
char *dq_xstrdup(const char *);
char *dq_xasprintf(const char *, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void dq_die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dq_wipe(void *, size_t);		/* explicit_bzero */
int dq_status_merge(int a, int b);	/* the one that wins by DESIGN §3's order */
int dq_finish_stdout(int status);	/* flush+close stdout; 74 on failure */
/*
 * The exit status of a failed system call's errno, by dq(7)'s one table:
 * 78 a refusal or an unusable path, 75 a resource that ran out (disk
 * space, descriptors, memory, EINTR, EAGAIN), 74 any other.  kind (may be
 * NULL) says which, for a backend's error code.
 */
enum dq_errno_kind {
	DQ_ERRNO_IO,		/* 74 */
	DQ_ERRNO_REFUSED,	/* 78: EACCES, EPERM, EROFS */
	DQ_ERRNO_BAD_PATH,	/* 78: ENOTDIR, ENAMETOOLONG, ELOOP */
	DQ_ERRNO_NO_SPACE,	/* 75: ENOSPC, EDQUOT */
	DQ_ERRNO_BUSY,		/* 75: EMFILE, ENFILE, ENOMEM, EAGAIN, EINTR */
};
int dq_errno_status(int e, enum dq_errno_kind *kind);
/*
 * Read a whole regular file of at most max bytes, opened without blocking:
 * 0, or -1 with errno (EFBIG past max, EISDIR a directory, ENXIO a FIFO,
 * socket or device).  _nofollow refuses a symbolic link (ELOOP), for the
 * files of the local store and spool, which never makes one.
 */
int dq_read_file(const char *path, size_t max, unsigned char **data, size_t *len);
int dq_read_file_nofollow(const char *path, size_t max, unsigned char **data, size_t *len);
int dq_write_all(int fd, const void *buf, size_t len);
int dq_mkdirs(const char *path, int mode);	/* mkdir -p */
/* Write data to path atomically: tmp in the same directory, fsync, rename. */
int dq_write_atomic(const char *path, const void *data, size_t len, int mode);
int dq_fsync_dir(const char *dir);
/*
 * --check's proof that a directory takes files, creating nothing: a probe
 * "<dir>/.dq-probe.<uuid>" written (a block), synced and removed.  0, or
 * -1 with errno (EROFS, EACCES, ENOSPC...); buf holds the directory probed.
 * dq_probe_ancestor probes the nearest existing ancestor of a path not
 * created yet (the proof that it can be).
 */
int dq_probe_dir(const char *dir, char *buf, size_t n);
int dq_probe_ancestor(const char *path, char *buf, size_t n);
void dq_err_set(struct dq_err *, enum dq_scope, int status, int retryable,
    const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Convenience: record-scope permanent (65) and transient (75) errors. */
#define dq_err_record(e, code, ...) \
	dq_err_set((e), DQ_SCOPE_RECORD, DQ_EX_DATAERR, 0, (code), __VA_ARGS__)
#define dq_err_system(e, status, code, ...) \
	dq_err_set((e), DQ_SCOPE_SYSTEM, (status), (status) == DQ_EX_TEMPFAIL, (code), __VA_ARGS__)
int64_t dq_now_ms(void);
/* RFC 3339 UTC, second precision, "Z": buf of at least 21 bytes. */
void dq_rfc3339(time_t t, char buf[static 21]);
int dq_parse_rfc3339(const char *s, time_t *t);
/* RFC 3339 UTC with milliseconds ("...T10:00:00.123Z"): buf of at least 25. */
void dq_rfc3339_ms(int64_t ms, char buf[static 25]);
int dq_parse_rfc3339_ms(const char *s, int64_t *ms);
void dq_sleep_ms(int64_t ms);

/* cli.c: what every program does at start. */
/* The options every record program has, for its getopt_long table. */
#define DQ_COMMON_OPTIONS \
	{ "help", no_argument, NULL, 'h' }, \
	{ "version", no_argument, NULL, 'V' }, \
	{ "print-config", no_argument, NULL, 'P' }, \
	{ "check", no_argument, NULL, 'C' }
/* why NULL: the synopsis on stdout, exit 0 (-h); else "prog: why" and the
 * synopsis on stderr, exit 64. */
_Noreturn void dq_usage(const char *synopsis, const char *why);
/* The getopt cases every program answers alike: -h, --version,
 * --print-config, and an unknown option (64).  Never returns. */
_Noreturn void dq_cli_option(int c, const char *synopsis);
/* Load the configuration or exit 78 with the reason logged. */
void dq_cli_config(void);
_Noreturn void dq_cli_version(void);		/* prints "prog VERSION", exits 0 */
_Noreturn void dq_cli_print_config(void);		/* prints the configuration, exits 0 */
/* --check: open and check the store (nonzero; DQ_CHECK_RAW and
 * DQ_CHECK_PROCESSED: probe the containers the program will write) and/or
 * the queue, creating nothing; exits 0, 69 or 78. */
enum { DQ_CHECK_STORE = 1, DQ_CHECK_RAW = 2, DQ_CHECK_PROCESSED = 4 };
_Noreturn void dq_cli_check(int store, int queue, const char *qname);

/* loop.c: the record loops, one record at a time or jobs at once. */
/* The record loop: fn for each record on stdin (borrowed).  Returns the
 * loop's own status: 65 for a malformed record, 74 for a read error. */
int dq_each_record(void (*fn)(json_t *rec, void *arg), void *arg);
/* Write a record to stdout, whole, one writer at a time (any thread); a
 * broken stdout ends the program with 74. */
void dq_emit(json_t *rec);
/* The same, but a broken stdout is -1 with errno for the caller to judge
 * (dq-dequeue --tokens: an EPIPE is the next stage gone, not an error). */
int dq_emit_try(json_t *rec);
/* A system error: log it (steals ctx) and exit at once with the status
 * that wins over status, and in a parallel loop over the loop's status so
 * far; no thread writes a record after it.  Safe from any thread. */
_Noreturn void dq_stop(int status, const struct dq_err *, json_t *ctx);
/* Threads other than the caller's hold records: dq_emit and dq_stop exit
 * at once (_exit) rather than run exit handlers under them. */
void dq_threads_started(void);
/*
 * The parallel form, for a stage whose work on a record takes long
 * (dq-analyze; a long-lived stage of a stream): records from stdin worked
 * on by jobs threads at once, their locks kept alive meanwhile.
 *
 * - wants(rec) (on the reading thread; NULL: every record): 0 passes the
 *   record on untouched at once, 1 makes it a job.
 * - A job holds its record's lease (lease.c) from the time it is read
 *   until it is written out.  work(rec, job) runs on one of the threads
 *   with rec the job's own copy of the record, to read and change freely;
 *   it calls dq_job_keep() before each costly step and does not start one
 *   when that says the lock is lost.  It returns the record's status (0,
 *   or the DQ_EX_* of the error it wrote into rec).  The record written
 *   out is that copy with its receipt as last renewed.
 * - fail(rec, err) writes err into rec as the stage writes its own record
 *   errors (and logs it), and returns its status: called for the records
 *   a shutdown keeps from starting.
 * - stdin is read only while a thread is free: at most 2*jobs records are
 *   in hand.  Records are written in the order they are done.
 * - SIGTERM and SIGINT are blocked in every thread and taken by one (for
 *   the rest of the process), unless they were ignored at start (a
 *   shell's trap '' TERM: whoever started the stage decides): from then on no job starts, every record in
 *   hand or still readable from stdin without waiting gets fail() with the
 *   retryable record error "shutdown" and is written out, the jobs in
 *   flight finish, and the loop returns.
 * - A system error (from work, or a renewal the keeper cannot make) is
 *   dq_stop(): nothing more is written, the process exits at once; the
 *   messages in hand stay locked until their leases run out.
 * Returns the worst of the records' statuses and the loop's own (65 for a
 * malformed record, 74 for a read error).  One such loop per process.
 */
struct dq_job;
struct dq_parallel {
	int jobs;			/* threads, at least 1 */
	int (*wants)(json_t *rec, void *arg);
	int (*work)(json_t *rec, struct dq_job *, void *arg);
	int (*fail)(json_t *rec, const struct dq_err *, void *arg);
	void *arg;
};
int dq_each_record_parallel(const struct dq_parallel *);
/* For work: renew the job's lock now if due; 0 while the lock is ours (or
 * the record has none), -1 when it is lost. */
int dq_job_keep(struct dq_job *);

/* digest.c: hashes, OpenSSL's algorithms fetched once, on the first use. */
typedef struct evp_md_st EVP_MD;
const EVP_MD *dq_md_sha256(void);
const EVP_MD *dq_md_sha1(void);
void dq_sha256_hex(const void *data, size_t len, char hex[static 65]);
/* Constant-time comparison of two byte strings (lengths may differ). */
int dq_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/* id.c: a random id costs no system call (getrandom fills a buffer). */
void dq_uuid_new(char out[static 37]);			/* random, v4 */
void dq_uuid_v5(const char *ns_uuid, const char *name, char out[static 37]);
int dq_uuid_valid(const char *s);			/* canonical lowercase 8-4-4-4-12 */

/* log.c: the one emitter.  JSON lines on stderr unless stderr is a tty. */
enum dq_level { DQ_DEBUG, DQ_INFO, DQ_WARNING, DQ_ERROR };
/*
 * Log event with context fields (steals ctx, may be NULL).  The text form
 * is "prog: object: message" where object is ctx's image_id, file or
 * message_id, whichever comes first.
 */
void dq_log(enum dq_level, const char *event, json_t *ctx, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int dq_log_enabled(enum dq_level);
/* Hand each line (without its newline) to fn instead of writing it on
 * stderr; NULL: stderr again.  For dq-ingest's FastCGI error stream. */
void dq_log_sink(void (*fn)(const char *line));
void dq_log_err(enum dq_level, const char *event, json_t *ctx, const struct dq_err *);

/* config.c: every variable of DESIGN §6, read once. */
struct dq_config {
	/* analyzer */
	const char *ai_endpoint, *openai_api_version, *ai_api_key, *openai_scope;
	const char *vision_deployment, *reasoning_deployment, *reports_deployment;
	/* the azure-openai analyzer (lib/analyzer/openai.c) */
	const char *openai_detail, *openai_effort;
	int openai_max_tokens;
	const char *analyzer;			/* DQ_ANALYZER, resolved */
	const char *reference_dir, *cache_dir;
	/* store */
	const char *storage_account, *storage_connection_string;
	const char *raw_container, *processed_container;
	/* queue */
	const char *servicebus_namespace, *servicebus_connection_string, *queue;
	/* worker */
	long max_messages, max_delivery_attempts;
	double worker_wait_seconds, worker_grace_seconds;	/* read by dq-worker */
	/* ingest */
	const char *api_key, *cors_origins;
	long rate_limit_per_ip, rate_limit_per_key;
	const char *state_dir, *env_file, *trusted_proxy;
	int insecure_no_auth;
	/* identity */
	const char *identity_endpoint, *identity_header, *client_id;
	const char *federated_token_file, *tenant_id, *authority_host;
	const char *pod_identity_host;		/* AZURE_POD_IDENTITY_AUTHORITY_HOST: IMDS elsewhere */
	/* local */
	const char *local_dir;
	long long max_image_bytes, max_image_pixels;
	const char *blob_endpoint, *servicebus_endpoint, *ca_file;
	/* logs */
	const char *log_level, *log_format;
	/* timing knobs */
	double lock_seconds;		/* DQ_LOCK_SECONDS: local lease, default 300 */
	double dup_window_seconds;	/* DQ_DUPLICATE_WINDOW_SECONDS, default 600 */
	double retry_base_ms, retry_cap_ms, retry_budget_ms;
	long retry_attempts;		/* DQ_RETRY_ATTEMPTS: attempts at most, the first too */
	double http_connect_timeout_ms, http_timeout_ms;	/* of one HTTP attempt */
	double poll_ms;			/* DQ_POLL_MS: local spool polling, default 100 */
	double ingest_drain_ms;		/* DQ_INGEST_DRAIN_MS: a refused CGI body, default 5000 */
	double analyze_delay_ms;	/* DQ_TEST_ANALYZE_DELAY_MS: test hook, 0 */
	double analyze_delay_p99_ms;	/* DQ_TEST_ANALYZE_DELAY_P99_MS: its spread, 0 */
	const char *analyze_slow_sku;	/* DQ_TEST_ANALYZE_SLOW_SKU: test hook, the SKU of slow images */
	double analyze_slow_ms;		/* DQ_TEST_ANALYZE_SLOW_MS: their delay instead, 0 */
	const char *test_analyze_url;	/* DQ_TEST_ANALYZE_URL: test hook, a network model */
	int test_send_fsync_fail;	/* DQ_TEST_SEND_FSYNC_FAIL: test hook, 0 */
};
extern struct dq_config dq_cfg;
/* Load and validate; on error fills err (scope system, status 78). */
int dq_config_load(struct dq_err *err);
/*
 * --print-config: one JSON object, first what prog will use (its store,
 * queue and analyzer as DESIGN §1 chooses them, their locations and
 * credential mechanism), then "variables": those prog reads, with their
 * values or defaults, secrets as "<set>".
 */
void dq_config_print(FILE *, const char *prog);

/* record.c: JSON Lines. */
#define DQ_MAX_LINE (16L * 1024 * 1024)
struct dq_reader {
	FILE *fp;
	const char *name;	/* "<stdin>" */
	unsigned long line;
	char *buf;
	size_t cap;
};
void dq_reader_init(struct dq_reader *, FILE *, const char *name);
void dq_reader_free(struct dq_reader *);
/*
 * Next record: 1 with *rec (new reference), 0 at end of input, -1 for a
 * malformed record (logged as event "malformed" with name:line; the caller
 * counts it as a permanent failure and goes on).  -2 on a read error.
 */
int dq_read_record(struct dq_reader *, json_t **rec);
/* Compact, REAL_PRECISION(15), '\n', flushed.  0 or -1 (stdout broken). */
int dq_write_record(FILE *, json_t *rec);
/* Add record["error"] = {stage, code, message, retryable, scope, http_status?}. */
void dq_record_set_error(json_t *rec, const char *stage, const struct dq_err *);
/* Whether the record carries an error, and whether it is retryable. */
int dq_record_has_error(json_t *rec, int *retryable);
/* Serialise like dq_write_record, without the newline (malloc'd). */
char *dq_json_dumps(json_t *);
/* Round to at most `places` decimals, for deterministic output. */
double dq_round(double v, int places);
/* locked_until of a receipt in ms since the epoch, 0 when unknown. */
int64_t dq_receipt_locked_until_ms(json_t *receipt);
/* The log context of a record, the same in every stage: {image_id,
 * message_id, delivery_count} from its message and receipt, the strings
 * left out where absent (new reference, for dq_log's ctx). */
json_t *dq_record_log_ctx(json_t *rec);

/* image.c: header sniffing, no pixel decoding. */
enum dq_image_type { DQ_IMG_UNKNOWN, DQ_IMG_JPEG, DQ_IMG_PNG, DQ_IMG_WEBP };
struct dq_image_info {
	enum dq_image_type type;
	long width, height;
	int complete;		/* structure intact through its end marker */
};
/*
 * Fills info from the bytes.  0 when the type is known and the header
 * readable (check info->complete separately), -1 otherwise with err set
 * (record scope: not_an_image, bad_header).
 */
int dq_image_sniff(const unsigned char *, size_t, struct dq_image_info *, struct dq_err *);
const char *dq_image_mime(enum dq_image_type);
const char *dq_image_ext(enum dq_image_type);
enum dq_image_type dq_image_type_from_mime(const char *);
/*
 * The whole validation of an image, the same at every entry point (dq-put,
 * dq-ingest, dq-analyze on a file or a downloaded raw image): known type,
 * complete, within DQ_MAX_IMAGE_BYTES and DQ_MAX_IMAGE_PIXELS, and it
 * decodes without a complaint about its data.  0, or -1 with a permanent
 * record error: too_large, not_an_image, bad_header, truncated_image,
 * too_many_pixels, corrupt_image.
 */
int dq_image_validate(const unsigned char *, size_t, struct dq_image_info *, struct dq_err *);
/*
 * Read an image FILE argument: a regular file (opened without blocking)
 * within DQ_MAX_IMAGE_BYTES.  0, or -1 with a record error: too_large (65),
 * no_such_file, not_a_file (a directory, a FIFO...: 66), read_error (74).
 */
int dq_image_read(const char *path, unsigned char **data, size_t *len, struct dq_err *);

/*
 * pixels.c: JPEG, PNG and WebP decoded to 8-bit gray or RGB (scaled by the
 * codec where it can), shrunk to fit, and encoded back, in memory or to a
 * file; shared by the analyzers, dq-synth and the annotations.
 */
/* An 8-bit raster, row-major, ch = 1 (gray) or 3 (RGB). */
struct dq_raster {
	int w, h, ch;
	unsigned char *px;
	long orig_w, orig_h;	/* the stored image's size before scaling */
};

/*
 * Decode JPEG, PNG or WebP into ch channels (1 or 3).  When min_w/min_h
 * are positive the decoder may scale down (JPEG by its DCT, WebP by its
 * scaler) as long as the result stays at least min_w x min_h; PNG is
 * always decoded whole.  EXIF orientation is ignored.  0, or -1 with err
 * (record scope, code "undecodable").
 */
int dq_decode(const unsigned char *data, size_t len, int ch, int min_w,
    int min_h, struct dq_raster *out, struct dq_err *err);
void dq_raster_free(struct dq_raster *);

/*
 * The size of a w x h image fitted within max_w x max_h and, when
 * max_pixels is positive, within max_pixels pixels: the aspect ratio kept
 * (each side rounded, at least 1 and at most its limit), never larger than
 * w x h, exactly w x h when that fits.
 */
void dq_fit_size(long w, long h, long max_w, long max_h, long max_pixels,
    int *fit_w, int *fit_h);
/*
 * in shrunk into out (a new raster) to dq_fit_size's size by an area
 * average, never enlarged; a copy of in when it fits.  orig_w/orig_h are
 * in's.  0, or -1 with the record error bad_size (no raster, a limit
 * below 1).
 */
int dq_raster_fit(const struct dq_raster *in, int max_w, int max_h,
    long max_pixels, struct dq_raster *out, struct dq_err *err);
/*
 * dq_decode at the codec's smallest scale that still covers the fitted
 * size, then dq_raster_fit to that size (computed from the stored size,
 * so the result is the same whatever the codec's scale was).  0, or -1
 * with the record error bad_size or undecodable.
 */
int dq_decode_fit(const unsigned char *data, size_t len, int ch, int max_w,
    int max_h, long max_pixels, struct dq_raster *out, struct dq_err *err);
/*
 * Encoders into memory: *buf a malloc'd buffer of *len bytes (free(3) it),
 * quality 0..100 for JPEG and lossy WebP, PNG fast over small.  0, or -1
 * with *buf NULL and the record error unencodable.
 */
int dq_png_encode(const struct dq_raster *, unsigned char **buf, size_t *len,
    struct dq_err *);
int dq_jpeg_encode(const struct dq_raster *, int quality, unsigned char **buf,
    size_t *len, struct dq_err *);
int dq_webp_encode(const struct dq_raster *, int quality, unsigned char **buf,
    size_t *len, struct dq_err *);
/*
 * The encoders above into a new file at path: 0, or -1 with their error or
 * the system error io_error (74) when the file cannot be written.
 */
int dq_png_write(const char *path, const struct dq_raster *, struct dq_err *);
int dq_jpeg_write(const char *path, const struct dq_raster *, int quality,
    struct dq_err *);
int dq_webp_write(const char *path, const struct dq_raster *, int quality,
    struct dq_err *);
/*
 * Decode the whole image at the smallest scale the codec offers and discard
 * the pixels; 0, or -1 with the record error corrupt_image when the decoder
 * fails or warns about the data.
 */
int dq_decode_check(const unsigned char *, size_t, enum dq_image_type, struct dq_err *);

/* message.c: the queue message body and the raw blob's metadata. */
/* Check sku/facility characters: [A-Za-z0-9._-], 1..64. */
int dq_safe_token(const char *);
/*
 * Build the message body; steals extra (NULL means {}).  file_name (NULL
 * or "" for none) is metadata.file_name, already made by dq_file_name().
 */
json_t *dq_message_new(const char *image_id, const char *ingested_at,
    const char *sku, const char *facility, json_t *extra,
    const char *raw_container, const struct dq_image_info *,
    size_t size, const char *sha256, const char *file_name);
/*
 * The original file name as messages keep it: the last component of path
 * (after any '/' or '\'), printable UTF-8 (anything else becomes '_'), at
 * most DQ_FILE_NAME_MAX bytes.  1 with out set, 0 when nothing is left.
 */
#define DQ_FILE_NAME_MAX 255
int dq_file_name(const char *path, char out[static DQ_FILE_NAME_MAX + 1]);
/* A copy of s fit for a JSON string: invalid UTF-8 bytes become U+FFFD
 * (malloc'd). */
char *dq_utf8_fix(const char *s);
/* Validate a message body; 0 or -1 with err (record scope). */
int dq_message_check(json_t *msg, struct dq_err *);
/* Blob metadata (flat string map) from a message and back. */
json_t *dq_message_to_metadata(json_t *msg);
json_t *dq_message_from_metadata(json_t *meta, struct dq_err *);
/* Extra metadata given by a user: a JSON object of bounded size/depth;
 * what names it in errors ("--extra", "metadata"). */
json_t *dq_extra_parse(const char *what, const char *text, size_t len, struct dq_err *);
/* The raw blob name of a message: metadata.source_blob.blob_name. */
const char *dq_message_blob(json_t *msg, const char **container);

/* annotate.c: write a PNG copy of the image with the boxes drawn. */
int dq_annotate_write(const char *path, const unsigned char *data, size_t len,
    json_t *bounding_boxes, struct dq_err *);

/*
 * lib/http/: the one HTTP layer (DESIGN §1, §6), over libcurl: http.c
 * (TLS, timeouts, the request), curl.c (libcurl loaded at the first
 * request, the pool of connections; private header http/http.h),
 * answer.c (reading the answer), retry.c (the one retry policy),
 * redact.c (what never reaches a log, a record or an error).  Only
 * http.c and curl.c call libcurl.
 * Backends and the credential layer call these; nothing else in dq
 * calls libcurl.  libcurl is initialised by the first request, never
 * before: a program that makes none costs what it cost without it.
 */

/* http.c: a request and its answer. */
/*
 * A request.  Zero-initialise it and fill what you need: every field
 * left 0 or NULL takes its default.
 *
 * - headers: "Name: value" strings, NULL-terminated (NULL: none); libcurl
 *   adds Host, and Content-Length for a body; "Expect:" is always sent
 *   empty (no 100-continue round trip).
 * - The body is from memory (body, body_len: sent as is, also when
 *   body_len is 0 for a PUT or POST) or, when upload is set, streamed
 *   from that file from its current offset, upload_len bytes (rewound
 *   to that offset for a retry).
 * - The answer's body goes to memory, at most max_body bytes (0: 16 MiB;
 *   more is the record error "too_large", 65), or, when download is set,
 *   a 2xx answer's body to that file from its current offset (cut back
 *   to that offset for a retry); any other answer's body to memory.
 * - connect_timeout_ms, timeout_ms: of one attempt (0: DQ_HTTP_CONNECT_
 *   TIMEOUT_MS, DQ_HTTP_TIMEOUT_MS).  deadline_ms: ms since the epoch
 *   (dq_now_ms(); a record's lock) that no attempt and no wait crosses;
 *   0: none.
 * - credentials: the request carries a secret (a header, a SAS in the
 *   URL).  Such a request to plain http:// is refused before any
 *   connection unless the host is loopback (127.0.0.0/8, ::1,
 *   localhost).  The layer also treats as credentials what redact.c
 *   knows to be secret (an Authorization or key header, a sig= query).
 * - no_proxy: never through a proxy, whatever HTTPS_PROXY says (the VM
 *   metadata endpoint, link-local; added by the credential layer).
 * - sign (NULL: none): called before every attempt, the first and each
 *   retry, to add the headers that change per attempt (x-ms-date, a
 *   Shared Key signature, a token) with dq_http_add(); sign_arg is its
 *   own.  0, or -1 with err: the request is not sent, err returned.
 * - unauthorized (NULL: none): called on a 401 when the request was
 *   signed; 1 when the credential was dropped and the request may be
 *   sent once more (signed anew), 0 when not.  At most one such repeat
 *   per request: a 401 never loops.
 * - returned: statuses (0-terminated) the caller handles itself beyond
 *   the default ones (2xx, 3xx, 404, 409, 412); retried: statuses
 *   (0-terminated) retried beyond the default ones (408, 429, 500, 502,
 *   503, 504).  The caller's lists win over the defaults (IMDS's 404 is
 *   retried, a probe's 503 returned); retried wins over returned.
 */
struct dq_http_hdrs;
struct dq_http_req {
	const char *method;			/* NULL: GET; HEAD reads no body */
	const char *url;
	const char *const *headers;
	const void *body;
	size_t body_len;
	FILE *upload;
	int64_t upload_len;
	size_t max_body;
	FILE *download;
	int64_t connect_timeout_ms, timeout_ms, deadline_ms;
	int credentials;
	int no_proxy;				/* never through a proxy (IMDS: link-local) */
	int (*sign)(const struct dq_http_req *, struct dq_http_hdrs *, void *sign_arg,
	    struct dq_err *);
	int (*unauthorized)(void *sign_arg);
	void *sign_arg;
	const int *returned, *retried;
};
/* For sign: add one header "name: value" to this attempt. */
void dq_http_add(struct dq_http_hdrs *, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The answer; dq_http_resp_free() it whatever dq_http_do returned. */
struct dq_http_resp {
	long status;			/* the last answer's; 0: none came */
	char request_id[80];		/* x-ms-request-id, apim-request-id or x-request-id */
	unsigned char *body;		/* malloc'd, NUL-terminated; NULL: none or downloaded */
	size_t body_len;
	int attempts;			/* requests sent */
	int64_t waited_ms;		/* time spent waiting between them */
	char **hdr;			/* "name: value", as received (read with dq_http_header) */
	size_t nhdr;
};
/*
 * Send req with the one retry policy (retry.c) and fill resp.  0 when an
 * answer came whose status the caller handles: 2xx, 3xx (redirects are
 * never followed), 404, 409, 412 and req->returned's.  Otherwise -1 with
 * err (http_status and request_id set where an answer came), of the
 * kinds of DESIGN §2:
 * - 401, 403: system error, 78, not retried ("unauthorized",
 *   "forbidden"); a TLS certificate that does not verify: 78 ("tls");
 *   a refused plain-http credential: 78 ("insecure_transport");
 * - a retried status or a connection failure still there when the
 *   budget, the attempts or the deadline ran out: system error, 75
 *   ("unavailable", "timeout", "connect_failed"), with budget_spent set:
 *   the caller must not retry it again (DESIGN §6: one retry loop);
 * - any other 4xx: record error, 65 ("http_4xx"); any other 5xx: system
 *   error, 69 ("http_5xx");
 * - an answer over max_body: record error, 65 ("too_large"); a file of
 *   the request that fails: 74 ("io_error"); libcurl that cannot be
 *   loaded: 78, or cannot start: 75 ("http_init"); not an http(s) URL:
 *   78 ("bad_url").
 * The backend that called reads resp's body and headers to refine that
 * (an error code in the body).  Safe from any thread at once: each thread
 * has its own libcurl handle over one shared pool of connections, TLS
 * sessions and DNS answers; no lock is held while a request is under way.
 */
int dq_http_do(const struct dq_http_req *, struct dq_http_resp *, struct dq_err *);

/* answer.c: reading an answer, and what needs no libcurl. */
/* A header of the answer by name, case-insensitively (the last one); NULL: none. */
const char *dq_http_header(const struct dq_http_resp *, const char *name);
void dq_http_resp_free(struct dq_http_resp *);
/* Whether host (a URL's host, brackets allowed) is loopback:
 * 127.0.0.0/8, ::1, localhost. */
int dq_http_loopback(const char *host);

/*
 * retry.c: the one retry policy.  Exponential backoff with full jitter
 * (a wait drawn from [0, min(DQ_RETRY_CAP_MS, DQ_RETRY_BASE_MS * 2^n)]),
 * or the server's own hint (dq_retry_after_ms) capped at DQ_RETRY_CAP_MS;
 * at most DQ_RETRY_ATTEMPTS attempts; no retry whose wait would end past
 * DQ_RETRY_BUDGET_MS after the first attempt or past the caller's
 * deadline.  dq_http_do uses it; so does a stage that retries work of its
 * own that no HTTP retried (dq-analyze over the reference analyzer).
 */
struct dq_retry {
	int64_t start_ms, deadline_ms;	/* deadline 0: none */
	int attempts;			/* made so far */
	int64_t waited_ms;
	int64_t last_wait_ms, last_ceiling_ms;	/* the last wait, and what bounded it */
};
void dq_retry_init(struct dq_retry *, int64_t deadline_ms);
/*
 * After a failed attempt: the wait (ms, >= 0) before the next one, or -1
 * when the policy allows no more.  hint_ms: the server's (-1: none).  It
 * does not sleep: the caller does, with dq_sleep_ms.
 */
int64_t dq_retry_next(struct dq_retry *, int64_t hint_ms);
/* 1 for the statuses retried by default: 408, 429, 500, 502, 503, 504. */
int dq_retry_status(long status);
/* The server's hint in ms: retry-after-ms, x-ms-retry-after-ms, then
 * Retry-After (seconds or an HTTP date), the first that parses; -1: none. */
int64_t dq_retry_after_ms(const struct dq_http_resp *);

/*
 * redact.c: the one place that knows what is secret (no libcurl here).
 * Used for every URL, header and body fragment the HTTP layer and the
 * credential layer log or put in an error.
 */
/* 1 when a header's value is secret: Authorization, Proxy-Authorization,
 * api-key, x-api-key, x-ms-*-key, x-identity-header, Cookie, ... */
int dq_redact_header_secret(const char *name);
/* A URL with its userinfo and every query value but known harmless ones
 * (api-version, restype, comp, ...) replaced by "REDACTED", into buf (cut
 * to n); returns buf. */
char *dq_redact_url(const char *url, char *buf, size_t n);
/* A text (an error body, a message) with what follows "Bearer ",
 * "SharedKey ", "SharedAccessSignature ", "sig=", "api-key" and the like
 * replaced by "REDACTED", malloc'd. */
char *dq_redact_text(const char *text);
/* 1 when a URL's query or a header list carries a secret (for the
 * plain-http refusal). */
int dq_redact_url_secret(const char *url);

/*
 * lib/cred/: the one credential layer (DESIGN §1, §6): connection
 * strings (connstr.c), Shared Key and SAS signing and where a credential
 * may be sent (sign.c), managed identity (identity.c), and the token
 * cache shared by the user's processes (cache.c).  Backends take their
 * credentials from here and never fetch a token on their own.  Nothing
 * here runs unless a network backend is chosen.  Keys and tokens handed
 * out are the caller's to wipe (dq_wipe, dq_token_free).
 */

/* connstr.c: connection strings (azure-protocols.md §1.7, §2.6). */
struct dq_blob_conn {
	char *account;			/* AccountName; NULL with a SAS only */
	unsigned char *key;		/* AccountKey, base64-decoded; NULL: none */
	size_t keylen;
	char *sas;			/* SharedAccessSignature, no '?'; NULL: none */
	char *endpoint;			/* blob endpoint, no trailing '/' */
	int emulator;			/* UseDevelopmentStorage=true (Azurite) */
};
/* Parse AZURE_STORAGE_CONNECTION_STRING: 0, or -1 with a system error (78)
 * naming the key at fault, never a value.  Exactly one of key and sas. */
int dq_blob_conn_parse(const char *, struct dq_blob_conn *, struct dq_err *);
void dq_blob_conn_free(struct dq_blob_conn *);	/* wipes the secrets */
struct dq_sb_conn {
	char *endpoint;			/* https://<host> (http:// for the emulator) */
	char *host;			/* <namespace>.servicebus.windows.net[:port] */
	char *key_name, *key;		/* SharedAccessKeyName, SharedAccessKey; or NULL */
	char *sas;			/* a given SharedAccessSignature token; or NULL */
	char *entity;			/* EntityPath; NULL: none */
	int emulator;			/* UseDevelopmentEmulator=true */
};
int dq_sb_conn_parse(const char *, struct dq_sb_conn *, struct dq_err *);
void dq_sb_conn_free(struct dq_sb_conn *);
/* Base64 (OpenSSL): decode 0 or -1 (not base64); encode malloc'd. */
int dq_base64_decode(const char *, unsigned char **out, size_t *len);
char *dq_base64_encode(const unsigned char *, size_t);

/* sign.c: signatures over plain inputs, and the transport rule. */
/* Percent-encode all but A-Z a-z 0-9 - . _ ~, uppercase hex (malloc'd). */
char *dq_url_encode(const char *);
int dq_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len,
    unsigned char mac[static 32]);
/*
 * Shared Key for Blob Storage: the string to sign of azure-protocols.md
 * §1.3 for the request as sent (verb; url with the path and query as
 * sent, percent-encoded; headers as libcurl gets them, "Name: value",
 * "Name;" for an empty one, NULL-terminated), and the Authorization
 * value "SharedKey <account>:<signature>".  malloc'd; NULL with err (78)
 * for a header line that is neither form.
 */
char *dq_sharedkey_string_to_sign(const char *verb, const char *account, const char *url,
    const char *const *headers, struct dq_err *);
char *dq_sharedkey_authorization(const unsigned char *key, size_t keylen, const char *verb,
    const char *account, const char *url, const char *const *headers, struct dq_err *);
/*
 * A Service Bus SAS token (§2.6), the Authorization value
 * "SharedAccessSignature sr=<enc uri>&sig=<enc sig>&se=<expiry>&skn=<name>"
 * for resource_uri (sent as given: use a lowercase host and entity) and
 * expiry (Unix seconds); the key is used as written, not decoded.
 */
char *dq_sas_token(const char *resource_uri, const char *key_name, const char *key,
    long long expiry);
/* 0 when url may carry a credential: https://, or http:// to loopback;
 * else -1 with the system error "insecure_transport" (78) naming what. */
int dq_cred_transport_ok(const char *url, const char *what, struct dq_err *);

/* identity.c: managed identity (azure-protocols.md §3). */
enum dq_mi_kind { DQ_MI_NONE, DQ_MI_WORKLOAD, DQ_MI_APP_SERVICE, DQ_MI_IMDS };
struct dq_mi {
	enum dq_mi_kind kind;
	const char *name;		/* "workload identity", ... */
	const char *from;		/* the variable that chose it */
	const char *endpoint;		/* authority host, IDENTITY_ENDPOINT, IMDS */
	const char *tenant, *client_id;	/* AZURE_TENANT_ID, AZURE_CLIENT_ID; or NULL */
};
/* The one choice of mechanism, from the environment (identity.c's top
 * comment and dq(7) give the order): 0, or -1 with err (78). */
int dq_mi_choose(struct dq_mi *, struct dq_err *);
struct dq_token {
	char *value;			/* NULL: none */
	int64_t expires_ms, refresh_ms;	/* ms since the epoch */
};
/* The token in an identity endpoint's answer (expires_on, expires_in,
 * refresh_in as numbers or strings): 0, or -1 with a system error (75). */
int dq_token_parse(const char *body, size_t len, int64_t now_ms, struct dq_token *,
    struct dq_err *);
/* A new token for scope from mi, over the HTTP layer (no cache). */
int dq_mi_fetch(const struct dq_mi *, const char *scope, struct dq_token *, struct dq_err *);
/* resource for an MI endpoint: scope less a trailing "/.default" (malloc'd). */
char *dq_scope_resource(const char *scope);
/* What names a cached token: mechanism, endpoint, tenant, client, scope. */
char *dq_mi_cache_key(const struct dq_mi *, const char *scope);

/* cache.c: the token cache shared by the user's processes (DESIGN §6). */
/*
 * A bearer token for scope ("https://storage.azure.com/.default"), from
 * this process, the shared cache, or one fetch: 0 with *token (free with
 * dq_token_free), or -1 with a system error (78 configuration or
 * refusal, 75 the identity endpoint down after the retry budget).  Safe
 * from any thread.
 */
int dq_token_get(const char *scope, char **token, struct dq_err *);
/* A service answered 401 to token: drop it here and from the shared cache
 * (when it still holds that token).  The caller sends its request once
 * more with a new token; a second 401 is its system error (78), never a
 * loop.  dq_bearer_* do this for dq_http_do. */
void dq_token_invalidate(const char *scope, const char *token);
void dq_token_free(char *);
/* The mechanism dq_token_get uses (and *mi), or NULL with err: for
 * --print-config and the start-up log; reads the environment only. */
const char *dq_mi_mechanism(const struct dq_mi **mi, struct dq_err *);
/* The shared cache's directory for this user (malloc'd; cache.c's top
 * comment says where). */
char *dq_token_cache_path(void);
/* A request's bearer token: .sign = dq_bearer_sign, .unauthorized =
 * dq_bearer_unauthorized, .sign_arg = &bearer; dq_bearer_done after. */
struct dq_bearer {
	const char *scope;
	char *token;			/* the one last sent */
};
struct dq_http_req;
struct dq_http_hdrs;
int dq_bearer_sign(const struct dq_http_req *, struct dq_http_hdrs *, void *arg,
    struct dq_err *);
int dq_bearer_unauthorized(void *arg);
void dq_bearer_done(struct dq_bearer *);

/*
 * lib/store/: the store interface (store.c) and its backends, one file
 * each: local.c (a directory).
 *
 * Every store, queue and analyzer operation is safe to call from several
 * threads at once (dq-analyze -j N calls them from N threads): a backend
 * keeps its own locks where it needs them, and callers take none.
 */

/* store.c: the store interface. */
enum dq_put_mode {
	DQ_PUT_CREATE,		/* first writer wins: existing -> success, existing=1 */
	DQ_PUT_REPLACE,		/* overwrite */
};
struct dq_put_result {
	char etag[80];
	int existing;
};
struct dq_store;
struct dq_store_ops {
	const char *name;
	/* Create-only or replace; the backend does the atomic part.  sha256:
	 * the content's hash (hex) when the caller has it, so the backend
	 * need not hash it again (for its ETag, a checksum header); or NULL. */
	int (*put)(struct dq_store *, const char *container, const char *name,
	    const void *data, size_t len, const char *sha256, const char *content_type,
	    json_t *metadata, enum dq_put_mode, struct dq_put_result *, struct dq_err *);
	/* 1 found (*data malloc'd, *metadata new ref when asked), 0 absent, -1 error. */
	int (*get)(struct dq_store *, const char *container, const char *name,
	    unsigned char **data, size_t *len, json_t **metadata, struct dq_err *);
	/* 1 exists, 0 absent, -1 error. */
	int (*exists)(struct dq_store *, const char *container, const char *name,
	    struct dq_err *);
	/* 0 removed or absent, -1 error. */
	int (*del)(struct dq_store *, const char *container, const char *name,
	    struct dq_err *);
	/* Calls fn for each blob name with prefix, sorted; fn returns nonzero to stop. */
	int (*list)(struct dq_store *, const char *container, const char *prefix,
	    int (*fn)(const char *name, void *arg), void *arg, struct dq_err *);
	/* Start-up check: reachable and authorised; creates nothing. */
	int (*check)(struct dq_store *, struct dq_err *);
	/* Start-up proof that a container takes writes: a probe blob written
	 * and removed, nothing else created.  System errors: 78 for a refusal
	 * (read-only, no permission), 75 for a full disk or a backend down. */
	int (*probe)(struct dq_store *, const char *container, struct dq_err *);
	void (*close)(struct dq_store *);
};
struct dq_store {
	const struct dq_store_ops *ops;
	void *priv;
};
/* From dq_cfg; NULL with err (78) when nothing is configured. */
struct dq_store *dq_store_open(struct dq_err *);
/* The backend dq_store_open picks ("azure", "local") and its credential
 * mechanism; NULL with err (78) when nothing is configured. */
const char *dq_store_choice(const char **cred, struct dq_err *);
void dq_store_close(struct dq_store *);
/*
 * The operations, through the table: programs and the rest of lib call
 * these, never s->ops directly.  put follows DQ_PUT_*'s rule (raw images
 * go through dq_raw_store) and clears the result first.
 */
int dq_store_put(struct dq_store *, const char *container, const char *name,
    const void *data, size_t len, const char *content_type, json_t *metadata,
    enum dq_put_mode, struct dq_put_result *, struct dq_err *);
/* put, with the content's SHA-256 (hex) that the caller already has. */
int dq_store_put_hashed(struct dq_store *, const char *container, const char *name,
    const void *data, size_t len, const char *sha256, const char *content_type,
    json_t *metadata, enum dq_put_mode, struct dq_put_result *, struct dq_err *);
int dq_store_get(struct dq_store *, const char *container, const char *name,
    unsigned char **data, size_t *len, json_t **metadata, struct dq_err *);
int dq_store_exists(struct dq_store *, const char *container, const char *name,
    struct dq_err *);
int dq_store_del(struct dq_store *, const char *container, const char *name,
    struct dq_err *);
int dq_store_list(struct dq_store *, const char *container, const char *prefix,
    int (*fn)(const char *name, void *arg), void *arg, struct dq_err *);
int dq_store_check(struct dq_store *, struct dq_err *);
int dq_store_probe(struct dq_store *, const char *container, struct dq_err *);
/* Names in the processed container. */
void dq_artifact_name(const char *image_id, char *buf, size_t n);	/* <id>.json */
void dq_marker_name(const char *image_id, char *buf, size_t n);	/* <id>.error.json */

/* store/local.c */
struct dq_store *dq_store_local_open(const char *dir, struct dq_err *);

/*
 * lib/queue/: the queue interface (queue.c) and its backends: local.c
 * (the spool directory).
 */

/* queue.c: the queue interface. */
enum { DQ_RECV_DEAD_LETTER = 1, DQ_RECV_PEEK = 2 };
enum { DQ_SEND_FAILED = -1, DQ_SEND_UNKNOWN = -2 };
struct dq_queue;
struct dq_queue_ops {
	const char *name;
	/*
	 * 0 sent, 1 dropped as a duplicate of message_id; on an error
	 * DQ_SEND_FAILED (-1) when the message was certainly not sent, or
	 * DQ_SEND_UNKNOWN (-2) when it may have been (a failure after it was
	 * published, a lost answer): then whatever it refers to must stay.
	 */
	int (*send)(struct dq_queue *, json_t *body, const char *message_id,
	    struct dq_err *);
	/*
	 * Up to max messages; waits up to wait_ms for the first, then takes
	 * only what is immediately there.  Appends records
	 * {"message":body,"receipt":{...}} to out (a JSON array).
	 * Returns the count or -1.
	 */
	int (*receive)(struct dq_queue *, int max, int64_t wait_ms, int flags,
	    json_t *out, struct dq_err *);
	/* Settlement through a receipt; a stale or unknown lock is record
	 * error "lock_lost" (retryable).  abandon returns 1 where the backend
	 * dead-lettered the message instead (its last delivery), else 0.  A
	 * backend that dead-letters a message logs it, once, as
	 * "dead_lettered". */
	int (*complete)(struct dq_queue *, json_t *receipt, struct dq_err *);
	int (*abandon)(struct dq_queue *, json_t *receipt, struct dq_err *);
	/* NULL where the backend cannot dead-letter (Service Bus REST). */
	int (*dead_letter)(struct dq_queue *, json_t *receipt, const char *reason,
	    const char *description, struct dq_err *);
	/* Renew; updates receipt's locked_until. */
	int (*renew)(struct dq_queue *, json_t *receipt, struct dq_err *);
	/* Start-up check: reachable, authorised and taking writes (a probe
	 * written and removed); creates nothing. */
	int (*check)(struct dq_queue *, struct dq_err *);
	void (*close)(struct dq_queue *);
};
struct dq_queue {
	const struct dq_queue_ops *ops;
	const char *name;	/* queue name */
	void *priv;
};
/* From dq_cfg; name NULL means dq_cfg.queue. */
struct dq_queue *dq_queue_open(const char *name, struct dq_err *);
/* The same for --check: creates nothing (a local spool not made yet). */
struct dq_queue *dq_queue_open_check(const char *name, struct dq_err *);
/* As dq_store_choice: "servicebus" or "local". */
const char *dq_queue_choice(const char **cred, struct dq_err *);
void dq_queue_close(struct dq_queue *);
/* The operations, through the table (never q->ops directly). */
int dq_queue_send(struct dq_queue *, json_t *body, const char *message_id, struct dq_err *);
int dq_queue_receive(struct dq_queue *, int max, int64_t wait_ms, int flags, json_t *out,
    struct dq_err *);
int dq_queue_complete(struct dq_queue *, json_t *receipt, struct dq_err *);
int dq_queue_abandon(struct dq_queue *, json_t *receipt, struct dq_err *);
/* Whether the backend dead-letters on request; dq_queue_dead_letter is a
 * system error (78) where it cannot. */
int dq_queue_can_dead_letter(const struct dq_queue *);
int dq_queue_dead_letter(struct dq_queue *, json_t *receipt, const char *reason,
    const char *description, struct dq_err *);
int dq_queue_renew(struct dq_queue *, json_t *receipt, struct dq_err *);
int dq_queue_check(struct dq_queue *, struct dq_err *);
const char *dq_queue_backend(const struct dq_queue *);	/* "local", "servicebus" */
/*
 * The queues that records' receipts name, each opened once and kept until
 * dq_queues_free.  dq_queues_for gives the queue receipt["queue"] names
 * (dq_cfg.queue when it names none), checking that receipt["backend"] is
 * that queue's: NULL with a system error otherwise (78 backend_mismatch,
 * 64 too_many_queues past 8 names, or dq_queue_open's error).  Safe to
 * call from several threads at once (the lease keeper's and a stage's).
 */
struct dq_queues;
struct dq_queues *dq_queues_new(void);
struct dq_queue *dq_queues_for(struct dq_queues *, json_t *receipt, struct dq_err *);
void dq_queues_free(struct dq_queues *);

/* queue/local.c */
struct dq_queue *dq_queue_local_open(const char *dir, const char *name, struct dq_err *);
/* The same without creating the spool's directories (--check). */
struct dq_queue *dq_queue_local_attach(const char *dir, const char *name, struct dq_err *);

/*
 * lib/analyzer/: the analyzer interface (analyzer.c) and its backends:
 * reference/ (offline, golden images; its private header is
 * analyzer/reference/reference.h).
 */

/* analyzer.c: the analyzer interface. */
struct dq_analysis {
	json_t *findings;	/* the artifact's defect_findings, in its key order */
	json_t *analysis;	/* analyzer-specific keys merged into "analysis" */
	char model_version[64];	/* the artifact's model_version */
};
struct dq_analyzer;
struct dq_analyzer_ops {
	const char *name;
	/*
	 * Analyze one image.  Must be thread-safe: dq-analyze -j N calls it
	 * from N threads at once.  0 with *out filled (new references), or -1
	 * with err: record scope for this image's fault (no reference for the
	 * SKU, undecodable image), system scope for the analyzer's (an
	 * unreadable reference directory, a bad key).
	 */
	int (*analyze)(struct dq_analyzer *, const char *sku,
	    const unsigned char *data, size_t len, const struct dq_image_info *,
	    struct dq_analysis *out, struct dq_err *);
	/* Start-up check (sku may be NULL: check what can be checked). */
	int (*check)(struct dq_analyzer *, const char *sku, struct dq_err *);
	void (*close)(struct dq_analyzer *);
};
struct dq_analyzer {
	const struct dq_analyzer_ops *ops;
	void *priv;
};
/* From dq_cfg (DQ_ANALYZER and friends); NULL with err (78). */
struct dq_analyzer *dq_analyzer_open(struct dq_err *);
/* The analyzer dq_analyzer_open picks, or NULL with err (78). */
const char *dq_analyzer_choice(struct dq_err *);
/* The reference models' cache: cachedir, else $XDG_CACHE_HOME/dq, else
 * $HOME/.cache/dq; malloc'd, NULL when none can be named. */
char *dq_cache_dir(const char *cachedir);
void dq_analyzer_close(struct dq_analyzer *);
/* The operations, through the table (never analyzer->ops directly). */
int dq_analyzer_analyze(struct dq_analyzer *, const char *sku, const unsigned char *data,
    size_t len, const struct dq_image_info *, struct dq_analysis *out, struct dq_err *);
int dq_analyzer_check(struct dq_analyzer *, const char *sku, struct dq_err *);
/*
 * The test hook of a slow model: sleep DQ_TEST_ANALYZE_DELAY_MS, or with
 * DQ_TEST_ANALYZE_DELAY_P99_MS a log-normal delay of that median and 99th
 * percentile, drawn anew each call (any thread); an image of the SKU
 * DQ_TEST_ANALYZE_SLOW_SKU sleeps DQ_TEST_ANALYZE_SLOW_MS instead.  Nothing
 * when unset.
 */
void dq_analyzer_test_delay(const char *sku);
/*
 * analyzer/testnet.c: the test hook of a network model, until one is
 * built: with DQ_TEST_ANALYZE_URL set, dq-analyze first GETs that URL
 * through the HTTP layer.  A failure there is the analysis's, as a
 * network analyzer reports one image's transient failure: a record
 * error, retryable, that keeps the layer's budget_spent (a retried
 * status or connection failure that outlasted the budget); an answer
 * that is not 2xx (409, say) is one without it, a failure nobody
 * retried yet.  0 when unset or answered 2xx; -1 with err.
 */
int dq_analyzer_test_request(struct dq_err *);
const char *dq_analyzer_name(const struct dq_analyzer *);	/* "reference", "azure-openai" */
void dq_analysis_free(struct dq_analysis *);

/* analyzer/reference/reference.c */
/* openai.c: the azure-openai analyzer from dq_cfg; NULL with err (78). */
struct dq_analyzer *dq_analyzer_openai_open(struct dq_err *);
struct dq_analyzer *dq_analyzer_reference_open(const char *refdir,
    const char *cachedir, struct dq_err *);
/* analyzer/reference/model.c */
/*
 * The one rule for a usable DQ_REFERENCE_DIR: a readable directory
 * holding SKU directories with images, <refdir>/<SKU>/<images>.  Returns
 * how many SKUs it holds (at least 1), the first by name copied to only;
 * or -1 with a system error (78) saying what it found and what is
 * expected.  Creates nothing.
 */
int dq_reference_skus(const char *refdir, char *only, size_t size, struct dq_err *);

/*
 * lib/, over the interfaces: the raw-image path, the artifact, the
 * fate of a record, the lease keeper.
 */

/*
 * raw.c: storing a raw image and building its message, the one path of
 * dq-put FILE and dq-ingest.  Fill the inputs, dq_raw_prepare() (no store
 * touched), dq_raw_store(), dq_raw_free().
 */
struct dq_raw {
	/* given */
	const char *sku, *facility;
	json_t *extra;			/* borrowed; NULL means {} */
	const char *file_name;		/* as given (a path, a part's filename); NULL: none */
	const unsigned char *data;
	size_t len;
	/* set by dq_raw_prepare */
	struct dq_image_info info;
	char sha256[65];
	/* set by dq_raw_store */
	char image_id[37];
	char blob[64];			/* <image_id>.<ext> in the raw container */
	char etag[80];
	json_t *msg;			/* the message: the stored one when existing */
	int created;			/* this call wrote the image */
	int existing;			/* the same bytes and a whole message were there */
	int repaired;			/* the same bytes were there, their metadata not: completed */
};
/* Validate the image (dq_image_validate) and hash it: 0, or -1 with err
 * (record scope, the validation's code). */
int dq_raw_prepare(struct dq_raw *, struct dq_err *);
/*
 * Store it under id (NULL: a new random one) create-only, with the
 * message's fields as blob metadata, and build the message.  An id names
 * one image: another type stored under it, or other bytes, is the record
 * error "conflict" (65) and nothing is written; the same bytes are success
 * (existing, the stored message), or, when their metadata is missing or
 * incomplete (a first attempt that failed half-way), are completed
 * (repaired, a new message).  A store failure is a system error; a
 * random id's half-written image is removed again.
 */
int dq_raw_store(struct dq_store *, struct dq_raw *, const char *id, struct dq_err *);
void dq_raw_free(struct dq_raw *);

/* artifact.c: the processed document of DESIGN §2. */
/* DESIGN §2's vocabulary and severity scale, NULL-terminated: the one list
 * the check, the analyzers and their prompts and schemas use. */
extern const char *const dq_defect_types[];
extern const char *const dq_severities[];
/*
 * Check an analyzer's defect_findings against the vocabulary and the
 * image's pixel grid (fail closed); 0, or -1 with err (record scope,
 * "bad_findings").
 */
int dq_findings_check(json_t *findings, long width, long height, struct dq_err *);
/*
 * The artifact in DESIGN §2's key order from a checked message and
 * analysis: analysis = {analyzer, the analyzer's keys, image{sha256,
 * width, height, the analyzer's image keys}, duration_ms}.
 */
json_t *dq_artifact_new(json_t *msg, const struct dq_analysis *,
    const char *analyzer, const char *sha256, const struct dq_image_info *,
    const char *processed_at, int64_t duration_ms);

/* 1 when msg asks for its artifact to be replaced (reprocess.requested_at). */
int dq_message_reprocess(json_t *msg, time_t *requested_at);
/*
 * --skip-existing for rec: 1 with *skipped (new ref) when no analysis is
 * needed: an artifact (unless the message asks to reprocess and the
 * artifact is older than the request), or a failure marker that recorded
 * this message id (any marker for a record without a receipt); 0 when
 * the record is to be analyzed; -1 with err.
 */
int dq_skip_existing(struct dq_store *, json_t *rec, json_t **skipped, struct dq_err *);
/* Write rec's failure into <id>.error.json, appending to its history;
 * existing=1 when this message id's failure was already there. */
int dq_marker_add(struct dq_store *, json_t *rec, struct dq_put_result *, struct dq_err *);
/* Store an artifact: first writer wins, or with replace overwrite it,
 * keeping the replaced one as <id>.<YYYYMMDDTHHMMSSmmmZ>.json. */
int dq_artifact_put(struct dq_store *, json_t *doc, enum dq_put_mode, struct dq_put_result *,
    struct dq_err *);

/* settle.c: what becomes of a record at the end of the pipeline (dq(7)). */
enum dq_action { DQ_COMPLETE, DQ_ABANDON, DQ_DEAD_LETTER };
/* What dq-put stores for a record. */
enum dq_keep { DQ_KEEP_NOTHING, DQ_KEEP_ARTIFACT, DQ_KEEP_MARKER };
/* The log event a decision deserves (settle.c's table names them). */
enum dq_fate_event {
	DQ_EVENT_NONE,
	DQ_EVENT_POISON,	/* "poison": failed for good, dead-lettered */
	DQ_EVENT_NOT_RESENT,	/* "not_resent": the resend was dropped */
	DQ_EVENT_INCOMPLETE,	/* "incomplete": lacks the --require key */
};
struct dq_fate {
	enum dq_action action;
	enum dq_keep keep;	/* for dq-put: the artifact, a failure marker, nothing */
	int broker;		/* a dead-lettering abandoned for the broker to do */
	const char *reason;	/* why (dead-letter reason, abandon cause); borrowed from rec */
	const char *description;
	enum dq_fate_event event;
};
/* 0 when the record error (rec["error"]) is about the circumstances
 * (dq(7)'s table: shutdown, lock_lost, raw_missing, an outage), not the image. */
int dq_error_is_images(json_t *error);
/*
 * The one decision for rec: what dq-put stores, and complete, abandon or
 * dead-letter for dq-dequeue --settle.  require NULL: no --require.  q is
 * the queue that settles it (NULL for dq-put): where it cannot
 * dead-letter (Service Bus) a dead-lettering is abandoned for the broker.
 * A record read from the dead-letter queue is abandoned, back there.
 */
void dq_record_fate(json_t *rec, long max_attempts, const char *require,
    const struct dq_queue *q, struct dq_fate *);
/*
 * Settle rec's receipt through q as dq_record_fate decides, logging the
 * decision's event and the settlement, and set rec["settled"] to what
 * happened ("completed", "abandoned", "dead-lettered").  0, or -1 with
 * the queue's error (rec untouched).
 */
int dq_settle(struct dq_queue *, json_t *rec, long max_attempts, const char *require,
    struct dq_err *);

/* lease.c: keeping alive the locks of the records a stage holds. */
struct dq_keeper;
struct dq_lease;
/*
 * Start the keeper thread.  fatal is called on a system error (a queue
 * that cannot be opened or refuses a renewal) and must not return.
 */
struct dq_keeper *dq_keeper_start(void (*fatal)(const struct dq_err *, json_t *ctx));
/* Keep rec's lock alive (a record without a receipt is only held); steals rec. */
struct dq_lease *dq_keeper_hold(struct dq_keeper *, json_t *rec);
/* The record, to read or change only until dq_lease_unlock(). */
json_t *dq_lease_lock(struct dq_lease *);
void dq_lease_unlock(struct dq_lease *);
/* Under dq_lease_lock: no renewal after this (the record is passed on). */
void dq_lease_end(struct dq_lease *);
/* Renew now if due; 0 when the lock is ours (or there is none), -1 when lost. */
int dq_lease_keep(struct dq_keeper *, struct dq_lease *);
/* Stop keeping it and drop the record. */
void dq_keeper_release(struct dq_keeper *, struct dq_lease *);
/* Stop the thread, close the queues. */
void dq_keeper_stop(struct dq_keeper *);

/*
 * lib/ingest/: the ingest request (request.c, multipart.c, ratelimit.c,
 * ingest.c), private to dq-ingest and its fuzzer: ingest/ingest.h.
 */

#endif
