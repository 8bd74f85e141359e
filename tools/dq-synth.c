/* dq-synth - draw synthetic knife images, good and with known defects, deterministically from a seed. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "analyzer/reference/reference.h"

/*
 * The knife is drawn in design units (the blade is 850 units long on a
 * 1600-unit-wide frame) and mapped to the image by a scale, a rotation
 * and a shift: the pose of one shot.  u runs along the knife from the
 * butt (-650) to the tip (650), v across it, downwards.  Every random
 * choice comes from our own generator, so the images are the same
 * bytes on every libc.
 */

#define SKU "WK-KN-200"
#define PI 3.14159265358979323846

enum kind {
	K_NONE, K_CHIP, K_WAVY, K_SCRATCH, K_RUST, K_BENT,
	K_RUSTC, K_HEAT, K_RESIDUE, K_PIT, K_DENT, K_NKIND
};
static const char *kind_name[] = {
	"none", "chip", "wavy", "scratch", "rust", "bent_tip",
	"rust_tint", "heat_tint", "residue", "pit", "dent",
};
/*
 * Colour defects of about the steel's brightness: a tint each channel of
 * the steel is multiplied by (the luma of each is within 4% of 1).
 */
static const double tint[K_NKIND][3] = {
	[K_RUSTC] = { 1.22, 0.96, 0.72 },	/* orange-brown */
	[K_HEAT] = { 0.92, 0.93, 1.22 },	/* the blue of temper colours */
	[K_RESIDUE] = { 0.80, 1.10, 0.85 },	/* a green residue */
};

struct rng { uint64_t s; };

