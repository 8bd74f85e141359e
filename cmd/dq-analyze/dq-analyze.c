/* dq-analyze - analyze each record's image and add its artifact, keeping its lock alive. */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dq.h"

static const char synopsis[] =
    "usage: dq-analyze [-j N] [--skip-existing] [--force] [--annotate DIR] < records\n"
    "       dq-analyze [--sku SKU] [--annotate DIR] FILE...\n";

static struct dq_store *store;
static struct dq_analyzer *analyzer;
static const char *annotate_dir;
static int skip_existing, force;
static int status;

static _Noreturn void
usage(const char *why)
{
	dq_usage(synopsis, why);
}

/* A record error: into the record, logged; its status. */
static int
fail(json_t *rec, const struct dq_err *err, void *arg)
{
	dq_log_err(err->retryable ? DQ_WARNING : DQ_ERROR, "analyze_failed", dq_record_log_ctx(rec), err);
	dq_record_set_error(rec, "analyze", err);
	return err->status;
}

/* ---- one record ---- */

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
	int64_t started;
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
	started = dq_now_ms();
	dq_analyzer_test_delay(sku);	/* test hooks: a slow model, a network one */
	if (dq_analyzer_test_request(err) < 0 || dq_analyzer_analyze(analyzer, sku, data, len, &in, &a, err) < 0)
		return NULL;
	if (dq_findings_check(a.findings, in.width, in.height, err) < 0) {
		dq_analysis_free(&a);
		return NULL;
	}
	dq_rfc3339(time(NULL), now);
	doc = dq_artifact_new(msg, &a, dq_analyzer_name(analyzer), sha, &in, now, dq_now_ms() - started);
	dq_analysis_free(&a);
	if (annot && dq_annotate_write(annot, data, len,
	    json_object_get(json_object_get(doc, "defect_findings"), "bounding_boxes"), err) < 0) {
		/* the artifact stands; a picture we could not draw is only logged */
		dq_log_err(DQ_WARNING, "annotate_failed",
		    json_pack("{s:O,s:s}", "image_id", json_object_get(msg, "image_id"), "file", annot), err);
	}
	return doc;
}

/* The records to work on: with a message and no error, not done unless --force. */
static int
wants(json_t *rec, void *arg)
{
	if (!json_object_get(rec, "message") || dq_record_has_error(rec, NULL))
		return 0;
	return force || !(json_object_get(rec, "artifact") || json_object_get(rec, "skipped"));
}

