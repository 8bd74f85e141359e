/*
 * reference.c - the offline analyzer: golden-template comparison.
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
 * each step so lighting does not matter), and compared in luma and in two
 * colour planes (CIELAB's a* and b* near grey, in luma levels), each in
 * its own tolerance, |z| the root of their summed squares, signed like
 * luma: a colour change counts like a brightness change as visible.
 * Pixels with |z| >= k are closed (3x3), grouped (8-connected),
 * nearby groups merged, groups below min_area dropped, and the kept ones
 * grown into |z| >= k_low for their extent.  Boxes go back through the
 * registration to the stored image's pixel grid.  Each region is named
 * from itself (place against the part's outline, shape, sign, strength
 * and colour of its contrast) and graded by its size and contrast
 * against the SKU's limits.
 *
 * The model is cached as a file named by a hash of the algorithm
 * version, the threshold file and every reference's name and content,
 * written to a temporary file and renamed, so concurrent workers at
 * worst build it twice and never read half a file.  In a process it is
 * built or loaded once per SKU under a mutex and then only read, which
 * makes analyze() safe from any number of threads.
 *
 * This file is the analyzer: regions, their names and the findings.  The
 * model and its cache are in model.c, the arithmetic in planes.c.
 */
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"

struct reference_analyzer {
	char *refdir, *cachedir;
	int cache_explicit;		/* DQ_CACHE_DIR, not a default */
	pthread_mutex_t models_lock;	/* models: loaded or built once per SKU */
	struct dq_refmodel *models;
};

/*
 * The model of sku: found in memory, or loaded or built once under the
 * mutex (other threads wait for it), then only read.
 */
static struct dq_refmodel *
model_for(struct reference_analyzer *state, const char *sku, struct dq_err *err)
{
	struct dq_refmodel *m;

	pthread_mutex_lock(&state->models_lock);
	for (m = state->models; m; m = m->next)
		if (strcmp(m->sku, sku) == 0)
			break;
	if (m == NULL && (m = dq_refmodel_get(state->refdir, state->cachedir, sku, err)) != NULL) {
		m->next = state->models;
		state->models = m;
	}
	pthread_mutex_unlock(&state->models_lock);
	return m;
}

/* ---------- analysis ---------- */

