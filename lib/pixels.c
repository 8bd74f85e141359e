/*
 * pixels.c - JPEG, PNG and WebP to 8-bit gray or RGB, and back.
 *
 * The analyzers work at a reduced size, so decoding asks for a minimum
 * size and lets the codec do the reduction where it can: libjpeg-turbo's
 * scaled IDCT (M/8, M = 1..8) skips most of the work for a large JPEG,
 * libwebp scales while it decodes.  PNG has no such shortcut.  Pixels are
 * those of the stored grid: EXIF orientation is ignored on purpose, since
 * boxes are reported in that grid (DESIGN §2).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <webp/decode.h>
#include <webp/encode.h>

#include "dq.h"


/* Decoded pixels beyond this are refused (the ingest limit is 50 MP). */
#define DECODE_MAX_PIXELS (200L * 1000 * 1000)

struct jerr {
	struct jpeg_error_mgr pub;
	jmp_buf jb;
	char msg[JMSG_LENGTH_MAX];
};

static void
jerr_exit(j_common_ptr c)
{
	struct jerr *je = (struct jerr *)c->err;

	je->pub.format_message(c, je->msg);
	longjmp(je->jb, 1);
}

static void
jerr_quiet(j_common_ptr c, int level)
{
	/* Warnings (a truncated scan, extraneous bytes) are not errors. */
	(void)c;
	(void)level;
}

static int
pixels_ok(long w, long h)
{
	return w > 0 && h > 0 && w <= 65535 && h <= 65535 &&
	    w * h <= DECODE_MAX_PIXELS;
}

static int
decode_jpeg(const unsigned char *data, size_t len, int ch, int min_w,
    int min_h, struct dq_raster *out, struct dq_err *err)
{
	struct jpeg_decompress_struct ci;
	struct jerr je;
	unsigned char *volatile px = NULL;
	int num;

	memset(&ci, 0, sizeof ci);
	ci.err = jpeg_std_error(&je.pub);
	je.pub.error_exit = jerr_exit;
	je.pub.emit_message = jerr_quiet;
	je.msg[0] = '\0';
	if (setjmp(je.jb)) {
		jpeg_destroy_decompress(&ci);
		free(px);
		dq_err_record(err, "undecodable", "JPEG: %s", je.msg);
		return -1;
	}
	jpeg_create_decompress(&ci);
	jpeg_mem_src(&ci, data, (unsigned long)len);
	jpeg_read_header(&ci, TRUE);
	if (ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK) {
		jpeg_destroy_decompress(&ci);
		dq_err_record(err, "undecodable", "JPEG: CMYK images are not supported");
		return -1;
	}
	if (!pixels_ok(ci.image_width, ci.image_height)) {
		jpeg_destroy_decompress(&ci);
		dq_err_record(err, "undecodable", "JPEG: %ux%u is too large",
		    ci.image_width, ci.image_height);
		return -1;
	}
	out->orig_w = ci.image_width;
	out->orig_h = ci.image_height;
	ci.out_color_space = ch == 1 ? JCS_GRAYSCALE : JCS_RGB;
	ci.dct_method = JDCT_ISLOW;
	/* The smallest M/8 that still covers the minimum size. */
	ci.scale_denom = 8;
	for (num = min_w > 0 || min_h > 0 ? 1 : 8; num < 8; num++) {
		ci.scale_num = num;
		jpeg_calc_output_dimensions(&ci);
		if ((int)ci.output_width >= min_w && (int)ci.output_height >= min_h)
			break;
	}
	ci.scale_num = num;
	jpeg_start_decompress(&ci);
	out->w = ci.output_width;
	out->h = ci.output_height;
	out->ch = ch;
	px = dq_xmalloc((size_t)out->w * out->h * ch);
	while (ci.output_scanline < ci.output_height) {
		JSAMPROW row = px + (size_t)ci.output_scanline * out->w * ch;
		jpeg_read_scanlines(&ci, &row, 1);
	}
	jpeg_finish_decompress(&ci);
	jpeg_destroy_decompress(&ci);
	out->px = px;
	return 0;
}

