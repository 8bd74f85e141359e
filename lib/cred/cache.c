/*
 * cache.c - the token cache shared by every process of a user (DESIGN §6).
 *
 * A worker batch starts four programs, a burst of CGI requests a process
 * each; every one of them needs the same token, which lives ~24 h.  So
 * tokens are kept in files: one per (mechanism, endpoint, tenant, client,
 * scope), named by the SHA-256 of that key, in a directory of the user's
 * own: $DQ_STATE_DIR/tokens-<uid>, else $XDG_RUNTIME_DIR/dq-tokens-<uid>,
 * else ${TMPDIR:-/tmp}/dq-tokens-<uid> (a container sets neither).  One
 * that cannot be used leaves each process to fetch its own, logged.
 *
 * - The directory is 0700 and the user's; one that is someone else's is
 *   not used at all.  A file is trusted only when it is a regular file,
 *   the user's, mode 0600, small, whole JSON holding the key it is named
 *   for; anything else (corrupt, foreign, wrong mode, a symbolic link) is
 *   logged as token_cache_untrusted, ignored, and replaced by the next
 *   fetch.  Files are written to a temporary name, made 0600, and renamed
 *   over the old one: a reader sees the old token or the new, whole.
 * - A token is used until refresh_ms (half its life, or refresh_in when
 *   the answer gave one).  Then one process refreshes it under an
 *   exclusive flock of <hash>.lock while the others, failing to take the
 *   lock, keep using the valid one.  A process with no valid token waits
 *   for the lock, then reads the file again: ten processes started at
 *   once with an empty cache make one fetch.  A refresh that fails while
 *   the old token is still valid is logged and tried again after a pause
 *   (a minute at most), not at every request.
 * - Within a process one thread fetches (or reads the file) for a key at
 *   a time; the others use the valid token or wait for that one fetch,
 *   and share its error.  No lock is held around anything but memory
 *   while another thread uses a token.
 * - dq_token_invalidate() (a 401 from a service) drops the token from the
 *   process and from the file, when the file still holds that token: a
 *   token someone already replaced stays.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dq.h"

#define FILE_MAX (64 * 1024)

struct entry {
	char *key;
	char path[PATH_MAX], lock[PATH_MAX];	/* "" without a cache directory */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct dq_token tok;	/* value NULL: none */
	int busy;		/* a thread is fetching */
	unsigned gen;		/* fetches finished */
	int failed;		/* the last one failed, with err */
	struct dq_err err;
	int64_t pause_ms;	/* a failed refresh: not again before this */
	struct entry *next;
};

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *table;

static pthread_once_t dir_once = PTHREAD_ONCE_INIT;
static const struct dq_mi *mi;
static char dir[PATH_MAX];	/* "": no shared cache */

char *
dq_token_cache_path(void)
{
	const char *state = getenv("DQ_STATE_DIR"), *run = getenv("XDG_RUNTIME_DIR");
	const char *tmp = getenv("TMPDIR");

	if (state && *state)
		return dq_xasprintf("%s/tokens-%ld", state, (long)geteuid());
	if (run && *run)
		return dq_xasprintf("%s/dq-tokens-%ld", run, (long)geteuid());
	/* A container sets neither: the temporary directory, where a
	 * directory someone else made first is refused like any other. */
	if (!(tmp && *tmp))
		tmp = "/tmp";
	return dq_xasprintf("%s/dq-tokens-%ld", tmp, (long)geteuid());
}

/* The cache directory: made 0700 when missing; the user's or unused. */
static void
cache_dir(void)
{
	char *path = dq_token_cache_path();
	struct stat st;

	if (strlen(path) >= sizeof dir - 64) {
		errno = ENAMETOOLONG;
		snprintf(dir, sizeof dir, "%.*s", (int)sizeof dir - 64, path);
		free(path);
		goto unusable;
	}
	strcpy(dir, path);
	free(path);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		goto unusable;
	if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
		errno = EPERM;
		goto unusable;
	}
	/* The user's own, made looser by hand: 0700 again (its files are
	 * checked one by one anyway). */
	if ((st.st_mode & 077) && chmod(dir, 0700) < 0)
		goto unusable;
	return;
