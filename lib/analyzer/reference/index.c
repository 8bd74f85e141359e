/*
 * index.c - the SHA-256 of a SKU's references found by their stat instead
 * of by reading them: git's index, for the reference model's cache key.
 * See dq-reference(7), FILES.
 *
 * A model's key (model.c) is a hash of every reference's bytes.  Reading
 * and hashing twenty 2 MB images at every start costs more than loading
 * the model they name, so beside the models <sku>.<dir>.index records,
 * for each reference, the stat it had when it was hashed (size, mtime and
 * ctime to the nanosecond, inode, device) and its hash.  A reference whose
 * stat is the recorded one is not read; any other is read and hashed, and
 * the index is written again.
 *
 * Why that is as safe as hashing: every way of changing a file's bytes
 * moves its ctime, which no one can set back (touch(1) sets the mtime, a
 * rename puts another inode there), except a change within the same tick
 * of the clock as the file's last one, which leaves the stat as it was:
 * git's "racily clean" entry.  So the index records when the hashing
 * began (the kernel's coarse clock, the one files are stamped with), and
 * an entry whose mtime or ctime is not at least MARGIN seconds older than
 * that is not trusted but hashed again at the next start.  A change made
 * after the hashing began has a later stamp than any trusted entry's on a
 * filesystem whose stamps are as fine as MARGIN seconds (the coarsest are
 * FAT's two), whose clock is within MARGIN of ours, and by a write that
 * took less than MARGIN: the margin covers all three.  git compares with
 * the index file's own mtime instead, which assumes one filesystem and no
 * write in flight.
 *
 * The index is one line of JSON and one line of that line's SHA-256: a
 * file truncated, partly overwritten or of another format or directory is
 * not used but replaced (logged).  It is written to a temporary file and
 * renamed, so processes starting together each read a whole index, the
 * old one or a new one, and whichever renames last leaves one as true as
 * the other's.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "reference.h"

#define INDEX_FORMAT	"dq-refindex-1"
#define INDEX_MAX	(16L << 20)
#define IMAGE_MAX	(256L << 20)	/* a reference larger than this is refused */
#define MARGIN		2		/* seconds; see above */
#define TMP_STALE	600		/* seconds: a build takes seconds */

/* What the index compares: size, mtime, ctime, inode, device. */
static void
stat_key(const struct stat *st, char buf[160])
{
	snprintf(buf, 160, "%jd %jd.%09ld %jd.%09ld %ju %ju", (intmax_t)st->st_size,
	    (intmax_t)st->st_mtim.tv_sec, st->st_mtim.tv_nsec,
	    (intmax_t)st->st_ctim.tv_sec, st->st_ctim.tv_nsec,
	    (uintmax_t)st->st_ino, (uintmax_t)st->st_dev);
}

/* Whether the stat is old enough, against the index's time, to vouch for. */
static int
stat_settled(const struct stat *st, long long since)
{
	return st->st_mtim.tv_sec < since - MARGIN && st->st_ctim.tv_sec < since - MARGIN;
}

/*
 * Read and hash one reference; *st is its stat after the last byte was
 * read, so that a change during the read shows as a stamp the index does
 * not trust.  Never blocks on a FIFO; refuses what is not a regular file.
 */
static int
read_image(const char *path, struct dq_refimage *im, struct stat *st)
{
	int fd, fl, e;
	size_t off = 0;
	ssize_t r;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) == -1)
		return -1;
	if (fstat(fd, st) == -1)
		goto fail;
	if (!S_ISREG(st->st_mode)) {
		errno = S_ISDIR(st->st_mode) ? EISDIR : ENXIO;
		goto fail;
	}
	if (st->st_size > IMAGE_MAX) {
		errno = EFBIG;
		goto fail;
	}
	if ((fl = fcntl(fd, F_GETFL)) == -1 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == -1)
		goto fail;
	free(im->data);
	im->data = dq_xmalloc((size_t)st->st_size + 1);
	while (off < (size_t)st->st_size) {
		r = read(fd, im->data + off, (size_t)st->st_size - off);
		if (r == 0)
			break;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		off += (size_t)r;
	}
	if (fstat(fd, st) == -1)
		goto fail;
	close(fd);
	im->len = off;
	dq_sha256_hex(im->data, im->len, im->sha);
	return 0;
fail:
	e = errno;
	close(fd);
	errno = e;
	return -1;
}

int
dq_refimage_read(const char *skudir, struct dq_refimage *im, struct dq_err *err)
{
	char *p = dq_xasprintf("%s/%s", skudir, im->name);
	struct stat st;
	int rc = 0;

	if (read_image(p, im, &st) == -1) {
		dq_err_system(err, DQ_EX_CONFIG, "reference_unreadable", "%s: %s", p,
		    strerror(errno));
		rc = -1;
	}
	free(p);
	return rc;
}

void
dq_refcache_sweep(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	time_t now = time(NULL);

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		struct stat st;

		/* model.c's temporaries, and dq_write_atomic's (the index's) */
		if (strstr(de->d_name, ".model.tmp.") == NULL &&
		    strncmp(de->d_name, ".tmp.", 5) != 0)
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode) && st.st_mtime < now - TMP_STALE)
			unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
}

static void
index_corrupt(const char *sku, const char *path, const char *why)
{
	dq_log(DQ_WARNING, "cache_corrupt", json_pack("{s:s, s:s, s:s}", "sku", sku,
	    "file", path, "reason", why),
	    "reference index %s is unusable (%s): hashing the references and replacing it",
	    path, why);
}

/*
 * The index at path for dir: its images object (a new reference) and its
 * time, or NULL when there is none (silently) or it is unusable (logged).
 */
