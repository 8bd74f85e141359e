/*
 * image.c - recognise JPEG, PNG and WebP from their bytes, and the one
 * validation every entry point applies to an image (dq-put, dq-ingest,
 * dq-analyze on a file and on a downloaded raw image).
 *
 * Sniffing reads the type, the size and whether the file is complete,
 * without decoding pixels: "complete" means the container structure holds
 * through its end (a JPEG reaches its EOI marker, a PNG its IEND chunk, a
 * WebP its RIFF length), which is what an upload cut off mid-transfer
 * lacks.  Validation adds the limits and a decode (dq_decode_check), since
 * a file can be whole in structure and garbage inside.
 */
#include <errno.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "dq.h"

static unsigned
be16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static unsigned long
be32(const unsigned char *p)
{
	return (unsigned long)p[0] << 24 | (unsigned long)p[1] << 16 |
	    (unsigned long)p[2] << 8 | p[3];
}

static unsigned long
le32(const unsigned char *p)
{
	return (unsigned long)p[3] << 24 | (unsigned long)p[2] << 16 |
	    (unsigned long)p[1] << 8 | p[0];
}

static int
sniff_jpeg(const unsigned char *b, size_t n, struct dq_image_info *in)
{
	size_t i = 2;
	int scanning = 0;

	while (i < n) {
		unsigned m;

		if (scanning) {
			/* Entropy-coded data: FF00 is a stuffed byte, FFD0-D7
			 * restart markers; any other marker ends the scan. */
			if (b[i] != 0xff) {
				i++;
				continue;
			}
			if (i + 1 >= n)
				break;
			m = b[i + 1];
			if (m == 0x00 || (m >= 0xd0 && m <= 0xd7) || m == 0xff) {
				i += m == 0xff ? 1 : 2;
				continue;
			}
			scanning = 0;
		}
		if (b[i] != 0xff)
			return -1;
		while (i < n && b[i] == 0xff)
			i++;	/* fill bytes */
		if (i >= n)
			break;
		m = b[i++];
		if (m == 0xd9) {
			in->complete = in->width > 0;
			return in->width > 0 ? 0 : -1;
		}
		if (m == 0x01 || (m >= 0xd0 && m <= 0xd7))
			continue;	/* standalone markers */
		if (i + 2 > n)
			break;
		unsigned len = be16(b + i);
		if (len < 2)
			return -1;
		if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
			if (i + 7 > n || len < 7)
				break;
			in->height = be16(b + i + 3);
			in->width = be16(b + i + 5);
		}
		if (i + len > n)
			break;
		i += len;
		if (m == 0xda)
			scanning = 1;
	}
	in->complete = 0;
	return in->width > 0 ? 0 : -1;
}

static int
sniff_png(const unsigned char *b, size_t n, struct dq_image_info *in)
{
	size_t i = 8;

	if (n < 33 || memcmp(b + 12, "IHDR", 4) != 0 || be32(b + 8) != 13)
		return -1;
	in->width = (long)be32(b + 16);
	in->height = (long)be32(b + 20);
	if (in->width <= 0 || in->height <= 0 || in->width > 0x7fffffffL || in->height > 0x7fffffffL)
		return -1;
	while (i + 12 <= n) {
		unsigned long len = be32(b + i);

		if (len > 0x7fffffffUL || len > n - i - 12)
			break;
		if (memcmp(b + i + 4, "IEND", 4) == 0) {
			in->complete = 1;
			return 0;
		}
		i += 12 + len;
	}
	in->complete = 0;
	return 0;
}

static int
sniff_webp(const unsigned char *b, size_t n, struct dq_image_info *in)
{
	unsigned long riff = le32(b + 4);
	const unsigned char *c = b + 12;

	if (n < 30)
		return -1;
	if (memcmp(c, "VP8 ", 4) == 0) {
		if (c[11] != 0x9d || c[12] != 0x01 || c[13] != 0x2a)
			return -1;
		in->width = (long)((c[14] | c[15] << 8) & 0x3fff);
		in->height = (long)((c[16] | c[17] << 8) & 0x3fff);
	} else if (memcmp(c, "VP8L", 4) == 0) {
		unsigned long bits;

		if (c[8] != 0x2f)
			return -1;
		bits = le32(c + 9);
		in->width = (long)(bits & 0x3fff) + 1;
		in->height = (long)((bits >> 14) & 0x3fff) + 1;
	} else if (memcmp(c, "VP8X", 4) == 0) {
		in->width = (long)(c[12] | c[13] << 8 | (unsigned long)c[14] << 16) + 1;
		in->height = (long)(c[15] | c[16] << 8 | (unsigned long)c[17] << 16) + 1;
	} else
		return -1;
	in->complete = riff >= 4 && riff <= n - 8 && in->width > 0 && in->height > 0;
	return in->width > 0 && in->height > 0 ? 0 : -1;
}

