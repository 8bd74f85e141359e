/*
 * analyzer_reference.c - the offline analyzer: golden-template comparison.
 *
 * DQ_REFERENCE_DIR/<sku>/ holds known-good images of one part.  From them
 * we build a model on a working grid (long side working_size, default
 * 800): the references are registered to each other, resampled under
 * small jitter (sub-pixel shifts and rotations), and the per-pixel mean
 * and standard deviation of all those copies become the template and its
 * tolerance.  The jitter is what gives the part's outline its tolerance:
 * where the image has a strong gradient a sub-pixel shift changes the
 * value a lot, so the deviation there is large, and an edge has to move
 * by more than the jitter (plus noise) before it counts.  The outline is
 * compared like every other pixel, never masked.
 *
 * An image is decoded at about the working size (libjpeg-turbo scaled
 * IDCT), resampled to the grid, registered to the template (rigid:
 * translation and rotation, sub-pixel; an exhaustive translation search
 * at 1/8 then Gauss-Newton down a pyramid, re-fitting gain and offset at
 * each step so lighting does not matter), and compared: z = (I - mean) /
 * sd.  Pixels with |z| >= k are closed (3x3), grouped (8-connected),
 * nearby groups merged, groups below min_area dropped, and the kept ones
 * grown into |z| >= k_low for their extent.  Boxes go back through the
 * registration to the stored image's pixel grid.
 *
 * The model is cached as a file named by a hash of the algorithm
 * version, the threshold file and every reference's name and content,
 * written to a temporary file and renamed, so concurrent workers at
 * worst build it twice and never read half a file.  In a process it is
 * built or loaded once per SKU under a mutex and then only read, which
 * makes analyze() safe from any number of threads.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "refan.h"

#define ALGO "dq-reference-1"
#define NLEV 4
#define MODEL_MAGIC "DQREFM1"

struct params {
	double k, k_low, jitter_px, jitter_deg;
	int min_area, merge_gap, outline_px, working_size;
};

static const struct params default_params = {
	.k = 5, .k_low = 2.5, .jitter_px = 0.35, .jitter_deg = 0.05,
	.min_area = 20, .merge_gap = 12, .outline_px = 3, .working_size = 800,
};

struct plane {
	int w, h;
	float *p;
};

struct level {
	struct plane T, Tx, Ty;
	int *idx, nidx;		/* the pixels registration looks at */
};

struct model {
	char sku[80];
	char sha[65];
	struct params pr;
	int W, H, nimg;
	long ref_w, ref_h;
	float *mean, *sd, *warm;
	unsigned char *fg, *outline;
	float *odist;		/* distance to the part's outline, grid px */
	double bg, part_area;
	double ax_cx, ax_cy, ax_ex, ax_ey, tip_end, tip_len;
	struct level lv[NLEV];
	struct model *next;
};

struct refan {
	char *refdir, *cachedir;
	pthread_mutex_t mu;
	struct model *models;
};

struct warp {
	double dx, dy, th;	/* working px at level 0, radians */
	double a, b;		/* photometric: template ~ a * image + b */
};

/* ---------- planes ---------- */

static struct plane
plane_new(int w, int h)
{
	struct plane p = { w, h, dq_xcalloc((size_t)w * h, sizeof(float)) };

	return p;
}

static void
plane_free(struct plane *p)
{
	free(p->p);
	p->p = NULL;
}

/* Half size, 2x2 averages. */
static struct plane
plane_half(const struct plane *s)
{
	struct plane d = plane_new(s->w / 2 > 0 ? s->w / 2 : 1, s->h / 2 > 0 ? s->h / 2 : 1);
	int x, y;

	for (y = 0; y < d.h; y++) {
		const float *r0 = s->p + (size_t)(2 * y < s->h ? 2 * y : s->h - 1) * s->w;
		const float *r1 = s->p + (size_t)(2 * y + 1 < s->h ? 2 * y + 1 : s->h - 1) * s->w;

		for (x = 0; x < d.w; x++) {
			int x0 = 2 * x < s->w ? 2 * x : s->w - 1;
			int x1 = 2 * x + 1 < s->w ? 2 * x + 1 : s->w - 1;

			d.p[(size_t)y * d.w + x] = 0.25f * (r0[x0] + r0[x1] + r1[x0] + r1[x1]);
		}
	}
	return d;
}

/* Bilinear sample at continuous (X, Y), pixel centres at i + 0.5, clamped. */
static inline float
sample(const struct plane *p, double X, double Y)
{
	double fx = X - 0.5, fy = Y - 0.5;
	int x0, y0, x1, y1;
	double ax, ay;
	const float *r0, *r1;

	if (fx < 0)
		fx = 0;
	if (fy < 0)
		fy = 0;
	if (fx > p->w - 1)
		fx = p->w - 1;
	if (fy > p->h - 1)
		fy = p->h - 1;
	x0 = (int)fx;
	y0 = (int)fy;
	x1 = x0 + 1 < p->w ? x0 + 1 : x0;
	y1 = y0 + 1 < p->h ? y0 + 1 : y0;
	ax = fx - x0;
	ay = fy - y0;
	r0 = p->p + (size_t)y0 * p->w;
	r1 = p->p + (size_t)y1 * p->w;
	return (float)((r0[x0] * (1 - ax) + r0[x1] * ax) * (1 - ay) +
	    (r1[x0] * (1 - ax) + r1[x1] * ax) * ay);
}

/*
 * Separable resampling from (sw, sh) to (dw, dh): area averaging when
 * shrinking, linear interpolation when growing.
 */
struct wtab {
	int *first, *n, maxn;
	float *w;
};

static void
wtab_make(struct wtab *t, int sn, int dn)
{
	double f = (double)sn / dn;
	int i;

	t->maxn = f > 1 ? (int)ceil(f) + 2 : 2;
	t->first = dq_xcalloc(dn, sizeof(int));
	t->n = dq_xcalloc(dn, sizeof(int));
	t->w = dq_xcalloc((size_t)dn * t->maxn, sizeof(float));
	for (i = 0; i < dn; i++) {
		float *w = t->w + (size_t)i * t->maxn;

		if (f > 1) {
			double a = i * f, b = (i + 1) * f, sum = 0;
			int j, j0 = (int)floor(a), j1 = (int)ceil(b);

			if (j1 > sn)
				j1 = sn;
			t->first[i] = j0;
			for (j = j0; j < j1 && j - j0 < t->maxn; j++) {
				double lo = j > a ? j : a, hi = j + 1 < b ? j + 1 : b;

				w[j - j0] = (float)(hi - lo);
				sum += hi - lo;
			}
			t->n[i] = j - j0;
			for (j = 0; j < t->n[i]; j++)
				w[j] = (float)(w[j] / sum);
		} else {
			double c = (i + 0.5) * f - 0.5;
			int j0 = (int)floor(c);
			double a = c - j0;

			if (j0 < 0) {
				j0 = 0;
				a = 0;
			}
			if (j0 >= sn - 1) {
				j0 = sn - 1;
				a = 0;
			}
			t->first[i] = j0;
			t->n[i] = j0 + 1 < sn ? 2 : 1;
			w[0] = (float)(1 - a);
			w[1] = (float)a;
		}
	}
}

static void
wtab_free(struct wtab *t)
{
	free(t->first);
	free(t->n);
	free(t->w);
}

/*
 * From a decoded RGB raster to the working grid: gray (Rec. 601 luma) and
 * "warm" (R - B, what tells rust from a shadow).
 */
static void
to_grid(const struct dq_raster *r, int W, int H, struct plane *gray, struct plane *warm)
{
	struct wtab tx, ty;
	float *tg, *tw;
	int x, y, j;

	wtab_make(&tx, r->w, W);
	wtab_make(&ty, r->h, H);
	tg = dq_xcalloc((size_t)W * r->h, sizeof(float));
	tw = dq_xcalloc((size_t)W * r->h, sizeof(float));
	for (y = 0; y < r->h; y++) {
		const unsigned char *row = r->px + (size_t)y * r->w * r->ch;

		for (x = 0; x < W; x++) {
			const float *w = tx.w + (size_t)x * tx.maxn;
			float g = 0, m = 0;

			for (j = 0; j < tx.n[x]; j++) {
				const unsigned char *p = row + (size_t)(tx.first[x] + j) * r->ch;

				if (r->ch == 3) {
					g += w[j] * (0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2]);
					m += w[j] * ((float)p[0] - (float)p[2]);
				} else
					g += w[j] * p[0];
			}
			tg[(size_t)y * W + x] = g;
			tw[(size_t)y * W + x] = m;
		}
	}
	*gray = plane_new(W, H);
	*warm = plane_new(W, H);
	for (y = 0; y < H; y++) {
		const float *w = ty.w + (size_t)y * ty.maxn;

		for (j = 0; j < ty.n[y]; j++) {
			const float *sg = tg + (size_t)(ty.first[y] + j) * W;
			const float *sw = tw + (size_t)(ty.first[y] + j) * W;
			float *dg = gray->p + (size_t)y * W, *dw = warm->p + (size_t)y * W;

			for (x = 0; x < W; x++) {
				dg[x] += w[j] * sg[x];
				dw[x] += w[j] * sw[x];
			}
		}
	}
	free(tg);
	free(tw);
	wtab_free(&tx);
	wtab_free(&ty);
}

