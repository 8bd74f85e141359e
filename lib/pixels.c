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
#include <math.h>
#include <setjmp.h>
#include <stdint.h>
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

/*
 * Resizing: an area average (a box filter), the only filter that a shrink
 * by any ratio leaves without aliasing or ringing.  Each output pixel is
 * the mean of the source area it covers, partial pixels weighted by the
 * part covered, computed in integers: a source pixel is ow units wide and
 * an output pixel w units, so the weights are whole numbers and the sum of
 * an output pixel's weights is exactly w x h; the division rounds half up.
 * Rows stream through: a source row is summed across into one row of
 * partial sums, which goes into the one or two output rows it overlaps.
 */

static int
raster_ok(const struct dq_raster *r)
{
	return r != NULL && r->px != NULL && (r->ch == 1 || r->ch == 3) &&
	    pixels_ok(r->w, r->h);
}

void
dq_fit_size(long w, long h, long max_w, long max_h, long max_pixels,
    int *fit_w, int *fit_h)
{
	double scale = 1;
	long fw, fh;

	if (w > max_w)
		scale = (double)max_w / w;
	if (h > max_h && (double)max_h / h < scale)
		scale = (double)max_h / h;
	if (max_pixels > 0 && (double)w * h > (double)max_pixels &&
	    sqrt((double)max_pixels / ((double)w * h)) < scale)
		scale = sqrt((double)max_pixels / ((double)w * h));
	fw = scale < 1 ? lround(w * scale) : w;
	fh = scale < 1 ? lround(h * scale) : h;
	fw = fw < 1 ? 1 : fw > max_w ? max_w : fw;
	fh = fh < 1 ? 1 : fh > max_h ? max_h : fh;
	/* Both sides rounded up can pass the pixel count by a row or so. */
	while (max_pixels > 0 && fw * fh > max_pixels && (fw > 1 || fh > 1)) {
		if (fw * h >= fh * w && fw > 1)
			fw--;
		else
			fh--;
	}
	*fit_w = (int)fw;
	*fit_h = (int)fh;
}

/* in shrunk to exactly ow x oh (at most in->w x in->h) into px. */
static void
shrink(const struct dq_raster *in, int ow, int oh, unsigned char *px)
{
	const int w = in->w, h = in->h, ch = in->ch;
	const size_t orow = (size_t)ow * ch;
	const uint64_t area = (uint64_t)w * h;
	int *to = dq_xmalloc((size_t)w * sizeof *to);
	uint32_t *first = dq_xmalloc((size_t)w * sizeof *first);
	uint32_t *across = dq_xmalloc(orow * sizeof *across);
	uint64_t *sum = dq_xcalloc(orow, sizeof *sum);
	int x, y = 0;

	/* Where each source column goes: output column to[i] takes first[i]
	 * of its ow units, the next output column the rest. */
	for (x = 0; x < w; x++) {
		uint64_t start = (uint64_t)x * ow, bound;

		to[x] = (int)(start / w);
		bound = (uint64_t)(to[x] + 1) * w;
		first[x] = (uint32_t)(start + ow <= bound ? (uint64_t)ow : bound - start);
	}
	for (int j = 0; j < h; j++) {
		const unsigned char *s = in->px + (size_t)j * w * ch;
		uint64_t start = (uint64_t)j * oh, bound = (uint64_t)(y + 1) * h;
		uint32_t above = (uint32_t)(start + oh <= bound ? (uint64_t)oh : bound - start);

		memset(across, 0, orow * sizeof *across);
		for (x = 0; x < w; x++, s += ch) {
			uint32_t *d = across + (size_t)to[x] * ch;
			uint32_t rest = (uint32_t)ow - first[x];

			for (int c = 0; c < ch; c++) {
				d[c] += s[c] * first[x];
				if (rest)
					d[c + ch] += s[c] * rest;
			}
		}
		for (size_t k = 0; k < orow; k++)
			sum[k] += (uint64_t)across[k] * above;
		if (start + oh < bound)
			continue;
		/* Output row y is complete; what is left of this row starts the next. */
		for (size_t k = 0; k < orow; k++)
			px[(size_t)y * orow + k] = (unsigned char)((sum[k] + area / 2) / area);
		y++;
		for (size_t k = 0; k < orow; k++)
			sum[k] = (uint64_t)across[k] * (oh - above);
	}
	free(to);
	free(first);
	free(across);
	free(sum);
}