static int
decode_png(const unsigned char *data, size_t len, int ch,
    struct dq_raster *out, struct dq_err *err)
{
	png_image im;
	png_color bg = { 0, 0, 0 };

	memset(&im, 0, sizeof im);
	im.version = PNG_IMAGE_VERSION;
	if (!png_image_begin_read_from_memory(&im, data, len)) {
		dq_err_record(err, "undecodable", "PNG: %s", im.message);
		png_image_free(&im);
		return -1;
	}
	if (!pixels_ok(im.width, im.height)) {
		dq_err_record(err, "undecodable", "PNG: %ux%u is too large",
		    im.width, im.height);
		png_image_free(&im);
		return -1;
	}
	im.format = ch == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
	out->w = im.width;
	out->h = im.height;
	out->orig_w = im.width;
	out->orig_h = im.height;
	out->ch = ch;
	out->px = dq_xmalloc(PNG_IMAGE_SIZE(im));
	/* Transparency is composed onto black. */
	if (!png_image_finish_read(&im, &bg, out->px, 0, NULL)) {
		dq_err_record(err, "undecodable", "PNG: %s", im.message);
		png_image_free(&im);
		free(out->px);
		out->px = NULL;
		return -1;
	}
	return 0;
}

static int
decode_webp(const unsigned char *data, size_t len, int ch, int min_w,
    int min_h, struct dq_raster *out, struct dq_err *err)
{
	WebPDecoderConfig cfg;
	int w, h, sw, sh, i;
	unsigned char *rgb;

	if (!WebPInitDecoderConfig(&cfg) ||
	    WebPGetFeatures(data, len, &cfg.input) != VP8_STATUS_OK) {
		dq_err_record(err, "undecodable", "WebP: unreadable header");
		return -1;
	}
	w = cfg.input.width;
	h = cfg.input.height;
	if (!pixels_ok(w, h)) {
		dq_err_record(err, "undecodable", "WebP: %dx%d is too large", w, h);
		return -1;
	}
	sw = w;
	sh = h;
	if (min_w > 0 && min_h > 0 && min_w < w && min_h < h) {
		/* Keep the aspect: scale by the larger of the two ratios. */
		double r = (double)min_w / w > (double)min_h / h ?
		    (double)min_w / w : (double)min_h / h;
		sw = (int)(w * r + 0.999);
		sh = (int)(h * r + 0.999);
		if (sw > w)
			sw = w;
		if (sh > h)
			sh = h;
		cfg.options.use_scaling = 1;
		cfg.options.scaled_width = sw;
		cfg.options.scaled_height = sh;
	}
	cfg.output.colorspace = MODE_RGB;
	if (WebPDecode(data, len, &cfg) != VP8_STATUS_OK) {
		WebPFreeDecBuffer(&cfg.output);
		dq_err_record(err, "undecodable", "WebP: corrupt image data");
		return -1;
	}
	rgb = cfg.output.u.RGBA.rgba;
	out->w = sw;
	out->h = sh;
	out->orig_w = w;
	out->orig_h = h;
	out->ch = ch;
	out->px = dq_xmalloc((size_t)sw * sh * ch);
	for (i = 0; i < sh; i++) {
		const unsigned char *s = rgb + (size_t)i * cfg.output.u.RGBA.stride;
		unsigned char *d = out->px + (size_t)i * sw * ch;
		int x;

		if (ch == 3) {
			memcpy(d, s, (size_t)sw * 3);
			continue;
		}
		for (x = 0; x < sw; x++, s += 3)
			d[x] = (unsigned char)((77 * s[0] + 150 * s[1] + 29 * s[2] + 128) >> 8);
	}
	WebPFreeDecBuffer(&cfg.output);
	return 0;
}

int
dq_decode(const unsigned char *data, size_t len, int ch, int min_w,
    int min_h, struct dq_raster *out, struct dq_err *err)
{
	memset(out, 0, sizeof *out);
	if (ch != 1 && ch != 3)
		ch = 3;
	if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
		return decode_jpeg(data, len, ch, min_w, min_h, out, err);
	if (len >= 8 && memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0)
		return decode_png(data, len, ch, out, err);
	if (len >= 12 && memcmp(data, "RIFF", 4) == 0 &&
	    memcmp(data + 8, "WEBP", 4) == 0)
		return decode_webp(data, len, ch, min_w, min_h, out, err);
	dq_err_record(err, "undecodable", "not a JPEG, PNG or WebP image");
	return -1;
}

