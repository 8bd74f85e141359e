/*
 * local.c - the store in a directory: DQ_LOCAL_DIR/store/<container>/.
 *
 * A blob is a file; its metadata a JSON sidecar in .meta/<name>.json.
 * Create-only puts write a temporary file in .tmp/, fsync it and link(2)
 * it to the final name: link fails with EEXIST when the blob exists, so
 * exactly one writer wins, and a reader never sees half a blob.  The
 * container directory is fsynced after the link (or the rename of a
 * replacing put) before the put returns: a queue message may name the
 * blob as soon as it does, and without the directory's sync a crash could
 * lose the name while the message survives.  The metadata follows by
 * atomic rename; a writer killed between the two leaves a blob without
 * metadata, which the next put of the same bytes repairs (dq_raw_store).
 *
 * The directories of a container are made by the first put that finds
 * them missing (its open fails with ENOENT), not checked on every put.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dq.h"

struct local {
	char *root;	/* DQ_LOCAL_DIR/store */
};

/* A store failure is a system error, its status by errno (dq(7)). */
static int
sys_err(struct dq_err *err, const char *what, const char *path)
{
	int e = errno, st = dq_errno_status(e, NULL);

	dq_err_system(err, st, st == DQ_EX_CONFIG ? "store_config" : "store_io",
	    "local store: %s %s: %s", what, path, strerror(e));
	return -1;
}

static int
path_of(struct dq_store *s, char *buf, size_t n, const char *container,
    const char *sub, const char *name, const char *suffix, struct dq_err *err)
{
	struct local *l = s->priv;
	int r;

	if (!dq_safe_token(container) || (name && !dq_safe_token(name))) {
		dq_err_record(err, "bad_name", "invalid blob name %s/%s", container, name ? name : "");
		return -1;
	}
	r = snprintf(buf, n, "%s/%s%s%s%s%s%s", l->root, container,
	    sub ? "/" : "", sub ? sub : "", name ? "/" : "", name ? name : "",
	    suffix ? suffix : "");
	if (r < 0 || (size_t)r >= n) {
		dq_err_record(err, "bad_name", "blob path too long");
		return -1;
	}
	return 0;
}

/* After an open that failed with ENOENT: make the container's directories. */
static int
ensure_dirs(struct dq_store *s, const char *container, struct dq_err *err)
{
	char p[PATH_MAX];

	if (path_of(s, p, sizeof p, container, ".tmp", NULL, NULL, err) < 0)
		return -1;
	if (dq_mkdirs(p, 0777) < 0)
		return sys_err(err, "mkdir", p);
	if (path_of(s, p, sizeof p, container, ".meta", NULL, NULL, err) < 0)
		return -1;
	if (dq_mkdirs(p, 0777) < 0)
		return sys_err(err, "mkdir", p);
	return 0;
}

/* The ETag: from the content's SHA-256, given or computed here. */
static void
etag_of(const void *data, size_t len, const char *sha256, char etag[80])
{
	char hex[65];

	if (!sha256) {
		dq_sha256_hex(data, len, hex);
		sha256 = hex;
	}
	snprintf(etag, 80, "\"0x%.16s\"", sha256);
}

/* Create path for writing, making the container's directories if missing. */
static int
create_tmp(struct dq_store *s, const char *container, const char *path,
    struct dq_err *err)
{
	int fd;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666)) < 0 &&
	    errno == ENOENT) {
		if (ensure_dirs(s, container, err) < 0)
			return -1;
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
	}
	if (fd < 0)
		sys_err(err, "create", path);
	return fd;
}

/* The metadata sidecar, making .meta/ if missing. */
static int
write_meta(struct dq_store *s, const char *container, const char *path,
    const char *text, struct dq_err *err)
{
	if (dq_write_atomic(path, text, strlen(text), 0666) == 0)
		return 0;
	if (errno == ENOENT) {
		if (ensure_dirs(s, container, err) < 0)
			return -1;
		if (dq_write_atomic(path, text, strlen(text), 0666) == 0)
			return 0;
	}
	return sys_err(err, "write", path);
}

static int
local_put(struct dq_store *s, const char *container, const char *name,
    const void *data, size_t len, const char *sha256, const char *content_type,
    json_t *metadata, enum dq_put_mode mode, struct dq_put_result *res,
    struct dq_err *err)
{
	char tmp[PATH_MAX], dst[PATH_MAX], meta[PATH_MAX], dir[PATH_MAX], id[37];
	int fd = -1, r = -1;
	char *mj = NULL;
	json_t *m;