/* ---------- registration ---------- */

static void
level_make(struct level *l, struct plane T)
{
	int x, y, w = T.w, h = T.h;

	l->T = T;
	l->Tx = plane_new(w, h);
	l->Ty = plane_new(w, h);
	for (y = 0; y < h; y++)
		for (x = 0; x < w; x++) {
			int xl = x > 0 ? x - 1 : x, xr = x < w - 1 ? x + 1 : x;
			int yu = y > 0 ? y - 1 : y, yd = y < h - 1 ? y + 1 : y;

			l->Tx.p[(size_t)y * w + x] = (T.p[(size_t)y * w + xr] -
			    T.p[(size_t)y * w + xl]) / (float)(xr - xl > 0 ? xr - xl : 1);
			l->Ty.p[(size_t)y * w + x] = (T.p[(size_t)yd * w + x] -
			    T.p[(size_t)yu * w + x]) / (float)(yd - yu > 0 ? yd - yu : 1);
		}
	/*
	 * Flat pixels tell registration nothing: it looks only at the quarter
	 * with the strongest gradient (all of them on the small levels).
	 */
	{
		size_t i, n = (size_t)w * h;
		int hist[1024] = { 0 }, c = 0, b;
		float gmax = 0, cut;

		for (i = 0; i < n; i++)
			gmax = fmaxf(gmax, fabsf(l->Tx.p[i]) + fabsf(l->Ty.p[i]));
		for (i = 0; i < n; i++) {
			b = gmax > 0 ? (int)((fabsf(l->Tx.p[i]) + fabsf(l->Ty.p[i])) / gmax * 1023) : 0;
			hist[b]++;
		}
		for (b = 1023; b > 0; b--)
			if ((c += hist[b]) >= (int)(n / 4))
				break;
		cut = n < 40000 ? -1 : gmax * b / 1023;
		l->idx = dq_xmalloc(n * sizeof(int));
		l->nidx = 0;
		for (i = 0; i < n; i++)
			if (fabsf(l->Tx.p[i]) + fabsf(l->Ty.p[i]) > cut)
				l->idx[l->nidx++] = (int)i;
	}
}

static void
pyramid_make(struct level lv[NLEV], const struct plane *T0)
{
	struct plane t = plane_new(T0->w, T0->h);
	int i;

	memcpy(t.p, T0->p, sizeof(float) * T0->w * T0->h);
	level_make(&lv[0], t);
	for (i = 1; i < NLEV; i++)
		level_make(&lv[i], plane_half(&lv[i - 1].T));
}

static void
pyramid_free(struct level lv[NLEV])
{
	int i;

	for (i = 0; i < NLEV; i++) {
		plane_free(&lv[i].T);
		plane_free(&lv[i].Tx);
		plane_free(&lv[i].Ty);
		free(lv[i].idx);
		lv[i].idx = NULL;
	}
}

/* Mean and standard deviation of a plane. */
static void
plane_stats(const struct plane *p, double *mean, double *sd)
{
	double s = 0, s2 = 0;
	size_t i, n = (size_t)p->w * p->h;

	for (i = 0; i < n; i++) {
		s += p->p[i];
		s2 += (double)p->p[i] * p->p[i];
	}
	*mean = s / n;
	*sd = sqrt(fmax(s2 / n - *mean * *mean, 1e-6));
}

/* Exhaustive integer translation search at the coarsest level. */
static void
coarse_search(const struct level *l, const struct plane *I, struct warp *w, int R)
{
	double tm, ts, im, is, best = INFINITY, scale = 1.0 / (1 << (NLEV - 1));
	int dx, dy, x, y, bx = 0, by = 0;

	plane_stats(&l->T, &tm, &ts);
	plane_stats(I, &im, &is);
	for (dy = -R; dy <= R; dy++)
		for (dx = -R; dx <= R; dx++) {
			double e = 0;

			for (y = 0; y < l->T.h; y++) {
				int sy = y + dy < 0 ? 0 : y + dy >= I->h ? I->h - 1 : y + dy;

				for (x = 0; x < l->T.w; x++) {
					int sx = x + dx < 0 ? 0 : x + dx >= I->w ? I->w - 1 : x + dx;
					double d = (I->p[(size_t)sy * I->w + sx] - im) / is -
					    (l->T.p[(size_t)y * l->T.w + x] - tm) / ts;

					e += d * d;
				}
			}
			/* strict: ties keep the smaller shift, deterministically */
			if (e < best - 1e-9) {
				best = e;
				bx = dx;
				by = dy;
			}
		}
	w->dx = bx / scale;
	w->dy = by / scale;
	w->th = 0;
	w->a = ts / is;
	w->b = tm - w->a * im;
}

/*
 * Gauss-Newton on (dx, dy, th) at one level, the Jacobian taken from the
 * template's gradient; gain and offset re-fitted each step.
 */
static void
refine(const struct level *l, const struct plane *I, int lvl, struct warp *w, int iters)
{
	double scale = 1.0 / (1 << lvl), cx = l->T.w / 2.0, cy = l->T.h / 2.0;
	int it, x, y;

	for (it = 0; it < iters; it++) {
		double H[3][3] = { { 0 } }, g[3] = { 0 }, d[3];
		double si = 0, st = 0, sii = 0, sit = 0, n = 0, c = cos(w->th), s = sin(w->th);
		double det, inv[3][3];

		/* photometric fit: T ~ a I(S) + b */
		for (y = 0; y < l->T.h; y += 2)
			for (x = 0; x < l->T.w; x += 2) {
				double sx, sy, v, t = l->T.p[(size_t)y * l->T.w + x];
				double rx = x + 0.5 - cx, ry = y + 0.5 - cy;

				sx = c * rx - s * ry + cx + w->dx * scale;
				sy = s * rx + c * ry + cy + w->dy * scale;
				v = sample(I, sx, sy);
				si += v;
				st += t;
				sii += v * v;
				sit += v * t;
				n++;
			}
		if (sii * n - si * si > 1e-9) {
			w->a = (sit * n - si * st) / (sii * n - si * si);
			w->b = (st - w->a * si) / n;
		}
		{
			int k;

			for (k = 0; k < l->nidx; k++) {
				size_t o = (size_t)l->idx[k];
				double e, tx = l->Tx.p[o], ty = l->Ty.p[o];
				double rx = (double)(o % l->T.w) + 0.5 - cx;
				double ry = (double)(o / l->T.w) + 0.5 - cy;
				double sx = c * rx - s * ry + cx + w->dx * scale;
				double sy = s * rx + c * ry + cy + w->dy * scale;
				double J[3];

				if (sx < 1 || sy < 1 || sx > I->w - 1 || sy > I->h - 1)
					continue;
				e = w->a * sample(I, sx, sy) + w->b - l->T.p[o];
				J[0] = (c * tx - s * ty) * scale;
				J[1] = (s * tx + c * ty) * scale;
				J[2] = -ry * tx + rx * ty;
				g[0] += J[0] * e;
				g[1] += J[1] * e;
				g[2] += J[2] * e;
				H[0][0] += J[0] * J[0];
				H[0][1] += J[0] * J[1];
				H[0][2] += J[0] * J[2];
				H[1][1] += J[1] * J[1];
				H[1][2] += J[1] * J[2];
				H[2][2] += J[2] * J[2];
			}
		}
		H[1][0] = H[0][1];
		H[2][0] = H[0][2];
		H[2][1] = H[1][2];
		det = H[0][0] * (H[1][1] * H[2][2] - H[1][2] * H[2][1]) -
		    H[0][1] * (H[1][0] * H[2][2] - H[1][2] * H[2][0]) +
		    H[0][2] * (H[1][0] * H[2][1] - H[1][1] * H[2][0]);
		if (fabs(det) < 1e-12)
			break;
		inv[0][0] = (H[1][1] * H[2][2] - H[1][2] * H[2][1]) / det;
		inv[0][1] = (H[0][2] * H[2][1] - H[0][1] * H[2][2]) / det;
		inv[0][2] = (H[0][1] * H[1][2] - H[0][2] * H[1][1]) / det;
		inv[1][0] = (H[1][2] * H[2][0] - H[1][0] * H[2][2]) / det;
		inv[1][1] = (H[0][0] * H[2][2] - H[0][2] * H[2][0]) / det;
		inv[1][2] = (H[0][2] * H[1][0] - H[0][0] * H[1][2]) / det;
		inv[2][0] = (H[1][0] * H[2][1] - H[1][1] * H[2][0]) / det;
		inv[2][1] = (H[0][1] * H[2][0] - H[0][0] * H[2][1]) / det;
		inv[2][2] = (H[0][0] * H[1][1] - H[0][1] * H[1][0]) / det;
		for (x = 0; x < 3; x++)
			d[x] = -(inv[x][0] * g[0] + inv[x][1] * g[1] + inv[x][2] * g[2]);
		/* limit a step to a few pixels: Gauss-Newton can overshoot */
		if (fabs(d[0]) > 8 / scale || fabs(d[1]) > 8 / scale || fabs(d[2]) > 0.05)
			break;
		w->dx += d[0];
		w->dy += d[1];
		w->th += d[2];
		if (fabs(d[0] * scale) < 0.002 && fabs(d[1] * scale) < 0.002 &&
		    fabs(d[2]) * (cx + cy) < 0.002)
			break;
	}
}