unusable:
	dq_log(DQ_WARNING, "token_cache_untrusted", json_pack("{s:s}", "file", dir),
	    "token cache %s not used (%s): tokens are not shared with other processes",
	    dir, errno == EPERM ? "not a directory of this user's" : strerror(errno));
	dir[0] = '\0';
}

/* The mechanism and the directory, once: the first token asked for. */
static void
setup(void)
{
	dq_mi_mechanism(&mi, NULL);
	cache_dir();
}

static int
ready(struct dq_err *err)
{
	if (!dq_mi_mechanism(NULL, err))
		return -1;
	pthread_once(&dir_once, setup);
	return 0;
}

static struct entry *
entry_for(const char *scope)
{
	char *key = dq_mi_cache_key(mi, scope);
	struct entry *e;
	char hex[65];

	pthread_mutex_lock(&table_lock);
	for (e = table; e; e = e->next)
		if (strcmp(e->key, key) == 0)
			break;
	if (!e) {
		e = dq_xcalloc(1, sizeof *e);
		e->key = key;
		key = NULL;
		pthread_mutex_init(&e->mu, NULL);
		pthread_cond_init(&e->cv, NULL);
		if (dir[0]) {
			dq_sha256_hex(e->key, strlen(e->key), hex);
			hex[32] = '\0';
			if (snprintf(e->path, sizeof e->path, "%s/%s.json", dir, hex) >= (int)sizeof e->path ||
			    snprintf(e->lock, sizeof e->lock, "%s/%s.lock", dir, hex) >= (int)sizeof e->lock)
				e->path[0] = e->lock[0] = '\0';
		}
		e->next = table;
		table = e;
	}
	pthread_mutex_unlock(&table_lock);
	free(key);
	return e;
}

static void
tok_clear(struct dq_token *t)
{
	if (t->value) {
		dq_wipe(t->value, strlen(t->value));
		free(t->value);
	}
	memset(t, 0, sizeof *t);
}

static void
tok_copy(struct dq_token *dst, const struct dq_token *src)
{
	*dst = *src;
	dst->value = src->value ? dq_xstrdup(src->value) : NULL;
}

/* Usable now: before its expiry less a margin (5 min, less for a token
 * that lives minutes, as tests' do). */
static int
usable(const struct dq_token *t, int64_t now)
{
	int64_t margin = (t->expires_ms - t->refresh_ms) / 4;

	if (margin > 300000)
		margin = 300000;
	if (margin < 0)
		margin = 0;
	return t->value && now < t->expires_ms - margin;
}

/* Set while a file already reported is read again under the lock. */
static _Thread_local int quiet;

static void
untrusted(const char *path, const char *why)
{
	if (quiet)
		return;
	dq_log(DQ_WARNING, "token_cache_untrusted", json_pack("{s:s}", "file", path),
	    "token cache file %s ignored (%s); it will be replaced", path, why);
}

/* The file's token: 0, 1 when there is none to trust (absent or
 * untrusted, logged). */
static int
file_read(const struct entry *e, struct dq_token *t)
{
	char buf[FILE_MAX + 1];
	struct stat st;
	json_t *o = NULL, *at;
	ssize_t n;
	size_t len = 0;
	int fd, rc = 1;

	memset(t, 0, sizeof *t);
	if ((fd = open(e->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)) < 0) {
		if (errno == ELOOP)
			untrusted(e->path, "a symbolic link");
		else if (errno != ENOENT)
			untrusted(e->path, strerror(errno));
		return 1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		untrusted(e->path, "not a regular file");
		goto out;
	}
	if (st.st_uid != geteuid()) {
		untrusted(e->path, "owned by another user");
		goto out;
	}
	if ((st.st_mode & 07777) != 0600) {
		untrusted(e->path, "mode is not 0600");
		goto out;
	}
	if (st.st_size > FILE_MAX) {
		untrusted(e->path, "too large");
		goto out;
	}
	while (len < FILE_MAX && (n = read(fd, buf + len, FILE_MAX - len)) > 0)
		len += (size_t)n;
	o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(o) || json_integer_value(json_object_get(o, "v")) != 1 ||
	    !json_is_string(json_object_get(o, "key")) ||
	    strcmp(json_string_value(json_object_get(o, "key")), e->key) != 0 ||
	    !json_is_string(at = json_object_get(o, "access_token")) || json_string_length(at) == 0 ||
	    !json_is_integer(json_object_get(o, "expires_ms")) ||
	    !json_is_integer(json_object_get(o, "refresh_ms"))) {
		untrusted(e->path, "not a token cache file of this key");
		goto out;
	}
	t->value = dq_xstrdup(json_string_value(at));
	t->expires_ms = json_integer_value(json_object_get(o, "expires_ms"));
	t->refresh_ms = json_integer_value(json_object_get(o, "refresh_ms"));
	rc = 0;
