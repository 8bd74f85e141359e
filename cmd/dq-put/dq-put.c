/* dq-put - store raw images and print their messages, or store artifacts. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "dq.h"

static const char synopsis[] =
    "usage: dq-put --sku SKU --facility F [--extra JSON] [--id UUID] FILE...\n"
    "       dq-put --stored [--all | ID...]\n"
    "       dq-put [--replace] [--max-attempts N] < records\n";

static struct dq_store *store;
static int status;
static long max_attempts;

static _Noreturn void
usage(const char *why)
{
	dq_usage(synopsis, why);
}

/* file as records and logs show it (a path need not be UTF-8). */
static void
reject_file(const char *file, const struct dq_err *err)
{
	char *shown = dq_utf8_fix(file);
	json_t *rec = json_pack("{s:s}", "file", shown);

	dq_record_set_error(rec, "put", err);
	dq_log_err(DQ_ERROR, "rejected", json_pack("{s:s}", "file", shown), err);
	dq_emit(rec);
	json_decref(rec);
	free(shown);
	status = dq_status_merge(status, err->status);
}

static void
put_file(const char *file, const char *sku, const char *facility,
    json_t *extra, const char *id_opt)
{
	unsigned char *data;
	size_t len;
	struct dq_err err;
	struct dq_raw raw = { .sku = sku, .facility = facility, .extra = extra,
	    .file_name = file };
	json_t *rec, *st;
	char *shown;

	if (dq_image_read(file, &data, &len, &err) < 0) {
		reject_file(file, &err);
		return;
	}
	raw.data = data;
	raw.len = len;
	if (dq_raw_prepare(&raw, &err) < 0) {
		reject_file(file, &err);
		goto out;
	}
	shown = dq_utf8_fix(file);
	if (dq_raw_store(store, &raw, id_opt, &err) < 0) {
		if (err.scope == DQ_SCOPE_SYSTEM)
			dq_stop(status, &err, json_pack("{s:s,s:s}", "file", shown,
			    "image_id", raw.image_id));
		free(shown);
		reject_file(file, &err);
		goto out;
	}
	st = json_pack("{s:s,s:s,s:s}", "container", dq_cfg.raw_container,
	    "blob_name", raw.blob, "etag", raw.etag);
	if (raw.existing)
		json_object_set_new(st, "existing", json_true());
	if (raw.repaired)
		json_object_set_new(st, "repaired", json_true());
	rec = json_pack("{s:O,s:s,s:o}", "message", raw.msg, "file", shown, "stored", st);
	dq_log(DQ_INFO, raw.existing ? "existing" : "stored",
	    json_pack("{s:s,s:s,s:s}", "image_id", raw.image_id, "file", shown, "blob", raw.blob),
	    "%s %s/%s", raw.existing ? "already stored as" : "stored as",
	    dq_cfg.raw_container, raw.blob);
	dq_emit(rec);
	json_decref(rec);
	free(shown);
out:
	dq_raw_free(&raw);
	free(data);
}

static int
emit_stored(const char *blob, void *arg)
{
	struct dq_err err;
	json_t *meta = NULL, *msg, *rec;
	char id[37], artifact[64];
	/* arg: "unanalyzed" lists only images without an artifact */
	int unanalyzed = arg != NULL && strcmp(arg, "unanalyzed") == 0;

	if (strlen(blob) < 37 || blob[36] != '.')
		return 0;
	memcpy(id, blob, 36);
	id[36] = '\0';
	if (!dq_uuid_valid(id))
		return 0;
	if (unanalyzed) {
		dq_artifact_name(id, artifact, sizeof artifact);
		int r = dq_store_exists(store, dq_cfg.processed_container, artifact, &err);
		if (r < 0)
			dq_stop(status, &err, NULL);
		if (r > 0)
			return 0;
	}
	if (dq_store_get(store, dq_cfg.raw_container, blob, NULL, NULL, &meta, &err) < 0)
		dq_stop(status, &err, NULL);
	if (!(msg = dq_message_from_metadata(meta, &err))) {
		rec = json_pack("{s:s}", "blob", blob);
		dq_record_set_error(rec, "put", &err);
		dq_log_err(DQ_ERROR, "rejected", json_pack("{s:s}", "image_id", id), &err);
		dq_emit(rec);
		json_decref(rec);
		status = dq_status_merge(status, err.status);
	} else {
		rec = json_pack("{s:o}", "message", msg);
		dq_emit(rec);
		json_decref(rec);
	}
	json_decref(meta);
	return 0;
}

static int
find_blob(const char *blob, void *arg)
{
	char **out = arg;

	if (strlen(blob) > 37 && blob[36] == '.' && !strchr(blob + 37, '.')) {
		*out = dq_xstrdup(blob);
		return 1;
	}
	return 0;
}

static void
put_stored(char **ids, int n, int all)
{
	struct dq_err err;

	if (n == 0) {
		if (dq_store_list(store, dq_cfg.raw_container, NULL, emit_stored,
		    all ? "all" : "unanalyzed", &err) < 0)
			dq_stop(status, &err, NULL);
		return;
	}
	for (int i = 0; i < n; i++) {
		char *blob = NULL;

		if (!dq_uuid_valid(ids[i])) {
			dq_err_record(&err, "bad_id", "not an image id (a lowercase UUID)");
			reject_file(ids[i], &err);
			continue;
		}
		if (dq_store_list(store, dq_cfg.raw_container, ids[i], find_blob, &blob, &err) < 0)
			dq_stop(status, &err, NULL);
		if (!blob) {
			dq_err_set(&err, DQ_SCOPE_RECORD, DQ_EX_NOINPUT, 0, "not_found",
			    "no raw image %s in %s", ids[i], dq_cfg.raw_container);
			reject_file(ids[i], &err);
			continue;
		}
		emit_stored(blob, NULL);
		free(blob);
	}
}

