/*
 * refan_model.c - the reference model of one SKU: built from its
 * known-good images, cached in a file named by a hash of what it was built
 * from, loaded from there by later processes.  See dq-reference(7).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "refan.h"

#define MODEL_MAGIC "DQREFM1"

static const struct dq_refparams default_params = {
	.k = 5, .k_low = 2.5, .jitter_px = 0.35, .jitter_deg = 0.05,
	.min_area = 20, .merge_gap = 12, .outline_px = 3, .working_size = 800,
};

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
    struct dq_refparams *pr, struct dq_err *err)
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

void
dq_refmodel_free(struct dq_refmodel *m)
{
	if (m == NULL)
		return;
	free(m->mean);
	free(m->sd);
	free(m->warm);
	free(m->fg);
	free(m->outline);
	free(m->odist);
	dq_pyramid_free(m->lv);
	free(m);
}

/* Things derived from mean and sd: masks, axis, the pyramid. */
static void
model_derive(struct dq_refmodel *m)
{
	size_t i, n = (size_t)m->W * m->H;
	int x, y, hist[1024] = { 0 }, cnt = 0, bw;
	double tau, p99 = 0, sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0, area = 0;
	double pmin = INFINITY, pmax = -INFINITY, nlo = 0, nhi = 0, ang;
	struct dq_plane T = { m->W, m->H, m->mean };
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
	dq_mask_filter(m->outline, m->W, m->H, m->pr.outline_px, 1);
	dq_mask_filter(er, m->W, m->H, m->pr.outline_px, 0);
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
	dq_pyramid_make(m->lv, &T);
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
model_load(struct dq_refmodel *m, const char *path)
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
model_save(const struct dq_refmodel *m, const char *dir, const char *path)
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
model_build(struct dq_refmodel *m, const char *skudir, struct refimg *ri, int nimg,
    struct dq_err *err)
{
	struct dq_plane *g, *wm, acc, acc2, accw, tmp;
	struct dq_warp *wp;
	struct dq_pyrlevel lv[DQ_NLEV];
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
		dq_to_grid(&r, m->W, m->H, &g[i], &wm[i]);
		dq_raster_free(&r);
		continue;
bad_image:
		dq_err_system(err, DQ_EX_CONFIG, "bad_reference",
		    "%s/%s: reference image cannot be decoded: %s", skudir, ri[i].name, e2.msg);
		goto out;
	}
	n = (size_t)m->W * m->H;
	/* register every reference to the first, then to their mean */
	tmp = dq_plane_new(m->W, m->H);
	dq_pyramid_make(lv, &g[0]);
	for (pass = 0; pass < 2; pass++) {
		memset(tmp.p, 0, n * sizeof(float));
		for (i = 0; i < nimg; i++) {
			struct dq_plane o = dq_plane_new(m->W, m->H);

			wp[i] = dq_register(lv, &g[i]);
			dq_warp_apply(&g[i], &wp[i], 0, 0, 0, &o, wp[i].a, wp[i].b);
			for (p = 0; p < n; p++)
				tmp.p[p] += o.p[p] / nimg;
			dq_plane_free(&o);
		}
		dq_pyramid_free(lv);
		dq_pyramid_make(lv, &tmp);
	}
	dq_pyramid_free(lv);
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
			struct dq_plane o = dq_plane_new(m->W, m->H);
			size_t off = 0;

			dq_warp_apply(&g[i], &wp[i], 0, 0, 0, &o, wp[i].a, wp[i].b);
			for (p = 0; p < n; p++)
				off += fabsf(o.p[p] - tmp.p[p]) > 20;
			dq_plane_free(&o);
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
			dq_plane_free(&tmp);
			goto out;
		}
	}
	dq_plane_free(&tmp);
	/* every reference under jitter: mean and deviation of all copies */
	acc = dq_plane_new(m->W, m->H);
	acc2 = dq_plane_new(m->W, m->H);
	accw = dq_plane_new(m->W, m->H);
	{
		double jp = m->pr.jitter_px, jr = m->pr.jitter_deg * M_PI / 180;
		const double jit[11][3] = {
			{ 0, 0, 0 }, { -jp, 0, 0 }, { jp, 0, 0 }, { 0, -jp, 0 },
			{ 0, jp, 0 }, { -jp, -jp, 0 }, { jp, jp, 0 }, { -jp, jp, 0 },
			{ jp, -jp, 0 }, { 0, 0, -jr }, { 0, 0, jr },
		};
		struct dq_plane o = dq_plane_new(m->W, m->H), ow = dq_plane_new(m->W, m->H);

		for (i = 0; i < nimg; i++)
			for (j = 0; j < 11; j++) {
				dq_warp_apply(&g[i], &wp[i], jit[j][0], jit[j][1], jit[j][2],
				    &o, wp[i].a, wp[i].b);
				dq_warp_apply(&wm[i], &wp[i], jit[j][0], jit[j][1], jit[j][2],
				    &ow, wp[i].a, 0);
				for (p = 0; p < n; p++) {
					acc.p[p] += o.p[p];
					acc2.p[p] += o.p[p] * o.p[p];
					accw.p[p] += ow.p[p];
				}
				nn++;
			}
		dq_plane_free(&o);
		dq_plane_free(&ow);
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
	dq_float_maxbox(m->sd, m->W, m->H);
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
	dq_plane_free(&acc);
	dq_plane_free(&acc2);
	dq_plane_free(&accw);
	rc = 0;
out:
	for (i = 0; i < nimg; i++) {
		dq_plane_free(&g[i]);
		dq_plane_free(&wm[i]);
	}
	free(g);
	free(wm);
	free(wp);
	return rc;
}