/* in shrunk to ow x oh into out (a copy when the size is in's). */
static void
resize_to(const struct dq_raster *in, int ow, int oh, struct dq_raster *out)
{
	out->w = ow;
	out->h = oh;
	out->ch = in->ch;
	out->orig_w = in->orig_w;
	out->orig_h = in->orig_h;
	out->px = dq_xmalloc((size_t)ow * oh * in->ch);
	if (ow == in->w && oh == in->h)
		memcpy(out->px, in->px, (size_t)ow * oh * in->ch);
	else
		shrink(in, ow, oh, out->px);
}

int
dq_raster_fit(const struct dq_raster *in, int max_w, int max_h,
    long max_pixels, struct dq_raster *out, struct dq_err *err)
{
	int fw, fh;

	memset(out, 0, sizeof *out);
	if (!raster_ok(in)) {
		dq_err_record(err, "bad_size", "resize: not a raster of 1 or 3 channels within 65535x65535");
		return -1;
	}
	if (max_w < 1 || max_h < 1 || max_pixels < 0) {
		dq_err_record(err, "bad_size", "resize: %dx%d (%ld pixels) is no size to fit in",
		    max_w, max_h, max_pixels);
		return -1;
	}
	dq_fit_size(in->w, in->h, max_w, max_h, max_pixels, &fw, &fh);
	resize_to(in, fw, fh, out);
	return 0;
}

int
dq_decode_fit(const unsigned char *data, size_t len, int ch, int max_w,
    int max_h, long max_pixels, struct dq_raster *out, struct dq_err *err)
{
	struct dq_image_info info;
	struct dq_err ignored;
	struct dq_raster whole;
	int min_w = 0, min_h = 0, fw, fh;

	memset(out, 0, sizeof *out);
	if (max_w < 1 || max_h < 1 || max_pixels < 0) {
		dq_err_record(err, "bad_size", "decode: %dx%d (%ld pixels) is no size to fit in",
		    max_w, max_h, max_pixels);
		return -1;
	}
	/* The header's size chooses the codec's scale; a header the decoder
	 * reads otherwise only costs a whole decode. */
	if (dq_image_sniff(data, len, &info, &ignored) == 0 && pixels_ok(info.width, info.height))
		dq_fit_size(info.width, info.height, max_w, max_h, max_pixels, &min_w, &min_h);
	if (dq_decode(data, len, ch, min_w, min_h, &whole, err) < 0)
		return -1;
	dq_fit_size(whole.orig_w, whole.orig_h, max_w, max_h, max_pixels, &fw, &fh);
	if (fw > whole.w || fh > whole.h)
		dq_fit_size(whole.w, whole.h, max_w, max_h, max_pixels, &fw, &fh);
	if (fw == whole.w && fh == whole.h) {
		*out = whole;
		return 0;
	}
	resize_to(&whole, fw, fh, out);
	dq_raster_free(&whole);
	return 0;
}

/*
 * Encoders, in memory: the one encoder of each format, which the file
 * writers below put in a file.
 */

static int
encode_refused(const struct dq_raster *r, const char *format, struct dq_err *err)
{
	if (raster_ok(r))
		return 0;
	dq_err_record(err, "unencodable", "%s: not a raster of 1 or 3 channels within 65535x65535",
	    format);
	return -1;
}

int
dq_png_encode(const struct dq_raster *r, unsigned char **buf, size_t *len,
    struct dq_err *err)
{
	png_image im;
	png_alloc_size_t n;
	unsigned char *b;

	*buf = NULL;
	*len = 0;
	if (encode_refused(r, "PNG", err))
		return -1;
	memset(&im, 0, sizeof im);
	im.version = PNG_IMAGE_VERSION;
	im.width = r->w;
	im.height = r->h;
	im.format = r->ch == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
	/* annotations and test images: speed over size */
	im.flags = PNG_IMAGE_FLAG_FAST;
	/* Room for the worst case, so that libpng compresses once. */
	n = PNG_IMAGE_PNG_SIZE_MAX(im);
	b = dq_xmalloc(n);
	if (!png_image_write_to_memory(&im, b, &n, 0, r->px, 0, NULL)) {
		free(b);
		dq_err_record(err, "unencodable", "PNG: %s", im.message);
		return -1;
	}
	*buf = dq_xrealloc(b, n);
	*len = n;
	return 0;
}