/* Register image I (level-0 working grid) to a template pyramid. */
static struct warp
register_image(const struct level lv[NLEV], const struct plane *I)
{
	static const int iters[NLEV] = { 4, 8, 12, 20 };
	struct plane pyr[NLEV];
	struct warp w;
	int i;

	pyr[0] = *I;
	for (i = 1; i < NLEV; i++)
		pyr[i] = plane_half(&pyr[i - 1]);
	coarse_search(&lv[NLEV - 1], &pyr[NLEV - 1], &w, 6);
	for (i = NLEV - 1; i >= 0; i--)
		refine(&lv[i], &pyr[i], i, &w, iters[i]);
	for (i = 1; i < NLEV; i++)
		plane_free(&pyr[i]);
	return w;
}

/* The image warped onto the template grid, with gain and offset applied. */
static void
warp_apply(const struct plane *I, const struct warp *w, double extra_dx,
    double extra_dy, double extra_th, struct plane *out, double gain, double off)
{
	struct warp v = *w;
	double cx = out->w / 2.0, cy = out->h / 2.0;
	int x, y;

	double c, s, ox, oy;

	/*
	 * Jitter first (in the template frame), then the warp: the two
	 * rigid motions about the same centre compose into one.
	 */
	v.th = w->th + extra_th;
	c = cos(v.th);
	s = sin(v.th);
	ox = cos(w->th) * extra_dx - sin(w->th) * extra_dy + w->dx;
	oy = sin(w->th) * extra_dx + cos(w->th) * extra_dy + w->dy;
	for (y = 0; y < out->h; y++) {
		double ry = y + 0.5 - cy;
		double sx = c * (0.5 - cx) - s * ry + cx + ox;
		double sy = s * (0.5 - cx) + c * ry + cy + oy;
		float *o = out->p + (size_t)y * out->w;

		for (x = 0; x < out->w; x++, sx += c, sy += s)
			o[x] = (float)(gain * sample(I, sx, sy) + off);
	}
}

/* ---------- binary morphology on byte masks ---------- */

static void
mask_filter(unsigned char *m, int w, int h, int r, int dilate)
{
	unsigned char *t = dq_xmalloc((size_t)w * h);
	int x, y, j;

	for (y = 0; y < h; y++)
		for (x = 0; x < w; x++) {
			int v = dilate ? 0 : 1;

			for (j = -r; j <= r; j++) {
				int xx = x + j < 0 ? 0 : x + j >= w ? w - 1 : x + j;
				int b = m[(size_t)y * w + xx] != 0;

				v = dilate ? v | b : v & b;
			}
			t[(size_t)y * w + x] = (unsigned char)v;
		}
	for (y = 0; y < h; y++)
		for (x = 0; x < w; x++) {
			int v = dilate ? 0 : 1;

			for (j = -r; j <= r; j++) {
				int yy = y + j < 0 ? 0 : y + j >= h ? h - 1 : y + j;
				int b = t[(size_t)yy * w + x] != 0;

				v = dilate ? v | b : v & b;
			}
			m[(size_t)y * w + x] = (unsigned char)v;
		}
	free(t);
}

/* Separable 3x3 max then 3x3 box on a float plane (in place). */
static void
float_maxbox(float *p, int w, int h)
{
	float *t = dq_xmalloc(sizeof(float) * w * h);
	int pass, x, y, j;

	for (pass = 0; pass < 2; pass++) {
		for (y = 0; y < h; y++)
			for (x = 0; x < w; x++) {
				float v = pass ? 0 : -INFINITY;

				for (j = -1; j <= 1; j++) {
					float b = p[(size_t)y * w + (x + j < 0 ? 0 : x + j >= w ? w - 1 : x + j)];

					v = pass ? v + b / 3 : fmaxf(v, b);
				}
				t[(size_t)y * w + x] = v;
			}
		for (y = 0; y < h; y++)
			for (x = 0; x < w; x++) {
				float v = pass ? 0 : -INFINITY;

				for (j = -1; j <= 1; j++) {
					float b = t[(size_t)(y + j < 0 ? 0 : y + j >= h ? h - 1 : y + j) * w + x];

					v = pass ? v + b / 3 : fmaxf(v, b);
				}
				p[(size_t)y * w + x] = v;
			}
	}
	free(t);
}

/* ---------- the model ---------- */

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
is_image_name(const char *n)
{
	const char *e = strrchr(n, '.');

	if (n[0] == '.' || e == NULL)
		return 0;
	return strcasecmp(e, ".png") == 0 || strcasecmp(e, ".jpg") == 0 ||
	    strcasecmp(e, ".jpeg") == 0 || strcasecmp(e, ".webp") == 0;
}

static int
sku_ok(const char *s)
{
	size_t i, n = strlen(s);

	if (n == 0 || n > 64 || s[0] == '.')
		return 0;
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
			return 0;
	return 1;
}

static int
read_all(const char *path, unsigned char **data, size_t *len)
{
	struct stat st;
	size_t off = 0;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) || st.st_size > (256L << 20)) {
		if (errno == 0 || S_ISREG(st.st_mode))
			errno = EFBIG;
		close(fd);
		return -1;
	}
	*data = dq_xmalloc((size_t)st.st_size + 1);
	while (off < (size_t)st.st_size) {
		ssize_t n = read(fd, *data + off, (size_t)st.st_size - off);

		if (n <= 0) {
			if (n == 0)
				break;
			if (errno == EINTR)
				continue;
			free(*data);
			close(fd);
			return -1;
		}
		off += (size_t)n;
	}
	close(fd);
	*len = off;
	return 0;
}

static int
load_params(const char *path, const unsigned char *text, size_t len,
    struct params *pr, struct dq_err *err)
{
	json_error_t je;
	json_t *j, *v;
	const char *key;

	*pr = default_params;
	if (text == NULL)
		return 0;
	j = json_loadb((const char *)text, len, JSON_REJECT_DUPLICATES, &je);
	if (j == NULL || !json_is_object(j)) {
		dq_err_system(err, DQ_EX_CONFIG, "bad_thresholds",
		    "%s: not a JSON object (line %d: %s)", path, je.line, je.text);
		json_decref(j);
		return -1;
	}
	json_object_foreach(j, key, v) {
		double d = json_number_value(v);
		int integer = 1;

		if (!json_is_number(v))
			goto bad;
		if (strcmp(key, "k") == 0 && d > 0 && d <= 100)
			pr->k = d, integer = 0;
		else if (strcmp(key, "k_low") == 0 && d > 0 && d <= 100)
			pr->k_low = d, integer = 0;
		else if (strcmp(key, "jitter_px") == 0 && d >= 0 && d <= 5)
			pr->jitter_px = d, integer = 0;
		else if (strcmp(key, "jitter_deg") == 0 && d >= 0 && d <= 2)
			pr->jitter_deg = d, integer = 0;
		else if (strcmp(key, "min_area") == 0 && d >= 1 && d <= 1e6)
			pr->min_area = (int)d;
		else if (strcmp(key, "merge_gap") == 0 && d >= 0 && d <= 100)
			pr->merge_gap = (int)d;
		else if (strcmp(key, "outline_px") == 0 && d >= 1 && d <= 50)
			pr->outline_px = (int)d;
		else if (strcmp(key, "working_size") == 0 && d >= 64 && d <= 4096)
			pr->working_size = (int)d;
		else
			goto bad;
		if (integer && d != floor(d))
			goto bad;
	}
	json_decref(j);
	if (pr->k_low > pr->k) {
		dq_err_system(err, DQ_EX_CONFIG, "bad_thresholds",
		    "%s: k_low must not exceed k", path);
		return -1;
	}
	return 0;
bad:
	dq_err_system(err, DQ_EX_CONFIG, "bad_thresholds",
	    "%s: unknown key or value out of range: \"%s\"", path, key);
	json_decref(j);
	return -1;
}

