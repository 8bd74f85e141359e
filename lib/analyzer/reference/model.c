/*
 * model.c - the reference model of one SKU: built from its
 * known-good images, cached in a file named by a hash of what it was built
 * from (each reference's hash found through index.c), loaded from there by
 * later processes.  See dq-reference(7).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "reference.h"

#define MODEL_MAGIC "DQREFM2"
#define MODEL_PLANES 6	/* mean, sd, ma, mb, sa, sb */

static const struct dq_refparams default_params = {
	.k = 5, .k_low = 2.5, .jitter_px = 0.35, .jitter_deg = 0.05,
	.chroma_weight = 1,
	.major_area = 0.3, .critical_area = 2, .major_ratio = 4, .critical_ratio = 5,
	.min_area = 20, .merge_gap = 12, .outline_px = 3, .working_size = 800,
};

/* The keys of reference.json: where each goes and what it may be. */
static const struct param {
	const char *key;
	size_t off;
	int integer;
	double lo, hi;	/* lo excluded when lo_open */
	int lo_open;
} params[] = {
	{ "k", offsetof(struct dq_refparams, k), 0, 0, 100, 1 },
	{ "k_low", offsetof(struct dq_refparams, k_low), 0, 0, 100, 1 },
	{ "jitter_px", offsetof(struct dq_refparams, jitter_px), 0, 0, 5, 0 },
	{ "jitter_deg", offsetof(struct dq_refparams, jitter_deg), 0, 0, 2, 0 },
	{ "chroma_weight", offsetof(struct dq_refparams, chroma_weight), 0, 0, 10, 0 },
	{ "major_area", offsetof(struct dq_refparams, major_area), 0, 0, 100, 1 },
	{ "critical_area", offsetof(struct dq_refparams, critical_area), 0, 0, 100, 1 },
	{ "major_ratio", offsetof(struct dq_refparams, major_ratio), 0, 1, 100, 0 },
	{ "critical_ratio", offsetof(struct dq_refparams, critical_ratio), 0, 1, 100, 0 },
	{ "min_area", offsetof(struct dq_refparams, min_area), 1, 1, 1e6, 0 },
	{ "merge_gap", offsetof(struct dq_refparams, merge_gap), 1, 0, 100, 0 },
	{ "outline_px", offsetof(struct dq_refparams, outline_px), 1, 1, 50, 0 },
	{ "working_size", offsetof(struct dq_refparams, working_size), 1, 64, 4096, 0 },
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
		const struct param *q = NULL;
		size_t i;

		for (i = 0; i < sizeof params / sizeof params[0]; i++)
			if (strcmp(key, params[i].key) == 0)
				q = &params[i];
		if (q == NULL || !json_is_number(v) || d > q->hi || d < q->lo ||
		    (q->lo_open && d == q->lo) || (q->integer && d != floor(d)))
			goto bad;
		if (q->integer)
			*(int *)(void *)((char *)pr + q->off) = (int)d;
		else
			*(double *)(void *)((char *)pr + q->off) = d;
	}
	json_decref(j);
	if (pr->k_low > pr->k || pr->major_area > pr->critical_area ||
	    pr->major_ratio > pr->critical_ratio) {
		dq_err_system(err, DQ_EX_CONFIG, "bad_thresholds",
		    "%s: k_low must not exceed k, nor a major_ limit its critical_ one", path);
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
	free(m->ma);
	free(m->mb);
	free(m->sa);
	free(m->sb);
	free(m->fg);
	free(m->solid);
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
	/*
	 * The part is solid: background-like pixels enclosed by it (dark
	 * texture, rivets, engraving) are inside it, not outline.  Close the
	 * mask by outline_px, so that texture reaching the outline through a
	 * narrow gap is enclosed too, then flood the background from the
	 * frame; what it cannot reach is part.
	 */
	m->solid = dq_xmalloc(n);
	memset(m->solid, 1, n);
	{
		int *st = dq_xmalloc(n * sizeof(int)), sp = 0;
		unsigned char *cl = dq_xmalloc(n);

		memcpy(cl, m->fg, n);
		dq_mask_filter(cl, m->W, m->H, m->pr.outline_px, 1);
		dq_mask_filter(cl, m->W, m->H, m->pr.outline_px, 0);

		for (y = 0; y < m->H; y++)
			for (x = 0; x < m->W; x++) {
				size_t o = (size_t)y * m->W + x;

				if ((x == 0 || y == 0 || x == m->W - 1 || y == m->H - 1) &&
				    !cl[o] && m->solid[o]) {
					m->solid[o] = 0;
					st[sp++] = (int)o;
				}
			}
		while (sp > 0) {
			int q = st[--sp], qx = q % m->W, qy = q / m->W, k;
			static const int ddx[4] = { 1, -1, 0, 0 }, ddy[4] = { 0, 0, 1, -1 };

			for (k = 0; k < 4; k++) {
				int nx = qx + ddx[k], ny = qy + ddy[k];
				size_t o;

				if (nx < 0 || ny < 0 || nx >= m->W || ny >= m->H)
					continue;
				o = (size_t)ny * m->W + nx;
				if (!cl[o] && m->solid[o]) {
					m->solid[o] = 0;
					st[sp++] = (int)o;
				}
			}
		}
		free(cl);
		free(st);
	}
	/* outline band: within outline_px of the part's boundary */
	m->outline = dq_xmalloc(n);
	er = dq_xmalloc(n);
	memcpy(m->outline, m->solid, n);
	memcpy(er, m->solid, n);
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
			const unsigned char *sm = m->solid;
			int b = (x > 0 && sm[o - 1] != sm[o]) ||
			    (y > 0 && sm[o - m->W] != sm[o]) ||
			    (x < m->W - 1 && sm[o + 1] != sm[o]) ||
			    (y < m->H - 1 && sm[o + m->W] != sm[o]);

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
			if (m->solid[(size_t)y * m->W + x]) {
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
			if (m->solid[(size_t)y * m->W + x]) {
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
			if (m->solid[(size_t)y * m->W + x]) {
				double p = (x - m->ax_cx) * m->ax_ex + (y - m->ax_cy) * m->ax_ey;

				pmin = fmin(pmin, p);
				pmax = fmax(pmax, p);
			}
	m->tip_len = pmax > pmin ? pmax - pmin : 1;
	for (y = 0; y < m->H; y++)
		for (x = 0; x < m->W; x++)
			if (m->solid[(size_t)y * m->W + x]) {
				double p = (x - m->ax_cx) * m->ax_ex + (y - m->ax_cy) * m->ax_ey;

				nlo += p < pmin + 0.08 * m->tip_len;
				nhi += p > pmax - 0.08 * m->tip_len;
			}
	m->tip_end = nhi <= nlo ? pmax : pmin;
	dq_pyramid_make(m->lv, &T);
}

/*
 * Model file: a header (magic, key, sizes, the checksum), then the planes
 * mean, sd, ma, mb, sa, sb as native floats.  The checksum is the SHA-256
 * of the whole file with its own field zeroed: a file partly overwritten,
 * truncated or from another machine does not load and is rebuilt.
 */
struct mhdr {
	char magic[8];
	char sha[65];
	char sum[65];
	char pad[6];
	int32_t W, H, nimg, endian, nplanes, pad2;
	int64_t ref_w, ref_h;
};

static float **
model_planes(struct dq_refmodel *m, float *pl[MODEL_PLANES])
{
	pl[0] = m->mean;
	pl[1] = m->sd;
	pl[2] = m->ma;
	pl[3] = m->mb;
	pl[4] = m->sa;
	pl[5] = m->sb;
	return pl;
}

/* The checksum of a whole model file d of len bytes, its own field as zeros. */
static void
model_sum(const unsigned char *d, size_t len, char hex[65])
{
	static const unsigned char zero[65];
	size_t off = offsetof(struct mhdr, sum);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0, i;
	EVP_MD_CTX *c = EVP_MD_CTX_new();

	if (c == NULL || EVP_DigestInit_ex(c, dq_md_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(c, d, off) != 1 || EVP_DigestUpdate(c, zero, 65) != 1 ||
	    EVP_DigestUpdate(c, d + off + 65, len - off - 65) != 1 ||
	    EVP_DigestFinal_ex(c, md, &mdlen) != 1)
		dq_die(DQ_EX_IOERR, "SHA-256 failed");
	EVP_MD_CTX_free(c);
	for (i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

/*
 * 0 loaded; -1 with errno ENOENT (no file: build it) or EINVAL (a file
 * that is not a whole model of this key: rebuild it), why saying which.
 */
static int
model_load(struct dq_refmodel *m, const char *path, const char **why)
{
	unsigned char *d;
	size_t len, n, i;
	struct mhdr h;
	char sum[65];
	float *pl[MODEL_PLANES];

	*why = NULL;
	if (read_all(path, &d, &len) == -1)
		return -1;
	if (len < sizeof h) {
		*why = "truncated";
		goto bad;
	}
	memcpy(&h, d, sizeof h);
	n = (size_t)h.W * h.H;
	if (memcmp(h.magic, MODEL_MAGIC, 8) != 0 || h.endian != 0x01020304 ||
	    h.nplanes != MODEL_PLANES || memcmp(h.sha, m->sha, 65) != 0) {
		*why = "not a model of this build";
		goto bad;
	}
	if (h.W < 16 || h.H < 16 || h.W > 8192 || h.H > 8192 ||
	    len != sizeof h + MODEL_PLANES * n * sizeof(float)) {
		*why = "the wrong size";
		goto bad;
	}
	model_sum(d, len, sum);
	if (h.sum[64] != '\0' || strcmp(sum, h.sum) != 0) {
		*why = "checksum mismatch";
		goto bad;
	}
	m->W = h.W;
	m->H = h.H;
	m->nimg = h.nimg;
	m->ref_w = (long)h.ref_w;
	m->ref_h = (long)h.ref_h;
	m->mean = dq_xmalloc(n * sizeof(float));
	m->sd = dq_xmalloc(n * sizeof(float));
	m->ma = dq_xmalloc(n * sizeof(float));
	m->mb = dq_xmalloc(n * sizeof(float));
	m->sa = dq_xmalloc(n * sizeof(float));
	m->sb = dq_xmalloc(n * sizeof(float));
	model_planes(m, pl);
	for (i = 0; i < MODEL_PLANES; i++)
		memcpy(pl[i], d + sizeof h + i * n * sizeof(float), n * sizeof(float));
	free(d);
	return 0;
bad:
	free(d);
	errno = EINVAL;
	return -1;
}

static int
model_save(struct dq_refmodel *m, const char *dir, const char *path)
{
	struct mhdr h;
	size_t n = (size_t)m->W * m->H, len = sizeof h + MODEL_PLANES * n * sizeof(float), i;
	unsigned char *buf;
	float *pl[MODEL_PLANES];
	char *tmp, id[37];
	int fd, ok;

	memset(&h, 0, sizeof h);
	memcpy(h.magic, MODEL_MAGIC, 8);
	memcpy(h.sha, m->sha, 65);
	h.W = m->W;
	h.H = m->H;
	h.nimg = m->nimg;
	h.endian = 0x01020304;
	h.nplanes = MODEL_PLANES;
	h.ref_w = m->ref_w;
	h.ref_h = m->ref_h;
	buf = dq_xmalloc(len);
	memcpy(buf, &h, sizeof h);
	model_planes(m, pl);
	for (i = 0; i < MODEL_PLANES; i++)
		memcpy(buf + sizeof h + i * n * sizeof(float), pl[i], n * sizeof(float));
	model_sum(buf, len, h.sum);
	memcpy(buf + offsetof(struct mhdr, sum), h.sum, 65);
	if (dq_mkdirs(dir, 0777) == -1) {
		free(buf);
		return -1;
	}
	dq_refcache_sweep(dir);
	/* 0644 less the umask, as the index (dq_write_atomic) */
	dq_uuid_new(id);
	tmp = dq_xasprintf("%s.tmp.%s", path, id);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) == -1) {
		free(tmp);
		free(buf);
		return -1;
	}
	ok = dq_write_all(fd, buf, len) == 0 && fsync(fd) == 0;
	free(buf);
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

/* The median of a variance plane: the noise of flat areas. */
static double
var_floor(const float *v, size_t n)
{
	int hist[4096] = { 0 }, c = 0, j;
	size_t p;

	for (p = 0; p < n; p++) {
		int b = (int)(v[p] * 16);

		hist[b < 0 ? 0 : b > 4095 ? 4095 : b]++;
	}
	for (j = 0; j < 4096; j++)
		if ((c += hist[j]) * 2 >= (int)n)
			break;
	return j / 16.0;
}

static int
model_build(struct dq_refmodel *m, const char *skudir, struct dq_refimage *ri, int nimg,
    struct dq_err *err)
{
	struct dq_plane *g, *ca, *cb, acc, acc2, tmp, accc[2], accc2[2];
	struct dq_warp *wp;
	struct dq_pyrlevel lv[DQ_NLEV];
	int i, pass, j, rc = -1;
	size_t p, n;
	double ws, nn = 0;

	g = dq_xcalloc(nimg, sizeof *g);
	ca = dq_xcalloc(nimg, sizeof *ca);
	cb = dq_xcalloc(nimg, sizeof *cb);
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
		dq_to_grid(&r, m->W, m->H, &g[i], &ca[i], &cb[i]);
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
	for (j = 0; j < 2; j++) {
		accc[j] = dq_plane_new(m->W, m->H);
		accc2[j] = dq_plane_new(m->W, m->H);
	}
	{
		double jp = m->pr.jitter_px, jr = m->pr.jitter_deg * M_PI / 180;
		const double jit[11][3] = {
			{ 0, 0, 0 }, { -jp, 0, 0 }, { jp, 0, 0 }, { 0, -jp, 0 },
			{ 0, jp, 0 }, { -jp, -jp, 0 }, { jp, jp, 0 }, { -jp, jp, 0 },
			{ jp, -jp, 0 }, { 0, 0, -jr }, { 0, 0, jr },
		};
		struct dq_plane o = dq_plane_new(m->W, m->H), oc = dq_plane_new(m->W, m->H);
		int c;

		for (i = 0; i < nimg; i++)
			for (j = 0; j < 11; j++) {
				dq_warp_apply(&g[i], &wp[i], jit[j][0], jit[j][1], jit[j][2],
				    &o, wp[i].a, wp[i].b);
				for (p = 0; p < n; p++) {
					acc.p[p] += o.p[p];
					acc2.p[p] += o.p[p] * o.p[p];
				}
				for (c = 0; c < 2; c++) {
					dq_warp_apply(c ? &cb[i] : &ca[i], &wp[i], jit[j][0],
					    jit[j][1], jit[j][2], &oc, wp[i].a, 0);
					for (p = 0; p < n; p++) {
						accc[c].p[p] += oc.p[p];
						accc2[c].p[p] += oc.p[p] * oc.p[p];
					}
				}
				nn++;
			}
		dq_plane_free(&o);
		dq_plane_free(&oc);
	}
	m->mean = dq_xmalloc(n * sizeof(float));
	m->sd = dq_xmalloc(n * sizeof(float));
	m->ma = dq_xmalloc(n * sizeof(float));
	m->mb = dq_xmalloc(n * sizeof(float));
	m->sa = dq_xmalloc(n * sizeof(float));
	m->sb = dq_xmalloc(n * sizeof(float));
	for (p = 0; p < n; p++) {
		double mean = acc.p[p] / nn, ma = accc[0].p[p] / nn, mb = accc[1].p[p] / nn;

		m->mean[p] = (float)mean;
		m->sd[p] = (float)fmax(acc2.p[p] / nn - mean * mean, 0);
		m->ma[p] = (float)ma;
		m->mb[p] = (float)mb;
		m->sa[p] = (float)fmax(accc2[0].p[p] / nn - ma * ma, 0);
		m->sb[p] = (float)fmax(accc2[1].p[p] / nn - mb * mb, 0);
	}
	/*
	 * Spread the variance a little (3x3 max, 3x3 mean) and add a noise
	 * floor.  Chroma is spread twice: cameras and JPEG blur colour over
	 * two pixels where they keep luma sharp.  Its floor is the larger of
	 * its own and luma's, so that on a flat surface a colour change counts
	 * like a brightness change of the same visibility.
	 */
	{
		double fl, fa, fb;

		dq_float_maxbox(m->sd, m->W, m->H);
		for (j = 0; j < 2; j++) {
			dq_float_maxbox(m->sa, m->W, m->H);
			dq_float_maxbox(m->sb, m->W, m->H);
		}
		fl = fmax(var_floor(m->sd, n), 1.0);
		fa = fmax(var_floor(m->sa, n), fl);
		fb = fmax(var_floor(m->sb, n), fl);
		for (p = 0; p < n; p++) {
			/* CIEDE2000's chroma weight, S_C = 1 + 0.045 C*ab */
			double sc = 1 + 0.045 * DQ_LAB_PER_LEVEL * hypot(m->ma[p], m->mb[p]);

			m->sd[p] = (float)sqrt(m->sd[p] + fl);
			m->sa[p] = (float)(sc * sqrt(m->sa[p] + fa));
			m->sb[p] = (float)(sc * sqrt(m->sb[p] + fb));
		}
	}
	m->nimg = nimg;
	dq_plane_free(&acc);
	dq_plane_free(&acc2);
	for (j = 0; j < 2; j++) {
		dq_plane_free(&accc[j]);
		dq_plane_free(&accc2[j]);
	}
	rc = 0;
out:
	for (i = 0; i < nimg; i++) {
		dq_plane_free(&g[i]);
		dq_plane_free(&ca[i]);
		dq_plane_free(&cb[i]);
	}
	free(g);
	free(ca);
	free(cb);
	free(wp);
	return rc;
}

int
dq_reference_skus(const char *refdir, char *only, size_t size, struct dq_err *err)
{
	DIR *d, *sd;
	struct dirent *de, *se;
	int nsku = 0, ndirs = 0, nimg = 0;
	char img[128] = "";

	if (refdir == NULL || *refdir == '\0') {
		dq_err_system(err, DQ_EX_CONFIG, "config",
		    "DQ_REFERENCE_DIR is not set: the reference analyzer needs a directory "
		    "of known-good images per SKU, <dir>/<SKU>/<images>");
		return -1;
	}
	if ((d = opendir(refdir)) == NULL) {
		dq_err_system(err, DQ_EX_CONFIG, "reference_unreadable",
		    "DQ_REFERENCE_DIR %s: %s; expected a directory of SKU directories "
		    "of known-good images, %s/<SKU>/<images>", refdir, strerror(errno), refdir);
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		char *p;

		if (de->d_name[0] == '.')
			continue;
		if (is_image_name(de->d_name)) {
			if (nimg++ == 0)
				snprintf(img, sizeof img, "%.100s", de->d_name);
			continue;
		}
		if (!sku_ok(de->d_name))
			continue;
		p = dq_xasprintf("%s/%s", refdir, de->d_name);
		if ((sd = opendir(p)) != NULL) {
			ndirs++;
			while ((se = readdir(sd)) != NULL && !is_image_name(se->d_name))
				;
			if (se != NULL && (nsku++ == 0 || strcmp(de->d_name, only) < 0))
				snprintf(only, size, "%s", de->d_name);
			closedir(sd);
		}
		free(p);
	}
	closedir(d);
	if (nsku > 0)
		return nsku;
	if (nimg > 0)
		dq_err_system(err, DQ_EX_CONFIG, "bad_reference_dir",
		    "DQ_REFERENCE_DIR %s holds images (%s%s) but no SKU directory (one level "
		    "too deep?): expected %s/<SKU>/<images>; point it at its parent",
		    refdir, img, nimg > 1 ? ", ..." : "", refdir);
	else if (ndirs == 0)
		dq_err_system(err, DQ_EX_CONFIG, "bad_reference_dir",
		    "DQ_REFERENCE_DIR %s holds no SKU directory: expected %s/<SKU>/<images>",
		    refdir, refdir);
	else
		dq_err_system(err, DQ_EX_CONFIG, "bad_reference_dir",
		    "DQ_REFERENCE_DIR %s holds %d director%s but none with PNG, JPEG or WebP "
		    "images: expected %s/<SKU>/<images>", refdir, ndirs, ndirs > 1 ? "ies" : "y",
		    refdir);
	return -1;
}

int
dq_cachedir_check(const char *cachedir, struct dq_err *err)
{
	char *p, *slash;
	struct stat st;
	int rc = -1;

	if (cachedir == NULL)
		return 0;
	p = dq_xstrdup(cachedir);
	/* the directory, or the nearest ancestor that exists: it must be written */
	while (stat(p, &st) == -1) {
		if (errno != ENOENT || (slash = strrchr(p, '/')) == NULL) {
			dq_err_system(err, DQ_EX_CONFIG, "cache_unwritable",
			    "DQ_CACHE_DIR %s: %s: %s; expected a directory the reference models "
			    "can be written to", cachedir, p, strerror(errno));
			goto out;
		}
		if (slash == p)
			slash[1] = '\0';
		else
			*slash = '\0';
	}
	if (!S_ISDIR(st.st_mode) || access(p, W_OK | X_OK) == -1) {
		dq_err_system(err, DQ_EX_CONFIG, "cache_unwritable",
		    "DQ_CACHE_DIR %s: %s %s; expected a directory the reference models "
		    "can be written to", cachedir, p,
		    !S_ISDIR(st.st_mode) ? "is not a directory" : "cannot be written");
		goto out;
	}
	rc = 0;
out:
	free(p);
	return rc;
}

/*
 * The key, in m->sha: the algorithm, the bytes of reference.json and each
 * reference's name, size and SHA-256, in the order of their names.
 */
static void
model_key(struct dq_refmodel *m, const unsigned char *ptext, size_t plen,
    const struct dq_refimage *ri, int nimg)
{
	json_t *in = json_pack("{s:s, s:s%, s:[]}", "algorithm", DQ_REFERENCE_ALGO,
	    "thresholds", ptext ? (const char *)ptext : "", ptext ? plen : (size_t)0,
	    "images"), *arr = json_object_get(in, "images");
	char *text;
	int i;

	for (i = 0; i < nimg; i++)
		json_array_append_new(arr, json_pack("[s, I, s]", ri[i].name,
		    (json_int_t)ri[i].len, ri[i].sha));
	if ((text = json_dumps(in, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
		dq_die(DQ_EX_IOERR, "out of memory");
	dq_sha256_hex(text, strlen(text), m->sha);
	free(text);
	json_decref(in);
}

/* Load (from the cache) or build the model of sku. */
struct dq_refmodel *
dq_refmodel_get(const char *refdir, const char *cachedir, const char *sku,
    struct dq_err *err)
{
	struct dq_refmodel *m;
	char *skudir = NULL, *ppath = NULL, *mpath = NULL;
	unsigned char *ptext = NULL;
	size_t plen = 0;
	struct dq_refimage *ri = NULL;
	int nimg = 0, cap = 0, i;
	DIR *d;
	struct dirent *de;

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
		memset(&ri[nimg], 0, sizeof ri[nimg]);
		ri[nimg].name = dq_xstrdup(de->d_name);
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
	/* the key: the references' hashes from the index where it can vouch */
	if (dq_refindex_hash(cachedir, skudir, sku, ri, nimg, err) == -1)
		goto fail_m;
	model_key(m, ptext, plen, ri, nimg);
	if (cachedir) {
		const char *why;

		mpath = dq_xasprintf("%s/%s.%s.model", cachedir, sku, m->sha);
		if (model_load(m, mpath, &why) == 0)
			goto derive;
		if (why)
			dq_log(DQ_WARNING, "cache_corrupt", json_pack("{s:s, s:s, s:s}",
			    "sku", sku, "file", mpath, "reason", why),
			    "cached reference model %s is unusable (%s): rebuilding it", mpath, why);
	}
	/*
	 * A build reads what the index vouched for, and keys the model by the
	 * bytes it was built from, as if nothing had been vouched for.
	 */
	for (i = 0; i < nimg; i++)
		if (ri[i].data == NULL && dq_refimage_read(skudir, &ri[i], err) == -1)
			goto fail_m;
	model_key(m, ptext, plen, ri, nimg);
	if (mpath) {
		free(mpath);
		mpath = dq_xasprintf("%s/%s.%s.model", cachedir, sku, m->sha);
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
	/*
	 * A SKU without references is the record's fault only when the
	 * directory holds references at all: otherwise it is the setting's
	 * (one level too deep, empty), and every record would fail alike.
	 */
	if (err->scope == DQ_SCOPE_RECORD && strcmp(err->code, "no_reference") == 0) {
		char only[80];

		(void)dq_reference_skus(refdir, only, sizeof only, err);
	}
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
	return m;
}
