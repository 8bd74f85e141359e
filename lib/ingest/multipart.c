/*
 * multipart.c - a streaming multipart/form-data parser (RFC 7578, 2046).
 *
 * The body goes through one fixed buffer: bytes before the next delimiter
 * go to the current part's sink (the image's spool file, a small bounded
 * field buffer, or nowhere), the last delimiter-length bytes stay until more
 * arrive.  A "\r\n" is put in front of the body so the first delimiter looks
 * like every other one.  Memory is bounded by the buffer and the field caps
 * whatever the body holds.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ingest.h"

#define MP_BUF (64 * 1024)
#define MP_HEADER_MAX (8 * 1024)	/* one part's header block */
#define MP_PARTS_MAX 16
#define MP_PADDING_MAX 64		/* spaces after a delimiter */

struct mp {
	struct dq_multipart *m;
	dq_read_fn rd;
	void *arg;
	long long left;			/* body bytes not read yet */
	unsigned char *buf;
	size_t off, len, cap;
	char dlm[80];			/* "\r\n--" boundary */
	size_t dlen;
	struct dq_err *err;
	/* the current part */
	enum { SINK_NONE, SINK_IMAGE, SINK_FIELD } sink;
	char **field;
	size_t *field_len, field_cap;
	size_t field_fill;
};

static int
fail(struct mp *p, int http, const char *code, const char *msg)
{
	dq_err_record(p->err, code, "%s", msg);
	p->err->http_status = http;
	return -1;
}

/* Read more; 1 got some, 0 at the body's end, -1 error. */
static int
refill(struct mp *p)
{
	long n;
	size_t want;

	if (p->off > 0) {
		memmove(p->buf, p->buf + p->off, p->len - p->off);
		p->len -= p->off;
		p->off = 0;
	}
	if (p->left == 0)
		return 0;
	want = p->cap - p->len;
	if ((long long)want > p->left)
		want = (size_t)p->left;
	if (want == 0)
		return fail(p, 500, "internal", "multipart buffer full");
	n = p->rd(p->buf + p->len, want, p->arg);
	if (n < 0)
		return fail(p, 400, "bad_request", "the request body could not be read");
	if (n == 0)
		return fail(p, 400, "bad_request", "request body shorter than Content-Length");
	p->len += (size_t)n;
	p->left -= n;
	return 1;
}

static int
emit(struct mp *p, const unsigned char *d, size_t n)
{
	struct dq_multipart *m = p->m;

	if (n == 0)
		return 0;
	switch (p->sink) {
	case SINK_NONE:
		return 0;
	case SINK_IMAGE:
		if (m->image_len + (long long)n > m->image_max)
			return fail(p, 413, "image_too_large",
			    "the image is larger than DQ_MAX_IMAGE_BYTES");
		if (dq_write_all(m->image_fd, d, n) < 0)
			return fail(p, 500, "internal", "the image could not be spooled");
		m->image_len += (long long)n;
		return 0;
	case SINK_FIELD:
		if (p->field_fill + n > p->field_cap)
			return fail(p, 400, "field_too_large", "a form field is too large");
		memcpy(*p->field + p->field_fill, d, n);
		p->field_fill += n;
		(*p->field)[p->field_fill] = '\0';
		*p->field_len = p->field_fill;
		return 0;
	}
	return 0;
}

/* Find the next delimiter, streaming what comes before it to the sink. */
static int
to_delimiter(struct mp *p, int preamble)
{
	for (;;) {
		unsigned char *hit = memmem(p->buf + p->off, p->len - p->off,
		    p->dlm, p->dlen);

		if (hit) {
			if (emit(p, p->buf + p->off, (size_t)(hit - (p->buf + p->off))) < 0)
				return -1;
			p->off = (size_t)(hit - p->buf) + p->dlen;
			return 0;
		}
		if (p->len - p->off >= p->dlen) {
			size_t keep = p->dlen - 1, n = p->len - p->off - keep;

			if (emit(p, p->buf + p->off, n) < 0)
				return -1;
			p->off += n;
		}
		switch (refill(p)) {
		case -1:
			return -1;
		case 0:
			if (preamble)
				return fail(p, 400, "malformed_multipart",
				    "no multipart boundary found in the body");
			return fail(p, 400, "malformed_multipart",
			    "unterminated multipart part");
		}
	}
}