static json_t *
index_load(const char *sku, const char *path, const char *dir, long long *since)
{
	unsigned char *d = NULL;
	size_t len, n;
	char sum[65];
	json_t *j = NULL, *images = NULL, *v;
	const char *why = NULL, *name, *fmt, *jdir;
	json_int_t t;

	if (dq_read_file(path, INDEX_MAX, &d, &len) == -1) {
		if (errno != ENOENT)
			index_corrupt(sku, path, strerror(errno));
		return NULL;
	}
	/* one line of JSON, then its SHA-256 and a newline */
	if (len < 67 || d[len - 1] != '\n' || d[len - 66] != '\n') {
		why = "truncated";
		goto out;
	}
	n = len - 66;
	dq_sha256_hex(d, n, sum);
	if (memcmp(sum, d + n + 1, 64) != 0) {
		why = "checksum mismatch";
		goto out;
	}
	j = json_loadb((const char *)d, n, JSON_REJECT_DUPLICATES, NULL);
	if (json_unpack(j, "{s:s, s:s, s:I, s:o}", "format", &fmt, "dir", &jdir,
	    "since", &t, "images", &v) != 0 || strcmp(fmt, INDEX_FORMAT) != 0 ||
	    !json_is_object(v)) {
		why = "not an index of this build";
		goto out;
	}
	if (strcmp(jdir, dir) != 0) {
		why = "the index of another directory";
		goto out;
	}
	images = json_incref(v);
	json_object_foreach(images, name, v)
		if (!json_is_array(v) || json_array_size(v) != 2 ||
		    !json_is_string(json_array_get(v, 0)) ||
		    json_string_length(json_array_get(v, 1)) != 64) {
			json_decref(images);
			images = NULL;
			why = "not an index of this build";
			goto out;
		}
	*since = (long long)t;
out:
	if (why)
		index_corrupt(sku, path, why);
	json_decref(j);
	free(d);
	return images;
}

static void
index_save(const char *cachedir, const char *path, const char *dir, long long since,
    json_t *images)
{
	json_t *j = json_pack("{s:s, s:s, s:I, s:O}", "format", INDEX_FORMAT, "dir", dir,
	    "since", (json_int_t)since, "images", images);
	char *line = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS), *text, sum[65];
	size_t n;

	if (line == NULL)
		dq_die(DQ_EX_IOERR, "out of memory");
	dq_sha256_hex(line, strlen(line), sum);
	text = dq_xasprintf("%s\n%s\n", line, sum);
	n = strlen(text);
	if (dq_mkdirs(cachedir, 0777) == -1 || dq_write_atomic(path, text, n, 0644) == -1)
		dq_log(DQ_WARNING, "cache", json_pack("{s:s}", "file", path),
		    "cannot write the reference index: %s; the references will be hashed "
		    "at every start", strerror(errno));
	else
		dq_refcache_sweep(cachedir);
	free(text);
	free(line);
	json_decref(j);
}

int
dq_refindex_hash(const char *cachedir, const char *skudir, const char *sku,
    struct dq_refimage *ri, int n, struct dq_err *err)
{
	struct timespec now;
	char *dir = NULL, *ipath = NULL, *p, key[160], dsha[65];
	json_t *old = NULL, *images = json_object();
	long long since = 0;
	int i, hashed = 0, racy = 0, rc = -1;
	struct stat st;

	/* before any stat: whatever changes from now on is stamped later */
	clock_gettime(CLOCK_REALTIME_COARSE, &now);
	if (cachedir) {
		if ((dir = realpath(skudir, NULL)) == NULL)
			dir = dq_xstrdup(skudir);
		dq_sha256_hex(dir, strlen(dir), dsha);
		ipath = dq_xasprintf("%s/%s.%.16s.index", cachedir, sku, dsha);
		old = index_load(sku, ipath, dir, &since);
	}
	for (i = 0; i < n; i++) {
		json_t *e = json_object_get(old, ri[i].name);

		p = dq_xasprintf("%s/%s", skudir, ri[i].name);
		if (e && stat(p, &st) == 0 && S_ISREG(st.st_mode) &&
		    (stat_key(&st, key), strcmp(key, json_string_value(json_array_get(e, 0))) == 0)) {
			if (stat_settled(&st, since)) {
				memcpy(ri[i].sha, json_string_value(json_array_get(e, 1)), 65);
				ri[i].len = (size_t)st.st_size;
				json_object_set(images, ri[i].name, e);
				free(p);
				continue;
			}
			racy++;
		}
		if (read_image(p, &ri[i], &st) == -1) {
			dq_err_system(err, DQ_EX_CONFIG, "reference_unreadable", "%s: %s", p,
			    strerror(errno));
			free(p);
			goto out;
		}
		free(p);
		hashed++;
		/* a file that grew while it was read is not recorded: hashed next time */
		stat_key(&st, key);
		if ((size_t)st.st_size == ri[i].len)
			json_object_set_new(images, ri[i].name, json_pack("[s, s]", key, ri[i].sha));
	}
	if (ipath && (hashed > 0 || json_object_size(old) != (size_t)n))
		index_save(cachedir, ipath, dir, (long long)now.tv_sec, images);
	dq_log(DQ_DEBUG, "reference_index", json_pack("{s:s, s:i, s:i, s:i, s:s?}",
	    "sku", sku, "images", n, "hashed", hashed, "racy", racy, "file", ipath),
	    "%d of %d references of %s found by the index, %d hashed (%d changed too "
	    "recently for it)", n - hashed, n, sku, hashed, racy);
	rc = hashed;
out:
	json_decref(old);
	json_decref(images);
	free(ipath);
	free(dir);
	return rc;
}
