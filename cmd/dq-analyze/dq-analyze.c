/* dq-analyze - analyze each record's image and add its artifact, keeping its lock alive. */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dq.h"

static const char synopsis[] =
    "usage: dq-analyze [-j N] [--skip-existing] [--force] [--annotate DIR] < records\n"
    "       dq-analyze [--sku SKU] [--annotate DIR] FILE...\n";

/* A record in our hands, waiting for a thread or being worked on. */
struct job {
	struct dq_lease *lease;
	struct job *next;
};

static struct dq_store *store;
static struct dq_analyzer *an;
static const char *annotate_dir;
static int skip_existing, force;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;	/* pending queue, flags */
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t room_cv = PTHREAD_COND_INITIALIZER;
static struct job *pending, **pending_tail = &pending;
static int npending, input_done, shutting_down;
static struct dq_keeper *keeper;

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t status_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t store_mu = PTHREAD_MUTEX_INITIALIZER;	/* store ops are not promised thread-safe */
static int status;
static int wake_pipe[2] = { -1, -1 };

static _Noreturn void
usage(const char *why)
{
	dq_usage(synopsis, why);
}

static void
merge_status(int st)
{
	pthread_mutex_lock(&status_mu);
	status = dq_status_merge(status, st);
	pthread_mutex_unlock(&status_mu);
}

/* Whole lines only, one writer at a time; a broken stdout ends us at once. */
static void
emit(json_t *rec)
{
	char *line = dq_json_dumps(rec);

	pthread_mutex_lock(&out_mu);
	if (fputs(line, stdout) == EOF || fputc('\n', stdout) == EOF || fflush(stdout) == EOF) {
		dq_log(DQ_ERROR, "io_error", NULL, "stdout: %s", strerror(errno));
		_exit(DQ_EX_IOERR);
	}
	pthread_mutex_unlock(&out_mu);
	free(line);
}

/*
 * A system error stops the stage at once: no further records, from any
 * thread (out_mu is never released, so no line is cut or added).
 */
static _Noreturn void
stop(const struct dq_err *err, json_t *ctx)
{
	int st;

	pthread_mutex_lock(&out_mu);
	dq_log_err(DQ_ERROR, "system_error", ctx, err);
	pthread_mutex_lock(&status_mu);
	st = dq_status_merge(status, err->status);
	_exit(dq_finish_stdout(st));
}

static json_t *
ctx_of(json_t *msg, json_t *receipt)
{
	return json_pack("{s:s?,s:s?,s:I}",
	    "image_id", json_string_value(json_object_get(msg, "image_id")),
	    "message_id", json_string_value(json_object_get(receipt, "message_id")),
	    "delivery_count", json_integer_value(json_object_get(receipt, "delivery_count")));
}

/* A record error: into the record, logged, remembered in the status. */
static void
fail(json_t *rec, const struct dq_err *err)
{
	dq_log_err(err->retryable ? DQ_WARNING : DQ_ERROR, "analyze_failed",
	    ctx_of(json_object_get(rec, "message"), json_object_get(rec, "receipt")), err);
	dq_record_set_error(rec, "analyze", err);
	merge_status(err->status);
}

/* ---- one record ---- */

static int
store_get(const char *cont, const char *name, unsigned char **data, size_t *len,
    struct dq_err *err)
{
	int r;

	pthread_mutex_lock(&store_mu);
	r = dq_store_get(store, cont, name, data, len, NULL, err);
	pthread_mutex_unlock(&store_mu);
	return r;
}

/*
 * Analyze an image for msg: the artifact, or NULL with err.  sha256 is
 * the checksum the message promises (NULL: none), annot the annotation's
 * path (NULL: none).
 */