struct region {
	int id;
	long area, strong;
	double sumz, peakz;
	long dark, bright, outline, fg, missing, added;
	double sx, sy, sxx, syy, sxy;
	double zl2, zc2;		/* summed squares of luma and chroma z */
	double dl, da, db;		/* summed differences: luma, chroma a and b */
	double depart;			/* farthest changed pixel from the outline */
	double bx0, by0, bx1, by1;	/* in the image's working grid */
	int x0, y0, x1, y1;		/* in the template grid, for merging */
	long box[4];
	double score, ratio;		/* ratio: mean |z| beyond k, over k */
	long offset_px;			/* how far the edge moved, image px */
	const char *type, *where, *what, *hue;
	int severity, colour;
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

/* A hue name for a chroma direction (degrees of CIELAB's hue angle). */
static const struct { double upto; const char *name; } hues[] = {
	{ -150, "greenish blue" }, { -100, "bluish" }, { -30, "purplish" },
	{ 20, "reddish" }, { 85, "orange-brown" }, { 110, "yellowish" },
	{ 180, "greenish" },
};

static const char *
hue_name(double deg)
{
	size_t i;

	for (i = 0; i < sizeof hues / sizeof hues[0]; i++)
		if (deg < hues[i].upto)
			return hues[i].name;
	return "greenish blue";
}

/*
 * Name a region from itself: where it lies against the part's outline,
 * its shape, the sign and strength of its contrast, its colour.  Then its
 * severity from its size and contrast against the SKU's tolerances.  The
 * rules are those of dq-reference(7).
 */
static void
classify(const struct dq_refmodel *m, struct region *r)
{
	const struct dq_refparams *pr = &m->pr;
	double n = (double)r->area, l1, l2, tr, det, cxx, cyy, cxy, px, py, elong;
	double afrac, ratio = r->ratio, hue, chroma;
	int edge, on_part = r->fg >= 0.5 * n, at_tip, warm, dark, bright, big;

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
	afrac = m->part_area > 0 ? 100 * n / m->part_area : 100;
	/* colour: the chroma carries at least half of the difference */
	r->colour = r->zc2 >= r->zl2 && r->zc2 > 0;
	hue = atan2(r->db, r->da) * 180 / M_PI;
	chroma = hypot(r->da, r->db) / n;
	warm = hue >= 20 && hue < 85;
	r->hue = chroma >= 3 ? hue_name(hue) : NULL;
	dark = r->dark >= 0.6 * n;
	bright = r->bright >= 0.6 * n;
	big = afrac >= 1;
	/*
	 * An edge defect changes where the part ends: part became background
	 * or background part.  Texture inside the part near its outline does
	 * not make one.
	 */
	edge = r->missing + r->added >= 0.15 * n ||
	    (r->outline >= 0.5 * n && !(on_part && elong >= 5));
	r->what = NULL;
	if (edge) {
		if (at_tip && r->missing >= 0.15 * n && r->added >= 0.15 * n)
			r->type = "bend";
		else if (r->missing >= 0.7 * n && elong < 4)
			r->type = "chip";
		else if (r->added >= 0.7 * n && elong < 4)
			r->type = "burr";
		else
			r->type = "edge_irregularity";
		r->where = at_tip ? "on the outline near the tip" : "on the outline";
	} else if (on_part) {
		r->where = at_tip ? "on the part near the tip" : "on the part";
		if (r->colour || (dark && warm && chroma >= 12)) {
			if (warm)
				r->type = "rust";
			else if (big || ratio < 1.6)
				r->type = "discoloration";
			else {
				r->type = "contamination";
				r->what = "a spot of foreign colour";
			}
		} else if (elong >= 5) {
			r->type = "scratch";
			r->what = "a thin line";
		} else if (big || ratio < 1.6) {
			r->type = "discoloration";
		} else if (dark) {
			r->type = "chip";
			r->what = "a pit";
		} else {
			r->type = "other";
			r->what = bright ? "a bright spot (a dent?)" : "a dent";
		}
	} else {
		r->type = "other";
		r->where = "outside the part";
	}
	/* severity: size and contrast against the SKU's tolerances */
	if (afrac >= pr->critical_area ||
	    (afrac >= pr->major_area && ratio >= pr->critical_ratio))
		r->severity = 3;
	else if (afrac >= pr->major_area || ratio >= pr->major_ratio)
		r->severity = 2;
	else
		r->severity = 1;
}

/*
 * The regions of a z map: |z| >= k, closed 3x3, 8-connected, merged when
 * their boxes come within merge_gap, kept from min_area, then grown into
 * |z| >= k_low.  Fills lab with region ids (-1 elsewhere) and returns how
 * many; *cand is the largest area / min_area of a group dropped for size.
 */
static int
find_regions(const struct dq_refmodel *m, const float *z, int *lab, double *cand)
{
	int W = m->W, H = m->H, nlab = 0, nkeep = 0, i, j, sp;
	size_t p, n = (size_t)W * H;
	unsigned char *closed = dq_xmalloc(n);
	int *stack = dq_xmalloc(n * sizeof(int)), *par, *map;
	struct group { int x0, y0, x1, y1; long area; } *g = NULL;

	*cand = 0;
	for (p = 0; p < n; p++)
		closed[p] = fabsf(z[p]) >= m->pr.k;
	dq_mask_filter(closed, W, H, 1, 1);
	dq_mask_filter(closed, W, H, 1, 0);
	for (p = 0; p < n; p++)
		lab[p] = -1;
	for (p = 0; p < n; p++) {
		struct group *c;

		if (!closed[p] || lab[p] >= 0)
			continue;
		if (nlab % 64 == 0)
			g = dq_xrealloc(g, (nlab + 64) * sizeof *g);
		c = &g[nlab];
		c->x0 = W;
		c->y0 = H;
		c->x1 = c->y1 = -1;
		c->area = 0;
		lab[p] = nlab;
		sp = 0;
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
	/* merge groups closer than merge_gap (union-find, the root's box grows) */
	par = dq_xmalloc((nlab + 1) * sizeof(int));
	for (i = 0; i < nlab; i++)
		par[i] = i;
	for (i = 0; i < nlab; i++)
		for (j = i + 1; j < nlab; j++) {
			int gap = m->pr.merge_gap, a, b;

			if (!(g[i].x0 - gap <= g[j].x1 && g[j].x0 - gap <= g[i].x1 &&
			    g[i].y0 - gap <= g[j].y1 && g[j].y0 - gap <= g[i].y1))
				continue;
			a = uf_find(par, i);
			b = uf_find(par, j);
			if (a == b)
				continue;
			par[b > a ? b : a] = a < b ? a : b;
			a = a < b ? a : b;
			b = i == a ? j : i;
			g[a].x0 = g[b].x0 < g[a].x0 ? g[b].x0 : g[a].x0;
			g[a].y0 = g[b].y0 < g[a].y0 ? g[b].y0 : g[a].y0;
			g[a].x1 = g[b].x1 > g[a].x1 ? g[b].x1 : g[a].x1;
			g[a].y1 = g[b].y1 > g[a].y1 ? g[b].y1 : g[a].y1;
		}
	for (i = 0; i < nlab; i++) {
		int root = uf_find(par, i);

		if (root != i) {
			g[root].area += g[i].area;
			g[i].area = 0;
		}
	}
	/* kept roots get consecutive ids, the rest -1 */
	map = dq_xmalloc((nlab + 1) * sizeof(int));
	for (i = 0; i < nlab; i++) {
		map[i] = -1;
		if (uf_find(par, i) != i)
			continue;
		if (g[i].area >= m->pr.min_area)
			map[i] = nkeep++;
		else
			*cand = fmax(*cand, (double)g[i].area / m->pr.min_area);
	}
	for (p = 0; p < n; p++)
		if (lab[p] >= 0)
			lab[p] = map[uf_find(par, lab[p])];
	/* grow the kept ones into |z| >= k_low */
	sp = 0;
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
	free(map);
	free(par);
	free(g);
	free(stack);
	free(closed);
	return nkeep;
}

/*
 * Statistics, type, severity and box of every region, the box mapped
 * pixel by pixel through the registration to the stored image (ow x oh);
 * sorted by summed |z|.
 */
static struct region *
describe_regions(const struct dq_refmodel *m, const float *z, const int *lab,
    int nkeep, const struct dq_plane *Iw, const struct dq_plane *Aw,
    const struct dq_plane *Bw, const struct dq_warp *w, long ow, long oh)
{
	struct region *rg = dq_xcalloc(nkeep + 1, sizeof *rg);
	double cth = cos(w->th), sth = sin(w->th), cx = m->W / 2.0, cy = m->H / 2.0;
	double sx = (double)ow / m->W, sy = (double)oh / m->H;
	double cw2 = m->pr.chroma_weight * m->pr.chroma_weight;
	int x, y, i;

	for (i = 0; i < nkeep; i++) {
		rg[i].bx0 = rg[i].by0 = INFINITY;
		rg[i].bx1 = rg[i].by1 = -INFINITY;
	}
	for (y = 0; y < m->H; y++)
		for (x = 0; x < m->W; x++) {
			size_t o = (size_t)y * m->W + x;
			struct region *c;
			double ix, iy, ib, mb, zl, za, zb, zc2;

			if (lab[o] < 0)
				continue;
			c = &rg[lab[o]];
			c->area++;
			if (fabsf(z[o]) >= m->pr.k) {
				c->strong++;
				c->sumz += fabsf(z[o]);
			}
			c->peakz = fmax(c->peakz, fabsf(z[o]));
			zl = (Iw->p[o] - m->mean[o]) / m->sd[o];
			za = (Aw->p[o] - m->ma[o]) / m->sa[o];
			zb = (Bw->p[o] - m->mb[o]) / m->sb[o];
			zc2 = cw2 * (za * za + zb * zb);
			c->zl2 += zl * zl;
			c->zc2 += zc2;
			c->dl += Iw->p[o] - m->mean[o];
			c->da += Aw->p[o] - m->ma[o];
			c->db += Bw->p[o] - m->mb[o];
			/* polarity is luma's, where luma changed */
			c->dark += zl <= -m->pr.k_low;
			c->bright += zl >= m->pr.k_low;
			c->outline += m->outline[o];
			c->fg += m->solid[o];
			/* material missing (part become background) or added */
			ib = fabs(Iw->p[o] - m->bg);
			mb = fabs(m->mean[o] - m->bg);
			/* (a strong change of colour is the part discoloured, not gone) */
			if (m->fg[o] && ib < 0.5 * mb && zc2 < m->pr.k * m->pr.k) {
				c->missing++;
				c->depart = fmax(c->depart, m->odist[o]);
			}
			if (!m->fg[o] && ib > fmax(4, 0.5 * mb + 12)) {
				c->added++;
				c->depart = fmax(c->depart, m->odist[o]);
			}
			c->sx += x;
			c->sy += y;
			c->sxx += (double)x * x;
			c->syy += (double)y * y;
			c->sxy += (double)x * y;
			/* this pixel's centre in the image's working grid */
			ix = cth * (x + 0.5 - cx) - sth * (y + 0.5 - cy) + cx + w->dx;
			iy = sth * (x + 0.5 - cx) + cth * (y + 0.5 - cy) + cy + w->dy;
			c->bx0 = fmin(c->bx0, ix - 0.5);
			c->by0 = fmin(c->by0, iy - 0.5);
			c->bx1 = fmax(c->bx1, ix + 0.5);
			c->by1 = fmax(c->by1, iy + 0.5);
		}
	for (i = 0; i < nkeep; i++) {
		struct region *c = &rg[i];
		long x0 = (long)floor(c->bx0 * sx), y0 = (long)floor(c->by0 * sy);
		long x1 = (long)ceil(c->bx1 * sx), y1 = (long)ceil(c->by1 * sy);

		x0 = x0 < 0 ? 0 : x0 > ow - 1 ? ow - 1 : x0;
		y0 = y0 < 0 ? 0 : y0 > oh - 1 ? oh - 1 : y0;
		x1 = x1 > ow ? ow : x1 <= x0 ? x0 + 1 : x1;
		y1 = y1 > oh ? oh : y1 <= y0 ? y0 + 1 : y1;
		c->box[0] = x0;
		c->box[1] = y0;
		c->box[2] = x1 - x0;
		c->box[3] = y1 - y0;
		c->ratio = c->sumz / (c->strong > 0 ? c->strong : 1) / m->pr.k;
		c->offset_px = c->missing + c->added > 0 ?
		    lrint((c->depart + 0.5) * (sx + sy) / 2) : 0;
		c->score = dq_round(c->sumz, 3);
		classify(m, c);
		if (strncmp(c->where, "on the outline", 14) != 0)
			c->offset_px = 0;
	}
	qsort(rg, nkeep, sizeof *rg, cmp_region);
	return rg;
}

/* defect_findings, in the artifact's key order. */
static json_t *
findings_json(const struct dq_refmodel *m, const struct region *rg, int nkeep, double cand)
{
	json_t *boxes = json_array();
	const struct region *t = &rg[0];
	char desc[512];
	int i, o, sev = 0;
	double margin;
	const char *lum, *hue;
	char pol[64], where[128];

	for (i = 0; i < nkeep; i++)
		json_array_append_new(boxes, json_pack("{s:I, s:I, s:I, s:I}",
		    "x", (json_int_t)rg[i].box[0], "y", (json_int_t)rg[i].box[1],
		    "width", (json_int_t)rg[i].box[2], "height", (json_int_t)rg[i].box[3]));
	if (nkeep == 0)
		return json_pack("{s:b, s:s, s:s, s:s, s:f, s:o}",
		    "defect_detected", 0, "defect_type", "none", "severity", "none",
		    "description", "no region differs from the reference beyond the threshold",
		    "confidence", dq_round(1 - 0.5 * fmin(cand, 1), 4),
		    "bounding_boxes", boxes);
	for (i = 0; i < nkeep; i++)
		sev = rg[i].severity > sev ? rg[i].severity : sev;
	lum = t->dark >= 0.7 * t->area ? "dark" : t->bright >= 0.7 * t->area ? "bright" :
	    t->dark + t->bright >= 0.3 * t->area ? "dark and bright" : NULL;
	hue = t->colour ? t->hue : NULL;
	snprintf(pol, sizeof pol, "%s%s%s", lum ? lum : hue ? "" : "faint",
	    lum && hue ? ", " : "", hue ? hue : "");
	if (t->what)
		snprintf(where, sizeof where, "%s (%s)", t->where, t->what);
	else
		snprintf(where, sizeof where, "%s", t->where);
	if (t->offset_px > 0)
		o = snprintf(desc, sizeof desc, "%s region %ld\xc3\x97%ld px %s, "
		    "the edge up to %ld px from where it belongs, %.1f\xc3\x97 the threshold",
		    pol, t->box[2], t->box[3], where, t->offset_px, dq_round(t->ratio, 1));
	else
		o = snprintf(desc, sizeof desc, "%s region %ld\xc3\x97%ld px %s, "
		    "%.1f\xc3\x97 the threshold",
		    pol, t->box[2], t->box[3], where, dq_round(t->ratio, 1));
	if (nkeep > 1 && o > 0 && (size_t)o < sizeof desc)
		snprintf(desc + o, sizeof desc - o, "; %d more region%s", nkeep - 1,
		    nkeep > 2 ? "s" : "");
	margin = fmin(t->ratio, sqrt((double)t->area / m->pr.min_area));
	return json_pack("{s:b, s:s, s:s, s:s, s:f, s:o}",
	    "defect_detected", 1, "defect_type", t->type,
	    "severity", sev_name[sev], "description", desc,
	    "confidence", dq_round(1 - 0.5 / fmax(margin, 1), 4),
	    "bounding_boxes", boxes);
}

/* The analyzer's own keys of the artifact's "analysis". */
static json_t *
analysis_json(const struct dq_refmodel *m, const char *sku, const struct region *rg,
    int nkeep, const struct dq_warp *w, double sx, double sy, double zmax)
{
	json_t *regs = json_array();
	int i;

	for (i = 0; i < nkeep; i++)
		json_array_append_new(regs, json_pack("{s:s, s:s, s:I, s:I, s:f, s:f}",
		    "type", rg[i].type, "severity", sev_name[rg[i].severity],
		    "area_px", (json_int_t)lrint(rg[i].area * sx * sy),
		    "edge_offset_px", (json_int_t)rg[i].offset_px,
		    "threshold_ratio", dq_round(rg[i].ratio, 2),
		    "peak_ratio", dq_round(rg[i].peakz / m->pr.k, 2)));
	return json_pack("{s:s, s:{s:s, s:i, s:s}, s:i, s:i, "
	    "s:{s:f, s:f, s:f, s:f}, s:f, s:f, s:i, s:f, s:o}",
	    "analyzer", "reference",
	    "reference", "sku", sku, "images", m->nimg, "model_sha256", m->sha,
	    "working_width", m->W, "working_height", m->H,
	    "registration", "dx", dq_round(w->dx * sx, 2), "dy", dq_round(w->dy * sy, 2),
	    "angle_deg", dq_round(w->th * 180 / M_PI, 3), "gain", dq_round(w->a, 3),
	    "threshold_k", m->pr.k, "threshold_k_low", m->pr.k_low,
	    "min_area", m->pr.min_area,
	    "peak_ratio", dq_round(zmax / m->pr.k, 2), "regions", regs);
}

static int
ref_analyze(struct dq_analyzer *analyzer, const char *sku, const unsigned char *data,
    size_t len, const struct dq_image_info *info, struct dq_analysis *out,
    struct dq_err *err)
{
	struct reference_analyzer *state = analyzer->priv;
	struct dq_refmodel *m;
	struct dq_raster r;
	struct dq_plane I, A, B, Iw, Aw, Bw;
	struct dq_warp w;
	struct region *rg;
	float *z;
	int *lab, nkeep;
	double cand, zmax = 0;
	size_t p, n;

	(void)info;
	memset(out, 0, sizeof *out);
	m = model_for(state, sku, err);
	if (m == NULL)
		return -1;
	if (dq_decode(data, len, 3, m->W, m->H, &r, err) == -1)
		return -1;
	if (fabs((double)r.orig_w / r.orig_h - (double)m->ref_w / m->ref_h) >
	    0.01 * m->ref_w / m->ref_h) {
		dq_err_record(err, "reference_mismatch",
		    "image is %ldx%ld, the references of %s are %ldx%ld: the aspect differs",
		    r.orig_w, r.orig_h, sku, m->ref_w, m->ref_h);
		dq_raster_free(&r);
		return -1;
	}
	/* to the grid, registered, on the template's scale */
	dq_to_grid(&r, m->W, m->H, &I, &A, &B);
	w = dq_register(m->lv, &I);
	Iw = dq_plane_new(m->W, m->H);
	Aw = dq_plane_new(m->W, m->H);
	Bw = dq_plane_new(m->W, m->H);
	{
		const struct dq_plane *in[3] = { &I, &A, &B };
		struct dq_plane *o[3] = { &Iw, &Aw, &Bw };
		const double gain[3] = { w.a, w.a, w.a }, off[3] = { w.b, 0, 0 };

		dq_warp_apply3(in, &w, o, gain, off);
	}
	dq_plane_free(&I);
	dq_plane_free(&A);
	dq_plane_free(&B);
	/*
	 * compare: luma and chroma in tolerances, one distance; its sign is
	 * luma's (dark or bright), its size what the eye would see
	 */
	n = (size_t)m->W * m->H;
	z = dq_xmalloc(n * sizeof(float));
	{
		float cw2 = (float)(m->pr.chroma_weight * m->pr.chroma_weight);

		for (p = 0; p < n; p++) {
			float zl = (Iw.p[p] - m->mean[p]) / m->sd[p];
			float za = (Aw.p[p] - m->ma[p]) / m->sa[p];
			float zb = (Bw.p[p] - m->mb[p]) / m->sb[p];
			float zz = sqrtf(zl * zl + cw2 * (za * za + zb * zb));

			z[p] = zl < 0 ? -zz : zz;
			zmax = fmax(zmax, zz);
		}
	}
	lab = dq_xmalloc(n * sizeof(int));
	nkeep = find_regions(m, z, lab, &cand);
	rg = describe_regions(m, z, lab, nkeep, &Iw, &Aw, &Bw, &w, r.orig_w, r.orig_h);
	out->findings = findings_json(m, rg, nkeep, cand);
	out->analysis = analysis_json(m, sku, rg, nkeep, &w,
	    (double)r.orig_w / m->W, (double)r.orig_h / m->H, zmax);
	snprintf(out->model_version, sizeof out->model_version, "%s", DQ_REFERENCE_ALGO);
	dq_raster_free(&r);
	dq_plane_free(&Iw);
	dq_plane_free(&Aw);
	dq_plane_free(&Bw);
	free(z);
	free(lab);
	free(rg);
	if (out->findings == NULL || out->analysis == NULL) {
		dq_analysis_free(out);
		dq_err_set(err, DQ_SCOPE_SYSTEM, DQ_EX_IOERR, 0, "internal",
		    "cannot build the findings");
		return -1;
	}
	return 0;
}

/*
 * Without a SKU: the reference directory by the one rule, and the cache
 * directory when DQ_CACHE_DIR names one; with one: its model.
 */
static int
ref_check(struct dq_analyzer *analyzer, const char *sku, struct dq_err *err)
{
	struct reference_analyzer *state = analyzer->priv;
	char only[80];

	if (sku == NULL)
		return dq_reference_skus(state->refdir, only, sizeof only, err) < 0 ||
		    (state->cache_explicit && dq_cachedir_check(state->cachedir, err) < 0) ? -1 : 0;
	return model_for(state, sku, err) ? 0 : -1;
}

static void
ref_close(struct dq_analyzer *analyzer)
{
	struct reference_analyzer *state = analyzer->priv;
	struct dq_refmodel *m, *nx;

	for (m = state->models; m; m = nx) {
		nx = m->next;
		dq_refmodel_free(m);
	}
	pthread_mutex_destroy(&state->models_lock);
	free(state->refdir);
	free(state->cachedir);
	free(state);
	free(analyzer);
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
	struct dq_analyzer *analyzer;
	struct reference_analyzer *state;

	if (refdir == NULL || *refdir == '\0') {
		dq_err_system(err, DQ_EX_CONFIG, "config",
		    "the reference analyzer needs DQ_REFERENCE_DIR");
		return NULL;
	}
	state = dq_xcalloc(1, sizeof *state);
	state->refdir = dq_xstrdup(refdir);
	state->cachedir = dq_cache_dir(cachedir);
	state->cache_explicit = cachedir && *cachedir;
	pthread_mutex_init(&state->models_lock, NULL);
	/*
	 * An analysis allocates some 30 MB of planes and frees them at the
	 * end; by default glibc hands that back to the kernel and the next
	 * image faults every page in again, which costs more than the
	 * arithmetic.  Keep it in the process instead.
	 */
	mallopt(M_MMAP_THRESHOLD, 64 << 20);
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	analyzer = dq_xcalloc(1, sizeof *analyzer);
	analyzer->ops = &ref_ops;
	analyzer->priv = state;
	return analyzer;
}
