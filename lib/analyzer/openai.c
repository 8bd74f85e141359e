/*
 * openai.c - the azure-openai analyzer: one chat completion per image
 * (GPT-5.2 vision) with strict json_schema output, every answer checked
 * and refused unless it is right (fail closed, DESIGN §2 and §6).
 *
 * The request goes through the one HTTP client (lib/http) and its retry
 * policy; the key from AZURE_AI_API_KEY, else a managed-identity token
 * from lib/cred.  Boxes come back in a 0-1000 frame of the image sent and
 * are mapped to the stored image's pixel grid here.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq.h"

struct openai {
	char *url;		/* the chat completions URL */
	int v1;			/* the v1 path: "model" in the body */
	const char *deployment, *api_version, *detail;
};

/* A NULL-terminated list as a JSON array of strings (a schema's enum). */
static json_t *
enum_of(const char *const *list)
{
	json_t *a = json_array();

	for (; *list; list++)
		json_array_append_new(a, json_string(*list));
	return a;
}

/* The strict schema: every key required, no others (Azure's rules, §4.3). */
static json_t *
schema(void)
{
	json_t *box = json_pack("{s:s,s:{s:{s:s},s:{s:s},s:{s:s},s:{s:s}},s:[ssss],s:b}",
	    "type", "object", "properties",
	    "x0", "type", "integer", "y0", "type", "integer",
	    "x1", "type", "integer", "y1", "type", "integer",
	    "required", "x0", "y0", "x1", "y1", "additionalProperties", 0);

	return json_pack("{s:s,s:{s:{s:s},s:{s:s,s:o},s:{s:s,s:o},"
	    "s:{s:s},s:{s:s},s:{s:s,s:o}},s:[ssssss],s:b}",
	    "type", "object", "properties",
	    "defect_detected", "type", "boolean",
	    "defect_type", "type", "string", "enum", enum_of(dq_defect_types),
	    "severity", "type", "string", "enum", enum_of(dq_severities),
	    "description", "type", "string",
	    "confidence", "type", "number",
	    "boxes", "type", "array", "items", box,
	    "required", "defect_detected", "defect_type", "severity", "description",
	    "confidence", "boxes", "additionalProperties", 0);
}

/* The system message: the task, the vocabulary, the scale (never the client's metadata). */
static char *
prompt(const char *sku, long w, long h)
{
	char vocabulary[512] = "", *p;
	const char *const *t;

	for (t = dq_defect_types; *t; t++) {
		strncat(vocabulary, *t, sizeof vocabulary - strlen(vocabulary) - 1);
		if (t[1])
			strncat(vocabulary, ", ", sizeof vocabulary - strlen(vocabulary) - 1);
	}
	p = dq_xasprintf(
	    "You inspect one photograph of a manufactured part (SKU %s) for visible defects. "
	    "Answer only with the JSON of the schema. defect_type is one of: %s. "
	    "severity is none (no defect), minor (cosmetic), major (affects function or sale) "
	    "or critical (unsafe or unusable); defect_detected is false exactly when both are "
	    "none. confidence is in [0,1]. The image you see is %ldx%ld pixels; give each "
	    "defect's box as integers x0,y0,x1,y1 from 0 to 1000 of the image's width and "
	    "height (0,0 top left), x0<x1, y0<y1; no boxes when there is no defect.",
	    sku ? sku : "unknown", vocabulary, w, h);
	return p;
}

static int
openai_check(struct dq_analyzer *an, const char *sku, struct dq_err *err)
{
	return 0;
}

static void
openai_close(struct dq_analyzer *an)
{
	struct openai *o = an->priv;

	free(o->url);
	free(o);
	free(an);
}

/* One 0-1000 box to the stored image's pixels, clamped; 0 when empty. */
static json_t *
map_box(json_t *b, long w, long h)
{
	json_int_t v[4];
	static const char *const k[] = { "x0", "y0", "x1", "y1" };
	long x0, y0, x1, y1;

	for (int i = 0; i < 4; i++) {
		if (!json_is_integer(json_object_get(b, k[i])))
			return NULL;
		v[i] = json_integer_value(json_object_get(b, k[i]));
		if (v[i] < 0 || v[i] > 1000)
			return NULL;
	}
	if (v[2] <= v[0] || v[3] <= v[1])
		return json_null();
	x0 = (long)floor(v[0] * (double)w / 1000);
	y0 = (long)floor(v[1] * (double)h / 1000);
	x1 = (long)ceil(v[2] * (double)w / 1000);
	y1 = (long)ceil(v[3] * (double)h / 1000);
	if (x1 > w)
		x1 = w;
	if (y1 > h)
		y1 = h;
	if (x1 <= x0 || y1 <= y0)
		return json_null();
	return json_pack("{s:I,s:I,s:I,s:I}", "x", (json_int_t)x0, "y", (json_int_t)y0,
	    "width", (json_int_t)(x1 - x0), "height", (json_int_t)(y1 - y0));
}