/* Need at least n bytes after off: 0 ok, -1 at the end or on error. */
static int
need(struct mp *p, size_t n)
{
	while (p->len - p->off < n) {
		int r = refill(p);

		if (r <= 0)
			return r < 0 ? -1 : fail(p, 400, "malformed_multipart",
			    "multipart body ends inside a delimiter");
	}
	return 0;
}

/*
 * Copy a token or quoted-string parameter value.  A backslash escapes only
 * a quote or a backslash: browsers and curl send a Windows path's
 * backslashes as they are (RFC 7578 §4.2), and "C:\cam" must stay that.
 */
static const char *
param_value(const char *s, char *out, size_t n)
{
	size_t i = 0;

	if (*s == '"') {
		for (s++; *s && *s != '"'; s++) {
			if (*s == '\\' && (s[1] == '"' || s[1] == '\\'))
				s++;
			if (i + 1 < n)
				out[i++] = *s;
		}
		if (*s != '"')
			return NULL;
		s++;
	} else
		while (*s && *s != ';' && *s != ' ' && *s != '\t') {
			if (i + 1 < n)
				out[i++] = *s;
			s++;
		}
	out[i] = '\0';
	return s;
}

/*
 * Content-Disposition: form-data; name="x"; filename="y".  0, or -1 when
 * malformed.  Names are compared exactly: RFC 7578 field names.
 */
static int
disposition(const char *v, char *name, size_t nn, int *has_name,
    char *filename, size_t fn)
{
	while (*v == ' ' || *v == '\t')
		v++;
	if (strncasecmp(v, "form-data", 9) != 0)
		return -1;
	v += 9;
	for (;;) {
		char pname[32];
		size_t i = 0;

		while (*v == ' ' || *v == '\t')
			v++;
		if (*v == '\0')
			return 0;
		if (*v++ != ';')
			return -1;
		while (*v == ' ' || *v == '\t')
			v++;
		while (*v && *v != '=' && *v != ';' && *v != ' ') {
			if (i + 1 >= sizeof pname)
				return -1;
			pname[i++] = *v++;
		}
		pname[i] = '\0';
		if (*v++ != '=')
			return -1;
		if (strcasecmp(pname, "name") == 0) {
			if (*has_name)
				return -1;
			*has_name = 1;
			v = param_value(v, name, nn);
		} else if (strcasecmp(pname, "filename") == 0) {
			v = param_value(v, filename, fn);
		} else {
			char skip[8];

			v = param_value(v, skip, sizeof skip);
		}
		if (v == NULL)
			return -1;
	}
}

static int
part_headers(struct mp *p, char *name, size_t nn, char *filename, size_t fn,
    char *ctype, size_t cn)
{
	size_t total = 0;
	int has_name = 0, has_disp = 0;

	name[0] = filename[0] = ctype[0] = '\0';
	for (;;) {
		unsigned char *eol;
		char line[MP_HEADER_MAX + 1], *colon, *v;
		size_t n;

		while ((eol = memmem(p->buf + p->off, p->len - p->off, "\r\n", 2)) == NULL) {
			int r;

			if (p->len - p->off > MP_HEADER_MAX)
				return fail(p, 400, "malformed_multipart",
				    "multipart part headers too long");
			if ((r = refill(p)) <= 0)
				return r < 0 ? -1 : fail(p, 400, "malformed_multipart",
				    "unterminated multipart part headers");
		}
		n = (size_t)(eol - (p->buf + p->off));
		total += n + 2;
		if (n > MP_HEADER_MAX || total > MP_HEADER_MAX)
			return fail(p, 400, "malformed_multipart",
			    "multipart part headers too long");
		memcpy(line, p->buf + p->off, n);
		line[n] = '\0';
		p->off += n + 2;
		if (n == 0)
			break;
		if (memchr(line, '\0', n) || (colon = strchr(line, ':')) == NULL ||
		    line[0] == ' ' || line[0] == '\t')
			return fail(p, 400, "malformed_multipart",
			    "malformed multipart part header");
		*colon = '\0';
		v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		if (strcasecmp(line, "Content-Disposition") == 0) {
			if (has_disp++ || disposition(v, name, nn, &has_name,
			    filename, fn) < 0)
				return fail(p, 400, "malformed_multipart",
				    "malformed Content-Disposition in a multipart part");
		} else if (strcasecmp(line, "Content-Type") == 0) {
			if (ctype[0] != '\0' ||
			    dq_http_ctype(v, ctype, cn, NULL, 0) < 0)
				return fail(p, 400, "malformed_multipart",
				    "malformed Content-Type in a multipart part");
		}
	}
	if (!has_name || name[0] == '\0')
		return fail(p, 400, "malformed_multipart",
		    "a multipart part without a form-data name");
	return 0;
}