static void
model_free(struct model *m)
{
	if (m == NULL)
		return;
	free(m->mean);
	free(m->sd);
	free(m->warm);
	free(m->fg);
	free(m->outline);
	free(m->odist);
	pyramid_free(m->lv);
	free(m);
}

/* Things derived from mean and sd: masks, axis, the pyramid. */
static void
model_derive(struct model *m)
{
	size_t i, n = (size_t)m->W * m->H;
	int x, y, hist[1024] = { 0 }, cnt = 0, bw;
	double tau, p99 = 0, sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0, area = 0;
	double pmin = INFINITY, pmax = -INFINITY, nlo = 0, nhi = 0, ang;
	struct plane T = { m->W, m->H, m->mean };
	unsigned char *er;

	/* background: the median of a frame 3% wide */
	bw = m->W / 33 > 1 ? m->W / 33 : 1;
	for (y = 0; y < m->H; y++)
		for (x = 0; x < m->W; x++)
			if (x < bw || y < bw || x >= m->W - bw || y >= m->H - bw) {
				int b = (int)(m->mean[(size_t)y * m->W + x] * 2);

				hist[b < 0 ? 0 : b > 1023 ? 1023 : b]++;
				cnt++;
			}
	for (i = 0, x = 0; i < 1024; i++)
		if ((x += hist[i]) * 2 >= cnt)
			break;
	m->bg = i / 2.0 + 0.25;
	/* part: differs from the background by more than 15% of the 99th percentile */
	memset(hist, 0, sizeof hist);
	for (i = 0; i < n; i++) {
		int b = (int)(fabs(m->mean[i] - m->bg) * 2);

		hist[b > 1023 ? 1023 : b]++;
	}
	for (i = 1023, x = 0; i > 0; i--)
		if ((x += hist[i]) >= (int)(n / 100))
			break;
	p99 = i / 2.0;
	tau = fmax(0.15 * p99, 4);
	m->fg = dq_xcalloc(n, 1);
	for (i = 0; i < n; i++)
		m->fg[i] = fabs(m->mean[i] - m->bg) > tau;
	/* outline band: within outline_px of the part's boundary */
	m->outline = dq_xmalloc(n);
	er = dq_xmalloc(n);
	memcpy(m->outline, m->fg, n);
	memcpy(er, m->fg, n);
	mask_filter(m->outline, m->W, m->H, m->pr.outline_px, 1);
	mask_filter(er, m->W, m->H, m->pr.outline_px, 0);
	for (i = 0; i < n; i++)
		m->outline[i] = m->outline[i] && !er[i];
	free(er);
	/*
	 * Distance to the outline (chamfer 1, sqrt 2): how far a changed pixel
	 * lies from where the edge should be, i.e. how far the edge moved.
	 */
	m->odist = dq_xmalloc(n * sizeof(float));
	for (y = 0; y < m->H; y++)
		for (x = 0; x < m->W; x++) {
			size_t o = (size_t)y * m->W + x;
			int b = (x > 0 && m->fg[o - 1] != m->fg[o]) ||
			    (y > 0 && m->fg[o - m->W] != m->fg[o]) ||
			    (x < m->W - 1 && m->fg[o + 1] != m->fg[o]) ||
			    (y < m->H - 1 && m->fg[o + m->W] != m->fg[o]);

			m->odist[o] = b ? 0 : 1e9f;
		}
	for (y = 0; y < m->H; y++)
		for (x = 0; x < m->W; x++) {
			size_t o = (size_t)y * m->W + x;
			float d = m->odist[o];

			if (x > 0)
				d = fminf(d, m->odist[o - 1] + 1);
			if (y > 0) {
				d = fminf(d, m->odist[o - m->W] + 1);
				if (x > 0)
					d = fminf(d, m->odist[o - m->W - 1] + (float)M_SQRT2);
				if (x < m->W - 1)
					d = fminf(d, m->odist[o - m->W + 1] + (float)M_SQRT2);
			}
			m->odist[o] = d;
		}
	for (y = m->H - 1; y >= 0; y--)
		for (x = m->W - 1; x >= 0; x--) {
			size_t o = (size_t)y * m->W + x;
			float d = m->odist[o];

			if (x < m->W - 1)
				d = fminf(d, m->odist[o + 1] + 1);
			if (y < m->H - 1) {
				d = fminf(d, m->odist[o + m->W] + 1);
				if (x < m->W - 1)
					d = fminf(d, m->odist[o + m->W + 1] + (float)M_SQRT2);
				if (x > 0)
					d = fminf(d, m->odist[o + m->W - 1] + (float)M_SQRT2);
			}
			m->odist[o] = d;
		}
	/* principal axis of the part; its narrower end is the tip */
	for (y = 0; y < m->H; y++)
		for (x = 0; x < m->W; x++)
			if (m->fg[(size_t)y * m->W + x]) {
				sx += x;
				sy += y;
				area++;
			}
	m->part_area = area;
	if (area < 1)
		area = 1;
	m->ax_cx = sx / area;
	m->ax_cy = sy / area;
	for (y = 0; y < m->H; y++)
		for (x = 0; x < m->W; x++)
			if (m->fg[(size_t)y * m->W + x]) {
				double dx = x - m->ax_cx, dy = y - m->ax_cy;

				sxx += dx * dx;
				syy += dy * dy;
				sxy += dx * dy;
			}
	ang = 0.5 * atan2(2 * sxy, sxx - syy);
	m->ax_ex = cos(ang);
	m->ax_ey = sin(ang);
	for (y = 0; y < m->H; y++)
		for (x = 0; x < m->W; x++)
			if (m->fg[(size_t)y * m->W + x]) {
				double p = (x - m->ax_cx) * m->ax_ex + (y - m->ax_cy) * m->ax_ey;

				pmin = fmin(pmin, p);
				pmax = fmax(pmax, p);
			}
	m->tip_len = pmax > pmin ? pmax - pmin : 1;
	for (y = 0; y < m->H; y++)
		for (x = 0; x < m->W; x++)
			if (m->fg[(size_t)y * m->W + x]) {
				double p = (x - m->ax_cx) * m->ax_ex + (y - m->ax_cy) * m->ax_ey;

				nlo += p < pmin + 0.08 * m->tip_len;
				nhi += p > pmax - 0.08 * m->tip_len;
			}
	m->tip_end = nhi <= nlo ? pmax : pmin;
	pyramid_make(m->lv, &T);
}

/*
 * Model file: magic, sha, W, H, ref_w, ref_h, nimg, then mean, sd, warm
 * as native floats.  A cache: another machine's file is simply rebuilt.
 */
struct mhdr {
	char magic[8];
	char sha[65];
	char pad[7];
	int32_t W, H, nimg, endian;
	int64_t ref_w, ref_h;
};

static int
model_load(struct model *m, const char *path)
{
	unsigned char *d;
	size_t len, n;
	struct mhdr h;

	if (read_all(path, &d, &len) == -1)
		return -1;
	if (len < sizeof h)
		goto bad;
	memcpy(&h, d, sizeof h);
	n = (size_t)h.W * h.H;
	if (memcmp(h.magic, MODEL_MAGIC, 8) != 0 || h.endian != 0x01020304 ||
	    memcmp(h.sha, m->sha, 65) != 0 || h.W < 16 || h.H < 16 ||
	    h.W > 8192 || h.H > 8192 || len != sizeof h + 3 * n * sizeof(float))
		goto bad;
	m->W = h.W;
	m->H = h.H;
	m->nimg = h.nimg;
	m->ref_w = (long)h.ref_w;
	m->ref_h = (long)h.ref_h;
	m->mean = dq_xmalloc(n * sizeof(float));
	m->sd = dq_xmalloc(n * sizeof(float));
	m->warm = dq_xmalloc(n * sizeof(float));
	memcpy(m->mean, d + sizeof h, n * sizeof(float));
	memcpy(m->sd, d + sizeof h + n * sizeof(float), n * sizeof(float));
	memcpy(m->warm, d + sizeof h + 2 * n * sizeof(float), n * sizeof(float));
	free(d);
	return 0;
bad:
	free(d);
	errno = EINVAL;
	return -1;
}

/*
 * Remove what a writer killed mid-write left: temporaries older than ten
 * minutes (a build takes seconds, so none of them is still being written).
 */
static void
sweep_tmp(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	time_t now = time(NULL);

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		struct stat st;

		if (strstr(de->d_name, ".model.tmp.") == NULL)
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode) && st.st_mtime < now - 600)
			unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
}