int
dq_image_sniff(const unsigned char *b, size_t n, struct dq_image_info *in, struct dq_err *err)
{
	int r = -1;

	memset(in, 0, sizeof *in);
	if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) {
		in->type = DQ_IMG_JPEG;
		r = sniff_jpeg(b, n, in);
	} else if (n >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) {
		in->type = DQ_IMG_PNG;
		r = sniff_png(b, n, in);
	} else if (n >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0) {
		in->type = DQ_IMG_WEBP;
		r = sniff_webp(b, n, in);
	} else {
		dq_err_record(err, "not_an_image", "not a JPEG, PNG or WebP image");
		return -1;
	}
	if (r < 0)
		dq_err_record(err, "bad_header", "%s header unreadable or truncated",
		    dq_image_mime(in->type));
	return r;
}

int
dq_image_validate(const unsigned char *b, size_t n, struct dq_image_info *in, struct dq_err *err)
{
	if ((long long)n > dq_cfg.max_image_bytes) {
		dq_err_record(err, "too_large", "image of %zu bytes exceeds DQ_MAX_IMAGE_BYTES=%lld",
		    n, dq_cfg.max_image_bytes);
		return -1;
	}
	if (dq_image_sniff(b, n, in, err) < 0)
		return -1;
	if (!in->complete) {
		dq_err_record(err, "truncated_image", "%s image is incomplete (truncated?)",
		    dq_image_mime(in->type));
		return -1;
	}
	if ((long long)in->width * in->height > dq_cfg.max_image_pixels) {
		dq_err_record(err, "too_many_pixels", "image of %ldx%ld pixels exceeds DQ_MAX_IMAGE_PIXELS=%lld",
		    in->width, in->height, dq_cfg.max_image_pixels);
		return -1;
	}
	return dq_decode_check(b, n, in->type, err);
}

/* What a FILE argument is when it is not a regular file, for the message. */
static const char *
file_kind(const char *path)
{
	static const struct { mode_t type; const char *name; } kinds[] = {
		{ S_IFDIR, "a directory" }, { S_IFIFO, "a FIFO" }, { S_IFSOCK, "a socket" },
		{ S_IFCHR, "a device" }, { S_IFBLK, "a device" },
	};
	struct stat st;

	if (stat(path, &st) == 0)
		for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
			if ((st.st_mode & S_IFMT) == kinds[i].type)
				return kinds[i].name;
	return "a special file";
}

int
dq_image_read(const char *path, unsigned char **data, size_t *len, struct dq_err *err)
{
	/* Why a file could not be read: the input's fault (66), else I/O (74). */
	static const struct { int errnum; const char *code; int kind; } why[] = {
		{ ENOENT, "no_such_file", 0 },
		{ ENOTDIR, "no_such_file", 0 },
		{ EISDIR, "not_a_file", 1 },
		{ ENXIO, "not_a_file", 1 },
	};
	char kind[64];
	int e;

	if (dq_read_file(path, (size_t)dq_cfg.max_image_bytes, data, len) == 0)
		return 0;
	if ((e = errno) == EFBIG) {
		dq_err_record(err, "too_large", "larger than DQ_MAX_IMAGE_BYTES=%lld",
		    dq_cfg.max_image_bytes);
		return -1;
	}
	for (size_t i = 0; i < sizeof why / sizeof *why; i++)
		if (why[i].errnum == e) {
			if (why[i].kind)
				snprintf(kind, sizeof kind, "%s, not a regular file", file_kind(path));
			dq_err_set(err, DQ_SCOPE_RECORD, DQ_EX_NOINPUT, 0, why[i].code, "%s",
			    why[i].kind ? kind : strerror(e));
			return -1;
		}
	dq_err_set(err, DQ_SCOPE_RECORD, DQ_EX_IOERR, 0, "read_error", "%s", strerror(e));
	return -1;
}

const char *
dq_image_mime(enum dq_image_type t)
{
	switch (t) {
	case DQ_IMG_JPEG: return "image/jpeg";
	case DQ_IMG_PNG: return "image/png";
	case DQ_IMG_WEBP: return "image/webp";
	default: return "application/octet-stream";
	}
}

const char *
dq_image_ext(enum dq_image_type t)
{
	switch (t) {
	case DQ_IMG_JPEG: return "jpg";
	case DQ_IMG_PNG: return "png";
	case DQ_IMG_WEBP: return "webp";
	default: return "bin";
	}
}

enum dq_image_type
dq_image_type_from_mime(const char *m)
{
	size_t n;

	if (!m)
		return DQ_IMG_UNKNOWN;
	n = strcspn(m, "; \t");
	if (n == 10 && strncasecmp(m, "image/jpeg", n) == 0)
		return DQ_IMG_JPEG;
	if (n == 9 && strncasecmp(m, "image/png", n) == 0)
		return DQ_IMG_PNG;
	if (n == 10 && strncasecmp(m, "image/webp", n) == 0)
		return DQ_IMG_WEBP;
	return DQ_IMG_UNKNOWN;
}
