/*
 * artifact.c - the processed document of DESIGN §2, built from a message
 * and an analyzer's answer.
 *
 * The artifact is what downstream applications read, so its shape is
 * fixed here once for every analyzer: the key order, the vocabulary, the
 * rounding.  An answer that does not fit is refused (fail closed), never
 * repaired into "no defect".
 *
 * Below are the store rules of DESIGN section 2, in one place: first
 * writer wins; a replaced artifact is kept as <id>.<time>.json; a failure
 * marker keeps the history of the message ids that failed, so that a
 * redelivery of the same message is skipped while a message sent anew is
 * analyzed again.
 */
#include <stdlib.h>
#include <string.h>

#include "dq.h"

const char *const dq_severities[] = {
	"none", "minor", "major", "critical", NULL,
};

const char *const dq_defect_types[] = {
	"none", "edge_irregularity", "chip", "crack", "scratch", "rust",
	"discoloration", "burr", "bend", "handle_defect", "contamination",
	"other", NULL,
};

static int
one_of(const char *s, const char *const *list)
{
	for (; s && *list; list++)
		if (strcmp(s, *list) == 0)
			return 1;
	return 0;
}

static int
box_ok(json_t *b, long w, long h)
{
	json_t *v[4];
	json_int_t n[4];
	static const char *const keys[] = { "x", "y", "width", "height" };

	if (!json_is_object(b) || json_object_size(b) != 4)
		return 0;
	for (int i = 0; i < 4; i++) {
		v[i] = json_object_get(b, keys[i]);
		if (!json_is_integer(v[i]))
			return 0;
		n[i] = json_integer_value(v[i]);
	}
	return n[0] >= 0 && n[1] >= 0 && n[2] > 0 && n[3] > 0 &&
	    n[0] + n[2] <= w && n[1] + n[3] <= h;
}

int
dq_findings_check(json_t *f, long width, long height, struct dq_err *err)
{
	json_t *det = json_object_get(f, "defect_detected");
	json_t *conf = json_object_get(f, "confidence");
	json_t *boxes = json_object_get(f, "bounding_boxes"), *b;
	const char *sev = json_string_value(json_object_get(f, "severity"));
	const char *type = json_string_value(json_object_get(f, "defect_type"));
	double c;
	size_t i;

	if (!json_is_object(f) || !json_is_boolean(det) ||
	    !json_is_string(json_object_get(f, "description")) ||
	    !json_is_number(conf) || !json_is_array(boxes)) {
		dq_err_record(err, "bad_findings", "the analyzer's findings lack a "
		    "required key or have one of the wrong type");
		return -1;
	}
	if (!one_of(sev, dq_severities) || !one_of(type, dq_defect_types)) {
		dq_err_record(err, "bad_findings", "severity \"%s\" or defect_type \"%s\" "
		    "is outside the vocabulary", sev ? sev : "", type ? type : "");
		return -1;
	}
	if (json_is_true(det) != (strcmp(sev, "none") != 0) ||
	    json_is_true(det) != (strcmp(type, "none") != 0)) {
		dq_err_record(err, "bad_findings", "defect_detected disagrees with "
		    "severity \"%s\" and defect_type \"%s\"", sev, type);
		return -1;
	}
	c = json_number_value(conf);
	if (!(c >= 0 && c <= 1)) {
		dq_err_record(err, "bad_findings", "confidence %g is outside [0,1]", c);
		return -1;
	}
	json_array_foreach(boxes, i, b)
		if (!box_ok(b, width, height)) {
			dq_err_record(err, "bad_findings", "bounding box %zu is not inside "
			    "the %ldx%ld image with a positive size", i, width, height);
			return -1;
		}
	return 0;
}

