/* reference-test - drive the reference analyzer directly: analyze files, evaluate against dq-synth's truth, time it. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "analyzer/reference/reference.h"

/*
 * reference-test [-r REFDIR] [-c CACHEDIR] [-s SKU] analyze FILE...
 *	one line per file: {"file","defect_findings","model_version","analysis"}
 * reference-test [-r REFDIR] [-c CACHEDIR] [-s SKU] [-j N] eval DIR
 *	one line per sample of DIR/truth.jsonl: the truth, what was found,
 *	the best IoU of a found box against each true box, the time;
 *	with -j N the samples are analyzed by N threads at once.
 * reference-test [-r REFDIR] [-c CACHEDIR] [-s SKU] time FILE N
 *	analyzes FILE N times after one warm-up; prints {"ms_per_image"}.
 * reference-test annotate IN OUT.png BOXES-JSON
 * reference-test open
 *	opens the analyzer the environment chooses (DESIGN §1); prints its name.
 * REFDIR defaults to DIR/reference for eval, else $DQ_REFERENCE_DIR.
 */

static const char *sku = "WK-KN-200";
static struct dq_analyzer *analyzer;

static void
usage(void)
{
	fprintf(stderr, "usage: reference-test [-r REFDIR] [-c CACHEDIR] [-s SKU] [-j N] "
	    "analyze FILE... | eval DIR | time FILE N | annotate IN OUT BOXES | open\n");
	exit(DQ_EX_USAGE);
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int
load(const char *path, unsigned char **data, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	long n;

	if (fp == NULL || fseek(fp, 0, SEEK_END) == -1 || (n = ftell(fp)) < 0 ||
	    fseek(fp, 0, SEEK_SET) == -1) {
		fprintf(stderr, "reference-test: %s: %s\n", path, strerror(errno));
		if (fp)
			fclose(fp);
		return -1;
	}
	*data = dq_xmalloc((size_t)n + 1);
	*len = fread(*data, 1, (size_t)n, fp);
	fclose(fp);
	return 0;
}

/* 1 done, 0 record error (printed as {"error"}), -1 system error. */
static int
analyze_one(const char *path, json_t **res, double *ms)
{
	struct dq_analysis a;
	struct dq_err err;
	unsigned char *data;
	size_t len;
	double started;
	int rc;

	*res = NULL;
	if (load(path, &data, &len) == -1)
		return -1;
	started = now_ms();
	rc = dq_analyzer_analyze(analyzer, sku, data, len, NULL, &a, &err);
	*ms = now_ms() - started;
	free(data);
	if (rc == -1) {
		*res = json_pack("{s:s, s:{s:s, s:s, s:s, s:i}}", "file", path, "error",
		    "code", err.code, "message", err.msg,
		    "scope", err.scope == DQ_SCOPE_SYSTEM ? "system" : "record",
		    "status", err.status);
		return err.scope == DQ_SCOPE_SYSTEM ? -1 : 0;
	}
	*res = json_pack("{s:s, s:O, s:s, s:O}", "file", path, "defect_findings",
	    a.findings, "model_version", a.model_version, "analysis", a.analysis);
	dq_analysis_free(&a);
	return 1;
}

static void
put(json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(15));

	puts(s);
	free(s);
}

static double
iou(json_t *a, json_t *b)
{
	double ax = json_integer_value(json_object_get(a, "x"));
	double ay = json_integer_value(json_object_get(a, "y"));
	double aw = json_integer_value(json_object_get(a, "width"));
	double ah = json_integer_value(json_object_get(a, "height"));
	double bx = json_integer_value(json_object_get(b, "x"));
	double by = json_integer_value(json_object_get(b, "y"));
	double bw = json_integer_value(json_object_get(b, "width"));
	double bh = json_integer_value(json_object_get(b, "height"));
	double ix = fmin(ax + aw, bx + bw) - fmax(ax, bx);
	double iy = fmin(ay + ah, by + bh) - fmax(ay, by);
	double inter = ix > 0 && iy > 0 ? ix * iy : 0;

	return inter / (aw * ah + bw * bh - inter);
}

struct job {
	char *path;
	json_t *truth, *res;
	double ms;
	int rc;
};

static struct job *jobs;
static int njobs, next_job;
static pthread_mutex_t next_job_lock = PTHREAD_MUTEX_INITIALIZER;

static void *
worker(void *arg)
{
	(void)arg;
	for (;;) {
		int i;

		pthread_mutex_lock(&next_job_lock);
		i = next_job < njobs ? next_job++ : -1;
		pthread_mutex_unlock(&next_job_lock);
		if (i < 0)
			return NULL;
		jobs[i].rc = analyze_one(jobs[i].path, &jobs[i].res, &jobs[i].ms);
	}
}