/* The model's JSON to defect_findings, or NULL with a record error. */
static json_t *
findings(const char *content, long w, long h, struct dq_err *err)
{
	json_t *j = json_loads(content, 0, NULL), *out, *boxes, *b, *m;
	static const char *const keys[] = { "defect_detected", "defect_type", "severity",
	    "description", "confidence", "boxes", NULL };
	size_t i;

	if (!json_is_object(j) || json_object_size(j) != 6) {
		json_decref(j);
		dq_err_set(err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "model_bad_answer",
		    "the model's answer is not the schema's JSON object");
		return NULL;
	}
	for (i = 0; keys[i]; i++)
		if (!json_object_get(j, keys[i])) {
			json_decref(j);
			dq_err_set(err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "model_bad_answer",
			    "the model's answer lacks %s", keys[i]);
			return NULL;
		}
	if (!json_is_array(json_object_get(j, "boxes"))) {
		json_decref(j);
		dq_err_set(err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "model_bad_answer",
		    "the model's boxes are not an array");
		return NULL;
	}
	boxes = json_array();
	json_array_foreach(json_object_get(j, "boxes"), i, b) {
		if (!(m = map_box(b, w, h))) {
			json_decref(boxes);
			json_decref(j);
			dq_err_set(err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "model_bad_answer",
			    "the model's box %zu is not four integers in 0..1000", i);
			return NULL;
		}
		if (json_is_null(m))
			json_decref(m);		/* an empty box is dropped */
		else
			json_array_append_new(boxes, m);
	}
	out = json_pack("{s:O,s:O,s:O,s:O,s:O,s:o}",
	    "defect_detected", json_object_get(j, "defect_detected"),
	    "defect_type", json_object_get(j, "defect_type"),
	    "severity", json_object_get(j, "severity"),
	    "description", json_object_get(j, "description"),
	    "confidence", json_object_get(j, "confidence"),
	    "bounding_boxes", boxes);
	json_decref(j);
	if (!out || dq_findings_check(out, w, h, err) < 0) {
		json_decref(out);
		if (out)
			err->retryable = 1, err->status = DQ_EX_TEMPFAIL;
		else
			dq_err_set(err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "model_bad_answer",
			    "the model's answer has a value of the wrong type");
		snprintf(err->code, sizeof err->code, "model_bad_answer");
		return NULL;
	}
	return out;
}

/* A 400's error code (error.code, or an inner content filter's), or "". */
static const char *
error_code(json_t *body, int *filtered)
{
	json_t *e = json_object_get(body, "error"), *inner;
	const char *c = json_string_value(json_object_get(e, "code"));

	*filtered = 0;
	inner = json_object_get(e, "innererror");
	if (!inner)
		inner = json_object_get(e, "inner_error");
	if ((c && strcmp(c, "content_filter") == 0) ||
	    (inner && json_string_value(json_object_get(inner, "code")) &&
	    strcmp(json_string_value(json_object_get(inner, "code")), "ResponsibleAIPolicyViolation") == 0))
		*filtered = 1;
	return c ? c : "";
}

