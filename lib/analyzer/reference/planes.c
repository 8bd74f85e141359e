/*
 * planes.c - the image arithmetic of the reference analyzer: float
 * planes, resampling to the working grid, rigid registration on a pyramid,
 * warping, and binary morphology.  Nothing here knows about models, SKUs
 * or findings.
 *
 * Coordinates are continuous with pixel centres at i + 0.5; a rigid
 * motion turns about the centre of the grid, so the same parameters serve
 * every pyramid level (translation scaled by the level).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"

/* ---------- planes ---------- */

struct dq_plane
dq_plane_new(int w, int h)
{
	struct dq_plane p = { w, h, dq_xcalloc((size_t)w * h, sizeof(float)) };

	return p;
}

void
dq_plane_free(struct dq_plane *p)
{
	free(p->p);
	p->p = NULL;
}

/* Half size, 2x2 averages. */
static struct dq_plane
plane_half(const struct dq_plane *s)
{
	struct dq_plane d = dq_plane_new(s->w / 2 > 0 ? s->w / 2 : 1, s->h / 2 > 0 ? s->h / 2 : 1);
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
sample(const struct dq_plane *p, double X, double Y)
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
 * two chroma planes.  The chroma rows are the Jacobian of CIELAB's a* and
 * b* at neutral grey, divided by that of L*: near grey (steel, the usual
 * background) a step of one in either is as visible as a step of one
 * level of luma, whatever the grey, since L*, a* and b* all follow the
 * same cube root there.  Each row sums to zero, so gray has no chroma.
 */
static const float chroma_a[3] = { 0.954f, -1.461f, 0.507f };

/*
 * Separable 3x3 mean, in place.  Chroma gets it: cameras (demosaicing)
 * and JPEG (4:2:0, coarser quantisation) keep less colour detail than
 * luma detail, and comparing what they do not keep would flag noise.
 */
static void
box3(struct dq_plane *pl)
{
	int w = pl->w, h = pl->h, x, y;
	float *t = dq_xmalloc(sizeof(float) * w * h), *p = pl->p;

	for (y = 0; y < h; y++) {
		const float *r = p + (size_t)y * w;

		for (x = 0; x < w; x++)
			t[(size_t)y * w + x] = (r[x > 0 ? x - 1 : 0] + r[x] +
			    r[x < w - 1 ? x + 1 : w - 1]) / 3;
	}
	for (y = 0; y < h; y++) {
		const float *u = t + (size_t)(y > 0 ? y - 1 : 0) * w, *c = t + (size_t)y * w;
		const float *d = t + (size_t)(y < h - 1 ? y + 1 : h - 1) * w;

		for (x = 0; x < w; x++)
			p[(size_t)y * w + x] = (u[x] + c[x] + d[x]) / 3;
	}
	free(t);
}
static const float chroma_b[3] = { 0.336f, 1.044f, -1.380f };

void
dq_to_grid(const struct dq_raster *r, int W, int H, struct dq_plane *gray,
    struct dq_plane *ca, struct dq_plane *cb)
{
	struct wtab tx, ty;
	float *t[3];
	struct dq_plane *dst[3] = { gray, ca, cb };
	int x, y, j, c;

	wtab_make(&tx, r->w, W);
	wtab_make(&ty, r->h, H);
	for (c = 0; c < 3; c++)
		t[c] = dq_xcalloc((size_t)W * r->h, sizeof(float));
	for (y = 0; y < r->h; y++) {
		const unsigned char *row = r->px + (size_t)y * r->w * r->ch;

		for (x = 0; x < W; x++) {
			const float *w = tx.w + (size_t)x * tx.maxn;
			float R = 0, G = 0, B = 0;

			for (j = 0; j < tx.n[x]; j++) {
				const unsigned char *p = row + (size_t)(tx.first[x] + j) * r->ch;

				if (r->ch == 3) {
					R += w[j] * p[0];
					G += w[j] * p[1];
					B += w[j] * p[2];
				} else {
					R += w[j] * p[0];
					G += w[j] * p[0];
					B += w[j] * p[0];
				}
			}
			t[0][(size_t)y * W + x] = 0.299f * R + 0.587f * G + 0.114f * B;
			t[1][(size_t)y * W + x] = chroma_a[0] * R + chroma_a[1] * G + chroma_a[2] * B;
			t[2][(size_t)y * W + x] = chroma_b[0] * R + chroma_b[1] * G + chroma_b[2] * B;
		}
	}
	for (c = 0; c < 3; c++)
		*dst[c] = dq_plane_new(W, H);
	for (y = 0; y < H; y++) {
		const float *w = ty.w + (size_t)y * ty.maxn;

		for (j = 0; j < ty.n[y]; j++)
			for (c = 0; c < 3; c++) {
				const float *s = t[c] + (size_t)(ty.first[y] + j) * W;
				float *d = dst[c]->p + (size_t)y * W;

				for (x = 0; x < W; x++)
					d[x] += w[j] * s[x];
			}
	}
	box3(ca);
	box3(cb);
	for (c = 0; c < 3; c++)
		free(t[c]);
	wtab_free(&tx);
	wtab_free(&ty);
}

/* ---------- registration ---------- */

static void
level_make(struct dq_pyrlevel *l, struct dq_plane T)
{
	int x, y, w = T.w, h = T.h;

	l->T = T;
	l->Tx = dq_plane_new(w, h);
	l->Ty = dq_plane_new(w, h);
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

void
dq_pyramid_make(struct dq_pyrlevel lv[DQ_NLEV], const struct dq_plane *T0)
{
	struct dq_plane t = dq_plane_new(T0->w, T0->h);
	int i;

	memcpy(t.p, T0->p, sizeof(float) * T0->w * T0->h);
	level_make(&lv[0], t);
	for (i = 1; i < DQ_NLEV; i++)
		level_make(&lv[i], plane_half(&lv[i - 1].T));
}

void
dq_pyramid_free(struct dq_pyrlevel lv[DQ_NLEV])
{
	int i;

	for (i = 0; i < DQ_NLEV; i++) {
		dq_plane_free(&lv[i].T);
		dq_plane_free(&lv[i].Tx);
		dq_plane_free(&lv[i].Ty);
		free(lv[i].idx);
		lv[i].idx = NULL;
	}
}

/* Mean and standard deviation of a plane. */
static void
plane_stats(const struct dq_plane *p, double *mean, double *sd)
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
coarse_search(const struct dq_pyrlevel *l, const struct dq_plane *I, struct dq_warp *w, int R)
{
	double tm, ts, im, is, best = INFINITY, scale = 1.0 / (1 << (DQ_NLEV - 1));
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
refine(const struct dq_pyrlevel *l, const struct dq_plane *I, int lvl, struct dq_warp *w, int iters)
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
struct dq_warp
dq_register(const struct dq_pyrlevel lv[DQ_NLEV], const struct dq_plane *I)
{
	static const int iters[DQ_NLEV] = { 4, 8, 12, 20 };
	struct dq_plane pyr[DQ_NLEV];
	struct dq_warp w;
	int i;

	pyr[0] = *I;
	for (i = 1; i < DQ_NLEV; i++)
		pyr[i] = plane_half(&pyr[i - 1]);
	coarse_search(&lv[DQ_NLEV - 1], &pyr[DQ_NLEV - 1], &w, 6);
	for (i = DQ_NLEV - 1; i >= 0; i--)
		refine(&lv[i], &pyr[i], i, &w, iters[i]);
	for (i = 1; i < DQ_NLEV; i++)
		dq_plane_free(&pyr[i]);
	return w;
}

/* The image warped onto the template grid, with gain and offset applied. */
void
dq_warp_apply(const struct dq_plane *I, const struct dq_warp *w, double extra_dx,
    double extra_dy, double extra_th, struct dq_plane *out, double gain, double off)
{
	struct dq_warp v = *w;
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

/*
 * Three planes of one size through one warp (luma and chroma of an
 * image): the same as dq_warp_apply on each, the sample positions and
 * weights computed once.
 */
void
dq_warp_apply3(const struct dq_plane *I[3], const struct dq_warp *w,
    struct dq_plane *out[3], const double gain[3], const double off[3])
{
	double c = cos(w->th), s = sin(w->th), cx = out[0]->w / 2.0, cy = out[0]->h / 2.0;
	int x, y, k, W = I[0]->w, H = I[0]->h;

	for (y = 0; y < out[0]->h; y++) {
		double ry = y + 0.5 - cy;
		double sx = c * (0.5 - cx) - s * ry + cx + w->dx;
		double sy = s * (0.5 - cx) + c * ry + cy + w->dy;

		for (x = 0; x < out[0]->w; x++, sx += c, sy += s) {
			double fx = sx - 0.5, fy = sy - 0.5, ax, ay;
			int x0, y0, x1, y1;

			fx = fx < 0 ? 0 : fx > W - 1 ? W - 1 : fx;
			fy = fy < 0 ? 0 : fy > H - 1 ? H - 1 : fy;
			x0 = (int)fx;
			y0 = (int)fy;
			x1 = x0 + 1 < W ? x0 + 1 : x0;
			y1 = y0 + 1 < H ? y0 + 1 : y0;
			ax = fx - x0;
			ay = fy - y0;
			for (k = 0; k < 3; k++) {
				const float *r0 = I[k]->p + (size_t)y0 * W, *r1 = I[k]->p + (size_t)y1 * W;
				float v = (float)((r0[x0] * (1 - ax) + r0[x1] * ax) * (1 - ay) +
				    (r1[x0] * (1 - ax) + r1[x1] * ax) * ay);

				out[k]->p[(size_t)y * out[0]->w + x] = (float)(gain[k] * v + off[k]);
			}
		}
	}
}

/* ---------- binary morphology on byte masks ---------- */

void
dq_mask_filter(unsigned char *m, int w, int h, int r, int dilate)
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
void
dq_float_maxbox(float *p, int w, int h)
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
