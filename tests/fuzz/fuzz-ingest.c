/*
 * fuzz-ingest - libFuzzer target for dq-ingest's request parsing: media
 * types, query strings, forwarded addresses, credentials, origins, the
 * multipart body (read in chunks of every size), the metadata JSON and the
 * image validation (sniffing, then decoding with libjpeg, libpng, libwebp).
 *
 * Input: four header lines, then the body:
 *   Content-Type \n query string \n X-Forwarded-For \n credential \n body
 * The first byte also picks the read chunk size, so delimiters fall across
 * every buffer boundary.  corpus/raw-jpeg is made so:
 *   { printf 'image/jpeg\nproduct_sku=A&facility=B\n::1\nBearer s3cret\n';
 *     cat tests/bats/fixtures/a.jpg; } >tests/fuzz/corpus/raw-jpeg
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ingest/ingest.h"

struct mem {
	const unsigned char *p;
	size_t n, chunk;
};

static long
mem_read(void *buf, size_t n, void *arg)
{
	struct mem *m = arg;

	if (n > m->n)
		n = m->n;
	if (n > m->chunk)
		n = m->chunk;
	memcpy(buf, m->p, n);
	m->p += n;
	m->n -= n;
	return (long)n;
}

/* The next line of the input as a string (malloc'd), "" past the end. */
static char *
line(const unsigned char **p, size_t *n)
{
	const unsigned char *nl = memchr(*p, '\n', *n);
	size_t len = nl ? (size_t)(nl - *p) : *n;
	char *s = malloc(len + 1);

	memcpy(s, *p, len);
	s[len] = '\0';
	*p += nl ? len + 1 : len;
	*n -= nl ? len + 1 : len;
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int devnull = -1;
	static const size_t chunks[] = { 65536, 1, 2, 3, 7, 64, 4096, 65535 };
	const unsigned char *p = data;
	size_t n = size, chunk = size ? chunks[data[0] % 8] : 65536;
	char *ctype, *query, *xff, *cred, type[128], boundary[128], client[64], name[64];
	char *v = NULL;
	size_t vlen, clen;
	long long cl;
	const char *c;
	struct dq_err err;

	if (devnull < 0)
		devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	ctype = line(&p, &n);
	query = line(&p, &n);
	xff = line(&p, &n);
	cred = line(&p, &n);

	dq_http_content_length(ctype, &cl);
	dq_http_content_length(query, &cl);
	dq_http_idem_key_valid(cred);
	dq_http_client_addr("127.0.0.1", xff, "127.0.0.0/8, ::1, 10.0.0.0/8", client, sizeof client);
	dq_http_client_addr(cred, xff, query, client, sizeof client);
	dq_http_addr_in(cred, xff);
	dq_http_origin_allowed(query, xff);
	c = dq_http_credential(cred, xff, &clen);
	dq_http_auth("camera:s3cret, bare, ops:", c, clen, name, sizeof name);
	dq_http_auth(query, c, clen, name, sizeof name);
	{
		/* SCRIPT_NAME into a Location: never a CR, LF or space */
		char mount[256], bad[32];

		if (dq_http_script_path(query, mount, sizeof mount) == 0 &&
		    strpbrk(mount, "\r\n \"<>") != NULL)
			abort();
		dq_http_list_check(xff, dq_http_origin_entry_ok, bad, sizeof bad);
		dq_http_list_check(cred, dq_http_proxy_entry_ok, bad, sizeof bad);
		dq_http_list_check(query, dq_http_key_entry_ok, NULL, 0);
	}
	for (const char *k = "product_sku\0facility\0metadata\0"; *k; k += strlen(k) + 1) {
		if (dq_http_query(query, k, 4096, &v, &vlen) == 1) {
			json_t *j = dq_extra_parse("metadata", v, vlen, &err);

			json_decref(j);
		}
		free(v);
		v = NULL;
	}
	if (dq_http_ctype(ctype, type, sizeof type, boundary, sizeof boundary) == 0 &&
	    boundary[0]) {
		struct dq_multipart mp = { 0 };
		struct mem m = { p, n, chunk };

		mp.boundary = boundary;
		mp.image_fd = devnull;
		mp.image_max = 1 << 16;
		mp.field_max = 64;
		mp.metadata_max = 1 << 14;
		if (dq_multipart_parse(&mp, mem_read, &m, (long long)n, &err) == 0 &&
		    mp.metadata) {
			json_t *j = dq_extra_parse("metadata", mp.metadata, mp.metadata_len, &err);

			json_decref(j);
		}
		dq_multipart_free(&mp);
	} else {
		struct dq_image_info info;

		/* The whole validation, the codecs' decoding included, as an
		 * upload gets it; pixels bounded so that a run stays fast. */
		dq_cfg.max_image_bytes = 1 << 16;
		dq_cfg.max_image_pixels = 1 << 22;
		dq_image_validate(p, n, &info, &err);
	}
	free(ctype);
	free(query);
	free(xff);
	free(cred);
	return 0;
}