	if (path_of(s, dst, sizeof dst, container, NULL, name, NULL, err) < 0 ||
	    path_of(s, meta, sizeof meta, container, ".meta", name, ".json", err) < 0 ||
	    path_of(s, dir, sizeof dir, container, NULL, NULL, NULL, err) < 0)
		return -1;
	dq_uuid_new(id);
	if (path_of(s, tmp, sizeof tmp, container, ".tmp", id, NULL, err) < 0)
		return -1;
	if ((fd = create_tmp(s, container, tmp, err)) < 0)
		return -1;
	if (dq_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
		sys_err(err, "write", tmp);
		goto out;
	}
	if (close(fd) < 0) {
		fd = -1;
		sys_err(err, "write", tmp);
		goto out;
	}
	fd = -1;
	if (mode == DQ_PUT_REPLACE) {
		if (rename(tmp, dst) < 0) {
			sys_err(err, "rename", dst);
			goto out;
		}
	} else if (link(tmp, dst) < 0) {
		if (errno != EEXIST) {
			sys_err(err, "link", dst);
			goto out;
		}
		res->existing = 1;
		unsigned char *old;
		size_t oldlen;
		if (dq_read_file(dst, SIZE_MAX, &old, &oldlen) < 0) {
			sys_err(err, "read", dst);
			goto out;
		}
		/* The same bytes have the caller's hash: no second one. */
		etag_of(old, oldlen, oldlen == len && memcmp(old, data, len) == 0 ?
		    sha256 : NULL, res->etag);
		free(old);
		r = 0;
		goto out;
	}
	/* Durable before any message can name the blob. */
	if (dq_fsync_dir(dir) < 0) {
		sys_err(err, "fsync", dir);
		goto out;
	}
	etag_of(data, len, sha256, res->etag);
	m = json_object();
	if (metadata)
		json_object_update(m, metadata);
	m = json_pack("{s:s,s:o}", "content_type",
	    content_type ? content_type : "application/octet-stream", "metadata", m);
	mj = json_dumps(m, JSON_COMPACT | JSON_REAL_PRECISION(15));
	json_decref(m);
	if (!mj) {
		dq_err_system(err, DQ_EX_TEMPFAIL, "store_io", "local store: out of memory");
		goto out;
	}
	if (write_meta(s, container, meta, mj, err) < 0)
		goto out;
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(mj);
	return r;
}

static int
local_get(struct dq_store *s, const char *container, const char *name,
    unsigned char **data, size_t *len, json_t **metadata, struct dq_err *err)
{
	char p[PATH_MAX], mp[PATH_MAX];

	if (metadata)
		*metadata = NULL;
	if (path_of(s, p, sizeof p, container, NULL, name, NULL, err) < 0 ||
	    path_of(s, mp, sizeof mp, container, ".meta", name, ".json", err) < 0)
		return -1;
	if (data) {
		if (dq_read_file_nofollow(p, SIZE_MAX, data, len) < 0) {
			if (errno == ENOENT)
				return 0;
			/* The store makes only regular files: this blob's fault, not the store's. */
			if (errno == EISDIR || errno == ENXIO || errno == ELOOP) {
				dq_err_record(err, "bad_blob", "local store: %s/%s is not a regular file",
				    container, name);
				return -1;
			}
			return sys_err(err, "read", p);
		}
	} else if (access(p, F_OK) < 0) {
		if (errno == ENOENT)
			return 0;
		return sys_err(err, "stat", p);
	}
	if (metadata) {
		unsigned char *mdata;
		size_t mlen;
		json_t *j = NULL;

		/* Read like the blob: a sidecar that is no regular file is no metadata. */
		if (dq_read_file_nofollow(mp, 1 << 20, &mdata, &mlen) == 0) {
			j = json_loadb((const char *)mdata, mlen, JSON_REJECT_DUPLICATES, NULL);
			free(mdata);
		}
		*metadata = json_incref(json_object_get(j, "metadata"));
		if (!*metadata)
			*metadata = json_object();
		json_decref(j);
	}
	return 1;
}

