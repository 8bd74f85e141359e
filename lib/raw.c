/*
 * raw.c - storing a raw image and building its message: the one path of
 * dq-put FILE and dq-ingest (DESIGN §2, §5).
 *
 * The rules live here and nowhere else:
 * - An id names one image, whatever its type: <id>.jpg stored makes
 *   <id>.png a conflict, never a second image whose message would collide
 *   with the first on the queue.
 * - Raw writes are create-only.  The same bytes already stored are
 *   success; their message is the stored one (read back from the blob's
 *   metadata), so a retry answers what the first attempt answered.
 * - The same bytes without a whole message in their metadata are what a
 *   first attempt left when it failed between the image and its metadata
 *   (a full disk, a killed writer): the retry completes them with its own
 *   message instead of refusing forever.
 * - Other bytes under the id are a conflict that keeps the first.
 * The check for another type comes before the write, so a conflict writes
 * nothing, and again after it: two writers of different types racing on
 * one id both look before either writes, and then each finds the other.
 * Whoever finds the other after writing removes its own image and reports
 * the conflict, so at most one stays (both may be refused).
 */
#include <stdlib.h>
#include <string.h>

#include "dq.h"

int
dq_raw_prepare(struct dq_raw *r, struct dq_err *err)
{
	if (dq_image_validate(r->data, r->len, &r->info, err) < 0)
		return -1;
	dq_sha256_hex(r->data, r->len, r->sha256);
	return 0;
}

static int
conflict(struct dq_err *err, const char *id, const char *blob, const char *why)
{
	dq_err_record(err, "conflict", "image id %s is already stored as %s/%s (%s)",
	    id, dq_cfg.raw_container, blob, why);
	return -1;
}

/* Another type already stored under the id: 1 (name in other), 0, -1. */
static int
other_type(struct dq_store *s, const struct dq_raw *r, char *other, size_t n,
    struct dq_err *err)
{
	for (int t = DQ_IMG_JPEG; t <= DQ_IMG_WEBP; t++) {
		int e;

		if (t == (int)r->info.type)
			continue;
		snprintf(other, n, "%s.%s", r->image_id, dq_image_ext((enum dq_image_type)t));
		if ((e = dq_store_exists(s, dq_cfg.raw_container, other, err)) != 0)
			return e;
	}
	return 0;
}

/*
 * The blob is there: the same bytes with a whole message (existing), the
 * same bytes without one (repaired), or a conflict.
 */
static int
settle_existing(struct dq_store *s, struct dq_raw *r, json_t *meta, struct dq_err *err)
{
	unsigned char *old = NULL;
	size_t oldlen = 0;
	json_t *oldmeta = NULL, *orig = NULL;
	struct dq_put_result pr;
	struct dq_err e2;
	int got, rc = -1;

	got = dq_store_get(s, dq_cfg.raw_container, r->blob, &old, &oldlen, &oldmeta, err);
	if (got < 0)
		goto out;
	if (got == 0) {
		/* removed between the two calls: nothing to compare, try again */
		dq_err_system(err, DQ_EX_TEMPFAIL, "store_race",
		    "%s/%s vanished while being compared", dq_cfg.raw_container, r->blob);
		goto out;
	}
	if (oldlen != r->len || memcmp(old, r->data, r->len) != 0) {
		conflict(err, r->image_id, r->blob, "with other content");
		goto out;
	}
	if (oldmeta && (orig = dq_message_from_metadata(oldmeta, &e2)) &&
	    strcmp(json_string_value(json_object_get(orig, "image_id")), r->image_id) == 0 &&
	    json_equal(json_object_get(json_object_get(orig, "image"), "sha256"),
	    json_object_get(json_object_get(r->msg, "image"), "sha256"))) {
		json_decref(r->msg);
		r->msg = orig;
		orig = NULL;
		r->existing = 1;
		rc = 0;
		goto out;
	}
	/* A first attempt that stopped between the image and its metadata. */
	if (dq_store_put_hashed(s, dq_cfg.raw_container, r->blob, r->data, r->len,
	    r->sha256, dq_image_mime(r->info.type), meta, DQ_PUT_REPLACE, &pr, err) < 0)
		goto out;
	snprintf(r->etag, sizeof r->etag, "%s", pr.etag);
	r->repaired = 1;
	dq_log(DQ_WARNING, "repaired", json_pack("{s:s,s:s}", "image_id", r->image_id,
	    "blob", r->blob), "completed %s/%s, left without its metadata by an earlier attempt",
	    dq_cfg.raw_container, r->blob);
	rc = 0;
out:
	free(old);
	json_decref(oldmeta);
	json_decref(orig);
	return rc;
}