out:
	if (o) {
		/* the token's copy in Jansson's strings cannot be wiped; the buffer can */
		json_decref(o);
	}
	dq_wipe(buf, len);
	close(fd);
	return rc;
}

/* Write the token: a temporary 0600 file renamed over the old one. */
static void
file_write(const struct entry *e, const struct dq_token *t)
{
	char tmp[PATH_MAX], id[37], *s;
	json_t *o;
	int fd = -1;

	dq_uuid_new(id);
	if (snprintf(tmp, sizeof tmp, "%s/.tmp.%s", dir, id) >= (int)sizeof tmp)
		return;
	o = json_pack("{s:i,s:s,s:s,s:I,s:I}", "v", 1, "key", e->key, "access_token", t->value,
	    "expires_ms", (json_int_t)t->expires_ms, "refresh_ms", (json_int_t)t->refresh_ms);
	s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!s)
		return;
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0 ||
	    fchmod(fd, 0600) < 0 || dq_write_all(fd, s, strlen(s)) < 0 || close(fd) < 0 ||
	    (fd = -1, rename(tmp, e->path) < 0)) {
		dq_log(DQ_WARNING, "token_cache", json_pack("{s:s}", "file", e->path),
		    "token cache %s not written: %s", e->path, strerror(errno));
		if (fd >= 0)
			close(fd);
		unlink(tmp);
	}
	dq_wipe(s, strlen(s));
	free(s);
}