static int
openai_analyze(struct dq_analyzer *an, const char *sku, const unsigned char *data, size_t len,
    const struct dq_image_info *info, struct dq_analysis *out, struct dq_err *err)
{
	struct openai *o = an->priv;
	struct dq_bearer bearer = { .scope = dq_cfg.openai_scope };
	static const int returned[] = { 400, 0 };
	struct dq_http_req req = { .method = "POST", .url = o->url, .returned = returned,
	    .credentials = 1, .max_body = 1 << 20 };
	struct dq_http_resp resp;
	char *sys = prompt(sku, info->width, info->height), *b64, *url, *body, *hdrkey = NULL;
	const char *hdrs[4] = { "Content-Type: application/json", NULL, NULL, NULL };
	char psha[65];
	json_t *msg, *ans = NULL, *choice, *m, *usage, *f;
	const char *fin, *content, *model;
	int rc = -1, filtered;

	dq_sha256_hex(sys, strlen(sys), psha);
	b64 = dq_base64_encode(data, len);
	url = dq_xasprintf("data:%s;base64,%s", dq_image_mime(info->type), b64);
	free(b64);
	msg = json_pack("{s:[{s:s,s:s},{s:s,s:[{s:s,s:s},{s:s,s:{s:s,s:s}}]}],s:i,"
	    "s:{s:s,s:{s:s,s:b,s:o}}}",
	    "messages", "role", "system", "content", sys,
	    "role", "user", "content", "type", "text", "text", "Inspect this part image.",
	    "type", "image_url", "image_url", "url", url, "detail", o->detail,
	    "max_completion_tokens", dq_cfg.openai_max_tokens,
	    "response_format", "type", "json_schema", "json_schema", "name", "defect_findings",
	    "strict", 1, "schema", schema());
	free(url);
	if (o->v1)
		json_object_set_new(msg, "model", json_string(o->deployment));
	if (dq_cfg.openai_effort && *dq_cfg.openai_effort)
		json_object_set_new(msg, "reasoning_effort", json_string(dq_cfg.openai_effort));
	body = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
	if (dq_cfg.ai_api_key && *dq_cfg.ai_api_key) {
		hdrkey = dq_xasprintf("api-key: %s", dq_cfg.ai_api_key);
		hdrs[1] = hdrkey;
	} else {
		req.sign = dq_bearer_sign;
		req.unauthorized = dq_bearer_unauthorized;
		req.sign_arg = &bearer;
	}
	req.headers = hdrs;
	req.body = body;
	req.body_len = strlen(body);
	if (dq_http_do(&req, &resp, err) < 0)
		goto out;
	ans = resp.body ? json_loads((const char *)resp.body, 0, NULL) : NULL;
	if (dq_http_header(&resp, "x-ratelimit-remaining-requests") ||
	    dq_http_header(&resp, "x-ratelimit-remaining-tokens"))
		dq_log(DQ_DEBUG, "openai_ratelimit", json_pack("{s:s?,s:s?}",
		    "remaining_requests", dq_http_header(&resp, "x-ratelimit-remaining-requests"),
		    "remaining_tokens", dq_http_header(&resp, "x-ratelimit-remaining-tokens")),
		    "the deployment's quota left: %s requests, %s tokens",
		    dq_http_header(&resp, "x-ratelimit-remaining-requests") ?
		    dq_http_header(&resp, "x-ratelimit-remaining-requests") : "?",
		    dq_http_header(&resp, "x-ratelimit-remaining-tokens") ?
		    dq_http_header(&resp, "x-ratelimit-remaining-tokens") : "?");
	if (resp.status == 404) {
		dq_err_system(err, DQ_EX_CONFIG, "deployment_not_found",
		    "no deployment %s at the endpoint (404 %s)", o->deployment,
		    error_code(ans, &filtered));
		goto out;
	}
	if (resp.status == 400) {
		const char *c = error_code(ans, &filtered);

		if (filtered)
			dq_err_record(err, "content_filter", "the service's content filter refused the image");
		else if (!strcmp(c, "unsupported_parameter") || !strcmp(c, "unsupported_value"))
			dq_err_system(err, DQ_EX_CONFIG, "unsupported_parameter",
			    "the deployment refused a request parameter (%s)", c);
		else
			dq_err_record(err, "http_4xx", "the service answered 400 (%s)", c);
		err->http_status = 400;
		goto out;
	}
	if (resp.status != 200) {
		dq_err_set(err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "model_bad_answer",
		    "the service answered %ld", resp.status);
		goto out;
	}
	choice = json_array_get(json_object_get(ans, "choices"), 0);
	m = json_object_get(choice, "message");
	fin = json_string_value(json_object_get(choice, "finish_reason"));
	content = json_string_value(json_object_get(m, "content"));
	model = json_string_value(json_object_get(ans, "model"));
	if (json_string_value(json_object_get(m, "refusal"))) {
		dq_err_record(err, "model_refused", "the model refused: %.200s",
		    json_string_value(json_object_get(m, "refusal")));
		goto out;
	}
	if (fin && strcmp(fin, "content_filter") == 0) {
		dq_err_record(err, "content_filter", "the answer was cut by the content filter");
		goto out;
	}
	if (fin && strcmp(fin, "length") == 0) {
		dq_err_record(err, "model_length", "the answer ran out of max_completion_tokens (%d)",
		    dq_cfg.openai_max_tokens);
		goto out;
	}
	if (!fin || strcmp(fin, "stop") || !content || !model || !*model) {
		dq_err_set(err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "model_bad_answer",
		    "the answer lacks finish_reason stop, content or model");
		goto out;
	}
	if (!(f = findings(content, info->width, info->height, err)))
		goto out;
	usage = json_object_get(ans, "usage");
	out->findings = f;
	snprintf(out->model_version, sizeof out->model_version, "%s", model);
	out->analysis = json_pack("{s:s,s:s,s:s,s:{s:I,s:I,s:I,s:I}}",
	    "deployment", o->deployment, "api_version", o->api_version, "prompt_sha256", psha,
	    "usage",
	    "prompt_tokens", json_integer_value(json_object_get(usage, "prompt_tokens")),
	    "completion_tokens", json_integer_value(json_object_get(usage, "completion_tokens")),
	    "reasoning_tokens", json_integer_value(json_object_get(json_object_get(usage,
	    "completion_tokens_details"), "reasoning_tokens")),
	    "cached_tokens", json_integer_value(json_object_get(json_object_get(usage,
	    "prompt_tokens_details"), "cached_tokens")));
	json_object_set_new(out->analysis, "image", json_pack("{s:I,s:I,s:s}",
	    "sent_width", (json_int_t)info->width, "sent_height", (json_int_t)info->height,
	    "detail", o->detail));
	rc = 0;
out:
	json_decref(ans);
	dq_http_resp_free(&resp);
	dq_bearer_done(&bearer);
	free(body);
	free(hdrkey);
	free(sys);
	return rc;
}

