/*
 * message.c - the queue message body and its copy in the raw blob's
 * metadata, so that a message can be rebuilt from the store alone.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dq.h"

#define EXTRA_MAX_BYTES 4096
#define EXTRA_MAX_DEPTH 8

int
dq_safe_token(const char *s)
{
	size_t n = 0;

	if (!s)
		return 0;
	for (; s[n]; n++) {
		char c = s[n];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return n > 0 && n <= 64 && s[0] != '.';
}

/* The UTF-8 character at s (n bytes left): its length and *cp, or 0 when
 * the bytes are no valid UTF-8 (overlong, a surrogate, beyond Unicode). */
static size_t
utf8_char(const unsigned char *s, size_t n, unsigned *cp)
{
	unsigned c = s[0];
	size_t len, i;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf)
		len = 2, *cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3, *cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4, *cp = c & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		*cp = *cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && *cp < 0x800) || (len == 4 && (*cp < 0x10000 || *cp > 0x10ffff)) ||
	    (*cp >= 0xd800 && *cp <= 0xdfff))
		return 0;
	return len;
}

/* A printable character at s: its length, or 0 (a control, DEL, a C1
 * control, or no valid UTF-8). */
static size_t
utf8_printable(const unsigned char *s, size_t n)
{
	unsigned cp;
	size_t len = utf8_char(s, n, &cp);

	if (len == 0 || cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
		return 0;
	return len;
}

char *
dq_utf8_fix(const char *s)
{
	size_t n = strlen(s), o = 0, k;
	char *out = dq_xmalloc(n * 3 + 1);
	unsigned cp;

	while (n > 0) {
		if ((k = utf8_char((const unsigned char *)s, n, &cp)) == 0) {
			memcpy(out + o, "\xef\xbf\xbd", 3);	/* U+FFFD */
			o += 3;
			k = 1;
		} else {
			memcpy(out + o, s, k);
			o += k;
		}
		s += k;
		n -= k;
	}
	out[o] = '\0';
	return out;
}

int
dq_file_name(const char *path, char out[static DQ_FILE_NAME_MAX + 1])
{
	const unsigned char *s;
	size_t n, o = 0, k;

	out[0] = '\0';
	if (path == NULL)
		return 0;
	/* The last component, whichever separator the sender's system uses. */
	for (s = (const unsigned char *)path + strlen(path); s > (const unsigned char *)path &&
	    s[-1] != '/' && s[-1] != '\\'; s--)
		;
	n = strlen((const char *)s);
	while (n > 0) {
		if ((k = utf8_printable(s, n)) == 0) {
			k = 1;
			if (o + 1 > DQ_FILE_NAME_MAX)
				break;
			out[o++] = '_';
		} else {
			if (o + k > DQ_FILE_NAME_MAX)
				break;
			memcpy(out + o, s, k);
			o += k;
		}
		s += k;
		n -= k;
	}
	out[o] = '\0';
	if (strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
		out[0] = '\0';
	return out[0] != '\0';
}

json_t *
dq_message_new(const char *image_id, const char *ingested_at, const char *sku,
    const char *facility, json_t *extra, const char *raw_container,
    const struct dq_image_info *in, size_t size, const char *sha256,
    const char *file_name)
{
	char name[64];
	json_t *msg, *md;

	snprintf(name, sizeof name, "%s.%s", image_id, dq_image_ext(in->type));
	msg = json_pack("{s:s,s:s,s:{s:s,s:s,s:{s:s,s:s},s:s},s:{s:I,s:s,s:I,s:I}}",
	    "image_id", image_id, "ingested_at", ingested_at,
	    "metadata", "product_sku", sku, "facility", facility,
	    "source_blob", "container", raw_container, "blob_name", name,
	    "content_type", dq_image_mime(in->type),
	    "image", "size", (json_int_t)size, "sha256", sha256,
	    "width", (json_int_t)in->width, "height", (json_int_t)in->height);
	md = json_object_get(msg, "metadata");
	/* The key order is the contract: file_name (when known), then extra. */
	if (file_name && *file_name)
		json_object_set_new(md, "file_name", json_string(file_name));
	json_object_set_new(md, "extra", extra ? extra : json_object());
	return msg;
}

int
dq_message_check(json_t *msg, struct dq_err *err)
{
	const char *id, *sku, *fac, *cont, *blob;
	json_t *md;

	if (!json_is_object(msg)) {
		dq_err_record(err, "bad_message", "message is not a JSON object");
		return -1;
	}
	id = json_string_value(json_object_get(msg, "image_id"));
	md = json_object_get(msg, "metadata");
	sku = json_string_value(json_object_get(md, "product_sku"));
	fac = json_string_value(json_object_get(md, "facility"));
	blob = dq_message_blob(msg, &cont);
	if (!dq_uuid_valid(id)) {
		dq_err_record(err, "bad_message", "message has no valid image_id");
		return -1;
	}
	if (!dq_safe_token(sku) || !dq_safe_token(fac)) {
		dq_err_record(err, "bad_message", "message lacks a valid product_sku or facility");
		return -1;
	}
	if (!blob || !cont || !dq_safe_token(cont) || !dq_safe_token(blob) ||
	    strncmp(blob, id, 36) != 0) {
		dq_err_record(err, "bad_message", "message has no valid source_blob");
		return -1;
	}
	if (json_object_get(md, "file_name") && !json_is_string(json_object_get(md, "file_name"))) {
		dq_err_record(err, "bad_message", "message's file_name is not a string");
		return -1;
	}
	return 0;
}

const char *
dq_message_blob(json_t *msg, const char **container)
{
	json_t *sb = json_object_get(json_object_get(msg, "metadata"), "source_blob");

	if (container)
		*container = json_string_value(json_object_get(sb, "container"));
	return json_string_value(json_object_get(sb, "blob_name"));
}

/*
 * file_name in blob metadata: bytes outside 0x21..0x7e, and '%', as %XX,
 * so the value is ASCII and has no spaces a header could trim.
 */
static char *
pct_encode(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = dq_xmalloc(strlen(s) * 3 + 1), *o = out;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c > 0x20 && c < 0x7f && c != '%')
			*o++ = (char)c;
		else {
			*o++ = '%';
			*o++ = hex[c >> 4];
			*o++ = hex[c & 15];
		}
	}
	*o = '\0';
	return out;
}