static int
model_save(const struct model *m, const char *dir, const char *path)
{
	struct mhdr h;
	size_t n = (size_t)m->W * m->H;
	char *tmp;
	int fd, ok;

	memset(&h, 0, sizeof h);
	memcpy(h.magic, MODEL_MAGIC, 8);
	memcpy(h.sha, m->sha, 65);
	h.W = m->W;
	h.H = m->H;
	h.nimg = m->nimg;
	h.endian = 0x01020304;
	h.ref_w = m->ref_w;
	h.ref_h = m->ref_h;
	if (dq_mkdirs(dir, 0777) == -1)
		return -1;
	sweep_tmp(dir);
	tmp = dq_xasprintf("%s.tmp.XXXXXX", path);
	if ((fd = mkstemp(tmp)) == -1) {
		free(tmp);
		return -1;
	}
	ok = dq_write_all(fd, &h, sizeof h) == 0 &&
	    dq_write_all(fd, m->mean, n * sizeof(float)) == 0 &&
	    dq_write_all(fd, m->sd, n * sizeof(float)) == 0 &&
	    dq_write_all(fd, m->warm, n * sizeof(float)) == 0 &&
	    fchmod(fd, 0644) == 0 && fsync(fd) == 0;
	if ((close(fd) == -1) | !ok || rename(tmp, path) == -1) {
		int e = errno;

		unlink(tmp);
		free(tmp);
		errno = e;
		return -1;
	}
	free(tmp);
	return 0;
}

struct refimg {
	char *name;
	unsigned char *data;
	size_t len;
};

static int
model_build(struct model *m, const char *skudir, struct refimg *ri, int nimg,
    struct dq_err *err)
{
	struct plane *g, *wm, acc, acc2, accw, tmp;
	struct warp *wp;
	struct level lv[NLEV];
	int i, pass, j, rc = -1;
	size_t p, n;
	double ws, nn = 0;

	g = dq_xcalloc(nimg, sizeof *g);
	wm = dq_xcalloc(nimg, sizeof *wm);
	wp = dq_xcalloc(nimg, sizeof *wp);
	memset(lv, 0, sizeof lv);
	for (i = 0; i < nimg; i++) {
		struct dq_raster r;
		struct dq_err e2;
		int mw, mh;

		if (i == 0) {
			/* the first reference sets the grid */
			if (dq_decode(ri[i].data, ri[i].len, 3, 0, 0, &r, &e2) == -1)
				goto bad_image;
			m->ref_w = r.orig_w;
			m->ref_h = r.orig_h;
			ws = (double)m->pr.working_size / (r.orig_w > r.orig_h ? r.orig_w : r.orig_h);
			if (ws > 1)
				ws = 1;
			m->W = (int)lrint(r.orig_w * ws);
			m->H = (int)lrint(r.orig_h * ws);
			if (m->W < 16 || m->H < 16) {
				dq_raster_free(&r);
				dq_err_system(err, DQ_EX_CONFIG, "bad_reference",
				    "%s/%s: %ldx%ld is too small for a reference",
				    skudir, ri[i].name, r.orig_w, r.orig_h);
				goto out;
			}
			/* decoded again the way every other image will be */
			dq_raster_free(&r);
			if (dq_decode(ri[i].data, ri[i].len, 3, m->W, m->H, &r, &e2) == -1)
				goto bad_image;
		} else {
			mw = m->W;
			mh = m->H;
			if (dq_decode(ri[i].data, ri[i].len, 3, mw, mh, &r, &e2) == -1)
				goto bad_image;
			if (r.orig_w != m->ref_w || r.orig_h != m->ref_h) {
				dq_err_system(err, DQ_EX_CONFIG, "bad_reference",
				    "%s/%s: %ldx%ld, but %s is %ldx%ld: references must have one size",
				    skudir, ri[i].name, r.orig_w, r.orig_h, ri[0].name,
				    m->ref_w, m->ref_h);
				dq_raster_free(&r);
				goto out;
			}
		}
		to_grid(&r, m->W, m->H, &g[i], &wm[i]);
		dq_raster_free(&r);
		continue;
bad_image:
		dq_err_system(err, DQ_EX_CONFIG, "bad_reference",
		    "%s/%s: reference image cannot be decoded: %s", skudir, ri[i].name, e2.msg);
		goto out;
	}
	n = (size_t)m->W * m->H;
	/* register every reference to the first, then to their mean */
	tmp = plane_new(m->W, m->H);
	pyramid_make(lv, &g[0]);
	for (pass = 0; pass < 2; pass++) {
		memset(tmp.p, 0, n * sizeof(float));
		for (i = 0; i < nimg; i++) {
			struct plane o = plane_new(m->W, m->H);

			wp[i] = register_image(lv, &g[i]);
			warp_apply(&g[i], &wp[i], 0, 0, 0, &o, wp[i].a, wp[i].b);
			for (p = 0; p < n; p++)
				tmp.p[p] += o.p[p] / nimg;
			plane_free(&o);
		}
		pyramid_free(lv);
		pyramid_make(lv, &tmp);
	}
	pyramid_free(lv);
	/*
	 * A reference that is not like the others (another part, another
	 * fixture) would widen the tolerance everywhere and let defects
	 * through: refuse it.  Registered good shots differ only along edges
	 * and by noise; 2% of the pixels off by 20 levels is far beyond that.
	 */
	{
		size_t worst = 0;
		int wi = -1;

		for (i = 0; nimg >= 3 && i < nimg; i++) {
			struct plane o = plane_new(m->W, m->H);
			size_t off = 0;

			warp_apply(&g[i], &wp[i], 0, 0, 0, &o, wp[i].a, wp[i].b);
			for (p = 0; p < n; p++)
				off += fabsf(o.p[p] - tmp.p[p]) > 20;
			plane_free(&o);
			/* the odd one out differs most from the mean it spoils */
			if (off > worst) {
				worst = off;
				wi = i;
			}
		}
		if (wi >= 0 && worst > n / 50) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_reference",
			    "%s/%s: unlike the other references (%.1f%% of it differs): "
			    "is it the same part on the same fixture?", skudir, ri[wi].name,
			    100.0 * worst / n);
			plane_free(&tmp);
			goto out;
		}
	}
	plane_free(&tmp);
	/* every reference under jitter: mean and deviation of all copies */
	acc = plane_new(m->W, m->H);
	acc2 = plane_new(m->W, m->H);
	accw = plane_new(m->W, m->H);
	{
		double jp = m->pr.jitter_px, jr = m->pr.jitter_deg * M_PI / 180;
		const double jit[11][3] = {
			{ 0, 0, 0 }, { -jp, 0, 0 }, { jp, 0, 0 }, { 0, -jp, 0 },
			{ 0, jp, 0 }, { -jp, -jp, 0 }, { jp, jp, 0 }, { -jp, jp, 0 },
			{ jp, -jp, 0 }, { 0, 0, -jr }, { 0, 0, jr },
		};
		struct plane o = plane_new(m->W, m->H), ow = plane_new(m->W, m->H);

		for (i = 0; i < nimg; i++)
			for (j = 0; j < 11; j++) {
				warp_apply(&g[i], &wp[i], jit[j][0], jit[j][1], jit[j][2],
				    &o, wp[i].a, wp[i].b);
				warp_apply(&wm[i], &wp[i], jit[j][0], jit[j][1], jit[j][2],
				    &ow, wp[i].a, 0);
				for (p = 0; p < n; p++) {
					acc.p[p] += o.p[p];
					acc2.p[p] += o.p[p] * o.p[p];
					accw.p[p] += ow.p[p];
				}
				nn++;
			}
		plane_free(&o);
		plane_free(&ow);
	}
	m->mean = dq_xmalloc(n * sizeof(float));
	m->sd = dq_xmalloc(n * sizeof(float));
	m->warm = dq_xmalloc(n * sizeof(float));
	for (p = 0; p < n; p++) {
		double mu = acc.p[p] / nn;

		m->mean[p] = (float)mu;
		m->sd[p] = (float)fmax(acc2.p[p] / nn - mu * mu, 0);
		m->warm[p] = (float)(accw.p[p] / nn);
	}
	/* spread the variance a little (3x3 max, 3x3 mean), add a noise floor */
	float_maxbox(m->sd, m->W, m->H);
	{
		float *s = dq_xmalloc(n * sizeof(float));
		double floor2;

		memcpy(s, m->sd, n * sizeof(float));
		/* median variance: the noise of flat areas */
		{
			int hist[4096] = { 0 }, c = 0;

			for (p = 0; p < n; p++) {
				int b = (int)(s[p] * 16);

				hist[b < 0 ? 0 : b > 4095 ? 4095 : b]++;
			}
			for (j = 0; j < 4096; j++)
				if ((c += hist[j]) * 2 >= (int)n)
					break;
			floor2 = fmax(j / 16.0, 1.0);
		}
		for (p = 0; p < n; p++)
			m->sd[p] = (float)sqrt(m->sd[p] + floor2);
		free(s);
	}
	m->nimg = nimg;
	plane_free(&acc);
	plane_free(&acc2);
	plane_free(&accw);
	rc = 0;
out:
	for (i = 0; i < nimg; i++) {
		plane_free(&g[i]);
		plane_free(&wm[i]);
	}
	free(g);
	free(wm);
	free(wp);
	return rc;
}

