/* store.c - choosing the store backend, and the put rules of DESIGN §2. */
#include <stdlib.h>
#include <string.h>

#include "dq.h"

/* DESIGN §1's choice: "azure" or "local" and the credential, or NULL (78). */
const char *
dq_store_choice(const char **cred, struct dq_err *err)
{
	if (dq_cfg.storage_connection_string) {
		*cred = "connection string (AZURE_STORAGE_CONNECTION_STRING)";
		return "azure";
	}
	if (dq_cfg.storage_account) {
		*cred = "managed identity";
		return "azure";
	}
	if (dq_cfg.local_dir) {
		*cred = "none (local)";
		return "local";
	}
	dq_err_system(err, DQ_EX_CONFIG, "no_store",
	    "no store configured: set AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT "
	    "or DQ_LOCAL_DIR");
	return NULL;
}

struct dq_store *
dq_store_open(struct dq_err *err)
{
	struct dq_store *s;
	const char *cred, *b = dq_store_choice(&cred, err);

	if (!b)
		return NULL;
	if (strcmp(b, "azure") == 0) {
		/* Never fall back to the local store when Azure is asked for. */
		dq_err_system(err, DQ_EX_CONFIG, "backend_unavailable",
		    "the azure store backend (%s) is not built into this version; "
		    "unset it and set DQ_LOCAL_DIR for the local store",
		    dq_cfg.storage_connection_string ? "AZURE_STORAGE_CONNECTION_STRING" :
		    "AZURE_STORAGE_ACCOUNT");
		return NULL;
	}
	if (!(s = dq_store_local_open(dq_cfg.local_dir, err)))
		return NULL;
	dq_log(DQ_INFO, "backend", json_pack("{s:s,s:s}", "store", "local", "dir", dq_cfg.local_dir),
	    "store: local (%s)", dq_cfg.local_dir);
	return s;
}

void
dq_store_close(struct dq_store *s)
{
	if (s)
		s->ops->close(s);
}

int
dq_store_put(struct dq_store *s, const char *container, const char *name,
    const void *data, size_t len, const char *content_type, json_t *metadata,
    enum dq_put_mode mode, struct dq_put_result *res, struct dq_err *err)
{
	return dq_store_put_hashed(s, container, name, data, len, NULL, content_type,
	    metadata, mode, res, err);
}

int
dq_store_put_hashed(struct dq_store *s, const char *container, const char *name,
    const void *data, size_t len, const char *sha256, const char *content_type,
    json_t *metadata, enum dq_put_mode mode, struct dq_put_result *res,
    struct dq_err *err)
{
	memset(res, 0, sizeof *res);
	return s->ops->put(s, container, name, data, len, sha256, content_type,
	    metadata, mode, res, err);
}

int
dq_store_get(struct dq_store *s, const char *container, const char *name,
    unsigned char **data, size_t *len, json_t **metadata, struct dq_err *err)
{
	return s->ops->get(s, container, name, data, len, metadata, err);
}

int
dq_store_exists(struct dq_store *s, const char *container, const char *name,
    struct dq_err *err)
{
	return s->ops->exists(s, container, name, err);
}

int
dq_store_del(struct dq_store *s, const char *container, const char *name,
    struct dq_err *err)
{
	return s->ops->del(s, container, name, err);
}

int
dq_store_list(struct dq_store *s, const char *container, const char *prefix,
    int (*fn)(const char *name, void *arg), void *arg, struct dq_err *err)
{
	return s->ops->list(s, container, prefix, fn, arg, err);
}

int
dq_store_check(struct dq_store *s, struct dq_err *err)
{
	return s->ops->check(s, err);
}

int
dq_store_probe(struct dq_store *s, const char *container, struct dq_err *err)
{
	return s->ops->probe(s, container, err);
}

void
dq_artifact_name(const char *image_id, char *buf, size_t n)
{
	snprintf(buf, n, "%s.json", image_id);
}

void
dq_marker_name(const char *image_id, char *buf, size_t n)
{
	snprintf(buf, n, "%s.error.json", image_id);
}
