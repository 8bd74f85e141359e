/* image-test - the image validation of lib/image.c on files, what it costs, valid images of every kind it must take, and lib/pixels.c's resizing and encoders. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jpeglib.h>
#include <png.h>
#include <webp/encode.h>

#include "dq.h"

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
 * image-test variants DIR
 *	writes valid 320x240 images in the encodings a camera may use, each
 *	of which the validation must take: JPEG baseline, progressive,
 *	grayscale, 4:4:4, with restart markers; PNG interlaced, 16-bit,
 *	palette, RGBA; WebP lossless and lossy with alpha.  Prints the paths.
 *
 * lib/pixels.c (a failure prints "SCOPE CODE: message" and exits 1):
 * image-test fit W H MAX_W MAX_H [MAX_PIXELS]
 *	dq_fit_size's answer, "WxH".
 * image-test resize MAX_W MAX_H MAX_PIXELS W H CH V...
 *	dq_raster_fit of the W x H x CH raster of the values V (row-major):
 *	"WxH: V...".
 * image-test resize-ref W H CH MAX_W MAX_H
 *	dq_raster_fit of a textured raster, each output value compared with
 *	the area mean worked out afresh in long double: "WxH: rounded means"
 *	when every value is the mean rounded, else the first that is not.
 * image-test roundtrip png|jpeg|webp W H CH [QUALITY]
 *	a smooth W x H x CH raster encoded in memory, sniffed and decoded
 *	back: "TYPE WxH, N bytes, max diff D, mean diff M".
 * image-test write png|jpeg|webp PATH W H CH
 *	the file writer's bytes against the in-memory encoder's: "same".
 * image-test decode-fit FILE MAX_W MAX_H [MAX_PIXELS]
 *	dq_decode_fit beside a whole decode and dq_raster_fit:
 *	"WxH of WxH, max diff D, mean diff M".
 */

enum { SHA, SNIFF, VALIDATE, DEC28, DECFULL, NSTEP };
static const char *const step_name[NSTEP] = {
	"sha256", "sniff", "validate", "decode_2_8", "decode_full",
};