/* defect_findings in the artifact's key order; other keys follow. */
static json_t *
findings_ordered(json_t *f)
{
	static const char *const order[] = {
		"defect_detected", "defect_type", "severity", "description",
		"confidence", "bounding_boxes", NULL,
	};
	json_t *o = json_object(), *v;
	const char *k;

	for (int i = 0; order[i]; i++)
		json_object_set(o, order[i], json_object_get(f, order[i]));
	json_object_set_new(o, "confidence",
	    json_real(dq_round(json_number_value(json_object_get(f, "confidence")), 4)));
	json_object_foreach(f, k, v)
		if (!json_object_get(o, k))
			json_object_set(o, k, v);
	return o;
}

json_t *
dq_artifact_new(json_t *msg, const struct dq_analysis *a, const char *analyzer,
    const char *sha256, const struct dq_image_info *in, const char *processed_at,
    int64_t duration_ms)
{
	json_t *doc, *analysis, *img, *v, *mine;
	const char *k;

	img = json_pack("{s:s,s:I,s:I}", "sha256", sha256,
	    "width", (json_int_t)in->width, "height", (json_int_t)in->height);
	/* the analyzer's own image keys (what it sent, at what detail) follow */
	if ((mine = json_object_get(a->analysis, "image")))
		json_object_update_missing(img, mine);
	analysis = json_pack("{s:s}", "analyzer", analyzer);
	json_object_foreach(a->analysis, k, v) {
		if (strcmp(k, "image") == 0)
			json_object_set(analysis, k, img);
		else if (strcmp(k, "analyzer") != 0 && strcmp(k, "duration_ms") != 0)
			json_object_set(analysis, k, v);
	}
	if (!mine)
		json_object_set(analysis, "image", img);
	json_decref(img);
	json_object_set_new(analysis, "duration_ms", json_integer(duration_ms));

	doc = json_pack("{s:O,s:{s:O,s:s},s:O,s:o,s:s,s:o}",
	    "image_id", json_object_get(msg, "image_id"),
	    "timestamps", "ingested_at", json_object_get(msg, "ingested_at"),
	    "processed_at", processed_at,
	    "metadata", json_object_get(msg, "metadata"),
	    "defect_findings", findings_ordered(a->findings),
	    "model_version", a->model_version,
	    "analysis", analysis);
	if (!doc)
		dq_die(DQ_EX_TEMPFAIL, "cannot build the artifact");
	return doc;
}

/* ---- artifacts and failure markers in the store ---- */

int
dq_message_reprocess(json_t *msg, time_t *requested_at)
{
	json_t *rp = json_object_get(msg, "reprocess");
	time_t requested;

	if (!json_is_object(rp) ||
	    dq_parse_rfc3339(json_string_value(json_object_get(rp, "requested_at")), &requested) < 0)
		return 0;
	if (requested_at)
		*requested_at = requested;
	return 1;
}

/* doc as a line of JSON in the processed container. */
static int
put_json(struct dq_store *s, const char *name, json_t *doc, enum dq_put_mode mode,
    struct dq_put_result *res, struct dq_err *err)
{
	char *text = dq_json_dumps(doc);
	int r;

	text = dq_xrealloc(text, strlen(text) + 2);
	strcat(text, "\n");
	r = dq_store_put(s, dq_cfg.processed_container, name, text, strlen(text),
	    "application/json", NULL, mode, res, err);
	free(text);
	return r;
}

/* A blob of the processed container as JSON: 1 with *doc, 0 absent, -1 error. */
static int
get_json(struct dq_store *s, const char *name, json_t **doc, struct dq_err *err)
{
	unsigned char *data = NULL;
	size_t len;
	int r;

	*doc = NULL;
	if ((r = dq_store_get(s, dq_cfg.processed_container, name, &data, &len, NULL, err)) <= 0)
		return r;
	*doc = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, NULL);
	free(data);
	if (!json_is_object(*doc)) {
		json_decref(*doc);
		*doc = json_object();	/* unreadable: as good as empty */
		dq_log(DQ_WARNING, "unreadable", json_pack("{s:s}", "blob", name),
		    "%s/%s is not a JSON object: ignored", dq_cfg.processed_container, name);
	}
	return 1;
}