static json_t *
analyze(json_t *msg, const unsigned char *data, size_t len, const char *sha256,
    const char *annot, struct dq_err *err)
{
	struct dq_image_info in;
	struct dq_analysis a = { 0 };
	const char *sku = json_string_value(json_object_get(json_object_get(msg, "metadata"), "product_sku"));
	char sha[65], now[21];
	int64_t t0;
	json_t *doc;

	dq_sha256_hex(data, len, sha);
	if (sha256 && strcmp(sha, sha256) != 0) {
		dq_err_record(err, "checksum_mismatch", "image sha256 %s differs from the message's %s",
		    sha, sha256);
		return NULL;
	}
	/* The same validation as at the door: a broken image is an error, never a finding. */
	if (dq_image_validate(data, len, &in, err) < 0)
		return NULL;
	t0 = dq_now_ms();
	if (dq_cfg.analyze_delay_ms > 0)
		dq_sleep_ms((int64_t)dq_cfg.analyze_delay_ms);	/* test hook: a slow model */
	if (dq_analyzer_analyze(an, sku, data, len, &in, &a, err) < 0)
		return NULL;
	if (dq_findings_check(a.findings, in.width, in.height, err) < 0) {
		dq_analysis_free(&a);
		return NULL;
	}
	dq_rfc3339(time(NULL), now);
	doc = dq_artifact_new(msg, &a, dq_analyzer_name(an), sha, &in, now, dq_now_ms() - t0);
	dq_analysis_free(&a);
	if (annot && dq_annotate_write(annot, data, len,
	    json_object_get(json_object_get(doc, "defect_findings"), "bounding_boxes"), err) < 0) {
		/* the artifact stands; a picture we could not draw is only logged */
		dq_log_err(DQ_WARNING, "annotate_failed",
		    json_pack("{s:O,s:s}", "image_id", json_object_get(msg, "image_id"), "file", annot), err);
	}
	return doc;
}

/*
 * Work on one record: skipped, artifact or error.  What is read from the
 * record is copied under its mutex; the result is put back under it.
 */
static void
process(struct job *j)
{
	json_t *rec, *msg, *receipt, *skipped = NULL, *doc = NULL;
	struct dq_err err;
	const char *id, *cont, *blob;
	unsigned char *data = NULL;
	size_t len;
	char *annot = NULL;
	int r, stopping;

	rec = dq_lease_lock(j->lease);
	msg = json_deep_copy(json_object_get(rec, "message"));
	receipt = json_deep_copy(json_object_get(rec, "receipt"));
	dq_lease_unlock(j->lease);
	pthread_mutex_lock(&mu);
	stopping = shutting_down;
	pthread_mutex_unlock(&mu);

	id = json_string_value(json_object_get(msg, "image_id"));
	blob = dq_message_blob(msg, &cont);
	if (stopping) {
		dq_err_set(&err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "shutdown",
		    "not started: dq-analyze is shutting down");
		goto out;
	}
	if (dq_message_check(msg, &err) < 0)
		goto out;
	if (skip_existing) {
		json_t *view = json_pack("{s:O,s:O?}", "message", msg, "receipt", receipt);

		pthread_mutex_lock(&store_mu);
		r = dq_skip_existing(store, view, &skipped, &err);
		pthread_mutex_unlock(&store_mu);
		json_decref(view);
		if (r < 0 && err.scope == DQ_SCOPE_SYSTEM)
			stop(&err, ctx_of(msg, receipt));
		if (r < 0)
			goto out;
		if (skipped) {
			dq_log(DQ_INFO, "skipped", ctx_of(msg, receipt), "skipped: %s in %s",
			    strcmp(json_string_value(json_object_get(skipped, "reason")), "failed") == 0 ?
			    "this message's failure is on record" : "the artifact is already",
			    dq_cfg.processed_container);
			goto out;
		}
	}
	/* Never start an analysis on a record whose lock we could not renew. */
	if (dq_lease_keep(keeper, j->lease) < 0) {
		dq_err_set(&err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "lock_lost",
		    "the message's lock could not be kept: not analyzed");
		goto out;
	}
	if ((r = store_get(cont, blob, &data, &len, &err)) < 0) {
		if (err.scope == DQ_SCOPE_SYSTEM)
			stop(&err, ctx_of(msg, receipt));
		goto out;
	}
	if (r == 0) {
		/* Not the image's content: tried again, never marked failed. */
		dq_err_set(&err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "raw_missing",
		    "no raw image %s/%s", cont, blob);
		goto out;
	}
	if (annotate_dir)
		annot = dq_xasprintf("%s/%s.png", annotate_dir, id);
	dq_log(DQ_DEBUG, "analyzing", ctx_of(msg, receipt), "analyzing %s/%s", cont, blob);
	/* A transient failure is tried again within the retry budget, the lock kept. */
	for (int64_t t0 = dq_now_ms(), wait = dq_cfg.retry_base_ms >= 2 ? (int64_t)dq_cfg.retry_base_ms : 2;; wait *= 2) {
		doc = analyze(msg, data, len,
		    json_string_value(json_object_get(json_object_get(msg, "image"), "sha256")), annot, &err);
		if (doc || err.scope == DQ_SCOPE_SYSTEM || !err.retryable ||
		    dq_now_ms() - t0 + wait > (int64_t)dq_cfg.retry_budget_ms)
			break;
		wait = wait < (int64_t)dq_cfg.retry_cap_ms ? wait : (int64_t)dq_cfg.retry_cap_ms;
		dq_log_err(DQ_WARNING, "analyze_retry", ctx_of(msg, receipt), &err);
		dq_sleep_ms(wait / 2 + (wait > 1 ? random() % (wait / 2) : 0));
		if (dq_lease_keep(keeper, j->lease) < 0) {
			dq_err_set(&err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "lock_lost",
			    "the message's lock could not be kept: not analyzed again");
			break;
		}
	}
	if (!doc && err.scope == DQ_SCOPE_SYSTEM)
		stop(&err, ctx_of(msg, receipt));
	if (doc)
		dq_log(DQ_INFO, "analyzed", json_pack("{s:s,s:O,s:O,s:O}", "image_id", id,
		    "defect_type", json_object_get(json_object_get(doc, "defect_findings"), "defect_type"),
		    "severity", json_object_get(json_object_get(doc, "defect_findings"), "severity"),
		    "duration_ms", json_object_get(json_object_get(doc, "analysis"), "duration_ms")),
		    "%s", json_string_value(json_object_get(json_object_get(doc, "defect_findings"), "description")));
out:
	/* the result, and the record passed on: no renewal after this */
	rec = dq_lease_lock(j->lease);
	if (skipped)
		json_object_set_new(rec, "skipped", skipped);
	else if (doc) {
		json_object_set_new(rec, "artifact", doc);
		if (annot)
			json_object_set_new(rec, "annotation", json_string(annot));
	} else
		fail(rec, &err);
	dq_lease_end(j->lease);
	emit(rec);
	dq_lease_unlock(j->lease);
	free(annot);
	free(data);
	json_decref(msg);
	json_decref(receipt);
}

