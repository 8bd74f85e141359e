/* image-test - the image validation of lib/image.c on files, and what it costs beside the rest of the work on an image. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "refan.h"

/*
 * image-test check FILE...
 *	one line per file: "ok TYPE WxH" or "CODE: message"; exit 1 when
 *	any file fails.
 * image-test time FILE N
 *	CPU milliseconds per call, each step run N times after a warm-up,
 *	the steps interleaved so that a change of load hits them alike:
 *	sha256 (what dq-put and dq-ingest compute anyway), sniff (the checks
 *	before this validation decoded), validate (dq_image_validate, the
 *	decode included), decode_2_8 (the reference analyzer's decode of a
 *	large image: at least a quarter of each side) and decode_full.
 */

enum { SHA, SNIFF, VALIDATE, DEC28, DECFULL, NSTEP };
static const char *const step_name[NSTEP] = {
	"sha256", "sniff", "validate", "decode_2_8", "decode_full",
};

static _Noreturn void
usage(void)
{
	fprintf(stderr, "usage: image-test check FILE... | time FILE N\n");
	exit(DQ_EX_USAGE);
}

static double
cpu_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static unsigned char *
load(const char *path, size_t *len)
{
	unsigned char *data;
	struct dq_err err;

	if (dq_image_read(path, &data, len, &err) < 0) {
		fprintf(stderr, "image-test: %s: %s\n", path, err.msg);
		exit(DQ_EX_NOINPUT);
	}
	return data;
}

static int
step(int s, const unsigned char *data, size_t len, const struct dq_image_info *in)
{
	struct dq_image_info i2;
	struct dq_raster r;
	struct dq_err err;
	char sha[65];
	int ok;

	switch (s) {
	case SHA:
		dq_sha256_hex(data, len, sha);
		return 0;
	case SNIFF:
		return dq_image_sniff(data, len, &i2, &err);
	case VALIDATE:
		return dq_image_validate(data, len, &i2, &err);
	case DEC28:
	case DECFULL:
		ok = dq_decode(data, len, 3, s == DEC28 ? (int)(in->width / 4) : 0,
		    s == DEC28 ? (int)(in->height / 4) : 0, &r, &err);
		dq_raster_free(&r);
		return ok;
	}
	return -1;
}

static int
timeit(const char *path, long n)
{
	size_t len;
	unsigned char *data = load(path, &len);
	struct dq_image_info in;
	struct dq_err err;
	double total[NSTEP] = { 0 }, t0;

	dq_cfg.max_image_bytes = 1LL << 40;
	dq_cfg.max_image_pixels = 1LL << 40;
	if (dq_image_validate(data, len, &in, &err) < 0) {
		fprintf(stderr, "image-test: %s: %s\n", path, err.msg);
		return 1;
	}
	for (long i = -1; i < n; i++)
		for (int s = 0; s < NSTEP; s++) {
			t0 = cpu_ms();
			if (step(s, data, len, &in) < 0) {
				fprintf(stderr, "image-test: %s: %s failed\n", path, step_name[s]);
				return 1;
			}
			if (i >= 0)
				total[s] += cpu_ms() - t0;
		}
	printf("{\"file\":\"%s\",\"width\":%ld,\"height\":%ld,\"bytes\":%zu,\"runs\":%ld,\"cpu_ms\":{",
	    path, in.width, in.height, len, n);
	for (int s = 0; s < NSTEP; s++)
		printf("%s\"%s\":%.3f", s ? "," : "", step_name[s], total[s] / n);
	printf("}}\n");
	free(data);
	return 0;
}

int
main(int argc, char *argv[])
{
	struct dq_err err;
	int st = 0;

	dq_init(argv[0]);
	if (dq_config_load(&err) < 0) {
		fprintf(stderr, "image-test: %s\n", err.msg);
		return DQ_EX_CONFIG;
	}
	if (argc >= 3 && strcmp(argv[1], "check") == 0) {
		for (int i = 2; i < argc; i++) {
			size_t len;
			unsigned char *data = load(argv[i], &len);
			struct dq_image_info in;

			if (dq_image_validate(data, len, &in, &err) == 0)
				printf("%s: ok %s %ldx%ld\n", argv[i], dq_image_mime(in.type),
				    in.width, in.height);
			else {
				printf("%s: %s: %s\n", argv[i], err.code, err.msg);
				st = 1;
			}
			free(data);
		}
		return st;
	}
	if (argc == 4 && strcmp(argv[1], "time") == 0) {
		long n = strtol(argv[3], NULL, 10);

		if (n < 1)
			usage();
		return timeit(argv[2], n);
	}
	usage();
}