static int
local_exists(struct dq_store *s, const char *container, const char *name, struct dq_err *err)
{
	char p[PATH_MAX];

	if (path_of(s, p, sizeof p, container, NULL, name, NULL, err) < 0)
		return -1;
	if (access(p, F_OK) == 0)
		return 1;
	if (errno == ENOENT || errno == ENOTDIR)
		return 0;
	return sys_err(err, "stat", p);
}

static int
local_del(struct dq_store *s, const char *container, const char *name, struct dq_err *err)
{
	char p[PATH_MAX], mp[PATH_MAX];

	if (path_of(s, p, sizeof p, container, NULL, name, NULL, err) < 0 ||
	    path_of(s, mp, sizeof mp, container, ".meta", name, ".json", err) < 0)
		return -1;
	if (unlink(p) < 0 && errno != ENOENT)
		return sys_err(err, "unlink", p);
	if (unlink(mp) < 0 && errno != ENOENT)
		return sys_err(err, "unlink", mp);
	return 0;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
local_list(struct dq_store *s, const char *container, const char *prefix,
    int (*fn)(const char *, void *), void *arg, struct dq_err *err)
{
	char p[PATH_MAX];
	DIR *d;
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0, plen = prefix ? strlen(prefix) : 0;
	int r = 0;

	if (path_of(s, p, sizeof p, container, NULL, NULL, NULL, err) < 0)
		return -1;
	if (!(d = opendir(p))) {
		if (errno == ENOENT)
			return 0;
		return sys_err(err, "opendir", p);
	}
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || (plen && strncmp(de->d_name, prefix, plen)))
			continue;
		if (n == cap)
			names = dq_xrealloc(names, (cap = cap ? cap * 2 : 64) * sizeof *names);
		names[n++] = dq_xstrdup(de->d_name);
	}
	closedir(d);
	if (n > 0)
		qsort(names, n, sizeof *names, cmp_str);
	for (size_t i = 0; i < n; i++) {
		if (!r)
			r = fn(names[i], arg);
		free(names[i]);
	}
	free(names);
	return 0;
}

/* --check creates nothing: a store not made yet is created by its first put. */
static int
local_check(struct dq_store *s, struct dq_err *err)
{
	struct local *l = s->priv;
	struct stat st;

	if (stat(l->root, &st) < 0) {
		if (errno != ENOENT)
			return sys_err(err, "stat", l->root);
		dq_log(DQ_INFO, "check_missing", json_pack("{s:s}", "dir", l->root),
		    "local store %s does not exist yet; the first dq-put or dq-ingest "
		    "creates it", l->root);
		return 0;
	}
	if (!S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		return sys_err(err, "use", l->root);
	}
	if (access(l->root, R_OK | X_OK) < 0)
		return sys_err(err, "access", l->root);
	return 0;
}

/*
 * A put writes in <container>/.tmp, links into <container> and writes
 * <container>/.meta: each takes a probe, or, not created yet, its nearest
 * existing ancestor does (the put would create it).
 */
static int
local_probe(struct dq_store *s, const char *container, struct dq_err *err)
{
	static const char *subs[] = { NULL, ".tmp", ".meta" };
	char p[PATH_MAX], failed[PATH_MAX];
	struct stat st;
	int r;

	for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
		if (path_of(s, p, sizeof p, container, subs[i], NULL, NULL, err) < 0)
			return -1;
		if (stat(p, &st) == 0)
			r = dq_probe_dir(p, failed, sizeof failed);
		else
			r = dq_probe_ancestor(p, failed, sizeof failed);
		if (r < 0)
			return sys_err(err, "write", failed);
	}
	return 0;
}

static void
local_close(struct dq_store *s)
{
	struct local *l = s->priv;

	free(l->root);
	free(l);
	free(s);
}

static const struct dq_store_ops local_ops = {
	"local", local_put, local_get, local_exists, local_del, local_list,
	local_check, local_probe, local_close,
};

struct dq_store *
dq_store_local_open(const char *dir, struct dq_err *err)
{
	struct dq_store *s = dq_xcalloc(1, sizeof *s);
	struct local *l = dq_xcalloc(1, sizeof *l);

	if (!dir || !*dir) {
		free(s);
		free(l);
		dq_err_system(err, DQ_EX_CONFIG, "no_store", "DQ_LOCAL_DIR is empty");
		return NULL;
	}
	l->root = dq_xasprintf("%s/store", dir);
	s->ops = &local_ops;
	s->priv = l;
	return s;
}