/* Skipped, or the image's artifact; a transient failure tried again with the lock kept. */
static int
work(json_t *rec, struct dq_job *job, void *arg)
{
	json_t *msg = json_object_get(rec, "message"), *skipped = NULL, *doc = NULL;
	const char *id = json_string_value(json_object_get(msg, "image_id")), *cont, *blob;
	unsigned char *data = NULL;
	size_t len;
	char *annot = NULL;
	struct dq_err err;
	struct dq_retry retry;
	int64_t wait;
	int r, st = 0;

	blob = dq_message_blob(msg, &cont);
	if (dq_message_check(msg, &err) < 0)
		goto out;
	if (skip_existing) {
		if (dq_skip_existing(store, rec, &skipped, &err) < 0)
			goto out;
		if (skipped) {
			dq_log(DQ_INFO, "skipped", dq_record_log_ctx(rec), "skipped: %s in %s",
			    strcmp(json_string_value(json_object_get(skipped, "reason")), "failed") == 0 ?
			    "this message's failure is on record" : "the artifact is already",
			    dq_cfg.processed_container);
			goto out;
		}
	}
	/* Never start an analysis on a record whose lock we could not renew. */
	if (dq_job_keep(job) < 0) {
		dq_err_set(&err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "lock_lost",
		    "the message's lock could not be kept: not analyzed");
		goto out;
	}
	if ((r = dq_store_get(store, cont, blob, &data, &len, NULL, &err)) < 0)
		goto out;
	if (r == 0) {
		/* Not the image's content: tried again, never marked failed. */
		dq_err_set(&err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "raw_missing",
		    "no raw image %s/%s", cont, blob);
		goto out;
	}
	if (annotate_dir)
		annot = dq_xasprintf("%s/%s.png", annotate_dir, id);
	dq_log(DQ_DEBUG, "analyzing", dq_record_log_ctx(rec), "analyzing %s/%s", cont, blob);
	/*
	 * A transient failure is tried again by the one retry policy, the lock
	 * kept; never one whose retries the HTTP layer already spent (DESIGN
	 * §6: one budget per failure, not a budget squared).
	 */
	dq_retry_init(&retry, 0);
	for (;;) {
		doc = analyze(msg, data, len,
		    json_string_value(json_object_get(json_object_get(msg, "image"), "sha256")), annot, &err);
		if (doc || err.scope == DQ_SCOPE_SYSTEM || !err.retryable || err.budget_spent ||
		    (wait = dq_retry_next(&retry, -1)) < 0)
			break;
		dq_log_err(DQ_WARNING, "analyze_retry", dq_record_log_ctx(rec), &err);
		dq_sleep_ms(wait);
		if (dq_job_keep(job) < 0) {
			dq_err_set(&err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "lock_lost",
			    "the message's lock could not be kept: not analyzed again");
			break;
		}
	}
	if (doc)
		dq_log(DQ_INFO, "analyzed", json_pack("{s:s,s:O,s:O,s:O}", "image_id", id,
		    "defect_type", json_object_get(json_object_get(doc, "defect_findings"), "defect_type"),
		    "severity", json_object_get(json_object_get(doc, "defect_findings"), "severity"),
		    "duration_ms", json_object_get(json_object_get(doc, "analysis"), "duration_ms")),
		    "%s", json_string_value(json_object_get(json_object_get(doc, "defect_findings"), "description")));
out:
	/* a system error (the store's, the analyzer's) stops the stage */
	if (!skipped && !doc && err.scope == DQ_SCOPE_SYSTEM)
		dq_stop(0, &err, dq_record_log_ctx(rec));
	if (skipped)
		json_object_set_new(rec, "skipped", skipped);
	else if (doc) {
		json_object_set_new(rec, "artifact", doc);
		if (annot)
			json_object_set_new(rec, "annotation", json_string(annot));
	} else
		st = fail(rec, &err, arg);
	free(annot);
	free(data);
	return st;
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

	if (!(analyzer = dq_analyzer_open(&err)))
		dq_stop(0, &err, NULL);
	if (strcmp(dq_analyzer_name(analyzer), "reference") != 0)
		usage("--sku is required with this analyzer");
	if ((n = dq_reference_skus(dq_cfg.reference_dir, only, sizeof only, &err)) < 0)
		dq_stop(0, &err, NULL);
	if (n > 1)
		usage("--sku is required: DQ_REFERENCE_DIR holds more than one SKU");
	return only;
}

static void
file_failed(json_t *rec, const char *file, const struct dq_err *err)
{
	dq_log_err(DQ_ERROR, "analyze_failed", json_pack("{s:s}", "file", file), err);
	dq_record_set_error(rec, "analyze", err);
	status = dq_status_merge(status, err->status);
}

