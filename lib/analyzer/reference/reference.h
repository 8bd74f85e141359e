/*
 * reference.h - private to the reference analyzer (lib/analyzer/reference/):
 * its image arithmetic (planes.c) and its model of a SKU (model.c), shared
 * with reference.c, tools/dq-synth.c and tests/unit/reference-test.c.  Not
 * part of the public map in dq.h; the pixels it works on come from
 * pixels.c, which is.
 */
#ifndef DQ_REFERENCE_H
#define DQ_REFERENCE_H

#include "dq.h"

/* planes.c: the image arithmetic of the reference analyzer. */
#define DQ_NLEV 4	/* pyramid levels: 1, 1/2, 1/4, 1/8 */

struct dq_plane {	/* a float image */
	int w, h;
	float *p;
};

struct dq_pyrlevel {	/* a template at one pyramid level */
	struct dq_plane T, Tx, Ty;	/* values and central differences */
	int *idx, nidx;			/* the pixels registration looks at */
};

/* Where template pixel X lands in the image: R(th) (X - c) + c + (dx, dy). */
struct dq_warp {
	double dx, dy, th;	/* working px at level 0, radians */
	double a, b;		/* photometric: template ~ a * image + b */
};

struct dq_plane dq_plane_new(int w, int h);	/* zeroed */
void dq_plane_free(struct dq_plane *);
/*
 * A decoded RGB (or gray) raster to the W x H grid: luma and two chroma
 * planes, CIELAB's a* and b* linearised at neutral grey and scaled to luma
 * levels, so that a colour change and a brightness change of the same
 * visibility differ by the same amount (dq-reference(7)).  A gray raster
 * has zero chroma.
 */
void dq_to_grid(const struct dq_raster *, int W, int H, struct dq_plane *gray,
    struct dq_plane *ca, struct dq_plane *cb);
#define DQ_LAB_PER_LEVEL 0.39	/* CIELAB units per luma level, mid grey */
void dq_pyramid_make(struct dq_pyrlevel lv[DQ_NLEV], const struct dq_plane *T0);
void dq_pyramid_free(struct dq_pyrlevel lv[DQ_NLEV]);
/* Register an image (on the level-0 grid) to a template pyramid. */
struct dq_warp dq_register(const struct dq_pyrlevel lv[DQ_NLEV], const struct dq_plane *I);
/*
 * out = gain * I(warp(jitter(X))) + off for every grid pixel X; the jitter
 * (a shift and a turn in the template frame) is for building models.
 */
void dq_warp_apply(const struct dq_plane *I, const struct dq_warp *,
    double jitter_dx, double jitter_dy, double jitter_th, struct dq_plane *out,
    double gain, double off);
/* The same warp of three planes of one size at once, jitter zero. */
void dq_warp_apply3(const struct dq_plane *I[3], const struct dq_warp *,
    struct dq_plane *out[3], const double gain[3], const double off[3]);
/* Dilate (or erode) a 0/1 mask by a (2r+1) square, in place. */
void dq_mask_filter(unsigned char *m, int w, int h, int r, int dilate);
/* 3x3 maximum then 3x3 mean, in place. */
void dq_float_maxbox(float *p, int w, int h);

/* model.c: the model of one SKU. */
#define DQ_REFERENCE_ALGO "dq-reference-2"	/* model_version, and in the cache key */

struct dq_refparams {
	double k, k_low, jitter_px, jitter_deg, chroma_weight;
	double major_area, critical_area, major_ratio, critical_ratio;
	int min_area, merge_gap, outline_px, working_size;
};

struct dq_refmodel {
	char sku[80];
	char sha[65];
	struct dq_refparams pr;
	int W, H, nimg;
	long ref_w, ref_h;
	float *mean, *sd;	/* luma: template and tolerance */
	float *ma, *mb, *sa, *sb;	/* chroma: templates and tolerances */
	unsigned char *fg;	/* differs from the background */
	unsigned char *solid;	/* the part: fg with its holes filled */
	unsigned char *outline;	/* the band around the solid's outline */
	float *odist;		/* distance to the part's outline, grid px */
	double bg, part_area;
	double ax_cx, ax_cy, ax_ex, ax_ey, tip_end, tip_len;
	struct dq_pyrlevel lv[DQ_NLEV];
	struct dq_refmodel *next;	/* the analyzer's list */
};

/*
 * Load from cachedir (may be NULL) or build from refdir/sku, writing the
 * cache; the key from the references' hashes as dq_refindex_hash finds
 * them; a cache file that fails its checksum is rebuilt (logged).
 * Errors: record no_reference; system reference_unreadable,
 * bad_reference, bad_thresholds (78).
 */
struct dq_refmodel *dq_refmodel_get(const char *refdir, const char *cachedir,
    const char *sku, struct dq_err *);
void dq_refmodel_free(struct dq_refmodel *);
/*
 * index.c: the SHA-256 of each reference of a SKU, from the index beside
 * the models when the reference's stat is the one recorded there and old
 * enough to vouch for, otherwise by reading it (data then holds its
 * bytes); the index is written again when anything was read.  cachedir
 * may be NULL (everything is read).  The number of references read, or -1
 * with a system error (78, reference_unreadable).
 */
struct dq_refimage {
	char *name;
	unsigned char *data;	/* the bytes, when they were read */
	size_t len;
	char sha[65];
};
int dq_refindex_hash(const char *cachedir, const char *skudir, const char *sku,
    struct dq_refimage *, int n, struct dq_err *);
/* Read (again) and hash skudir/name: 0, or -1 with reference_unreadable. */
int dq_refimage_read(const char *skudir, struct dq_refimage *, struct dq_err *);
/* Remove the cache's temporaries that a killed writer left (ten minutes old). */
void dq_refcache_sweep(const char *cachedir);

/*
 * Whether the cache directory can be written, or created (its nearest
 * existing ancestor written): 0, or -1 with a system error (78,
 * cache_unwritable).  Creates nothing.
 */
int dq_cachedir_check(const char *cachedir, struct dq_err *);

#endif