/* Find, load or build the model of sku.  Called with the mutex held. */
static struct model *
model_get(struct refan *ra, const char *sku, struct dq_err *err)
{
	struct model *m;
	char *skudir = NULL, *ppath = NULL, *mpath = NULL, hex[65];
	unsigned char *ptext = NULL;
	size_t plen = 0;
	struct refimg *ri = NULL;
	int nimg = 0, cap = 0, i;
	DIR *d;
	struct dirent *de;
	json_t *hash_in = NULL;
	char *hash_text = NULL;

	for (m = ra->models; m; m = m->next)
		if (strcmp(m->sku, sku) == 0)
			return m;
	if (!sku_ok(sku)) {
		dq_err_record(err, "no_reference",
		    "SKU \"%s\" cannot name a reference directory", sku);
		return NULL;
	}
	skudir = dq_xasprintf("%s/%s", ra->refdir, sku);
	{
		/* DQ_REFERENCE_DIR itself must be a readable directory */
		DIR *top = opendir(ra->refdir);

		if (top == NULL) {
			dq_err_system(err, DQ_EX_CONFIG, "reference_unreadable",
			    "DQ_REFERENCE_DIR %s: %s", ra->refdir, strerror(errno));
			goto fail;
		}
		closedir(top);
	}
	if ((d = opendir(skudir)) == NULL) {
		if (errno == ENOENT || errno == ENOTDIR) {
			dq_err_record(err, "no_reference",
			    "no reference images for SKU %s: put known-good images in %s/",
			    sku, skudir);
		} else
			dq_err_system(err, DQ_EX_CONFIG, "reference_unreadable",
			    "%s: %s", skudir, strerror(errno));
		goto fail;
	}
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (!is_image_name(de->d_name))
			continue;
		if (nimg == cap) {
			cap = cap ? 2 * cap : 8;
			ri = dq_xrealloc(ri, cap * sizeof *ri);
		}
		ri[nimg].name = dq_xstrdup(de->d_name);
		ri[nimg].data = NULL;
		nimg++;
		if (nimg > 1000)
			break;
	}
	closedir(d);
	if (nimg == 0) {
		dq_err_record(err, "no_reference",
		    "no reference images for SKU %s: put known-good images in %s/",
		    sku, skudir);
		goto fail;
	}
	qsort(ri, nimg, sizeof *ri, cmp_str);
	m = dq_xcalloc(1, sizeof *m);
	snprintf(m->sku, sizeof m->sku, "%s", sku);
	ppath = dq_xasprintf("%s/reference.json", skudir);
	if (read_all(ppath, &ptext, &plen) == -1) {
		if (errno != ENOENT) {
			dq_err_system(err, DQ_EX_CONFIG, "reference_unreadable",
			    "%s: %s", ppath, strerror(errno));
			goto fail_m;
		}
		ptext = NULL;
	}
	if (load_params(ppath, ptext, plen, &m->pr, err) == -1)
		goto fail_m;
	/* the key: algorithm, thresholds, each reference's name and content */
	hash_in = json_pack("{s:s, s:s%}", "algorithm", ALGO, "thresholds",
	    ptext ? (const char *)ptext : "", ptext ? plen : (size_t)0);
	{
		json_t *arr = json_array();

		for (i = 0; i < nimg; i++) {
			char *p = dq_xasprintf("%s/%s", skudir, ri[i].name);

			if (read_all(p, &ri[i].data, &ri[i].len) == -1) {
				dq_err_system(err, DQ_EX_CONFIG, "reference_unreadable",
				    "%s: %s", p, strerror(errno));
				free(p);
				json_decref(arr);
				goto fail_m;
			}
			free(p);
			dq_sha256_hex(ri[i].data, ri[i].len, hex);
			json_array_append_new(arr, json_pack("[s, I, s]", ri[i].name,
			    (json_int_t)ri[i].len, hex));
		}
		json_object_set_new(hash_in, "images", arr);
	}
	hash_text = json_dumps(hash_in, JSON_COMPACT | JSON_SORT_KEYS);
	if (hash_text == NULL)
		dq_die(DQ_EX_IOERR, "out of memory");
	dq_sha256_hex(hash_text, strlen(hash_text), m->sha);
	if (ra->cachedir) {
		mpath = dq_xasprintf("%s/%s.%s.model", ra->cachedir, sku, m->sha);
		if (model_load(m, mpath) == 0)
			goto derive;
	}
	if (model_build(m, skudir, ri, nimg, err) == -1)
		goto fail_m;
	if (mpath && model_save(m, ra->cachedir, mpath) == -1)
		dq_log(DQ_WARNING, "cache", json_pack("{s:s}", "file", mpath),
		    "cannot cache the reference model: %s", strerror(errno));
	dq_log(DQ_INFO, "reference_model", json_pack("{s:s, s:i, s:s}", "sku", sku,
	    "images", nimg, "model_sha256", m->sha), "built the reference model of %s from %d images",
	    sku, nimg);
derive:
	model_derive(m);
	m->nimg = nimg;
	m->next = ra->models;
	ra->models = m;
	goto done;
fail_m:
	model_free(m);
fail:
	m = NULL;
done:
	for (i = 0; i < nimg; i++) {
		free(ri[i].name);
		free(ri[i].data);
	}
	free(ri);
	free(skudir);
	free(ppath);
	free(mpath);
	free(ptext);
	free(hash_text);
	json_decref(hash_in);
	return m;
}

/* ---------- analysis ---------- */

struct region {
	int id;
	long area, strong;
	double sumz, peakz;
	long dark, bright, outline, fg, missing, added;
	double sx, sy, sxx, syy, sxy, warm;
	double depart;			/* farthest changed pixel from the outline */
	double bx0, by0, bx1, by1;	/* in the image's working grid */
	int x0, y0, x1, y1;		/* in the template grid, for merging */
	long box[4];
	double score;
	const char *type, *where;
	int severity;
};

static const char *sev_name[] = { "none", "minor", "major", "critical" };

static int
cmp_region(const void *a, const void *b)
{
	const struct region *p = a, *q = b;

	if (p->score != q->score)
		return p->score < q->score ? 1 : -1;
	if (p->box[1] != q->box[1])
		return p->box[1] < q->box[1] ? -1 : 1;
	return p->box[0] < q->box[0] ? -1 : p->box[0] > q->box[0];
}

static int
uf_find(int *par, int i)
{
	while (par[i] != i)
		i = par[i] = par[par[i]];
	return i;
}

static void
classify(const struct model *m, struct region *r)
{
	double n = (double)r->area, l1, l2, tr, det, cxx, cyy, cxy, px, py, elong;
	double afrac, ratio = r->sumz / (r->strong > 0 ? r->strong : 1) / m->pr.k;
	int on_outline = r->outline >= 0.15 * n, on_part = r->fg >= 0.5 * n;
	int at_tip;

	cxx = r->sxx / n - (r->sx / n) * (r->sx / n);
	cyy = r->syy / n - (r->sy / n) * (r->sy / n);
	cxy = r->sxy / n - (r->sx / n) * (r->sy / n);
	tr = cxx + cyy;
	det = cxx * cyy - cxy * cxy;
	l1 = tr / 2 + sqrt(fmax(tr * tr / 4 - det, 0));
	l2 = tr / 2 - sqrt(fmax(tr * tr / 4 - det, 0));
	elong = sqrt(l1 / fmax(l2, 0.25));
	px = r->sx / n - m->ax_cx;
	py = r->sy / n - m->ax_cy;
	at_tip = fabs(px * m->ax_ex + py * m->ax_ey - m->tip_end) < 0.15 * m->tip_len;
	if (on_outline) {
		if (at_tip && r->missing >= 0.15 * n && r->added >= 0.15 * n)
			r->type = "bend";
		else if (r->missing >= 0.7 * n && elong < 4)
			r->type = "chip";
		else
			r->type = "edge_irregularity";
		r->where = at_tip ? "on the outline near the tip" : "on the outline";
	} else if (on_part) {
		if (elong >= 5)
			r->type = "scratch";
		else if (r->dark > r->bright && r->warm / n >= 12)
			r->type = "rust";
		else
			r->type = "discoloration";
		r->where = "on the part";
	} else {
		r->type = "other";
		r->where = "outside the part";
	}
	/* severity: documented in dq-reference(7) */
	afrac = m->part_area > 0 ? n / m->part_area : 1;
	if (afrac >= 0.02 || (afrac >= 0.005 && ratio >= 8))
		r->severity = 3;
	else if (afrac >= 0.003 || on_outline || ratio >= 4)
		r->severity = 2;
	else
		r->severity = 1;
}