/*
 * A marker's failures, first first.  A marker written before the history
 * was kept stands for one failure of the message id it names (or none).
 */
static json_t *
marker_failures(json_t *m)
{
	json_t *f = json_object_get(m, "failures");

	if (json_is_array(f))
		return json_incref(f);
	if (!json_object_get(m, "error"))
		return json_array();
	return json_pack("[{s:O?,s:O?,s:O?,s:O}]",
	    "message_id", json_object_get(m, "message_id"),
	    "failed_at", json_object_get(m, "failed_at"),
	    "attempts", json_object_get(m, "attempts"),
	    "error", json_object_get(m, "error"));
}

/* The failure of message id mid (NULL: the last one), or NULL. */
static json_t *
failure_of(json_t *failures, const char *mid)
{
	json_t *f;
	size_t i;

	if (!mid)
		return json_array_get(failures, json_array_size(failures) - 1);
	json_array_foreach(failures, i, f) {
		const char *fm = json_string_value(json_object_get(f, "message_id"));

		if (fm && strcmp(fm, mid) == 0)
			return f;
	}
	return NULL;
}

int
dq_skip_existing(struct dq_store *s, json_t *rec, json_t **skipped, struct dq_err *err)
{
	json_t *msg = json_object_get(rec, "message"), *doc = NULL, *failures, *f;
	const char *id = json_string_value(json_object_get(msg, "image_id"));
	const char *mid = json_string_value(json_object_get(json_object_get(rec, "receipt"), "message_id"));
	char name[64];
	time_t asked, done;
	int r;

	*skipped = NULL;
	dq_artifact_name(id, name, sizeof name);
	if (dq_message_reprocess(msg, &asked)) {
		/* Replace the artifact, unless this request was already done. */
		if ((r = get_json(s, name, &doc, err)) < 0)
			return -1;
		if (r > 0 && dq_parse_rfc3339(json_string_value(json_object_get(json_object_get(doc,
		    "timestamps"), "processed_at")), &done) == 0 && done > asked)
			*skipped = json_pack("{s:s}", "reason", "processed");
		json_decref(doc);
		if (r > 0)
			return *skipped != NULL;
	} else if ((r = dq_store_exists(s, dq_cfg.processed_container, name, err)) != 0) {
		if (r > 0)
			*skipped = json_pack("{s:s}", "reason", "processed");
		return r;
	}
	dq_marker_name(id, name, sizeof name);
	if ((r = get_json(s, name, &doc, err)) <= 0)
		return r;
	/* The same message again costs nothing; a message sent anew is analyzed. */
	failures = marker_failures(doc);
	if ((f = failure_of(failures, mid)))
		*skipped = json_pack("{s:s,s:O}", "reason", "failed", "error",
		    json_object_get(f, "error"));
	json_decref(failures);
	json_decref(doc);
	return *skipped != NULL;
}