/* Load (from the cache) or build the model of sku. */
struct dq_refmodel *
dq_refmodel_get(const char *refdir, const char *cachedir, const char *sku,
    struct dq_err *err)
{
	struct dq_refmodel *m;
	char *skudir = NULL, *ppath = NULL, *mpath = NULL, hex[65];
	unsigned char *ptext = NULL;
	size_t plen = 0;
	struct refimg *ri = NULL;
	int nimg = 0, cap = 0, i;
	DIR *d;
	struct dirent *de;
	json_t *hash_in = NULL;
	char *hash_text = NULL;

	if (!sku_ok(sku)) {
		dq_err_record(err, "no_reference",
		    "SKU \"%s\" cannot name a reference directory", sku);
		return NULL;
	}
	skudir = dq_xasprintf("%s/%s", refdir, sku);
	{
		/* DQ_REFERENCE_DIR itself must be a readable directory */
		DIR *top = opendir(refdir);

		if (top == NULL) {
			dq_err_system(err, DQ_EX_CONFIG, "reference_unreadable",
			    "DQ_REFERENCE_DIR %s: %s", refdir, strerror(errno));
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
	hash_in = json_pack("{s:s, s:s%}", "algorithm", DQ_REFAN_ALGO, "thresholds",
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
	if (cachedir) {
		mpath = dq_xasprintf("%s/%s.%s.model", cachedir, sku, m->sha);
		if (model_load(m, mpath) == 0)
			goto derive;
	}
	if (model_build(m, skudir, ri, nimg, err) == -1)
		goto fail_m;
	if (mpath && model_save(m, cachedir, mpath) == -1)
		dq_log(DQ_WARNING, "cache", json_pack("{s:s}", "file", mpath),
		    "cannot cache the reference model: %s", strerror(errno));
	dq_log(DQ_INFO, "reference_model", json_pack("{s:s, s:i, s:s}", "sku", sku,
	    "images", nimg, "model_sha256", m->sha), "built the reference model of %s from %d images",
	    sku, nimg);
derive:
	model_derive(m);
	m->nimg = nimg;
	goto done;
fail_m:
	dq_refmodel_free(m);
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