int
dq_jpeg_encode(const struct dq_raster *r, int quality, unsigned char **buf,
    size_t *len, struct dq_err *err)
{
	struct jpeg_compress_struct ci;
	struct jerr je;
	unsigned char *mem = NULL;
	unsigned long n = 0;

	*buf = NULL;
	*len = 0;
	if (encode_refused(r, "JPEG", err))
		return -1;
	memset(&ci, 0, sizeof ci);
	ci.err = jpeg_std_error(&je.pub);
	je.pub.error_exit = jerr_exit;
	if (setjmp(je.jb)) {
		jpeg_destroy_compress(&ci);
		free(mem);
		dq_err_record(err, "unencodable", "JPEG: %s", je.msg);
		return -1;
	}
	jpeg_create_compress(&ci);
	jpeg_mem_dest(&ci, &mem, &n);
	ci.image_width = r->w;
	ci.image_height = r->h;
	ci.input_components = r->ch;
	ci.in_color_space = r->ch == 1 ? JCS_GRAYSCALE : JCS_RGB;
	jpeg_set_defaults(&ci);
	jpeg_set_quality(&ci, quality, TRUE);
	jpeg_start_compress(&ci, TRUE);
	for (int i = 0; i < r->h; i++) {
		JSAMPROW row = r->px + (size_t)i * r->w * r->ch;
		jpeg_write_scanlines(&ci, &row, 1);
	}
	jpeg_finish_compress(&ci);
	jpeg_destroy_compress(&ci);
	*buf = mem;
	*len = n;
	return 0;
}

int
dq_webp_encode(const struct dq_raster *r, int quality, unsigned char **buf,
    size_t *len, struct dq_err *err)
{
	uint8_t *out = NULL, *rgb = NULL;
	size_t n;

	*buf = NULL;
	*len = 0;
	if (encode_refused(r, "WebP", err))
		return -1;
	if (r->ch == 1) {
		size_t i, np = (size_t)r->w * r->h;

		rgb = dq_xmalloc(np * 3);
		for (i = 0; i < np; i++)
			rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = r->px[i];
	}
	n = WebPEncodeRGB(rgb ? rgb : r->px, r->w, r->h, r->w * 3,
	    (float)quality, &out);
	free(rgb);
	if (n == 0) {
		dq_err_record(err, "unencodable", "WebP: encoding failed");
		return -1;
	}
	/* libwebp's buffer is freed by WebPFree; the caller's by free. */
	*buf = dq_xmalloc(n);
	memcpy(*buf, out, n);
	WebPFree(out);
	*len = n;
	return 0;
}

/* buf (freed here) into a new file at path. */
static int
write_file(const char *path, unsigned char *buf, size_t len, struct dq_err *err)
{
	FILE *fp;
	int ok;

	if ((fp = fopen(path, "wb")) == NULL) {
		free(buf);
		dq_err_set(err, DQ_SCOPE_SYSTEM, DQ_EX_IOERR, 0, "io_error",
		    "%s: %s", path, strerror(errno));
		return -1;
	}
	ok = fwrite(buf, 1, len, fp) == len;
	free(buf);
	if ((ferror(fp) | fclose(fp)) != 0 || !ok) {
		dq_err_set(err, DQ_SCOPE_SYSTEM, DQ_EX_IOERR, 0, "io_error",
		    "%s: write error", path);
		return -1;
	}
	return 0;
}

int
dq_png_write(const char *path, const struct dq_raster *r, struct dq_err *err)
{
	unsigned char *buf;
	size_t len;

	if (dq_png_encode(r, &buf, &len, err) < 0)
		return -1;
	return write_file(path, buf, len, err);
}

int
dq_jpeg_write(const char *path, const struct dq_raster *r, int quality,
    struct dq_err *err)
{
	unsigned char *buf;
	size_t len;

	if (dq_jpeg_encode(r, quality, &buf, &len, err) < 0)
		return -1;
	return write_file(path, buf, len, err);
}

int
dq_webp_write(const char *path, const struct dq_raster *r, int quality,
    struct dq_err *err)
{
	unsigned char *buf;
	size_t len;

	if (dq_webp_encode(r, quality, &buf, &len, err) < 0)
		return -1;
	return write_file(path, buf, len, err);
}