static void *
worker(void *arg)
{
	struct job *j;

	for (;;) {
		pthread_mutex_lock(&mu);
		while (!pending && !input_done)
			pthread_cond_wait(&work_cv, &mu);
		if (!(j = pending)) {
			pthread_mutex_unlock(&mu);
			return arg;
		}
		if (!(pending = j->next))
			pending_tail = &pending;
		npending--;
		pthread_cond_signal(&room_cv);
		pthread_mutex_unlock(&mu);

		process(j);
		dq_keeper_release(keeper, j->lease);
		free(j);
	}
}

/* ---- input that ends on a signal ---- */

/*
 * stdin through a cookie: a read waits for input or for the wake pipe.
 * Once shutting down, what is already there is still read (its records
 * are passed on, not started), then it is the end of input.
 */
static ssize_t
wake_read(void *c, char *buf, size_t n)
{
	struct pollfd p[2] = { { 0, POLLIN, 0 }, { wake_pipe[0], POLLIN, 0 } };
	int stopping;

	for (;;) {
		pthread_mutex_lock(&mu);
		stopping = shutting_down;
		pthread_mutex_unlock(&mu);
		if (poll(p, 2, stopping ? 0 : -1) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (p[0].revents)
			return read(0, buf, n);
		if (stopping)
			return 0;
	}
	(void)c;
}

static void *
signals(void *arg)
{
	sigset_t *set = arg;
	int sig;

	while (sigwait(set, &sig) == 0) {
		pthread_mutex_lock(&mu);
		if (!shutting_down)
			dq_log(DQ_INFO, "shutdown", json_pack("{s:i}", "signal", sig),
			    "signal %d: starting no new analysis, finishing those in flight", sig);
		shutting_down = 1;
		pthread_cond_broadcast(&room_cv);
		pthread_mutex_unlock(&mu);
		if (write(wake_pipe[1], "x", 1) < 0)
			continue;	/* already awake */
	}
	return NULL;
}

static int
needs_analysis(json_t *rec)
{
	if (!json_object_get(rec, "message") || dq_record_has_error(rec, NULL))
		return 0;
	return force || !(json_object_get(rec, "artifact") || json_object_get(rec, "skipped"));
}

static void
run_records(long nthreads)
{
	pthread_t *th = dq_xcalloc((size_t)nthreads, sizeof *th), st;
	static sigset_t set;
	cookie_io_functions_t io = { .read = wake_read };
	struct dq_reader rd;
	struct dq_err err;
	FILE *in;
	json_t *rec;
	int r;

	/* Signals go to one thread, which wakes the reader through a pipe. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (pipe(wake_pipe) < 0 || !(in = fopencookie(NULL, "r", io)))
		dq_die(DQ_EX_IOERR, "pipe: %s", strerror(errno));
	pthread_create(&st, NULL, signals, &set);
	keeper = dq_keeper_start(stop);
	for (long i = 0; i < nthreads; i++)
		pthread_create(&th[i], NULL, worker, NULL);

	dq_reader_init(&rd, in, "<stdin>");
	while ((r = dq_read_record(&rd, &rec)) != 0) {
		if (r == -2) {
			dq_log(DQ_ERROR, "io_error", NULL, "<stdin>: %s", strerror(errno));
			merge_status(DQ_EX_IOERR);
			break;
		}
		if (r < 0) {
			merge_status(DQ_EX_DATAERR);
			continue;
		}
		if (!needs_analysis(rec)) {
			emit(rec);	/* not ours: passed on untouched */
			json_decref(rec);
			continue;
		}
		pthread_mutex_lock(&mu);
		if (shutting_down) {
			pthread_mutex_unlock(&mu);
			dq_err_set(&err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "shutdown",
			    "not started: dq-analyze is shutting down");
			fail(rec, &err);
			emit(rec);
			json_decref(rec);
			continue;
		}
		struct job *j = dq_xcalloc(1, sizeof *j);

		j->lease = dq_keeper_hold(keeper, rec);	/* its lock kept from now on */
		*pending_tail = j;
		pending_tail = &j->next;
		npending++;
		pthread_cond_signal(&work_cv);
		/* Read on only when a thread is free: records in hand stay few. */
		while (npending >= nthreads && !shutting_down)
			pthread_cond_wait(&room_cv, &mu);
		pthread_mutex_unlock(&mu);
	}
	dq_reader_free(&rd);

	pthread_mutex_lock(&mu);
	input_done = 1;
	pthread_cond_broadcast(&work_cv);
	pthread_mutex_unlock(&mu);
	for (long i = 0; i < nthreads; i++)
		pthread_join(th[i], NULL);
	dq_keeper_stop(keeper);
	free(th);
}

