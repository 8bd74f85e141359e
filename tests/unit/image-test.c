/* image-test - the image validation of lib/image.c on files, what it costs, and valid images of every kind it must take. */
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
 */

enum { SHA, SNIFF, VALIDATE, DEC28, DECFULL, NSTEP };
static const char *const step_name[NSTEP] = {
	"sha256", "sniff", "validate", "decode_2_8", "decode_full",
};

static _Noreturn void
usage(void)
{
	fprintf(stderr, "usage: image-test check FILE... | time FILE N | variants DIR\n");
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
	usage();
}