static int
eval(const char *dir, int nthreads)
{
	char *tp = dq_xasprintf("%s/truth.jsonl", dir), *line = NULL;
	size_t cap = 0;
	FILE *fp = fopen(tp, "r");
	pthread_t threads[64];
	int i, status = 0;

	if (fp == NULL) {
		fprintf(stderr, "reference-test: %s: %s\n", tp, strerror(errno));
		return DQ_EX_NOINPUT;
	}
	while (getline(&line, &cap, fp) > 0) {
		json_t *truth = json_loads(line, 0, NULL);

		if (truth == NULL)
			continue;
		jobs = dq_xrealloc(jobs, (njobs + 1) * sizeof *jobs);
		jobs[njobs].truth = truth;
		jobs[njobs].path = dq_xasprintf("%s/%s", dir,
		    json_string_value(json_object_get(truth, "file")));
		jobs[njobs].res = NULL;
		njobs++;
	}
	free(line);
	fclose(fp);
	free(tp);
	if (nthreads < 1)
		nthreads = 1;
	if (nthreads > 64)
		nthreads = 64;
	for (i = 0; i < nthreads; i++)
		pthread_create(&threads[i], NULL, worker, NULL);
	for (i = 0; i < nthreads; i++)
		pthread_join(threads[i], NULL);
	for (i = 0; i < njobs; i++) {
		struct job *jb = &jobs[i];
		json_t *f = json_object_get(jb->res, "defect_findings"), *o, *tb, *b;
		json_t *ious = json_array();
		size_t ti, bi;

		if (jb->rc == -1)
			status = DQ_EX_CONFIG;
		json_array_foreach(json_object_get(jb->truth, "boxes"), ti, tb) {
			double best = 0;

			json_array_foreach(json_object_get(f, "bounding_boxes"), bi, b)
				best = fmax(best, iou(tb, b));
			json_array_append_new(ious, json_real(dq_round(best, 3)));
		}
		o = json_pack("{s:O, s:O, s:O, s:b, s:O, s:O, s:O, s:O, s:o, s:f}",
		    "file", json_object_get(jb->truth, "file"),
		    "defect", json_object_get(jb->truth, "defect"),
		    "kind", json_object_get(jb->truth, "kind"),
		    "detected", json_is_true(json_object_get(f, "defect_detected")),
		    "type", f ? json_object_get(f, "defect_type") : json_null(),
		    "severity", f ? json_object_get(f, "severity") : json_null(),
		    "confidence", f ? json_object_get(f, "confidence") : json_null(),
		    "boxes", f ? json_object_get(f, "bounding_boxes") : json_null(),
		    "iou", ious, "ms", dq_round(jb->ms, 1));
		if (f == NULL)
			json_object_set(o, "error", json_object_get(jb->res, "error"));
		put(o);
		json_decref(o);
		json_decref(jb->res);
		json_decref(jb->truth);
		free(jb->path);
	}
	free(jobs);
	return status;
}

int
main(int argc, char *argv[])
{
	const char *refdir = getenv("DQ_REFERENCE_DIR"), *cachedir = getenv("DQ_CACHE_DIR");
	char *own = NULL;
	struct dq_err err;
	int c, j = 1, status = 0, i;

	dq_init(argv[0]);
	while ((c = getopt(argc, argv, "r:c:s:j:")) != -1) {
		switch (c) {
		case 'r': refdir = optarg; break;
		case 'c': cachedir = optarg; break;
		case 's': sku = optarg; break;
		case 'j': j = atoi(optarg); break;
		default: usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage();
	if (strcmp(argv[0], "annotate") == 0) {
		unsigned char *data;
		size_t len;
		json_t *boxes;

		if (argc != 4 || load(argv[1], &data, &len) == -1)
			usage();
		if ((boxes = json_loads(argv[3], 0, NULL)) == NULL)
			usage();
		if (dq_annotate_write(argv[2], data, len, boxes, &err) == -1) {
			fprintf(stderr, "reference-test: %s: %s\n", err.code, err.msg);
			return err.status;
		}
		json_decref(boxes);
		free(data);
		return 0;
	}
	if (strcmp(argv[0], "open") == 0) {
		/* the choice of DESIGN §1, from the environment */
		if (dq_config_load(&err) == -1 || (analyzer = dq_analyzer_open(&err)) == NULL) {
			fprintf(stderr, "reference-test: %s\n", err.msg);
			return err.status;
		}
		printf("{\"analyzer\":\"%s\"}\n", dq_analyzer_name(analyzer));
		dq_analyzer_close(analyzer);
		return 0;
	}
	if (strcmp(argv[0], "eval") == 0 && argc == 2 && refdir == NULL)
		refdir = own = dq_xasprintf("%s/reference", argv[1]);
	if ((analyzer = dq_analyzer_reference_open(refdir, cachedir, &err)) == NULL) {
		fprintf(stderr, "reference-test: %s\n", err.msg);
		return err.status;
	}
	if (strcmp(argv[0], "analyze") == 0 && argc >= 2) {
		for (i = 1; i < argc; i++) {
			json_t *res;
			double ms;
			int rc = analyze_one(argv[i], &res, &ms);

			if (rc == -1 && res == NULL) {
				status = DQ_EX_NOINPUT;
				continue;
			}
			put(res);
			json_decref(res);
			if (rc == -1) {
				status = DQ_EX_CONFIG;
				break;
			}
			if (rc == 0)
				status = status ? status : DQ_EX_DATAERR;
		}
	} else if (strcmp(argv[0], "eval") == 0 && argc == 2) {
		status = eval(argv[1], j);
	} else if (strcmp(argv[0], "time") == 0 && argc == 3) {
		int nrun = atoi(argv[2]);
		double ms, total = 0, best = 1e18;
		json_t *res = NULL;

		if (analyze_one(argv[1], &res, &ms) != 1) {
			put(res);
			return DQ_EX_DATAERR;
		}
		json_decref(res);
		for (i = 0; i < nrun; i++) {
			analyze_one(argv[1], &res, &ms);
			json_decref(res);
			total += ms;
			best = fmin(best, ms);
		}
		printf("{\"runs\":%d,\"ms_per_image\":%.1f,\"ms_best\":%.1f}\n",
		    nrun, nrun ? total / nrun : 0, best);
	} else
		usage();
	dq_analyzer_close(analyzer);
	free(own);
	if (fflush(stdout) == EOF || ferror(stdout))
		return DQ_EX_IOERR;
	return status;
}