static void
analyze_file(const char *file, const char *sku)
{
	unsigned char *data;
	size_t len;
	struct dq_image_info in;
	struct dq_err err;
	struct stat sb;
	char id[37], sha[65], when[21], *annot = NULL;
	json_t *rec = json_pack("{s:s}", "file", file), *msg, *doc;

	if (dq_image_read(file, &data, &len, &err) < 0) {
		file_failed(rec, file, &err);
		dq_emit(rec);
		json_decref(rec);
		return;
	}
	/* No message: one stands in, named by the content, dated by the file. */
	dq_sha256_hex(data, len, sha);
	dq_uuid_v5("6ba7b811-9dad-11d1-80b4-00c04fd430c8", sha, id);
	dq_rfc3339(stat(file, &sb) == 0 ? sb.st_mtime : time(NULL), when);
	if (dq_image_sniff(data, len, &in, &err) < 0)
		in.type = DQ_IMG_UNKNOWN;
	msg = json_pack("{s:s,s:s,s:{s:s,s:s,s:s?,s:{}}}", "image_id", id, "ingested_at", when,
	    "metadata", "product_sku", sku, "file", file,
	    "content_type", in.type == DQ_IMG_UNKNOWN ? NULL : dq_image_mime(in.type), "extra");
	if (annotate_dir) {
		char *base = dq_xstrdup(file), *b = basename(base), *dot = strrchr(b, '.');

		if (dot && dot != b)
			*dot = '\0';
		annot = dq_xasprintf("%s/%s.png", annotate_dir, b);
		free(base);
	}
	if ((doc = analyze(msg, data, len, NULL, annot, &err))) {
		dq_log(DQ_INFO, "analyzed", json_pack("{s:s,s:s}", "image_id", id, "file", file),
		    "%s", json_string_value(json_object_get(json_object_get(doc, "defect_findings"),
		    "description")));
		json_object_set_new(rec, "artifact", doc);
		if (annot)
			json_object_set_new(rec, "annotation", json_string(annot));
	} else if (err.scope == DQ_SCOPE_SYSTEM)
		dq_stop(status, &err, json_pack("{s:s}", "file", file));
	else
		file_failed(rec, file, &err);
	dq_emit(rec);
	json_decref(rec);
	json_decref(msg);
	free(annot);
	free(data);
}

/* --check: the store and the analyzer, before any record is touched. */
static _Noreturn void
check(void)
{
	struct dq_err err;
	int st = 0;

	if (!(store = dq_store_open(&err)) || dq_store_check(store, &err) < 0 ||
	    !(analyzer = dq_analyzer_open(&err)) || dq_analyzer_check(analyzer, NULL, &err) < 0) {
		st = err.status == DQ_EX_CONFIG || err.status == DQ_EX_USAGE ? err.status : DQ_EX_UNAVAILABLE;
		dq_log_err(DQ_ERROR, "check_failed", NULL, &err);
	} else
		dq_log(DQ_INFO, "check_ok", json_pack("{s:s}", "analyzer", dq_analyzer_name(analyzer)),
		    "configuration, store and analyzer are usable");
	dq_analyzer_close(analyzer);
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
	struct dq_parallel records = { .jobs = 1, .wants = wants, .work = work, .fail = fail };
	const char *sku = NULL;
	long jobs;
	int c, do_check = 0, jobs_set = 0;
	struct dq_err err;
	struct stat sb;
	char *end;

	dq_init(argv[0]);
	dq_cli_config();
	while ((c = getopt_long(argc, argv, "hj:", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			jobs = strtol(optarg, &end, 10);
			if (*end || jobs < 1 || jobs > 1000)
				usage("-j wants a number from 1 to 1000");
			records.jobs = (int)jobs;
			jobs_set = 1;
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
	if (argc > 0 && (jobs_set || skip_existing || force))
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

	if (!analyzer && !(analyzer = dq_analyzer_open(&err)))
		dq_stop(0, &err, NULL);
	dq_log(DQ_INFO, "backend", json_pack("{s:s}", "analyzer", dq_analyzer_name(analyzer)),
	    "analyzer: %s", dq_analyzer_name(analyzer));
	if (argc > 0) {
		for (int i = 0; i < argc; i++)
			analyze_file(argv[i], sku);
	} else {
		if (!(store = dq_store_open(&err)))
			dq_stop(0, &err, NULL);
		status = dq_each_record_parallel(&records);
	}
	dq_analyzer_close(analyzer);
	dq_store_close(store);
	return dq_finish_stdout(status);
}
