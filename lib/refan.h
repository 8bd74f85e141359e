/*
 * refan.h - internals of the reference analyzer: pixel decoding and
 * encoding, shared by lib/decode.c, lib/analyzer_reference.c,
 * lib/annotate.c, tools/dq-synth.c and tests/unit/refan-test.c.
 * Not part of the public map in dq.h.
 */
#ifndef DQ_REFAN_H
#define DQ_REFAN_H

#include "dq.h"

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

/* Encoders: 0 or -1 with errno-style failure left in err. */
int dq_png_write(const char *path, const struct dq_raster *, struct dq_err *);
int dq_jpeg_write(const char *path, const struct dq_raster *, int quality,
    struct dq_err *);
int dq_webp_write(const char *path, const struct dq_raster *, int quality,
    struct dq_err *);

#endif