static _Noreturn void
usage(void)
{
	fprintf(stderr, "usage: image-test check FILE... | time FILE N | variants DIR | fit ... | resize ...\n"
	    "       | resize-ref ... | roundtrip ... | write ... | decode-fit ...\n");
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

/* ---- valid images of every kind ---- */

#define VW 320
#define VH 240

static unsigned char vpx[VW * VH * 4];

static FILE *
create(const char *dir, const char *name, char *path, size_t n)
{
	FILE *fp;

	snprintf(path, n, "%s/%s", dir, name);
	if (!(fp = fopen(path, "wb"))) {
		perror(path);
		exit(DQ_EX_IOERR);
	}
	return fp;
}

static void
done(FILE *fp, const char *path)
{
	if (ferror(fp) | fclose(fp)) {
		fprintf(stderr, "image-test: %s: write error\n", path);
		exit(DQ_EX_IOERR);
	}
	printf("%s\n", path);
}

enum { J_PROGRESSIVE = 1, J_GRAY = 2, J_444 = 4, J_RESTART = 8 };

static void
write_jpeg(const char *dir, const char *name, int flags)
{
	struct jpeg_compress_struct c;
	struct jpeg_error_mgr e;
	unsigned char row[VW * 3];
	char path[4096];
	FILE *fp = create(dir, name, path, sizeof path);

	c.err = jpeg_std_error(&e);
	jpeg_create_compress(&c);
	jpeg_stdio_dest(&c, fp);
	c.image_width = VW;
	c.image_height = VH;
	c.input_components = flags & J_GRAY ? 1 : 3;
	c.in_color_space = flags & J_GRAY ? JCS_GRAYSCALE : JCS_RGB;
	jpeg_set_defaults(&c);
	jpeg_set_quality(&c, 90, TRUE);
	if (flags & J_PROGRESSIVE)
		jpeg_simple_progression(&c);
	if (flags & J_444)
		c.comp_info[0].h_samp_factor = c.comp_info[0].v_samp_factor = 1;
	if (flags & J_RESTART)
		c.restart_interval = 4;
	jpeg_start_compress(&c, TRUE);
	while (c.next_scanline < VH) {
		const unsigned char *s = vpx + (size_t)c.next_scanline * VW * 4;
		JSAMPROW r = row;

		for (int x = 0; x < VW; x++)
			if (flags & J_GRAY)
				row[x] = s[4 * x];
			else
				memcpy(row + 3 * x, s + 4 * x, 3);
		jpeg_write_scanlines(&c, &r, 1);
	}
	jpeg_finish_compress(&c);
	jpeg_destroy_compress(&c);
	done(fp, path);
}

enum { P_INTERLACE = 1, P_16 = 2, P_PALETTE = 4 };

static void
write_png(const char *dir, const char *name, int flags)
{
	png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	png_infop info = png_create_info_struct(png);
	unsigned char row[VW * 8];
	char path[4096];
	FILE *fp = create(dir, name, path, sizeof path);
	int passes;

	png_init_io(png, fp);
	if (flags & P_PALETTE) {
		png_color pal[16];

		for (int k = 0; k < 16; k++)
			pal[k].red = pal[k].green = pal[k].blue = (png_byte)(k * 17);
		png_set_IHDR(png, info, VW, VH, 8, PNG_COLOR_TYPE_PALETTE,
		    flags & P_INTERLACE ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, 0, 0);
		png_set_PLTE(png, info, pal, 16);
	} else
		png_set_IHDR(png, info, VW, VH, flags & P_16 ? 16 : 8, PNG_COLOR_TYPE_RGB_ALPHA,
		    flags & P_INTERLACE ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, 0, 0);
	png_write_info(png, info);
	passes = png_set_interlace_handling(png);
	for (int p = 0; p < passes; p++)
		for (int y = 0; y < VH; y++) {
			const unsigned char *s = vpx + (size_t)y * VW * 4;

			for (int x = 0; x < VW * 4; x++)
				if (flags & P_PALETTE)
					row[x / 4] = s[x - x % 4] >> 4;
				else if (flags & P_16)
					row[2 * x] = s[x], row[2 * x + 1] = 0;
				else
					row[x] = s[x];
			png_write_row(png, row);
		}
	png_write_end(png, info);
	png_destroy_write_struct(&png, &info);
	done(fp, path);
}

static void
write_webp(const char *dir, const char *name, int lossless)
{
	uint8_t *out;
	size_t n = lossless ? WebPEncodeLosslessRGBA(vpx, VW, VH, VW * 4, &out) :
	    WebPEncodeRGBA(vpx, VW, VH, VW * 4, 80, &out);
	char path[4096];
	FILE *fp = create(dir, name, path, sizeof path);

	if (n == 0 || fwrite(out, 1, n, fp) != n) {
		fprintf(stderr, "image-test: %s: encoding failed\n", path);
		exit(DQ_EX_IOERR);
	}
	WebPFree(out);
	done(fp, path);
}

static int
variants(const char *dir)
{
	/* Texture, so that every coefficient and filter has work. */
	for (int y = 0; y < VH; y++)
		for (int x = 0; x < VW; x++) {
			unsigned char *q = vpx + ((size_t)y * VW + x) * 4;

			q[0] = (unsigned char)(x * y % 251);
			q[1] = (unsigned char)(x + y);
			q[2] = (unsigned char)(x ^ y);
			q[3] = (unsigned char)(128 + x / 3);
		}
	write_jpeg(dir, "baseline.jpg", 0);
	write_jpeg(dir, "progressive.jpg", J_PROGRESSIVE);
	write_jpeg(dir, "gray.jpg", J_GRAY);
	write_jpeg(dir, "progressive-gray.jpg", J_PROGRESSIVE | J_GRAY);
	write_jpeg(dir, "444.jpg", J_444);
	write_jpeg(dir, "restart.jpg", J_RESTART);
	write_png(dir, "rgba.png", 0);
	write_png(dir, "interlaced.png", P_INTERLACE);
	write_png(dir, "16bit.png", P_16);
	write_png(dir, "interlaced-16bit.png", P_INTERLACE | P_16);
	write_png(dir, "palette.png", P_PALETTE);
	write_webp(dir, "lossless.webp", 1);
	write_webp(dir, "alpha.webp", 0);
	return 0;
}

/* ---- lib/pixels.c ---- */

static int
failed(const struct dq_err *err)
{
	printf("%s %s: %s\n", err->scope == DQ_SCOPE_RECORD ? "record" : "system",
	    err->code, err->msg);
	return 1;
}

static long
number(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*s == '\0' || *end != '\0')
		usage();
	return v;
}

/* A raster that can be empty or of any channel count, for the refusals. */
static struct dq_raster
raster(long w, long h, long ch)
{
	struct dq_raster r = { (int)w, (int)h, (int)ch, NULL, w, h };
	size_t n = w > 0 && h > 0 && ch > 0 ? (size_t)w * h * ch : 1;

	r.px = dq_xcalloc(n, 1);
	return r;
}

/* Smooth, so that a lossy codec has little to lose; texture, so that a
 * resize has something to average. */
static void
smooth(struct dq_raster *r)
{
	for (int y = 0; y < r->h; y++)
		for (int x = 0; x < r->w; x++)
			for (int c = 0; c < r->ch; c++)
				r->px[((size_t)y * r->w + x) * r->ch + c] = (unsigned char)
				    (128 + 90 * sin(x / 9.0 + c) * cos(y / 7.0 - c));
}

