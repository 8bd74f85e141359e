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

json_t *
dq_message_new(const char *image_id, const char *ingested_at, const char *sku,
    const char *facility, json_t *extra, const char *raw_container,
    const struct dq_image_info *in, size_t size, const char *sha256)
{
	char name[64];

	snprintf(name, sizeof name, "%s.%s", image_id, dq_image_ext(in->type));
	return json_pack("{s:s,s:s,s:{s:s,s:s,s:{s:s,s:s},s:s,s:o},s:{s:I,s:s,s:I,s:I}}",
	    "image_id", image_id, "ingested_at", ingested_at,
	    "metadata", "product_sku", sku, "facility", facility,
	    "source_blob", "container", raw_container, "blob_name", name,
	    "content_type", dq_image_mime(in->type),
	    "extra", extra ? extra : json_object(),
	    "image", "size", (json_int_t)size, "sha256", sha256,
	    "width", (json_int_t)in->width, "height", (json_int_t)in->height);
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

/* Blob metadata values are ASCII strings: numbers as decimals, extra as
 * compact ASCII-escaped JSON. */
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
	json_t *extra = ex ? json_loads(ex, JSON_REJECT_DUPLICATES, NULL) : json_object();
	json_t *msg;

	if (!ok || !json_is_object(extra)) {
		json_decref(extra);
		dq_err_record(err, "bad_metadata", "raw blob metadata is incomplete");
		return NULL;
	}
	msg = json_pack("{s:s?,s:s?,s:{s:s?,s:s?,s:{s:s?,s:s?},s:s?,s:o},s:{s:I,s:s?,s:I,s:I}}",
	    "image_id", json_string_value(json_object_get(meta, "image_id")),
	    "ingested_at", json_string_value(json_object_get(meta, "ingested_at")),
	    "metadata",
	    "product_sku", json_string_value(json_object_get(meta, "product_sku")),
	    "facility", json_string_value(json_object_get(meta, "facility")),
	    "source_blob",
	    "container", json_string_value(json_object_get(meta, "source_container")),
	    "blob_name", json_string_value(json_object_get(meta, "source_blob_name")),
	    "content_type", json_string_value(json_object_get(meta, "content_type")),
	    "extra", extra,
	    "image", "size", size,
	    "sha256", json_string_value(json_object_get(meta, "sha256")),
	    "width", w, "height", h);
	if (!msg || dq_message_check(msg, err) < 0 ||
	    !json_string_value(json_object_get(msg, "ingested_at"))) {
		json_decref(msg);
		dq_err_record(err, "bad_metadata", "raw blob metadata is incomplete");
		return NULL;
	}
	return msg;
}

json_t *
dq_extra_parse(const char *text, size_t len, struct dq_err *err)
{
	json_t *j;
	json_error_t je;

	if (len > EXTRA_MAX_BYTES) {
		dq_err_record(err, "bad_metadata", "metadata exceeds %d bytes", EXTRA_MAX_BYTES);
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
				dq_err_record(err, "bad_metadata", "metadata nests deeper than %d levels",
				    EXTRA_MAX_DEPTH);
				return NULL;
			}
		} else if ((c == ']' || c == '}') && depth > 0)
			depth--;
	}
	j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
	if (!j) {
		dq_err_record(err, "bad_metadata", "metadata is not valid JSON: %s", je.text);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		dq_err_record(err, "bad_metadata", "metadata must be a JSON object");
		return NULL;
	}
	return j;
}