/* ---- files from a terminal ---- */

/*
 * The SKU when none is given: the reference directory's only one.  When
 * there is none, the real cause: no analyzer, one not built, a reference
 * directory that is not one (the rule of dq_reference_skus), or several.
 */
static const char *
default_sku(void)
{
	static char only[256];
	struct dq_err err;
	int n;

	if (!(an = dq_analyzer_open(&err)))
		stop(&err, NULL);
	if (strcmp(dq_analyzer_name(an), "reference") != 0)
		usage("--sku is required with this analyzer");
	if ((n = dq_reference_skus(dq_cfg.reference_dir, only, sizeof only, &err)) < 0)
		stop(&err, NULL);
	if (n > 1)
		usage("--sku is required: DQ_REFERENCE_DIR holds more than one SKU");
	return only;
}

static void
run_files(char **files, int nfiles, const char *sku)
{
	for (int i = 0; i < nfiles; i++) {
		unsigned char *data;
		size_t len;
		struct dq_image_info in;
		struct dq_err err;
		struct stat sb;
		char id[37], sha[65], when[21], *annot = NULL;
		json_t *rec = json_pack("{s:s}", "file", files[i]), *msg, *doc;

		if (dq_image_read(files[i], &data, &len, &err) < 0) {
			dq_log_err(DQ_ERROR, "analyze_failed", json_pack("{s:s}", "file", files[i]), &err);
			dq_record_set_error(rec, "analyze", &err);
			merge_status(err.status);
			emit(rec);
			json_decref(rec);
			continue;
		}
		/* No message: one stands in, named by the content, dated by the file. */
		dq_sha256_hex(data, len, sha);
		dq_uuid_v5("6ba7b811-9dad-11d1-80b4-00c04fd430c8", sha, id);
		dq_rfc3339(stat(files[i], &sb) == 0 ? sb.st_mtime : time(NULL), when);
		if (dq_image_sniff(data, len, &in, &err) < 0)
			in.type = DQ_IMG_UNKNOWN;
		msg = json_pack("{s:s,s:s,s:{s:s,s:s,s:s?,s:{}}}", "image_id", id, "ingested_at", when,
		    "metadata", "product_sku", sku, "file", files[i],
		    "content_type", in.type == DQ_IMG_UNKNOWN ? NULL : dq_image_mime(in.type), "extra");
		if (annotate_dir) {
			char *base = dq_xstrdup(files[i]), *b = basename(base), *dot = strrchr(b, '.');

			if (dot && dot != b)
				*dot = '\0';
			annot = dq_xasprintf("%s/%s.png", annotate_dir, b);
			free(base);
		}
		if ((doc = analyze(msg, data, len, NULL, annot, &err))) {
			dq_log(DQ_INFO, "analyzed", json_pack("{s:s,s:s}", "image_id", id, "file", files[i]),
			    "%s", json_string_value(json_object_get(json_object_get(doc, "defect_findings"),
			    "description")));
			json_object_set_new(rec, "artifact", doc);
			if (annot)
				json_object_set_new(rec, "annotation", json_string(annot));
		} else {
			if (err.scope == DQ_SCOPE_SYSTEM)
				stop(&err, json_pack("{s:s}", "file", files[i]));
			dq_log_err(DQ_ERROR, "analyze_failed", json_pack("{s:s}", "file", files[i]), &err);
			dq_record_set_error(rec, "analyze", &err);
			merge_status(err.status);
		}
		emit(rec);
		json_decref(rec);
		json_decref(msg);
		free(annot);
		free(data);
	}
}