static void
textured(struct dq_raster *r)
{
	size_t n = (size_t)r->w * r->h * r->ch;
	unsigned v = 12345;

	for (size_t k = 0; k < n; k++) {
		v = v * 1103515245u + 12345u;
		r->px[k] = (unsigned char)(v >> 16);
	}
}

static int
fit(int argc, char *argv[])
{
	int fw, fh;

	dq_fit_size(number(argv[2]), number(argv[3]), number(argv[4]), number(argv[5]),
	    argc > 6 ? number(argv[6]) : 0, &fw, &fh);
	printf("%dx%d\n", fw, fh);
	return 0;
}

static int
resize(int argc, char *argv[])
{
	struct dq_raster in = raster(number(argv[5]), number(argv[6]), number(argv[7])), out;
	struct dq_err err;
	long n = (long)in.w * in.h * in.ch;

	if (n < 0 || argc - 8 != (n > 0 ? n : 0)) {
		fprintf(stderr, "image-test: resize wants W x H x CH values\n");
		return DQ_EX_USAGE;
	}
	for (long k = 0; k < n; k++)
		in.px[k] = (unsigned char)number(argv[8 + k]);
	if (dq_raster_fit(&in, (int)number(argv[2]), (int)number(argv[3]), number(argv[4]),
	    &out, &err) < 0) {
		dq_raster_free(&in);
		return failed(&err);
	}
	printf("%dx%d:", out.w, out.h);
	for (long k = 0; k < (long)out.w * out.h * out.ch; k++)
		printf(" %d", out.px[k]);
	printf("\n");
	dq_raster_free(&in);
	dq_raster_free(&out);
	return 0;
}

/* The part of [a0, a1) that [b0, b1) covers. */
static long double
overlap(long double a0, long double a1, long double b0, long double b1)
{
	long double lo = a0 > b0 ? a0 : b0, hi = a1 < b1 ? a1 : b1;

	return hi > lo ? hi - lo : 0;
}

static int
resize_ref(char *argv[])
{
	struct dq_raster in = raster(number(argv[2]), number(argv[3]), number(argv[4])), out;
	struct dq_err err;
	int st = 0;

	textured(&in);
	if (dq_raster_fit(&in, (int)number(argv[5]), (int)number(argv[6]), 0, &out, &err) < 0) {
		dq_raster_free(&in);
		return failed(&err);
	}
	for (int y = 0; y < out.h && !st; y++) {
		/* the source rows and columns output (x, y) covers */
		long double y0 = (long double)y * in.h / out.h, y1 = (long double)(y + 1) * in.h / out.h;

		for (int x = 0; x < out.w && !st; x++) {
			long double x0 = (long double)x * in.w / out.w, x1 = (long double)(x + 1) * in.w / out.w;

			for (int c = 0; c < in.ch && !st; c++) {
				long double sum = 0, mean;
				int got = out.px[((size_t)y * out.w + x) * out.ch + c];

				for (long j = (long)y0; j < in.h && j < y1; j++)
					for (long i = (long)x0; i < in.w && i < x1; i++)
						sum += in.px[((size_t)j * in.w + i) * in.ch + c] *
						    overlap(x0, x1, i, i + 1) * overlap(y0, y1, j, j + 1);
				mean = sum / ((x1 - x0) * (y1 - y0));
				if (fabsl(got - mean) > 0.5L + 1e-9L) {
					printf("%dx%d: (%d,%d,%d) is %d, the area mean %.3Lf\n",
					    out.w, out.h, x, y, c, got, mean);
					st = 1;
				}
			}
		}
	}
	if (!st)
		printf("%dx%d: rounded means\n", out.w, out.h);
	dq_raster_free(&in);
	dq_raster_free(&out);
	return st;
}

enum { F_PNG, F_JPEG, F_WEBP };
static const struct {
	const char *name;
	enum dq_image_type type;
} formats[] = {
	[F_PNG] = { "png", DQ_IMG_PNG },
	[F_JPEG] = { "jpeg", DQ_IMG_JPEG },
	[F_WEBP] = { "webp", DQ_IMG_WEBP },
};

static int
format(const char *name)
{
	for (size_t f = 0; f < sizeof formats / sizeof *formats; f++)
		if (strcmp(name, formats[f].name) == 0)
			return (int)f;
	usage();
}

static int
encode(int f, const struct dq_raster *r, int quality, unsigned char **buf, size_t *len,
    struct dq_err *err)
{
	switch (f) {
	case F_PNG: return dq_png_encode(r, buf, len, err);
	case F_JPEG: return dq_jpeg_encode(r, quality, buf, len, err);
	default: return dq_webp_encode(r, quality, buf, len, err);
	}
}