/*
 * Validation (dq_decode_check): decode everything the codec must read to
 * produce pixels, at its smallest scale, and keep none.  libjpeg at 1/8
 * still entropy-decodes every coefficient of every component (the scaled
 * IDCT only skips arithmetic), so corrupt scan data is seen; its warnings
 * about the data ("Corrupt JPEG data", "Premature end of data segment")
 * are failures here, where the analyzers' decode above lets them pass.
 * libpng checks every chunk's CRC and the zlib stream (Adler-32 included)
 * row by row in one row of memory; a warning about IDAT is a failure,
 * one about a metadata chunk (an odd ICC profile) is not.  libwebp decodes
 * through its scaler; lossy WebP has no redundancy, so only a damaged
 * structure or missing data can be seen there.
 */

/* libjpeg warnings that say nothing about the pixels. */
static const int jpeg_benign[] = { JWRN_JFIF_MAJOR, JWRN_BOGUS_ICC };

static void
jerr_strict(j_common_ptr c, int level)
{
	struct jerr *je = (struct jerr *)c->err;

	if (level >= 0)
		return;		/* trace messages */
	for (size_t i = 0; i < sizeof jpeg_benign / sizeof *jpeg_benign; i++)
		if (c->err->msg_code == jpeg_benign[i])
			return;
	je->pub.format_message(c, je->msg);
	longjmp(je->jb, 1);
}

static int
check_jpeg(const unsigned char *data, size_t len, struct dq_err *err)
{
	struct jpeg_decompress_struct ci;
	struct jerr je;
	JSAMPARRAY row;

	memset(&ci, 0, sizeof ci);
	ci.err = jpeg_std_error(&je.pub);
	je.pub.error_exit = jerr_exit;
	je.pub.emit_message = jerr_strict;
	je.msg[0] = '\0';
	if (setjmp(je.jb)) {
		jpeg_destroy_decompress(&ci);
		dq_err_record(err, "corrupt_image", "JPEG: %s", je.msg);
		return -1;
	}
	jpeg_create_decompress(&ci);
	jpeg_mem_src(&ci, data, (unsigned long)len);
	jpeg_read_header(&ci, TRUE);
	/* Gray output skips the colour IDCT and conversion, not the
	 * entropy decoding of the colour components. */
	if (ci.jpeg_color_space != JCS_CMYK && ci.jpeg_color_space != JCS_YCCK)
		ci.out_color_space = JCS_GRAYSCALE;
	ci.scale_num = 1;
	ci.scale_denom = 8;
	ci.dct_method = JDCT_IFAST;
	ci.do_fancy_upsampling = FALSE;
	ci.do_block_smoothing = FALSE;
	jpeg_start_decompress(&ci);
	row = (*ci.mem->alloc_sarray)((j_common_ptr)&ci, JPOOL_IMAGE,
	    ci.output_width * ci.output_components, 1);
	while (ci.output_scanline < ci.output_height)
		jpeg_read_scanlines(&ci, row, 1);
	jpeg_finish_decompress(&ci);
	jpeg_destroy_decompress(&ci);
	return 0;
}

struct pngchk {
	const unsigned char *p;
	size_t n, off;
	char msg[160];
};

static void
png_chk_read(png_structp png, png_bytep out, size_t n)
{
	struct pngchk *c = png_get_io_ptr(png);

	if (n > c->n - c->off)
		png_error(png, "premature end of data");
	memcpy(out, c->p + c->off, n);
	c->off += n;
}

static void
png_chk_error(png_structp png, png_const_charp msg)
{
	struct pngchk *c = png_get_error_ptr(png);

	snprintf(c->msg, sizeof c->msg, "%s", msg);
	png_longjmp(png, 1);
}

