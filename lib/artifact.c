/*
 * artifact.c - the processed document of DESIGN §2, built from a message
 * and an analyzer's answer.
 *
 * The artifact is what downstream applications read, so its shape is
 * fixed here once for every analyzer: the key order, the vocabulary, the
 * rounding.  An answer that does not fit is refused (fail closed), never
 * repaired into "no defect".
 */
#include <string.h>

#include "dq.h"

static const char *const severities[] = {
	"none", "minor", "major", "critical", NULL,
};

static const char *const defect_types[] = {
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
	if (!one_of(sev, severities) || !one_of(type, defect_types)) {
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
	json_t *doc, *an, *img, *v, *mine;
	const char *k;

	img = json_pack("{s:s,s:I,s:I}", "sha256", sha256,
	    "width", (json_int_t)in->width, "height", (json_int_t)in->height);
	/* the analyzer's own image keys (what it sent, at what detail) follow */
	if ((mine = json_object_get(a->analysis, "image")))
		json_object_update_missing(img, mine);
	an = json_pack("{s:s}", "analyzer", analyzer);
	json_object_foreach(a->analysis, k, v) {
		if (strcmp(k, "image") == 0)
			json_object_set(an, k, img);
		else if (strcmp(k, "analyzer") != 0 && strcmp(k, "duration_ms") != 0)
			json_object_set(an, k, v);
	}
	if (!mine)
		json_object_set(an, "image", img);
	json_decref(img);
	json_object_set_new(an, "duration_ms", json_integer(duration_ms));

	doc = json_pack("{s:O,s:{s:O,s:s},s:O,s:o,s:s,s:o}",
	    "image_id", json_object_get(msg, "image_id"),
	    "timestamps", "ingested_at", json_object_get(msg, "ingested_at"),
	    "processed_at", processed_at,
	    "metadata", json_object_get(msg, "metadata"),
	    "defect_findings", findings_ordered(a->findings),
	    "model_version", a->model_version,
	    "analysis", an);
	if (!doc)
		dq_die(DQ_EX_TEMPFAIL, "cannot build the artifact");
	return doc;
}