static int
roundtrip(int argc, char *argv[])
{
	int f = format(argv[2]);
	struct dq_raster in = raster(number(argv[3]), number(argv[4]), number(argv[5])), back;
	struct dq_image_info info;
	struct dq_err err;
	unsigned char *buf;
	size_t len, n = (size_t)in.w * in.h * in.ch;
	double total = 0;
	int worst = 0;

	if (in.w > 0 && in.h > 0 && in.ch > 0)
		smooth(&in);
	if (encode(f, &in, argc > 6 ? (int)number(argv[6]) : 90, &buf, &len, &err) < 0) {
		dq_raster_free(&in);
		return failed(&err);
	}
	if (dq_image_sniff(buf, len, &info, &err) < 0 || !info.complete ||
	    info.type != formats[f].type) {
		printf("the encoded bytes are no complete %s\n", formats[f].name);
		return 1;
	}
	if (dq_decode(buf, len, in.ch, 0, 0, &back, &err) < 0)
		return failed(&err);
	if (back.w != in.w || back.h != in.h) {
		printf("%ldx%ld decoded as %dx%d\n", (long)in.w, (long)in.h, back.w, back.h);
		return 1;
	}
	for (size_t k = 0; k < n; k++) {
		int d = abs(in.px[k] - back.px[k]);

		total += d;
		worst = d > worst ? d : worst;
	}
	printf("%s %dx%d, %zu bytes, max diff %d, mean diff %.2f\n", dq_image_mime(info.type),
	    back.w, back.h, len, worst, total / n);
	free(buf);
	dq_raster_free(&in);
	dq_raster_free(&back);
	return 0;
}

static int
write_same(char *argv[])
{
	int f = format(argv[2]), rc;
	const char *path = argv[3];
	struct dq_raster in = raster(number(argv[4]), number(argv[5]), number(argv[6]));
	struct dq_err err;
	unsigned char *buf, *file;
	size_t len, flen;

	smooth(&in);
	rc = f == F_PNG ? dq_png_write(path, &in, &err) : f == F_JPEG ?
	    dq_jpeg_write(path, &in, 90, &err) : dq_webp_write(path, &in, 90, &err);
	if (rc < 0) {
		dq_raster_free(&in);
		return failed(&err);
	}
	if (encode(f, &in, 90, &buf, &len, &err) < 0)
		return failed(&err);
	file = load(path, &flen);
	printf("%s\n", flen == len && memcmp(buf, file, len) == 0 ? "same" : "different");
	free(buf);
	free(file);
	dq_raster_free(&in);
	return 0;
}

static int
decode_fit(int argc, char *argv[])
{
	size_t len;
	unsigned char *data = load(argv[2], &len);
	int max_w = (int)number(argv[3]), max_h = (int)number(argv[4]), worst = 0;
	double total = 0;
	long max_pixels = argc > 5 ? number(argv[5]) : 0;
	struct dq_raster got, whole, want;
	struct dq_err err;

	if (dq_decode_fit(data, len, 3, max_w, max_h, max_pixels, &got, &err) < 0) {
		free(data);
		return failed(&err);
	}
	if (dq_decode(data, len, 3, 0, 0, &whole, &err) < 0 ||
	    dq_raster_fit(&whole, max_w, max_h, max_pixels, &want, &err) < 0)
		return failed(&err);
	if (want.w != got.w || want.h != got.h) {
		printf("%dx%d, a whole decode fits to %dx%d\n", got.w, got.h, want.w, want.h);
		return 1;
	}
	for (size_t k = 0; k < (size_t)got.w * got.h * got.ch; k++) {
		int d = abs(got.px[k] - want.px[k]);

		total += d;
		worst = d > worst ? d : worst;
	}
	printf("%dx%d of %ldx%ld, max diff %d, mean diff %.2f\n", got.w, got.h, got.orig_w,
	    got.orig_h, worst, total / ((size_t)got.w * got.h * got.ch));
	free(data);
	dq_raster_free(&got);
	dq_raster_free(&whole);
	dq_raster_free(&want);
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
	if (argc == 3 && strcmp(argv[1], "variants") == 0)
		return variants(argv[2]);
	if ((argc == 6 || argc == 7) && strcmp(argv[1], "fit") == 0)
		return fit(argc, argv);
	if (argc >= 8 && strcmp(argv[1], "resize") == 0)
		return resize(argc, argv);
	if (argc == 7 && strcmp(argv[1], "resize-ref") == 0)
		return resize_ref(argv);
	if ((argc == 6 || argc == 7) && strcmp(argv[1], "roundtrip") == 0)
		return roundtrip(argc, argv);
	if (argc == 7 && strcmp(argv[1], "write") == 0)
		return write_same(argv);
	if ((argc == 5 || argc == 6) && strcmp(argv[1], "decode-fit") == 0)
		return decode_fit(argc, argv);
	usage();
}