static int
hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 :
	    c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The file name back from metadata: NULL when malformed or no longer a
 * name dq_file_name would keep unchanged. */
static char *
pct_decode(const char *s)
{
	char *out = dq_xmalloc(strlen(s) + 1), *o = out;
	char check[DQ_FILE_NAME_MAX + 1];

	for (; *s; s++) {
		if (*s != '%')
			*o++ = *s;
		else if (hexval(s[1]) >= 0 && hexval(s[2]) >= 0) {
			*o++ = (char)(hexval(s[1]) << 4 | hexval(s[2]));
			s += 2;
		} else
			break;
	}
	*o = '\0';
	if (*s || !dq_file_name(out, check) || strcmp(check, out) != 0) {
		free(out);
		return NULL;
	}
	return out;
}

/* Blob metadata values are ASCII strings: numbers as decimals, extra as
 * compact ASCII-escaped JSON, file_name percent-encoded. */
json_t *
dq_message_to_metadata(json_t *msg)
{
	json_t *md = json_object_get(msg, "metadata"), *im = json_object_get(msg, "image");
	const char *cont, *blob = dq_message_blob(msg, &cont);
	char *extra = json_dumps(json_object_get(md, "extra"),
	    JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(15) | JSON_ENCODE_ANY);
	char size[32], w[32], h[32];
	json_t *o;

	snprintf(size, sizeof size, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(im, "size")));
	snprintf(w, sizeof w, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(im, "width")));
	snprintf(h, sizeof h, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(im, "height")));
	o = json_pack("{s:s?,s:s?,s:s?,s:s?,s:s?,s:s?,s:s?,s:s,s:s?,s:s,s:s,s:s}",
	    "image_id", json_string_value(json_object_get(msg, "image_id")),
	    "ingested_at", json_string_value(json_object_get(msg, "ingested_at")),
	    "product_sku", json_string_value(json_object_get(md, "product_sku")),
	    "facility", json_string_value(json_object_get(md, "facility")),
	    "source_container", cont, "source_blob_name", blob,
	    "content_type", json_string_value(json_object_get(md, "content_type")),
	    "extra", extra ? extra : "{}",
	    "sha256", json_string_value(json_object_get(im, "sha256")),
	    "size", size, "width", w, "height", h);
	if (json_string_value(json_object_get(md, "file_name"))) {
		char *fn = pct_encode(json_string_value(json_object_get(md, "file_name")));

		json_object_set_new(o, "file_name", json_string(fn));
		free(fn);
	}
	free(extra);
	return o;
}