int
dq_marker_add(struct dq_store *s, json_t *rec, struct dq_put_result *res, struct dq_err *err)
{
	json_t *msg = json_object_get(rec, "message"), *receipt = json_object_get(rec, "receipt");
	json_t *mid = json_object_get(receipt, "message_id"), *old = NULL, *failures = NULL;
	json_t *entry, *doc;
	const char *id = json_string_value(json_object_get(msg, "image_id"));
	char name[64], now[21];
	int r = -1, tries;

	dq_marker_name(id, name, sizeof name);
	dq_rfc3339(time(NULL), now);
	entry = json_pack("{s:O?,s:s,s:I,s:O}", "message_id", json_is_string(mid) ? mid : NULL,
	    "failed_at", now, "attempts", json_integer_value(json_object_get(receipt, "delivery_count")),
	    "error", json_object_get(rec, "error"));
	for (tries = 0; tries < 3; tries++) {
		json_decref(old);
		json_decref(failures);
		if ((r = get_json(s, name, &old, err)) < 0)
			break;
		failures = r > 0 ? marker_failures(old) : json_array();
		if (json_is_string(mid) && failure_of(failures, json_string_value(mid))) {
			/* This message's failure is on record already. */
			memset(res, 0, sizeof *res);
			res->existing = 1;
			r = 0;
			break;
		}
		json_array_append(failures, entry);
		/* The latest failure on top, the whole history below it. */
		doc = json_pack("{s:s,s:s,s:O,s:O,s:O,s:O,s:O,s:O}", "image_id", id,
		    "status", "failed", "failed_at", json_object_get(entry, "failed_at"),
		    "attempts", json_object_get(entry, "attempts"),
		    "message_id", json_object_get(entry, "message_id"),
		    "error", json_object_get(entry, "error"), "message", msg, "failures", failures);
		r = put_json(s, name, doc, old ? DQ_PUT_REPLACE : DQ_PUT_CREATE, res, err);
		json_decref(doc);
		/* A first marker written meanwhile by another: read it and add to it. */
		if (r < 0 || old || !res->existing)
			break;
	}
	json_decref(old);
	json_decref(failures);
	json_decref(entry);
	return r;
}

/* Keep the artifact bytes old as <id>.<now>.json: create-only, never over another copy. */
static int
keep_copy(struct dq_store *s, const char *id, const unsigned char *old, size_t oldlen,
    struct dq_err *err)
{
	char kept[64], ts[25], stamp[24];
	struct dq_put_result kr;
	unsigned char *there;
	size_t len;
	int r, same;

	for (int tries = 0; tries < 5; tries++) {
		size_t j = 0;

		dq_rfc3339_ms(dq_now_ms(), ts);
		for (size_t i = 0; ts[i] && j < sizeof stamp - 1; i++)
			if (ts[i] != '-' && ts[i] != ':' && ts[i] != '.')
				stamp[j++] = ts[i];
		stamp[j] = '\0';
		snprintf(kept, sizeof kept, "%s.%s.json", id, stamp);
		if (dq_store_put(s, dq_cfg.processed_container, kept, old, oldlen,
		    "application/json", NULL, DQ_PUT_CREATE, &kr, err) < 0)
			return -1;
		if (kr.existing) {
			/* A copy of that millisecond: ours only if the same bytes. */
			if ((r = dq_store_get(s, dq_cfg.processed_container, kept, &there, &len, NULL, err)) < 0)
				return -1;
			same = r > 0 && len == oldlen && memcmp(there, old, len) == 0;
			if (r > 0)
				free(there);
			if (!same) {
				dq_sleep_ms(1);
				continue;
			}
		}
		dq_log(DQ_INFO, "artifact_kept", json_pack("{s:s,s:s}", "image_id", id, "blob", kept),
		    "replaced artifact kept as %s/%s", dq_cfg.processed_container, kept);
		return 0;
	}
	dq_err_record(err, "conflict", "no free name to keep the replaced artifact of %s", id);
	return -1;
}

int
dq_artifact_put(struct dq_store *s, json_t *doc, enum dq_put_mode mode, struct dq_put_result *res,
    struct dq_err *err)
{
	const char *id = json_string_value(json_object_get(doc, "image_id"));
	unsigned char *old = NULL;
	size_t oldlen;
	char name[64];
	int r;

	dq_artifact_name(id, name, sizeof name);
	if (mode == DQ_PUT_REPLACE) {
		/* What is replaced stays findable: <id>.<when>.json beside it. */
		if ((r = dq_store_get(s, dq_cfg.processed_container, name, &old, &oldlen, NULL, err)) < 0)
			return -1;
		if (r > 0) {
			r = keep_copy(s, id, old, oldlen, err);
			free(old);
			if (r < 0)
				return -1;
		}
	}
	return put_json(s, name, doc, mode, res, err);
}