static void
png_chk_warning(png_structp png, png_const_charp msg)
{
	/* libpng names the chunk first: "IDAT: Too much image data". */
	if (strncmp(msg, "IDAT", 4) == 0)
		png_chk_error(png, msg);
}

static int
check_png(const unsigned char *data, size_t len, struct dq_err *err)
{
	struct pngchk c = { data, len, 0, "" };
	png_structp png;
	png_infop info = NULL;
	unsigned char *volatile row = NULL;
	png_uint_32 h;
	int passes;

	png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, png_chk_error,
	    png_chk_warning);
	if (!png || !(info = png_create_info_struct(png))) {
		png_destroy_read_struct(&png, NULL, NULL);
		dq_die(DQ_EX_IOERR, "out of memory");
	}
	if (setjmp(png_jmpbuf(png))) {
		png_destroy_read_struct(&png, &info, NULL);
		free(row);
		dq_err_record(err, "corrupt_image", "PNG: %s", c.msg[0] ? c.msg : "unreadable");
		return -1;
	}
	png_set_read_fn(png, &c, png_chk_read);
	/* A CRC mismatch in any chunk, critical or not, is damage. */
	png_set_crc_action(png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
	png_read_info(png, info);
	passes = png_set_interlace_handling(png);
	png_read_update_info(png, info);
	h = png_get_image_height(png, info);
	row = dq_xmalloc(png_get_rowbytes(png, info));
	for (int p = 0; p < passes; p++)
		for (png_uint_32 y = 0; y < h; y++)
			png_read_row(png, row, NULL);
	png_read_end(png, NULL);
	png_destroy_read_struct(&png, &info, NULL);
	free(row);
	return 0;
}

static const char *
webp_status(VP8StatusCode s)
{
	static const char *const names[] = {
		[VP8_STATUS_OUT_OF_MEMORY] = "out of memory",
		[VP8_STATUS_INVALID_PARAM] = "invalid parameter",
		[VP8_STATUS_BITSTREAM_ERROR] = "bitstream error",
		[VP8_STATUS_UNSUPPORTED_FEATURE] = "unsupported feature",
		[VP8_STATUS_SUSPENDED] = "suspended",
		[VP8_STATUS_USER_ABORT] = "aborted",
		[VP8_STATUS_NOT_ENOUGH_DATA] = "premature end of data",
	};

	return (size_t)s < sizeof names / sizeof *names && names[s] ? names[s] : "corrupt image data";
}

static int
check_webp(const unsigned char *data, size_t len, struct dq_err *err)
{
	WebPDecoderConfig cfg;
	VP8StatusCode s;

	if (!WebPInitDecoderConfig(&cfg))
		dq_die(DQ_EX_IOERR, "libwebp: version mismatch");
	if ((s = WebPGetFeatures(data, len, &cfg.input)) == VP8_STATUS_OK) {
		cfg.options.use_scaling = 1;
		cfg.options.scaled_width = cfg.input.width / 8 > 0 ? cfg.input.width / 8 : 1;
		cfg.options.scaled_height = cfg.input.height / 8 > 0 ? cfg.input.height / 8 : 1;
		/* Ask for alpha when there is some, so that it is decoded too. */
		cfg.output.colorspace = cfg.input.has_alpha ? MODE_RGBA : MODE_RGB;
		s = WebPDecode(data, len, &cfg);
		WebPFreeDecBuffer(&cfg.output);
	}
	if (s != VP8_STATUS_OK) {
		dq_err_record(err, "corrupt_image", "WebP: %s", webp_status(s));
		return -1;
	}
	return 0;
}

int
dq_decode_check(const unsigned char *data, size_t len, enum dq_image_type t,
    struct dq_err *err)
{
	switch (t) {
	case DQ_IMG_JPEG: return check_jpeg(data, len, err);
	case DQ_IMG_PNG: return check_png(data, len, err);
	case DQ_IMG_WEBP: return check_webp(data, len, err);
	default:
		dq_err_record(err, "not_an_image", "not a JPEG, PNG or WebP image");
		return -1;
	}
}

void
dq_raster_free(struct dq_raster *r)
{
	if (r == NULL)
		return;
	free(r->px);
	r->px = NULL;
}