static json_int_t
meta_int(json_t *meta, const char *k, int *ok)
{
	const char *s = json_string_value(json_object_get(meta, k));
	char *end;
	long long v;

	if (!s) {
		*ok = 0;
		return 0;
	}
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < 0)
		*ok = 0;
	return v;
}

json_t *
dq_message_from_metadata(json_t *meta, struct dq_err *err)
{
	int ok = 1;
	json_int_t size = meta_int(meta, "size", &ok), w = meta_int(meta, "width", &ok),
	    h = meta_int(meta, "height", &ok);
	const char *ex = json_string_value(json_object_get(meta, "extra"));
	const char *fn = json_string_value(json_object_get(meta, "file_name"));
	json_t *extra = ex ? json_loads(ex, JSON_REJECT_DUPLICATES, NULL) : json_object();
	json_t *msg;
	char *file_name = fn ? pct_decode(fn) : NULL;

	if (!ok || !json_is_object(extra) || (fn && !file_name) ||
	    (json_object_get(meta, "file_name") && !fn)) {
		json_decref(extra);
		free(file_name);
		dq_err_record(err, "bad_metadata", "raw blob metadata is incomplete");
		return NULL;
	}
	msg = json_pack("{s:s?,s:s?,s:{s:s?,s:s?,s:{s:s?,s:s?},s:s?},s:{s:I,s:s?,s:I,s:I}}",
	    "image_id", json_string_value(json_object_get(meta, "image_id")),
	    "ingested_at", json_string_value(json_object_get(meta, "ingested_at")),
	    "metadata",
	    "product_sku", json_string_value(json_object_get(meta, "product_sku")),
	    "facility", json_string_value(json_object_get(meta, "facility")),
	    "source_blob",
	    "container", json_string_value(json_object_get(meta, "source_container")),
	    "blob_name", json_string_value(json_object_get(meta, "source_blob_name")),
	    "content_type", json_string_value(json_object_get(meta, "content_type")),
	    "image", "size", size,
	    "sha256", json_string_value(json_object_get(meta, "sha256")),
	    "width", w, "height", h);
	if (msg) {
		/* In dq_message_new's key order. */
		json_t *md = json_object_get(msg, "metadata");

		if (file_name)
			json_object_set_new(md, "file_name", json_string(file_name));
		json_object_set_new(md, "extra", extra);
	} else
		json_decref(extra);
	free(file_name);
	if (!msg || dq_message_check(msg, err) < 0 ||
	    !json_string_value(json_object_get(msg, "ingested_at"))) {
		json_decref(msg);
		dq_err_record(err, "bad_metadata", "raw blob metadata is incomplete");
		return NULL;
	}
	return msg;
}

json_t *
dq_extra_parse(const char *what, const char *text, size_t len, struct dq_err *err)
{
	json_t *j;
	json_error_t je;

	if (len > EXTRA_MAX_BYTES) {
		dq_err_record(err, "bad_metadata", "%s exceeds %d bytes", what, EXTRA_MAX_BYTES);
		return NULL;
	}
	/* Bound nesting before Jansson recurses into it: brackets outside
	 * strings, which the length limit keeps cheap to count. */
	for (size_t i = 0, depth = 0, in_str = 0; i < len; i++) {
		char c = text[i];

		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
		} else if (c == '"')
			in_str = 1;
		else if (c == '[' || c == '{') {
			if (++depth > EXTRA_MAX_DEPTH) {
				dq_err_record(err, "bad_metadata", "%s nests deeper than %d levels",
				    what, EXTRA_MAX_DEPTH);
				return NULL;
			}
		} else if ((c == ']' || c == '}') && depth > 0)
			depth--;
	}
	j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
	if (!j) {
		dq_err_record(err, "bad_metadata", "%s is not valid JSON: %s", what, je.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		dq_err_record(err, "bad_metadata", "%s must be a JSON object", what);
		return NULL;
	}
	return j;
}