static void
put_record(json_t *rec, enum dq_put_mode mode)
{
	struct dq_err err;
	struct dq_put_result res;
	struct dq_fate f;
	json_t *doc = json_object_get(rec, "artifact"), *msg = json_object_get(rec, "message"), *st;
	const char *id;
	char name[64];
	int r, artifact;

	dq_record_fate(rec, max_attempts, NULL, NULL, &f);
	if (f.keep == DQ_KEEP_NOTHING)
		return;	/* nothing to write: passed on as it is */
	artifact = f.keep == DQ_KEEP_ARTIFACT;
	id = json_string_value(json_object_get(artifact ? doc : msg, "image_id"));
	if (!dq_uuid_valid(id)) {
		if (!artifact)
			return;	/* no message to mark: the error travels on */
		dq_err_record(&err, "bad_artifact", "artifact has no valid image_id");
		dq_record_set_error(rec, "put", &err);
		status = dq_status_merge(status, err.status);
		return;
	}
	if (artifact) {
		dq_artifact_name(id, name, sizeof name);
		if (dq_message_reprocess(msg, NULL))
			mode = DQ_PUT_REPLACE;
		r = dq_artifact_put(store, doc, mode, &res, &err);
	} else {
		dq_marker_name(id, name, sizeof name);
		r = dq_marker_add(store, rec, &res, &err);
	}
	if (r < 0) {
		if (err.scope == DQ_SCOPE_SYSTEM)
			dq_stop(status, &err, json_pack("{s:s}", "image_id", id));
		dq_record_set_error(rec, "put", &err);
		status = dq_status_merge(status, err.status);
		return;
	}
	st = json_pack("{s:s,s:s,s:s}", "container", dq_cfg.processed_container,
	    "blob_name", name, "etag", res.etag);
	if (res.existing)
		json_object_set_new(st, "existing", json_true());
	json_object_set_new(rec, "stored", st);
	dq_log(DQ_INFO, artifact ? "artifact_stored" : "failure_marker",
	    json_pack("{s:s,s:s,s:b}", "image_id", id, "blob", name, "existing", res.existing),
	    "%s %s/%s", res.existing ? "already stored:" : "stored",
	    dq_cfg.processed_container, name);
}

static void
put_and_emit(json_t *rec, void *mode)
{
	put_record(rec, *(enum dq_put_mode *)mode);
	dq_emit(rec);
}

int
main(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "sku", required_argument, NULL, 's' },
		{ "facility", required_argument, NULL, 'f' },
		{ "extra", required_argument, NULL, 'e' },
		{ "id", required_argument, NULL, 'i' },
		{ "stored", no_argument, NULL, 'S' },
		{ "all", no_argument, NULL, 'A' },
		{ "replace", no_argument, NULL, 'r' },
		{ "max-attempts", required_argument, NULL, 'm' },
		DQ_COMMON_OPTIONS,
		{ NULL, 0, NULL, 0 },
	};
	const char *sku = NULL, *facility = NULL, *extra_s = NULL, *id = NULL;
	int check = 0, c, stored = 0, all = 0;
	enum dq_put_mode mode = DQ_PUT_CREATE;
	json_t *extra = NULL;
	struct dq_err err;
	char *end;

	dq_init(argv[0]);
	dq_cli_config();
	max_attempts = dq_cfg.max_delivery_attempts;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': sku = optarg; break;
		case 'f': facility = optarg; break;
		case 'e': extra_s = optarg; break;
		case 'i': id = optarg; break;
		case 'S': stored = 1; break;
		case 'A': all = 1; break;
		case 'r': mode = DQ_PUT_REPLACE; break;
		case 'm':
			max_attempts = strtol(optarg, &end, 10);
			if (*end || max_attempts < 1)
				usage("--max-attempts wants a positive number");
			break;
		case 'C': check = 1; break;
		default: dq_cli_option(c, synopsis);
		}
	}
	argc -= optind;
	if (check) /* record mode (the worker's) writes artifacts; FILEs, raw images */
		dq_cli_check(DQ_CHECK_STORE | DQ_CHECK_PROCESSED | (argc > 0 ? DQ_CHECK_RAW : 0), 0, NULL);
	argv += optind;

	if (stored && (sku || facility || extra_s || id || mode == DQ_PUT_REPLACE))
		usage("--stored takes no other options");
	if (all && (!stored || argc > 0))
		usage("--all applies to --stored without IDs");
	if (!stored && argc > 0) {
		if (!sku || !facility)
			usage("--sku and --facility are required to store files");
		if (!dq_safe_token(sku) || !dq_safe_token(facility))
			usage("--sku and --facility may hold only letters, digits, '.', '_' and '-'");
		if (id && (!dq_uuid_valid(id) || argc > 1))
			usage("--id wants one FILE and a lowercase UUID");
		if (extra_s && !(extra = dq_extra_parse("--extra", extra_s, strlen(extra_s), &err)))
			usage(err.msg);
		if (mode == DQ_PUT_REPLACE)
			usage("--replace applies to artifacts read from records");
	} else if (!stored && (sku || facility || extra_s || id))
		usage("--sku, --facility, --extra and --id apply to FILE arguments");

	if (!(store = dq_store_open(&err)))
		dq_stop(status, &err, NULL);
	if (stored)
		put_stored(argv, argc, all);
	else if (argc > 0)
		for (int i = 0; i < argc; i++)
			put_file(argv[i], sku, facility, extra, id);
	else {
		int rs = dq_each_record(put_and_emit, &mode);

		status = dq_status_merge(status, rs);
	}
	json_decref(extra);
	dq_store_close(store);
	return dq_finish_stdout(status);
}