static int
ref_analyze(struct dq_analyzer *an, const char *sku, const unsigned char *data,
    size_t len, const struct dq_image_info *info, struct dq_analysis *out,
    struct dq_err *err)
{
	struct refan *ra = an->priv;
	struct model *m;
	struct dq_raster r;
	struct plane I, Wm, Iw, Ww;
	struct warp w;
	float *z = NULL;
	unsigned char *strong = NULL, *closed = NULL;
	int *lab = NULL, *par = NULL, *stack = NULL, nlab = 0, W, H, x, y, i, j;
	struct region *rg = NULL;
	int nkeep = 0;
	double sx, sy, k, cand = 0, cth, sth, cx, cy;
	float zmax = 0;
	size_t p, n;
	json_t *boxes, *findings;
	char desc[512];

	memset(out, 0, sizeof *out);
	pthread_mutex_lock(&ra->mu);
	m = model_get(ra, sku, err);
	pthread_mutex_unlock(&ra->mu);
	if (m == NULL)
		return -1;
	W = m->W;
	H = m->H;
	n = (size_t)W * H;
	k = m->pr.k;
	if (dq_decode(data, len, 3, W, H, &r, err) == -1)
		return -1;
	if (fabs((double)r.orig_w / r.orig_h - (double)m->ref_w / m->ref_h) >
	    0.01 * m->ref_w / m->ref_h) {
		dq_err_record(err, "reference_mismatch",
		    "image is %ldx%ld, the references of %s are %ldx%ld: the aspect differs",
		    r.orig_w, r.orig_h, sku, m->ref_w, m->ref_h);
		dq_raster_free(&r);
		return -1;
	}
	(void)info;
	to_grid(&r, W, H, &I, &Wm);
	sx = (double)r.orig_w / W;
	sy = (double)r.orig_h / H;
	w = register_image(m->lv, &I);
	Iw = plane_new(W, H);
	Ww = plane_new(W, H);
	warp_apply(&I, &w, 0, 0, 0, &Iw, w.a, w.b);
	warp_apply(&Wm, &w, 0, 0, 0, &Ww, w.a, 0);
	plane_free(&I);
	plane_free(&Wm);

	z = dq_xmalloc(n * sizeof(float));
	strong = dq_xcalloc(n, 1);
	closed = dq_xmalloc(n);
	for (p = 0; p < n; p++) {
		z[p] = (Iw.p[p] - m->mean[p]) / m->sd[p];
		strong[p] = fabsf(z[p]) >= k;
		zmax = fmaxf(zmax, fabsf(z[p]));
	}
	memcpy(closed, strong, n);
	mask_filter(closed, W, H, 1, 1);
	mask_filter(closed, W, H, 1, 0);

	/* connected components (8) of the closed mask */
	lab = dq_xmalloc(n * sizeof(int));
	stack = dq_xmalloc(n * sizeof(int));
	for (p = 0; p < n; p++)
		lab[p] = -1;
	for (p = 0; p < n; p++) {
		int sp = 0;
		struct region *c;

		if (!closed[p] || lab[p] >= 0)
			continue;
		if (nlab % 64 == 0)
			rg = dq_xrealloc(rg, (nlab + 64) * sizeof *rg);
		c = &rg[nlab];
		memset(c, 0, sizeof *c);
		c->x0 = W;
		c->y0 = H;
		c->x1 = c->y1 = -1;
		lab[p] = nlab;
		stack[sp++] = (int)p;
		while (sp > 0) {
			int q = stack[--sp], qx = q % W, qy = q / W, dx, dy;

			c->area++;
			c->x0 = qx < c->x0 ? qx : c->x0;
			c->x1 = qx > c->x1 ? qx : c->x1;
			c->y0 = qy < c->y0 ? qy : c->y0;
			c->y1 = qy > c->y1 ? qy : c->y1;
			for (dy = -1; dy <= 1; dy++)
				for (dx = -1; dx <= 1; dx++) {
					int nx = qx + dx, ny = qy + dy;
					size_t o;

					if (nx < 0 || ny < 0 || nx >= W || ny >= H)
						continue;
					o = (size_t)ny * W + nx;
					if (closed[o] && lab[o] < 0) {
						lab[o] = nlab;
						stack[sp++] = (int)o;
					}
				}
		}
		nlab++;
	}
	/* merge groups closer than merge_gap, then drop the small ones */
	par = dq_xmalloc((nlab + 1) * sizeof(int));
	for (i = 0; i < nlab; i++)
		par[i] = i;
	for (i = 0; i < nlab; i++)
		for (j = i + 1; j < nlab; j++) {
			int g = m->pr.merge_gap;

			if (rg[i].x0 - g <= rg[j].x1 && rg[j].x0 - g <= rg[i].x1 &&
			    rg[i].y0 - g <= rg[j].y1 && rg[j].y0 - g <= rg[i].y1) {
				int a = uf_find(par, i), b = uf_find(par, j);

				if (a != b) {
					par[b > a ? b : a] = a < b ? a : b;
					/* grow the root's box so chains merge */
					a = a < b ? a : b;
					b = i == a ? j : i;
					rg[a].x0 = rg[b].x0 < rg[a].x0 ? rg[b].x0 : rg[a].x0;
					rg[a].y0 = rg[b].y0 < rg[a].y0 ? rg[b].y0 : rg[a].y0;
					rg[a].x1 = rg[b].x1 > rg[a].x1 ? rg[b].x1 : rg[a].x1;
					rg[a].y1 = rg[b].y1 > rg[a].y1 ? rg[b].y1 : rg[a].y1;
				}
			}
		}
	for (i = 0; i < nlab; i++) {
		int root = uf_find(par, i);

		if (root != i) {
			rg[root].area += rg[i].area;
			rg[i].area = 0;
		}
	}
	/* relabel: kept roots get consecutive ids, the rest -1 */
	{
		int *map = dq_xmalloc((nlab + 1) * sizeof(int));

		for (i = 0; i < nlab; i++) {
			map[i] = -1;
			if (uf_find(par, i) == i) {
				if (rg[i].area >= m->pr.min_area)
					map[i] = nkeep++;
				else
					cand = fmax(cand, (double)rg[i].area / m->pr.min_area);
			}
		}
		for (p = 0; p < n; p++)
			if (lab[p] >= 0)
				lab[p] = map[uf_find(par, lab[p])];
		free(map);
	}
	free(rg);
	rg = dq_xcalloc(nkeep + 1, sizeof *rg);
	/* grow kept groups into |z| >= k_low */
	{
		int sp = 0;

		for (p = 0; p < n; p++)
			if (lab[p] >= 0)
				stack[sp++] = (int)p;
		while (sp > 0) {
			int q = stack[--sp], qx = q % W, qy = q / W, dx, dy;

			for (dy = -1; dy <= 1; dy++)
				for (dx = -1; dx <= 1; dx++) {
					int nx = qx + dx, ny = qy + dy;
					size_t o;

					if (nx < 0 || ny < 0 || nx >= W || ny >= H)
						continue;
					o = (size_t)ny * W + nx;
					if (lab[o] < 0 && fabsf(z[o]) >= m->pr.k_low) {
						lab[o] = lab[q];
						stack[sp++] = (int)o;
					}
				}
		}
	}
	/* region statistics */
	cth = cos(w.th);
	sth = sin(w.th);
	cx = W / 2.0;
	cy = H / 2.0;
	for (i = 0; i < nkeep; i++) {
		rg[i].bx0 = rg[i].by0 = INFINITY;
		rg[i].bx1 = rg[i].by1 = -INFINITY;
	}
	for (y = 0; y < H; y++)
		for (x = 0; x < W; x++) {
			size_t o = (size_t)y * W + x;
			struct region *c;
			double ix, iy, ib, mb;

			if (lab[o] < 0)
				continue;
			c = &rg[lab[o]];
			c->area++;
			if (strong[o]) {
				c->strong++;
				c->sumz += fabsf(z[o]);
			}
			c->peakz = fmax(c->peakz, fabsf(z[o]));
			c->dark += z[o] < 0;
			c->bright += z[o] > 0;
			c->outline += m->outline[o];
			c->fg += m->fg[o];
			ib = fabs(Iw.p[o] - m->bg);
			mb = fabs(m->mean[o] - m->bg);
			if (m->fg[o] && ib < 0.5 * mb) {
				c->missing++;
				c->depart = fmax(c->depart, m->odist[o]);
			}
			if (!m->fg[o] && ib > fmax(4, 0.5 * mb + 12)) {
				c->added++;
				c->depart = fmax(c->depart, m->odist[o]);
			}
			c->warm += Ww.p[o] - m->warm[o];
			c->sx += x;
			c->sy += y;
			c->sxx += (double)x * x;
			c->syy += (double)y * y;
			c->sxy += (double)x * y;
			/* this pixel's centre in the image's working grid */
			ix = cth * (x + 0.5 - cx) - sth * (y + 0.5 - cy) + cx + w.dx;
			iy = sth * (x + 0.5 - cx) + cth * (y + 0.5 - cy) + cy + w.dy;
			c->bx0 = fmin(c->bx0, ix - 0.5);
			c->by0 = fmin(c->by0, iy - 0.5);
			c->bx1 = fmax(c->bx1, ix + 0.5);
			c->by1 = fmax(c->by1, iy + 0.5);
		}
	for (i = 0; i < nkeep; i++) {
		struct region *c = &rg[i];
		long x0 = (long)floor(c->bx0 * sx), y0 = (long)floor(c->by0 * sy);
		long x1 = (long)ceil(c->bx1 * sx), y1 = (long)ceil(c->by1 * sy);

		x0 = x0 < 0 ? 0 : x0 > r.orig_w - 1 ? r.orig_w - 1 : x0;
		y0 = y0 < 0 ? 0 : y0 > r.orig_h - 1 ? r.orig_h - 1 : y0;
		x1 = x1 > r.orig_w ? r.orig_w : x1 <= x0 ? x0 + 1 : x1;
		y1 = y1 > r.orig_h ? r.orig_h : y1 <= y0 ? y0 + 1 : y1;
		c->box[0] = x0;
		c->box[1] = y0;
		c->box[2] = x1 - x0;
		c->box[3] = y1 - y0;
		c->score = dq_round(c->sumz, 3);
		classify(m, c);
	}
	qsort(rg, nkeep, sizeof *rg, cmp_region);