static uint64_t
rng_next(struct rng *r)
{
	/* splitmix64 */
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double
rng_unit(struct rng *r)
{
	return (rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static double
rng_range(struct rng *r, double a, double b)
{
	return a + (b - a) * rng_unit(r);
}

/* Box-Muller, both values used. */
struct gauss {
	struct rng r;
	double spare;
	int have;
};

static double
rng_gauss(struct gauss *g)
{
	double a, b, m;

	if (g->have) {
		g->have = 0;
		return g->spare;
	}
	a = rng_unit(&g->r);
	b = rng_unit(&g->r);
	if (a < 1e-300)
		a = 1e-300;
	m = sqrt(-2 * log(a));
	g->spare = m * sin(2 * PI * b);
	g->have = 1;
	return m * cos(2 * PI * b);
}

/* An independent stream per (seed, purpose, index). */
static struct rng
stream(uint64_t seed, uint64_t purpose, uint64_t idx)
{
	struct rng r = { seed * 0x9e3779b97f4a7c15ULL ^ (purpose << 48) ^ idx };

	rng_next(&r);
	r.s ^= rng_next(&r);
	return r;
}

struct pose {
	double dx, dy, rot;	/* image px, radians */
	double gain, gx, gy;	/* lighting */
};

struct defect {
	enum kind kind;
	double uc, vc, a, b, c, d;	/* meaning depends on kind */
	double u0, u1, v0, v1;		/* design-space region it can touch */
};

static double
clamp01(double x)
{
	return x < 0 ? 0 : x > 1 ? 1 : x;
}

/* Blade outline, design units; t = 0 at the heel, 1 at the tip. */
static double
blade_t(double u)
{
	return (u + 200) / 850;
}

static double
bend(double u, const struct defect *df)
{
	double t = blade_t(u), t0 = 0.8;

	if (df == NULL || df->kind != K_BENT || t <= t0)
		return 0;
	return df->a * pow((t - t0) / (1 - t0), 2);
}

static double
spine_v(double u, const struct defect *df)
{
	double t = blade_t(u), q = t > 0.55 ? (t - 0.55) / 0.45 : 0;

	return -95 + 70 * q * q + bend(u, df);
}

static double
edge_v(double u, const struct defect *df)
{
	double t = blade_t(u), q = t > 0.35 ? (t - 0.35) / 0.65 : 0;
	double v = 120 - 145 * pow(q, 2.3) + bend(u, df);

	if (df == NULL)
		return v;
	if (df->kind == K_CHIP) {
		double x = (u - df->uc) / df->b;

		if (fabs(x) < 1)
			v -= df->a * (1 - x * x) * (1 + 0.15 * sin(9 * x + df->c));
	} else if (df->kind == K_WAVY) {
		double x = fabs(u - df->uc) / df->b, w;

		if (x < 1) {
			w = x < 0.8 ? 1 : 0.5 + 0.5 * cos(PI * (x - 0.8) / 0.2);
			v += df->a * w * sin(2 * PI * (u - df->uc) / df->c + df->d);
		}
	}
	return v;
}

static void
mix(double *c, const double *d, double a)
{
	int i;

	for (i = 0; i < 3; i++)
		c[i] += (d[i] - c[i]) * a;
}

/*
 * Colour at design point (u, v); s is the design-to-pixel scale, used to
 * anti-alias outlines over one pixel.
 */
static void
shade(double u, double v, double s, const struct defect *df, double *c)
{
	static const double bg[3] = { 40, 42, 48 };
	double vh = -15, t, sv, ev, de, ds, cov, g, col[3];
	int i;

	memcpy(c, bg, sizeof bg);
	if (u < -660 || u > 660 || v < -140 || v > 160)
		return;
	/* blade */
	t = blade_t(u);
	if (t > -0.03 && t <= 1.01) {
		double e1, e0;

		sv = spine_v(u, df);
		ev = edge_v(u, df);
		e1 = edge_v(u + 0.5, df);
		e0 = edge_v(u - 0.5, df);
		de = (ev - v) / sqrt(1 + (e1 - e0) * (e1 - e0));
		e1 = spine_v(u + 0.5, df);
		e0 = spine_v(u - 0.5, df);
		ds = (v - sv) / sqrt(1 + (e1 - e0) * (e1 - e0));
		cov = fmin(fmin(de, ds), fmin(650 - u, u + 215)) * s + 0.5;
		cov = clamp01(cov);
		if (cov > 0) {
			/* the grind follows the edge as made: a chip or a wave removes
			 * metal but does not move the bevel */
			double e = edge_v(u, NULL) + bend(u, df) - v;

			g = 150;
			if (e < 45)
				g += 40 * pow(1 - fmax(e, 0) / 45, 1.5);
			g -= 12 * exp(-(e - 45) * (e - 45) / 4);
			if (v - sv < 8)
				g -= 15 * (1 - (v - sv) / 8);
			g += 3 * sin(0.8 * v + 1.7 * sin(0.021 * u)) +
			    2 * sin(0.31 * v - 0.05 * u);
			col[0] = g * 0.98;
			col[1] = g;
			col[2] = g * 1.05;
			if (df && df->kind == K_RUST) {
				double du = u - df->uc, dv = v - df->vc;
				double r = sqrt(du * du + dv * dv), ph = atan2(dv, du);
				double R = df->a * (1 + 0.25 * sin(3 * ph + df->b) +
				    0.15 * sin(5 * ph + df->c));
				double a = 0.85 * clamp01((R - r) * s / 2 + 0.5);

				if (a > 0) {
					double m = 1 + 0.2 * sin(0.7 * u) * sin(0.9 * v);
					double rust[3] = { 128 * m, 66 * m, 34 * m };

					mix(col, rust, a);
				}
			}
			if (df && (df->kind == K_RUSTC || df->kind == K_HEAT ||
			    df->kind == K_RESIDUE)) {
				double du = u - df->uc, dv = v - df->vc;
				double r = sqrt(du * du + dv * dv), ph = atan2(dv, du);
				double R = df->a * (1 + 0.2 * sin(3 * ph + df->b) +
				    0.1 * sin(5 * ph + df->c));
				/* a heat tint fades out over half its radius, the others over a pixel */
				double a = df->kind == K_HEAT ?
				    df->d * clamp01((R - r) / (0.5 * R)) :
				    df->d * clamp01((R - r) * s / 2 + 0.5);

				if (a > 0) {
					double tc[3];

					for (i = 0; i < 3; i++)
						tc[i] = g * tint[df->kind][i];
					mix(col, tc, a);
				}
			}
			if (df && (df->kind == K_PIT || df->kind == K_DENT)) {
				double du = u - df->uc, dv = v - df->vc;
				double f = exp(-(du * du + dv * dv) / (df->a * df->a));

				for (i = 0; i < 3; i++)
					col[i] *= df->kind == K_PIT ? 1 - 0.55 * f : 1 + 0.3 * f;
			}
			if (df && df->kind == K_SCRATCH) {
				/* segment from (uc, vc) along angle b, length a */
				double ex = cos(df->b), ey = sin(df->b);
				double px = u - df->uc, py = v - df->vc;
				double along = px * ex + py * ey, h = df->a / 2, d;

				along = along < -h ? -h : along > h ? h : along;
				d = hypot(px - along * ex, py - along * ey) * s;
				g = 1 - 0.4 * exp(-(d * d) / (1.4 * 1.4 * s * s));
				for (i = 0; i < 3; i++)
					col[i] *= g;
			}
			mix(c, col, cov);
		}
	}
	/* handle, with a rounded butt */
	if (u < -225) {
		double hh = 48, dv;

		if (u < -620)
			hh = 48 * sqrt(fmax(0, 1 - pow((-620 - u) / 30, 2)));
		dv = hh - fabs(v - vh);
		cov = clamp01(fmin(dv, u + 650) * s + 0.5);
		if (cov > 0) {
			g = 1 + 0.12 * sin(0.45 * (v - vh) + 2.5 * sin(0.017 * u) +
			    0.6 * sin(0.05 * u));
			col[0] = 112 * g;
			col[1] = 72 * g;
			col[2] = 46 * g;
			mix(c, col, cov);
			for (i = 0; i < 3; i++) {
				double ru = u - (-560 + 130 * i), rv = v - vh;
				double r = sqrt(ru * ru + rv * rv);
				double ring[3] = { 70, 60, 50 }, head[3] = { 200, 196, 185 };

				mix(c, ring, clamp01((12 - r) * s + 0.5));
				mix(c, head, clamp01((10 - r) * s + 0.5));
			}
		}
	}
	/* bolster */
	if (u > -240 && u < -190) {
		double steel[3] = { 172, 174, 180 };

		cov = clamp01(fmin(fmin(u + 232, -200 - u), 56 - fabs(v - vh)) * s + 0.5);
		mix(c, steel, cov);
	}
}

struct shot {
	int W, H;
	double s;
	struct pose p;
	const struct defect *df;
	uint64_t noise_seed;
};

/* Render one shot; box gets the truth (x, y, w, h) when df is set. */
static void
render(const struct shot *sh, struct dq_raster *out, long box[4])
{
	double cx = sh->W / 2.0, cy = sh->H / 2.0;
	double cr = cos(sh->p.rot), sr = sin(sh->p.rot);
	long bx0 = sh->W, by0 = sh->H, bx1 = -1, by1 = -1;
	struct gauss nr = { stream(sh->noise_seed, 9, 0), 0, 0 };
	int x, y, i;

	out->w = sh->W;
	out->h = sh->H;
	out->ch = 3;
	out->px = dq_xmalloc((size_t)sh->W * sh->H * 3);
	for (y = 0; y < sh->H; y++) {
		for (x = 0; x < sh->W; x++) {
			double px = x + 0.5 - cx - sh->p.dx, py = y + 0.5 - cy - sh->p.dy;
			double u = (cr * px + sr * py) / sh->s;
			double v = (-sr * px + cr * py) / sh->s;
			double light = sh->p.gain * (1 + sh->p.gx * ((x + 0.5) / sh->W - 0.5) +
			    sh->p.gy * ((y + 0.5) / sh->H - 0.5));
			/* sensor noise: gaussian in luma, a little uniform in each channel */
			double c[3], n = 2.5 * rng_gauss(&nr);
			uint64_t cn = rng_next(&nr.r);
			unsigned char *o = out->px + ((size_t)y * sh->W + x) * 3;

			shade(u, v, sh->s, sh->df, c);
			if (sh->df && u >= sh->df->u0 && u <= sh->df->u1 &&
			    v >= sh->df->v0 && v <= sh->df->v1) {
				double c0[3];

				shade(u, v, sh->s, NULL, c0);
				/* truth: a visible change (10 levels of luma, or a
				 * change of colour as visible: dq-reference(7)); for a
				 * bent tip, only where the tip moved by 2 design units
				 * (2 px at 1600x1200) or more, whatever the resolution */
				double dr = c[0] - c0[0], dg = c[1] - c0[1], db = c[2] - c0[2];
				double dy = 0.299 * dr + 0.587 * dg + 0.114 * db;
				double da = 0.954 * dr - 1.461 * dg + 0.507 * db;
				double dc = 0.336 * dr + 1.044 * dg - 1.380 * db;

				if (sqrt(dy * dy + da * da + dc * dc) * light > 10 &&
				    (sh->df->kind != K_BENT || fabs(bend(u, sh->df)) >= 2)) {
					if (x < bx0) bx0 = x;
					if (x > bx1) bx1 = x;
					if (y < by0) by0 = y;
					if (y > by1) by1 = y;
				}
			}
			for (i = 0; i < 3; i++) {
				double val = c[i] * light + n +
				    ((double)((cn >> (16 * i)) & 0xffff) / 65535 - 0.5) * 3.46;

				o[i] = (unsigned char)(val < 0 ? 0 : val > 255 ? 255 : lrint(val));
			}
		}
	}
	if (box) {
		box[0] = bx0;
		box[1] = by0;
		box[2] = bx1 >= bx0 ? bx1 - bx0 + 1 : 0;
		box[3] = by1 >= by0 ? by1 - by0 + 1 : 0;
	}
}

static struct pose
random_pose(struct rng *r, double s)
{
	struct pose p;

	p.dx = rng_range(r, -4, 4) * s;
	p.dy = rng_range(r, -4, 4) * s;
	p.rot = rng_range(r, -1, 1) * PI / 180;
	p.gain = rng_range(r, 0.85, 1.15);
	p.gx = rng_range(r, -0.03, 0.03);
	p.gy = rng_range(r, -0.03, 0.03);
	return p;
}

static int
inside_blade(double u, double v, double margin)
{
	double t = blade_t(u);

	return t > 0.05 && t < 0.95 && v > spine_v(u, NULL) + margin &&
	    v < edge_v(u, NULL) - margin;
}

static struct defect
random_defect(struct rng *r, enum kind k)
{
	struct defect d;
	double t;

	memset(&d, 0, sizeof d);
	d.kind = k;
	switch (k) {
	case K_CHIP:
		t = rng_range(r, 0.15, 0.65);
		d.uc = -200 + 850 * t;
		d.a = rng_range(r, 14, 24);	/* depth */
		d.b = rng_range(r, 16, 30);	/* half width */
		d.c = rng_range(r, 0, 2 * PI);
		d.u0 = d.uc - d.b - 2;
		d.u1 = d.uc + d.b + 2;
		d.v0 = edge_v(d.uc, NULL) - d.a * 1.3 - 4;
		d.v1 = edge_v(d.uc, NULL) + 4;
		break;
	case K_WAVY:
		t = rng_range(r, 0.15, 0.4);
		d.uc = -200 + 850 * t;
		d.a = rng_range(r, 7, 10);	/* amplitude */
		d.b = rng_range(r, 100, 150);	/* half length */
		d.c = rng_range(r, 35, 55);	/* wavelength */
		d.d = rng_range(r, 0, 2 * PI);
		d.u0 = d.uc - d.b - 2;
		d.u1 = d.uc + d.b + 2;
		d.v0 = edge_v(d.uc + d.b, NULL) - d.a - 4;
		d.v1 = edge_v(d.uc - d.b, NULL) + d.a + 4;
		break;
	case K_SCRATCH:
		for (;;) {
			double ang = rng_range(r, 15, 45) * PI / 180, ex, ey, h;

			if (rng_unit(r) < 0.5)
				ang = -ang;
			d.uc = -200 + 850 * rng_range(r, 0.15, 0.6);
			d.vc = rng_range(r, -60, 60);
			d.a = rng_range(r, 120, 240);
			d.b = ang;
			ex = cos(ang);
			ey = sin(ang);
			for (h = d.a / 2; h > 40; h *= 0.9)
				if (inside_blade(d.uc - h * ex, d.vc - h * ey, 15) &&
				    inside_blade(d.uc + h * ex, d.vc + h * ey, 15))
					break;
			if (h > 40) {
				d.a = 2 * h;
				d.u0 = d.uc - h * fabs(ex) - 6;
				d.u1 = d.uc + h * fabs(ex) + 6;
				d.v0 = d.vc - h * fabs(ey) - 6;
				d.v1 = d.vc + h * fabs(ey) + 6;
				break;
			}
		}
		break;
	case K_RUST:
		do {
			d.uc = -200 + 850 * rng_range(r, 0.15, 0.55);
			d.vc = rng_range(r, -50, 50);
			d.a = rng_range(r, 16, 28);
		} while (!inside_blade(d.uc, d.vc, d.a * 1.4 + 25));
		d.b = rng_range(r, 0, 2 * PI);
		d.c = rng_range(r, 0, 2 * PI);
		d.u0 = d.uc - d.a * 1.5;
		d.u1 = d.uc + d.a * 1.5;
		d.v0 = d.vc - d.a * 1.5;
		d.v1 = d.vc + d.a * 1.5;
		break;
	case K_RUSTC:
	case K_HEAT:
	case K_RESIDUE:
	case K_PIT:
	case K_DENT: {
		/* radius range and strength per kind */
		static const double rr[K_NKIND][2] = {
			[K_RUSTC] = { 16, 28 }, [K_HEAT] = { 45, 65 }, [K_RESIDUE] = { 8, 13 },
			[K_PIT] = { 4, 6 }, [K_DENT] = { 7, 10 },
		};
		do {
			d.uc = -200 + 850 * rng_range(r, 0.15, 0.55);
			d.vc = rng_range(r, -50, 50);
			d.a = rng_range(r, rr[k][0], rr[k][1]);
		} while (!inside_blade(d.uc, d.vc, k == K_HEAT ? d.a * 0.6 + 10 : d.a * 1.4 + 25));
		d.b = rng_range(r, 0, 2 * PI);
		d.c = rng_range(r, 0, 2 * PI);
		d.d = k == K_HEAT ? rng_range(r, 0.45, 0.6) : rng_range(r, 0.6, 0.8);
		d.u0 = d.uc - d.a * 2.5;
		d.u1 = d.uc + d.a * 2.5;
		d.v0 = d.vc - d.a * 2.5;
		d.v1 = d.vc + d.a * 2.5;
		break;
	}
	case K_BENT:
		d.a = rng_range(r, 14, 22) * (rng_unit(r) < 0.5 ? -1 : 1);
		d.u0 = -200 + 850 * 0.79;
		d.u1 = 660;
		d.v0 = -140;
		d.v1 = 160;
		break;
	default:
		break;
	}
	return d;
}

static int
mkdirs(const char *path)
{
	char buf[4096], *p;

	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (p = buf + 1; ; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;

			*p = '\0';
			if (mkdir(buf, 0777) == -1 && errno != EEXIST)
				return -1;
			if ((*p = c) == '\0')
				break;
		}
	}
	return 0;
}

static void
usage(const char *why)
{
	if (why)
		fprintf(stderr, "dq-synth: %s\n", why);
	fprintf(why ? stderr : stdout,
	    "usage: dq-synth -s SEED -o DIR [-W WIDTH] [-H HEIGHT] [-f jpeg|png|webp]\n"
	    "                [--refs N] [--good N] [--defects N] [--kinds LIST]\n");
	exit(why ? DQ_EX_USAGE : 0);
}

static long
number(const char *s, long lo, long hi, const char *what)
{
	char *end, msg[128];
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || v < lo || v > hi) {
		snprintf(msg, sizeof msg, "%s: expected %ld..%ld, got '%s'", what, lo, hi, s);
		usage(msg);
	}
	return v;
}

/* --kinds: names from kind_name, comma-separated, or "all"; how many. */
static int
parse_kinds(const char *list, enum kind out[K_NKIND])
{
	char buf[256], *tok, *save = NULL, msg[300];
	int n = 0, k;

	if (strcmp(list, "all") == 0) {
		for (k = 1; k < K_NKIND; k++)
			out[n++] = (enum kind)k;
		return n;
	}
	if (snprintf(buf, sizeof buf, "%s", list) >= (int)sizeof buf)
		usage("--kinds: too long");
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		for (k = 1; k < K_NKIND && strcmp(tok, kind_name[k]) != 0; k++)
			;
		if (k == K_NKIND || n == K_NKIND) {
			snprintf(msg, sizeof msg, "--kinds: unknown kind '%.40s' (expected all, or of "
			    "chip wavy scratch rust bent_tip rust_tint heat_tint residue pit dent)", tok);
			usage(msg);
		}
		out[n++] = (enum kind)k;
	}
	if (n == 0)
		usage("--kinds: no kind given");
	return n;
}