static const struct dq_analyzer_ops openai_ops = {
	.name = "azure-openai",
	.analyze = openai_analyze,
	.check = openai_check,
	.close = openai_close,
};

struct dq_analyzer *
dq_analyzer_openai_open(struct dq_err *err)
{
	const char *ep = dq_cfg.ai_endpoint, *ver = dq_cfg.openai_api_version;
	struct dq_analyzer *an;
	struct openai *o;
	size_t n;

	if (!ep || !*ep) {
		dq_err_system(err, DQ_EX_CONFIG, "config", "AZURE_AI_PROJECT_ENDPOINT is not set");
		return NULL;
	}
	if (dq_cred_transport_ok(ep, "AZURE_AI_PROJECT_ENDPOINT", err) < 0)
		return NULL;
	if (dq_cfg.openai_effort && *dq_cfg.openai_effort &&
	    strcmp(dq_cfg.openai_effort, "none") && strcmp(dq_cfg.openai_effort, "low") &&
	    strcmp(dq_cfg.openai_effort, "medium") && strcmp(dq_cfg.openai_effort, "high") &&
	    strcmp(dq_cfg.openai_effort, "xhigh")) {
		dq_err_system(err, DQ_EX_CONFIG, "config", "DQ_OPENAI_REASONING_EFFORT=%s: "
		    "GPT-5.2 accepts none, low, medium, high or xhigh", dq_cfg.openai_effort);
		return NULL;
	}
	if (strcmp(dq_cfg.openai_detail, "low") && strcmp(dq_cfg.openai_detail, "high") &&
	    strcmp(dq_cfg.openai_detail, "auto")) {
		dq_err_system(err, DQ_EX_CONFIG, "config", "DQ_OPENAI_DETAIL=%s: expected "
		    "low, high or auto", dq_cfg.openai_detail);
		return NULL;
	}
	o = dq_xcalloc(1, sizeof *o);
	an = dq_xcalloc(1, sizeof *an);
	n = strlen(ep);
	while (n && ep[n - 1] == '/')
		n--;
	o->deployment = dq_cfg.vision_deployment;
	o->detail = dq_cfg.openai_detail;
	o->v1 = strcmp(ver, "v1") == 0 || strstr(ep, "/api/projects/") != NULL;
	o->api_version = o->v1 ? "v1" : ver;
	if (o->v1)	/* v1, or a Foundry project: its /openai/v1 base */
		o->url = dq_xasprintf("%.*s/openai/v1/chat/completions", (int)n, ep);
	else
		o->url = dq_xasprintf("%.*s/openai/deployments/%s/chat/completions?api-version=%s",
		    (int)n, ep, o->deployment, ver);
	an->ops = &openai_ops;
	an->priv = o;
	return an;
}