/* The lock file, or -1 when it cannot be used (then no file either). */
static int
lock_open(const struct entry *e)
{
	struct stat st;
	int fd;

	if (!e->lock[0])
		return -1;
	if ((fd = open(e->lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0) {
		untrusted(e->lock, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
		untrusted(e->lock, "not a regular file of this user's");
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * A fresh token for e into *out, given what the process holds (old, may
 * be unusable): from the file when another process refreshed it, else
 * fetched under the lock.  With a usable old token and the lock taken by
 * another process, the file's or the old token is the answer: that other
 * process refreshes.
 */
static int
refresh(struct entry *e, const char *scope, const struct dq_token *old, struct dq_token *out,
    struct dq_err *err)
{
	struct dq_token ft;
	int64_t now = dq_now_ms();
	int fd, rc = -1;

	if ((fd = lock_open(e)) < 0)
		return dq_mi_fetch(mi, scope, out, err);
	if (file_read(e, &ft) == 0 && usable(&ft, now) && now < ft.refresh_ms) {
		*out = ft;
		close(fd);
		return 0;
	}
	if (usable(&ft, now) || usable(old, now)) {
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			if (usable(&ft, now) && (!old->value || ft.expires_ms >= old->expires_ms))
				*out = ft;
			else {
				tok_clear(&ft);
				tok_copy(out, old);
			}
			close(fd);
			return 0;
		}
	} else {
		while (flock(fd, LOCK_EX) < 0)
			if (errno != EINTR) {
				close(fd);
				tok_clear(&ft);
				return dq_mi_fetch(mi, scope, out, err);
			}
	}
	/* Under the lock: another process may have refreshed meanwhile
	 * (what was untrusted before is not reported twice). */
	tok_clear(&ft);
	now = dq_now_ms();
	quiet = 1;
	rc = file_read(e, &ft);
	quiet = 0;
	if (rc == 0 && usable(&ft, now) && now < ft.refresh_ms) {
		*out = ft;
		goto out;
	}
	rc = -1;
	tok_clear(&ft);
	if ((rc = dq_mi_fetch(mi, scope, out, err)) == 0)
		file_write(e, out);
out:
	close(fd);		/* and the lock with it */
	return rc;
}

int
dq_token_get(const char *scope, char **token, struct dq_err *err)
{
	struct entry *e;
	struct dq_token old, fresh = { 0 };
	struct dq_err ferr;
	unsigned gen;
	int64_t now;
	int rc;

	*token = NULL;
	if (ready(err) < 0)
		return -1;
	e = entry_for(scope);
	pthread_mutex_lock(&e->mu);
	gen = e->gen;
	for (;;) {
		now = dq_now_ms();
		if (usable(&e->tok, now) && (now < e->tok.refresh_ms || e->busy || now < e->pause_ms)) {
			*token = dq_xstrdup(e->tok.value);
			pthread_mutex_unlock(&e->mu);
			return 0;
		}
		if (!e->busy && e->gen != gen && e->failed) {
			/* the fetch this thread waited for failed: its error */
			*err = e->err;
			pthread_mutex_unlock(&e->mu);
			return -1;
		}
		if (!e->busy)
			break;
		pthread_cond_wait(&e->cv, &e->mu);
	}
	e->busy = 1;
	tok_copy(&old, &e->tok);
	pthread_mutex_unlock(&e->mu);

	rc = refresh(e, scope, &old, &fresh, &ferr);

	pthread_mutex_lock(&e->mu);
	now = dq_now_ms();
	e->failed = 0;
	if (rc == 0) {
		tok_clear(&e->tok);
		e->tok = fresh;
		e->pause_ms = 0;
	} else if (usable(&e->tok, now)) {
		int64_t pause = (e->tok.expires_ms - now) / 4;

		e->pause_ms = now + (pause < 60000 ? pause : 60000);
		dq_log_err(DQ_WARNING, "token_refresh_failed", NULL, &ferr);
		rc = 0;
	} else {
		e->failed = 1;
		e->err = ferr;
		*err = ferr;
	}
	if (rc == 0)
		*token = dq_xstrdup(e->tok.value);
	e->busy = 0;
	e->gen++;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
	tok_clear(&old);
	return rc;
}

void
dq_token_invalidate(const char *scope, const char *token)
{
	struct entry *e;
	struct dq_token ft;
	int fd;

	if (ready(NULL) < 0)
		return;
	e = entry_for(scope);
	pthread_mutex_lock(&e->mu);
	if (e->tok.value && strcmp(e->tok.value, token) == 0)
		tok_clear(&e->tok);
	pthread_mutex_unlock(&e->mu);
	if ((fd = lock_open(e)) < 0)
		return;
	while (flock(fd, LOCK_EX) < 0)
		if (errno != EINTR) {
			close(fd);
			return;
		}
	if (file_read(e, &ft) == 0 && strcmp(ft.value, token) == 0)
		unlink(e->path);
	tok_clear(&ft);
	close(fd);
	dq_log(DQ_INFO, "token_invalidated", NULL, "a service refused the token for %s: "
	    "dropped, a new one will be fetched", scope);
}

void
dq_token_free(char *token)
{
	if (token) {
		dq_wipe(token, strlen(token));
		free(token);
	}
}

/* The HTTP layer's sign and unauthorized callbacks for a bearer token. */
int
dq_bearer_sign(const struct dq_http_req *req, struct dq_http_hdrs *h, void *arg,
    struct dq_err *err)
{
	struct dq_bearer *b = arg;

	dq_token_free(b->token);
	b->token = NULL;
	if (dq_token_get(b->scope, &b->token, err) < 0)
		return -1;
	dq_http_add(h, "Authorization", "Bearer %s", b->token);
	return 0;
}

int
dq_bearer_unauthorized(void *arg)
{
	struct dq_bearer *b = arg;

	if (!b->token)
		return 0;
	dq_token_invalidate(b->scope, b->token);
	return 1;
}

void
dq_bearer_done(struct dq_bearer *b)
{
	dq_token_free(b->token);
	b->token = NULL;
}