int
dq_raw_store(struct dq_store *s, struct dq_raw *r, const char *id, struct dq_err *err)
{
	struct dq_put_result pr;
	char now[21], other[64], fname[DQ_FILE_NAME_MAX + 1];
	json_t *meta = NULL;
	int rc = -1, e, random_id = id == NULL;

	r->msg = NULL;
	r->created = r->existing = r->repaired = 0;
	r->etag[0] = '\0';
	if (id)
		snprintf(r->image_id, sizeof r->image_id, "%s", id);
	else
		dq_uuid_new(r->image_id);
	snprintf(r->blob, sizeof r->blob, "%s.%s", r->image_id, dq_image_ext(r->info.type));
	if ((e = other_type(s, r, other, sizeof other, err)) != 0) {
		if (e > 0)
			conflict(err, r->image_id, other, "an id names one image, whatever its type");
		return -1;
	}
	dq_rfc3339(time(NULL), now);
	r->msg = dq_message_new(r->image_id, now, r->sku, r->facility,
	    r->extra ? json_deep_copy(r->extra) : NULL, dq_cfg.raw_container, &r->info,
	    r->len, r->sha256, dq_file_name(r->file_name, fname) ? fname : NULL);
	meta = dq_message_to_metadata(r->msg);
	/* Hashed once, by dq_raw_prepare: the store takes the hash along. */
	if (dq_store_put_hashed(s, dq_cfg.raw_container, r->blob, r->data, r->len,
	    r->sha256, dq_image_mime(r->info.type), meta, DQ_PUT_CREATE, &pr, err) < 0) {
		/* The image may be written without its metadata.  A random id
		 * cannot be retried, so nothing could ever complete it. */
		if (random_id) {
			struct dq_err e2;

			if (dq_store_del(s, dq_cfg.raw_container, r->blob, &e2) < 0)
				dq_log_err(DQ_WARNING, "orphan", json_pack("{s:s}",
				    "image_id", r->image_id), &e2);
		}
		goto out;
	}
	if (pr.existing)
		rc = settle_existing(s, r, meta, err);
	else {
		snprintf(r->etag, sizeof r->etag, "%s", pr.etag);
		r->created = 1;
		rc = 0;
		/*
		 * A writer of another type may have looked before this image
		 * was there, and this one before its image was: whoever finds
		 * the other after writing backs off, so at most one stays.
		 */
		if ((e = other_type(s, r, other, sizeof other, err)) != 0) {
			struct dq_err e2;

			if (dq_store_del(s, dq_cfg.raw_container, r->blob, &e2) < 0)
				dq_log_err(DQ_WARNING, "orphan", json_pack("{s:s}",
				    "image_id", r->image_id), &e2);
			if (e > 0)
				conflict(err, r->image_id, other,
				    "written at the same time; an id names one image");
			r->created = 0;
			rc = -1;
		}
	}
	if (rc == 0 && !r->etag[0])
		snprintf(r->etag, sizeof r->etag, "%s", pr.etag);
out:
	json_decref(meta);
	if (rc < 0) {
		json_decref(r->msg);
		r->msg = NULL;
	}
	return rc;
}

void
dq_raw_free(struct dq_raw *r)
{
	json_decref(r->msg);
	r->msg = NULL;
}