int
dq_png_write(const char *path, const struct dq_raster *r, struct dq_err *err)
{
	png_image im;

	memset(&im, 0, sizeof im);
	im.version = PNG_IMAGE_VERSION;
	im.width = r->w;
	im.height = r->h;
	im.format = r->ch == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
	/* annotations and test images: speed over size */
	im.flags = PNG_IMAGE_FLAG_FAST;
	if (!png_image_write_to_file(&im, path, 0, r->px, 0, NULL)) {
		dq_err_set(err, DQ_SCOPE_SYSTEM, DQ_EX_IOERR, 0, "io_error",
		    "%s: %s", path, im.message);
		return -1;
	}
	return 0;
}

int
dq_jpeg_write(const char *path, const struct dq_raster *r, int quality,
    struct dq_err *err)
{
	struct jpeg_compress_struct ci;
	struct jerr je;
	FILE *volatile fp;
	int i;

	if ((fp = fopen(path, "wb")) == NULL) {
		dq_err_set(err, DQ_SCOPE_SYSTEM, DQ_EX_IOERR, 0, "io_error",
		    "%s: %s", path, strerror(errno));
		return -1;
	}
	memset(&ci, 0, sizeof ci);
	ci.err = jpeg_std_error(&je.pub);
	je.pub.error_exit = jerr_exit;
	if (setjmp(je.jb)) {
		jpeg_destroy_compress(&ci);
		fclose(fp);
		dq_err_set(err, DQ_SCOPE_SYSTEM, DQ_EX_IOERR, 0, "io_error",
		    "%s: %s", path, je.msg);
		return -1;
	}
	jpeg_create_compress(&ci);
	jpeg_stdio_dest(&ci, fp);
	ci.image_width = r->w;
	ci.image_height = r->h;
	ci.input_components = r->ch;
	ci.in_color_space = r->ch == 1 ? JCS_GRAYSCALE : JCS_RGB;
	jpeg_set_defaults(&ci);
	jpeg_set_quality(&ci, quality, TRUE);
	jpeg_start_compress(&ci, TRUE);
	for (i = 0; i < r->h; i++) {
		JSAMPROW row = r->px + (size_t)i * r->w * r->ch;
		jpeg_write_scanlines(&ci, &row, 1);
	}
	jpeg_finish_compress(&ci);
	jpeg_destroy_compress(&ci);
	if (ferror(fp) | fclose(fp)) {
		dq_err_set(err, DQ_SCOPE_SYSTEM, DQ_EX_IOERR, 0, "io_error",
		    "%s: write error", path);
		return -1;
	}
	return 0;
}

int
dq_webp_write(const char *path, const struct dq_raster *r, int quality,
    struct dq_err *err)
{
	uint8_t *buf = NULL, *rgb = NULL;
	size_t n;
	FILE *fp;
	int ok;

	if (r->ch == 1) {
		size_t i, np = (size_t)r->w * r->h;

		rgb = dq_xmalloc(np * 3);
		for (i = 0; i < np; i++)
			rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = r->px[i];
	}
	n = WebPEncodeRGB(rgb ? rgb : r->px, r->w, r->h, r->w * 3,
	    (float)quality, &buf);
	free(rgb);
	if (n == 0) {
		dq_err_set(err, DQ_SCOPE_SYSTEM, DQ_EX_IOERR, 0, "io_error",
		    "%s: WebP encoding failed", path);
		return -1;
	}
	if ((fp = fopen(path, "wb")) == NULL) {
		WebPFree(buf);
		dq_err_set(err, DQ_SCOPE_SYSTEM, DQ_EX_IOERR, 0, "io_error",
		    "%s: %s", path, strerror(errno));
		return -1;
	}
	ok = fwrite(buf, 1, n, fp) == n;
	WebPFree(buf);
	if ((fclose(fp) != 0) | !ok) {
		dq_err_set(err, DQ_SCOPE_SYSTEM, DQ_EX_IOERR, 0, "io_error",
		    "%s: write error", path);
		return -1;
	}
	return 0;
}