	/* findings, in the artifact's key order */
	boxes = json_array();
	for (i = 0; i < nkeep; i++)
		json_array_append_new(boxes, json_pack("{s:I, s:I, s:I, s:I}",
		    "x", (json_int_t)rg[i].box[0], "y", (json_int_t)rg[i].box[1],
		    "width", (json_int_t)rg[i].box[2], "height", (json_int_t)rg[i].box[3]));
	if (nkeep > 0) {
		struct region *t = &rg[0];
		double ratio = t->sumz / (t->strong > 0 ? t->strong : 1) / k;
		double margin = fmin(ratio, sqrt((double)t->area / m->pr.min_area));
		int sev = 0, o;
		const char *pol = t->dark >= 0.8 * t->area ? "dark" :
		    t->bright >= 0.8 * t->area ? "bright" : "dark and bright";

		for (i = 0; i < nkeep; i++)
			sev = rg[i].severity > sev ? rg[i].severity : sev;
		if (t->type != NULL && (strcmp(t->type, "chip") == 0 ||
		    strcmp(t->type, "edge_irregularity") == 0 || strcmp(t->type, "bend") == 0))
			o = snprintf(desc, sizeof desc, "%s region %ld\xc3\x97%ld px %s, "
			    "the edge up to %ld px from where it belongs, %.1f\xc3\x97 the threshold",
			    pol, t->box[2], t->box[3], t->where,
			    lrint((t->depart + 0.5) * (sx + sy) / 2), dq_round(ratio, 1));
		else
			o = snprintf(desc, sizeof desc, "%s region %ld\xc3\x97%ld px %s, %.1f\xc3\x97 the threshold",
			    pol, t->box[2], t->box[3], t->where, dq_round(ratio, 1));
		if (nkeep > 1 && o > 0 && (size_t)o < sizeof desc)
			snprintf(desc + o, sizeof desc - o, "; %d more region%s", nkeep - 1,
			    nkeep > 2 ? "s" : "");
		findings = json_pack("{s:b, s:s, s:s, s:s, s:f, s:o}",
		    "defect_detected", 1, "defect_type", t->type,
		    "severity", sev_name[sev], "description", desc,
		    "confidence", dq_round(1 - 0.5 / fmax(margin, 1), 4),
		    "bounding_boxes", boxes);
	} else {
		findings = json_pack("{s:b, s:s, s:s, s:s, s:f, s:o}",
		    "defect_detected", 0, "defect_type", "none", "severity", "none",
		    "description", "no region differs from the reference beyond the threshold",
		    "confidence", dq_round(1 - 0.5 * fmin(cand, 1), 4),
		    "bounding_boxes", boxes);
	}
	out->findings = findings;
	{
		json_t *regs = json_array();

		for (i = 0; i < nkeep; i++)
			json_array_append_new(regs, json_pack("{s:s, s:s, s:I, s:I, s:f, s:f}",
			    "type", rg[i].type, "severity", sev_name[rg[i].severity],
			    "area_px", (json_int_t)lrint(rg[i].area * sx * sy),
			    "edge_offset_px", (json_int_t)(rg[i].where != NULL &&
			    strncmp(rg[i].where, "on the outline", 14) == 0 &&
			    rg[i].missing + rg[i].added > 0 ?
			    lrint((rg[i].depart + 0.5) * (sx + sy) / 2) : 0),
			    "threshold_ratio", dq_round(rg[i].sumz /
			    (rg[i].strong > 0 ? rg[i].strong : 1) / k, 2),
			    "peak_ratio", dq_round(rg[i].peakz / k, 2)));
		out->analysis = json_pack("{s:s, s:{s:s, s:i, s:s}, s:i, s:i, "
		    "s:{s:f, s:f, s:f, s:f}, s:f, s:f, s:i, s:f, s:o}",
		    "analyzer", "reference",
		    "reference", "sku", sku, "images", m->nimg, "model_sha256", m->sha,
		    "working_width", W, "working_height", H,
		    "registration", "dx", dq_round(w.dx * sx, 2), "dy", dq_round(w.dy * sy, 2),
		    "angle_deg", dq_round(w.th * 180 / M_PI, 3), "gain", dq_round(w.a, 3),
		    "threshold_k", m->pr.k, "threshold_k_low", m->pr.k_low,
		    "min_area", m->pr.min_area,
		    "peak_ratio", dq_round(zmax / k, 2), "regions", regs);
	}
	snprintf(out->model_version, sizeof out->model_version, "%s", ALGO);
	dq_raster_free(&r);
	plane_free(&Iw);
	plane_free(&Ww);
	free(z);
	free(strong);
	free(closed);
	free(lab);
	free(par);
	free(stack);
	free(rg);
	if (out->findings == NULL || out->analysis == NULL) {
		dq_analysis_free(out);
		dq_err_set(err, DQ_SCOPE_SYSTEM, DQ_EX_IOERR, 0, "internal",
		    "cannot build the findings");
		return -1;
	}
	return 0;
}

static int
ref_check(struct dq_analyzer *an, const char *sku, struct dq_err *err)
{
	struct refan *ra = an->priv;
	struct model *m;
	DIR *d;

	if (sku == NULL) {
		if ((d = opendir(ra->refdir)) == NULL) {
			dq_err_system(err, DQ_EX_CONFIG, "reference_unreadable",
			    "DQ_REFERENCE_DIR %s: %s", ra->refdir, strerror(errno));
			return -1;
		}
		closedir(d);
		return 0;
	}
	pthread_mutex_lock(&ra->mu);
	m = model_get(ra, sku, err);
	pthread_mutex_unlock(&ra->mu);
	return m ? 0 : -1;
}

static void
ref_close(struct dq_analyzer *an)
{
	struct refan *ra = an->priv;
	struct model *m, *nx;

	for (m = ra->models; m; m = nx) {
		nx = m->next;
		model_free(m);
	}
	pthread_mutex_destroy(&ra->mu);
	free(ra->refdir);
	free(ra->cachedir);
	free(ra);
	free(an);
}

static const struct dq_analyzer_ops ref_ops = {
	.name = "reference",
	.analyze = ref_analyze,
	.check = ref_check,
	.close = ref_close,
};

struct dq_analyzer *
dq_analyzer_reference_open(const char *refdir, const char *cachedir, struct dq_err *err)
{
	struct dq_analyzer *an;
	struct refan *ra;
	const char *x;

	if (refdir == NULL || *refdir == '\0') {
		dq_err_system(err, DQ_EX_CONFIG, "config",
		    "the reference analyzer needs DQ_REFERENCE_DIR");
		return NULL;
	}
	ra = dq_xcalloc(1, sizeof *ra);
	ra->refdir = dq_xstrdup(refdir);
	if (cachedir && *cachedir)
		ra->cachedir = dq_xstrdup(cachedir);
	else if ((x = getenv("XDG_CACHE_HOME")) && *x == '/')
		ra->cachedir = dq_xasprintf("%s/dq", x);
	else if ((x = getenv("HOME")) && *x == '/')
		ra->cachedir = dq_xasprintf("%s/.cache/dq", x);
	pthread_mutex_init(&ra->mu, NULL);
	/*
	 * An analysis allocates some 30 MB of planes and frees them at the
	 * end; by default glibc hands that back to the kernel and the next
	 * image faults every page in again, which costs more than the
	 * arithmetic.  Keep it in the process instead.
	 */
	mallopt(M_MMAP_THRESHOLD, 64 << 20);
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	an = dq_xcalloc(1, sizeof *an);
	an->ops = &ref_ops;
	an->priv = ra;
	return an;
}