static int
save(const char *path, const struct dq_raster *r, const char *fmt)
{
	struct dq_err err;
	int rc;

	if (strcmp(fmt, "png") == 0)
		rc = dq_png_write(path, r, &err);
	else if (strcmp(fmt, "webp") == 0)
		rc = dq_webp_write(path, r, 90, &err);
	else
		rc = dq_jpeg_write(path, r, 90, &err);
	if (rc == -1)
		fprintf(stderr, "dq-synth: %s\n", err.msg);
	return rc;
}

int
main(int argc, char *argv[])
{
	static const struct option lo[] = {
		{ "refs", required_argument, NULL, 'r' },
		{ "good", required_argument, NULL, 'g' },
		{ "defects", required_argument, NULL, 'd' },
		{ "kinds", required_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dir = NULL, *fmt = "jpeg", *ext = "jpg";
	char path[4096];
	uint64_t seed = 0;
	long W = 1600, H = 1200, nref = 5, ngood = 5, ndef = 10, i, idx = 0;
	enum kind kinds[K_NKIND];
	int c, haveseed = 0, nkinds = parse_kinds("chip,wavy,scratch,rust,bent_tip", kinds);
	FILE *truth;
	struct shot sh;

	while ((c = getopt_long(argc, argv, "s:o:W:H:f:h", lo, NULL)) != -1) {
		switch (c) {
		case 's': seed = (uint64_t)number(optarg, 0, 0x7fffffffL, "-s"); haveseed = 1; break;
		case 'o': dir = optarg; break;
		case 'W': W = number(optarg, 64, 16000, "-W"); break;
		case 'H': H = number(optarg, 48, 12000, "-H"); break;
		case 'f': fmt = optarg; break;
		case 'r': nref = number(optarg, 0, 99, "--refs"); break;
		case 'g': ngood = number(optarg, 0, 999, "--good"); break;
		case 'd': ndef = number(optarg, 0, 999, "--defects"); break;
		case 'k': nkinds = parse_kinds(optarg, kinds); break;
		case 'h': usage(NULL); break;
		default: usage("unknown option");
		}
	}
	argc -= optind;
	if (argc != 0)
		usage("unexpected arguments");
	if (!haveseed || dir == NULL)
		usage("-s SEED and -o DIR are required");
	if (strcmp(fmt, "jpeg") == 0 || strcmp(fmt, "jpg") == 0) {
		fmt = "jpeg";
		ext = "jpg";
	} else if (strcmp(fmt, "png") == 0 || strcmp(fmt, "webp") == 0)
		ext = fmt;
	else
		usage("-f: expected jpeg, png or webp");
	if (ngood + ndef > 999)
		usage("at most 999 samples");

	sh.W = (int)W;
	sh.H = (int)H;
	sh.s = fmin(W / 1600.0, H / 1200.0);
	snprintf(path, sizeof path, "%s/reference/%s", dir, SKU);
	if (mkdirs(path) == -1) {
		fprintf(stderr, "dq-synth: %s: %s\n", path, strerror(errno));
		return DQ_EX_IOERR;
	}
	snprintf(path, sizeof path, "%s/samples", dir);
	if (mkdirs(path) == -1) {
		fprintf(stderr, "dq-synth: %s: %s\n", path, strerror(errno));
		return DQ_EX_IOERR;
	}
	for (i = 0; i < nref; i++) {
		struct rng r = stream(seed, 1, (uint64_t)i);
		struct dq_raster img;

		sh.p = random_pose(&r, sh.s);
		sh.df = NULL;
		sh.noise_seed = rng_next(&r);
		render(&sh, &img, NULL);
		snprintf(path, sizeof path, "%s/reference/%s/ref-%02ld.png", dir, SKU, i + 1);
		if (save(path, &img, "png") == -1)
			return DQ_EX_IOERR;
		dq_raster_free(&img);
	}
	snprintf(path, sizeof path, "%s/truth.jsonl", dir);
	if ((truth = fopen(path, "w")) == NULL) {
		fprintf(stderr, "dq-synth: %s: %s\n", path, strerror(errno));
		return DQ_EX_IOERR;
	}
	for (i = 0; i < ngood + ndef; i++) {
		struct rng r = stream(seed, 2, (uint64_t)i);
		struct defect df;
		struct dq_raster img;
		enum kind k = i < ngood ? K_NONE : kinds[(i - ngood) % nkinds];
		const char *name = k == K_NONE ? "good" : kind_name[k];
		long box[4];

		idx = i + 1;
		sh.p = random_pose(&r, sh.s);
		df = random_defect(&r, k);
		sh.df = k == K_NONE ? NULL : &df;
		sh.noise_seed = rng_next(&r);
		render(&sh, &img, box);
		snprintf(path, sizeof path, "%s/samples/%s-%03ld.%s", dir, name, idx, ext);
		if (save(path, &img, fmt) == -1)
			return DQ_EX_IOERR;
		dq_raster_free(&img);
		fprintf(truth, "{\"file\":\"samples/%s-%03ld.%s\",\"defect\":%s,\"kind\":\"%s\",\"boxes\":[",
		    name, idx, ext, k == K_NONE ? "false" : "true", kind_name[k]);
		if (k != K_NONE && box[2] > 0)
			fprintf(truth, "{\"x\":%ld,\"y\":%ld,\"width\":%ld,\"height\":%ld}",
			    box[0], box[1], box[2], box[3]);
		fprintf(truth, "]}\n");
	}
	if (ferror(truth) | fclose(truth)) {
		fprintf(stderr, "dq-synth: %s/truth.jsonl: write error\n", dir);
		return DQ_EX_IOERR;
	}
	return 0;
}