static int
start_part(struct mp *p, const char *name, const char *filename, const char *ctype)
{
	struct dq_multipart *m = p->m;
	const char *dup = NULL;

	p->sink = SINK_NONE;
	if (++m->parts > MP_PARTS_MAX)
		return fail(p, 400, "malformed_multipart", "too many multipart parts");
	if (strcmp(name, "image") == 0) {
		if (m->image_seen)
			dup = name;
		else {
			m->image_seen = 1;
			snprintf(m->image_type, sizeof m->image_type, "%s", ctype);
			snprintf(m->image_filename, sizeof m->image_filename, "%s", filename);
			p->sink = SINK_IMAGE;
		}
	} else {
		struct { const char *n; char **f; size_t *l; size_t cap; } t[] = {
			{ "product_sku", &m->sku, &m->sku_len, m->field_max },
			{ "facility", &m->facility, &m->facility_len, m->field_max },
			{ "metadata", &m->metadata, &m->metadata_len, m->metadata_max },
		};
		size_t i;

		for (i = 0; i < sizeof t / sizeof t[0]; i++) {
			if (strcmp(name, t[i].n) != 0)
				continue;
			if (*t[i].f) {
				dup = name;
				break;
			}
			*t[i].f = dq_xcalloc(1, t[i].cap + 1);
			*t[i].l = 0;
			p->field = t[i].f;
			p->field_len = t[i].l;
			p->field_cap = t[i].cap;
			p->field_fill = 0;
			p->sink = SINK_FIELD;
		}
	}
	if (dup) {
		dq_err_record(p->err, "malformed_multipart",
		    "multipart part \"%s\" given twice", dup);
		p->err->http_status = 400;
		return -1;
	}
	return 0;
}

int
dq_multipart_parse(struct dq_multipart *m, dq_read_fn rd, void *arg,
    long long length, struct dq_err *err)
{
	struct mp p;
	int rc = -1;

	memset(&p, 0, sizeof p);
	m->image_seen = 0;
	m->image_len = 0;
	m->parts = 0;
	p.m = m;
	p.rd = rd;
	p.arg = arg;
	p.left = length;
	p.err = err;
	if (m->boundary == NULL || *m->boundary == '\0' || strlen(m->boundary) > 70)
		return fail(&p, 400, "malformed_multipart", "multipart boundary missing");
	p.dlen = (size_t)snprintf(p.dlm, sizeof p.dlm, "\r\n--%s", m->boundary);
	p.cap = MP_BUF;
	p.buf = dq_xmalloc(p.cap);
	memcpy(p.buf, "\r\n", 2);
	p.len = 2;
	if (to_delimiter(&p, 1) < 0)
		goto out;
	for (;;) {
		char name[64], filename[256], ctype[128];
		size_t pad = 0;

		if (need(&p, 2) < 0)
			goto out;
		if (memcmp(p.buf + p.off, "--", 2) == 0)
			break;	/* the close delimiter; the epilogue is ignored */
		while (p.buf[p.off] == ' ' || p.buf[p.off] == '\t') {
			p.off++;
			if (++pad > MP_PADDING_MAX || need(&p, 2) < 0) {
				if (pad > MP_PADDING_MAX)
					fail(&p, 400, "malformed_multipart",
					    "malformed multipart delimiter");
				goto out;
			}
		}
		if (memcmp(p.buf + p.off, "\r\n", 2) != 0) {
			fail(&p, 400, "malformed_multipart", "malformed multipart delimiter");
			goto out;
		}
		p.off += 2;
		if (part_headers(&p, name, sizeof name, filename, sizeof filename,
		    ctype, sizeof ctype) < 0)
			goto out;
		if (start_part(&p, name, filename, ctype) < 0)
			goto out;
		if (to_delimiter(&p, 0) < 0)
			goto out;
		p.sink = SINK_NONE;
	}
	rc = 0;
out:
	free(p.buf);
	return rc;
}

void
dq_multipart_free(struct dq_multipart *m)
{
	free(m->sku);
	free(m->facility);
	free(m->metadata);
	m->sku = m->facility = m->metadata = NULL;
}