/* --check: the store and the analyzer, before any record is touched. */
static _Noreturn void
check(void)
{
	struct dq_err err;
	int st = 0;

	if (!(store = dq_store_open(&err)) || dq_store_check(store, &err) < 0 ||
	    !(an = dq_analyzer_open(&err)) || dq_analyzer_check(an, NULL, &err) < 0) {
		st = err.status == DQ_EX_CONFIG || err.status == DQ_EX_USAGE ? err.status : DQ_EX_UNAVAILABLE;
		dq_log_err(DQ_ERROR, "check_failed", NULL, &err);
	} else
		dq_log(DQ_INFO, "check_ok", json_pack("{s:s}", "analyzer", dq_analyzer_name(an)),
		    "configuration, store and analyzer are usable");
	dq_analyzer_close(an);
	dq_store_close(store);
	exit(dq_finish_stdout(st));
}

int
main(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "jobs", required_argument, NULL, 'j' },
		{ "skip-existing", no_argument, NULL, 'S' },
		{ "force", no_argument, NULL, 'F' },
		{ "annotate", required_argument, NULL, 'a' },
		{ "sku", required_argument, NULL, 's' },
		DQ_COMMON_OPTIONS,
		{ NULL, 0, NULL, 0 },
	};
	const char *sku = NULL;
	long nthreads = 1;
	int c, do_check = 0, jset = 0;
	struct dq_err err;
	struct stat sb;
	char *end;

	dq_init(argv[0]);
	dq_cli_config();
	while ((c = getopt_long(argc, argv, "hj:", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			nthreads = strtol(optarg, &end, 10);
			if (*end || nthreads < 1 || nthreads > 1000)
				usage("-j wants a number from 1 to 1000");
			jset = 1;
			break;
		case 'S': skip_existing = 1; force = 0; break;
		case 'F': force = 1; skip_existing = 0; break;
		case 'a': annotate_dir = optarg; break;
		case 's': sku = optarg; break;
		case 'C': do_check = 1; break;
		default: dq_cli_option(c, synopsis);
		}
	}
	argc -= optind;
	argv += optind;
	if (do_check)
		check();
	if (argc > 0 && (jset || skip_existing || force))
		usage("-j, --skip-existing and --force apply to records, not FILE arguments");
	if (argc == 0 && sku)
		usage("--sku applies to FILE arguments");
	if (sku && !dq_safe_token(sku))
		usage("--sku may hold only letters, digits, '.', '_' and '-'");
	/* --annotate DIR: made when missing, like the store's directories. */
	if (annotate_dir && (dq_mkdirs(annotate_dir, 0777) < 0 || stat(annotate_dir, &sb) < 0))
		usage(dq_xasprintf("--annotate %s: %s", annotate_dir, strerror(errno)));
	if (annotate_dir && !S_ISDIR(sb.st_mode))
		usage(dq_xasprintf("--annotate %s: not a directory", annotate_dir));
	if (argc > 0 && !sku)
		sku = default_sku();

	if (!an && !(an = dq_analyzer_open(&err)))
		stop(&err, NULL);
	dq_log(DQ_INFO, "backend", json_pack("{s:s}", "analyzer", dq_analyzer_name(an)),
	    "analyzer: %s", dq_analyzer_name(an));
	if (argc > 0)
		run_files(argv, argc, sku);
	else {
		if (!(store = dq_store_open(&err)))
			stop(&err, NULL);
		run_records(nthreads);
	}
	dq_analyzer_close(an);
	dq_store_close(store);
	return dq_finish_stdout(status);
}
