/*
 * local.c - the local spool: a queue as a directory of files.
 *
 * DQ_LOCAL_DIR/queues/<name>/ holds tmp/, ready/, locked/, dead/, ids/,
 * a `lock' file for flock(2) and a `seq' counter.  A message is an
 * immutable JSON file {"message_id","enqueued_at","sequence_number","body"}
 * (plus "dead_letter_reason" and "dead_letter_description" once dead).
 * Its state is its directory and its name:
 *
 *	ready/<seq>.<dc>			dc = deliveries so far
 *	locked/<seq>.<dc>.<token>.<expiry_ms>[.d]	.d: taken from dead/
 *	dead/<seq>.<dc>
 *
 * Why names: every change of state is then one rename(2), which is atomic
 * and which exactly one of several racing processes can win.  Two
 * receivers renaming ready/S.0 into locked/ cannot both succeed; a
 * complete (unlink), a renew (rename to a later expiry) and the sweeper
 * returning an expired lease (rename back to ready/) race on the same name
 * and each either wins or finds ENOENT.  The delivery count lives in the
 * name rather than in the file so that raising it costs no rewrite and a
 * stale directory listing can never take a message twice: after a
 * redelivery it is ready/S.1, and a rename of ready/S.0 fails.  The lock
 * token in the name is what a receipt must present: a stale token names
 * no file, so it can neither complete nor renew.  Expired leases are
 * returned by the next receive (of any process); until then the holder
 * may still settle or renew, since no one else can have the message.
 *
 * Sending takes the flock (duplicate detection and the counter need it);
 * nothing else does.  The file is written in tmp/, fsynced, linked into
 * ready/ (link, not rename: a counter gone backwards can never overwrite
 * a message) and the directory fsynced before the id file for duplicate
 * detection is written, so a crash can cause a duplicate, never a loss.
 *
 * Duplicate detection keeps ids in time buckets, so that forgetting costs
 * what expired and not a walk over every id in the window:
 *
 *	ids/<end>/<sha256(message_id)>		mtime: its send time
 *
 * <end> (milliseconds since the epoch) bounds the send times of its ids
 * from above; a send at t goes into the bucket ending at the next multiple
 * of window/ID_BUCKETS after t.  Each send lists ids/ (a few dozen names),
 * looks the id up in every bucket that can still hold one sent within the
 * window (end > now - window) and takes it as a duplicate when its mtime
 * is: so an id is a duplicate for exactly the window, as before.  A bucket
 * with end <= now - window holds nothing live; the same send removes it,
 * file by file, then the directory (a send interrupted meanwhile leaves a
 * half-removed bucket the next one finishes).  Its files thus stay on disk
 * at most one bucket (window/ID_BUCKETS) after they expire.  Senders whose
 * windows differ make buckets of different widths side by side: each
 * bucket's name says what it holds, so every sender reads them all.  The
 * old layout, ids/<sha256> files directly in ids/, is migrated by the
 * first send that lists it: ids/ is renamed to ids.old/ and made anew
 * (emptying a directory does not shrink it, and every send lists ids/),
 * a live id is renamed into the bucket of its mtime, an expired one
 * removed, then ids.old/ goes; a send that finds ids.old/ finishes a
 * migration a crash interrupted.  All of it happens under the flock.
 *
 * Dead-lettering needs a new file (the reason is added), so it is not one
 * rename: the message is first claimed by renaming locked/X to
 * tmp/claim.X (one process wins), the dead file is written and linked
 * into dead/, then the claim is removed.  A claim left by a crashed
 * process (ctime older than a minute: rename sets ctime) goes back to
 * locked/ under its old name, so a sweep decides again once it expires;
 * if its dead file had already been linked, the claim is just removed.
 *
 * What survives a crash: a sent message (fsynced before send returns), and
 * every message at least once.  A take, a renew or a completion is not
 * fsynced: after a crash the message may be delivered again with a lower
 * count, which at-least-once delivery allows.
 *
 * Receiving lists ready/ each time (O(n log n) in the backlog): a spool
 * for one machine's workers, not for millions of waiting messages.  Peek
 * does not wait, as on Service Bus.
 *
 * Several users may share a spool: directories are created setgid and
 * group-writable as the umask allows, files 0664 less the umask.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dq.h"

#define SEQ_DIGITS	16
#define MAX_ID_LEN	128		/* message_id, as on Service Bus */
#define MAX_BODY	(1024 * 1024)	/* a message file, serialised */
#define CLAIM_STALE_MS	60000		/* a dead-lettering takes milliseconds */
#define TMP_STALE_MS	3600000		/* an unpublished send, a crashed write */
#define ID_BUCKETS	16		/* buckets per duplicate window */
#define FILE_MODE	0664
#define DIR_MODE	0775

struct spool {
	char *dir;		/* DQ_LOCAL_DIR/queues/<name> */
	char *name;
};

/* A parsed file name of ready/, dead/ or locked/. */
struct ent {
	unsigned long long seq;
	unsigned long dc;
	long long exp;		/* locked/ only */
	int dl;			/* locked/ only: taken from dead/ */
	int locked;		/* listed from locked/ */
	char token[37];		/* locked/ only */
	char name[NAME_MAX + 1];
};

/* What a receipt says about its lock. */
struct rcpt {
	unsigned long long seq;
	unsigned long dc;
	const char *token;
};

static int
mkpath(char *buf, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
mkpath(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vsnprintf(buf, n, fmt, ap);
	va_end(ap);
	if (r < 0 || (size_t)r >= n) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* A spool failure is no message's fault: system scope, status by errno. */
static int
syserr(struct dq_err *err, const char *what, const char *path)
{
	static const char *const codes[] = {
		[DQ_ERRNO_IO] = "spool_io",
		[DQ_ERRNO_REFUSED] = "permission_denied",
		[DQ_ERRNO_BAD_PATH] = "bad_spool",
		[DQ_ERRNO_NO_SPACE] = "no_space",
		[DQ_ERRNO_BUSY] = "spool_busy",
	};
	int e = errno;
	enum dq_errno_kind kind;
	int status = dq_errno_status(e, &kind);

	dq_err_system(err, status, codes[kind], "local queue: unable to %s %s: %s",
	    what, path, strerror(e));
	errno = e;
	return -1;
}

static int
lock_lost(struct dq_err *err, struct spool *sp, const struct rcpt *r)
{
	dq_err_set(err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "lock_lost",
	    "local queue %s: message %llu: lock %s is gone (expired and "
	    "taken back, or already settled)", sp->name, r->seq, r->token);
	return -1;
}

static int
valid_queue_name(const char *s)
{
	size_t n;

	if (!s || (n = strlen(s)) == 0 || n > 200 || s[0] == '.')
		return 0;
	return strspn(s, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

static long
max_attempts(void)
{
	return dq_cfg.max_delivery_attempts > 0 ? dq_cfg.max_delivery_attempts : 5;
}

static int64_t
lease_ms(void)
{
	return dq_cfg.lock_seconds > 0 ? (int64_t)(dq_cfg.lock_seconds * 1000) : 300000;
}

static int64_t
poll_ms(void)
{
	return dq_cfg.poll_ms >= 1 ? (int64_t)dq_cfg.poll_ms : 100;
}

static int64_t
ctime_ms(const struct stat *st)
{
	return (int64_t)st->st_ctim.tv_sec * 1000 + st->st_ctim.tv_nsec / 1000000;
}

static int
all_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}

/* Parse "<seq>.<dc>" and, when locked, ".<token>.<expiry>[.d]". */
static int
parse_name(const char *s, int locked, struct ent *e)
{
	const char *p = s;
	char *end;
	size_t n;

	memset(e, 0, sizeof *e);
	if ((n = strlen(s)) >= sizeof e->name)
		return -1;
	memcpy(e->name, s, n + 1);
	if (n < SEQ_DIGITS + 2 || !all_digits(p, SEQ_DIGITS) || p[SEQ_DIGITS] != '.')
		return -1;
	e->seq = strtoull(p, NULL, 10);
	p += SEQ_DIGITS + 1;
	if (*p < '0' || *p > '9')
		return -1;
	errno = 0;
	e->dc = strtoul(p, &end, 10);
	if (errno)
		return -1;
	if (!locked)
		return *end == '\0' ? 0 : -1;
	if (*end != '.' || strlen(end + 1) < 38 || end[37] != '.')
		return -1;
	memcpy(e->token, end + 1, 36);
	e->token[36] = '\0';
	if (!dq_uuid_valid(e->token))
		return -1;
	p = end + 38;
	if (*p < '0' || *p > '9')
		return -1;
	errno = 0;
	e->exp = strtoll(p, &end, 10);
	if (errno)
		return -1;
	if (strcmp(end, ".d") == 0)
		e->dl = 1;
	else if (*end != '\0')
		return -1;
	return 0;
}

static int
cmp_ent(const void *a, const void *b)
{
	const struct ent *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/*
 * The entries of sub (ready, dead or locked) in sequence order.  With
 * locked, only those whose .d flag equals dl.  0 or -1 with err.
 */
static int
list_dir(struct spool *sp, const char *sub, int dl, struct ent **out,
    size_t *n, struct dq_err *err)
{
	char path[PATH_MAX];
	DIR *d;
	struct dirent *de;
	struct ent e;
	int locked = strcmp(sub, "locked") == 0;
	size_t cap = *n;

	if (mkpath(path, sizeof path, "%s/%s", sp->dir, sub) < 0 ||
	    !(d = opendir(path)))
		return syserr(err, "open", path);
	for (;;) {
		errno = 0;
		if (!(de = readdir(d)))
			break;
		if (parse_name(de->d_name, locked, &e) < 0 || (locked && e.dl != dl))
			continue;
		e.locked = locked;
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			*out = dq_xrealloc(*out, cap * sizeof **out);
		}
		(*out)[(*n)++] = e;
	}
	if (errno) {
		int e2 = errno;

		closedir(d);
		errno = e2;
		return syserr(err, "read", path);
	}
	closedir(d);
	return 0;
}

/*
 * Create, write, fsync and close a temporary file.  A leftover of the same
 * name is unlinked, never truncated: after a crash between link() and
 * unlink() it is a second name of a published message.
 */
static int
write_file(const char *path, const void *data, size_t len)
{
	int fd, e;

	if (unlink(path) < 0 && errno != ENOENT)
		return -1;
	if ((fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, FILE_MODE)) < 0)
		return -1;
	if (dq_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
		e = errno;
		close(fd);
		unlink(path);
		errno = e;
		return -1;
	}
	if (close(fd) < 0) {
		e = errno;
		unlink(path);
		errno = e;
		return -1;
	}
	return 0;
}

/*
 * Read and parse a message file: 1 with *doc, 0 gone, -1 with errno
 * EBADMSG when it is not a message file (nor a regular file), other errno
 * on a read error.
 */
static int
read_doc(const char *path, json_t **doc)
{
	unsigned char *data;
	size_t len;
	json_error_t je;

	*doc = NULL;
	/* Without blocking or following: a FIFO, a directory or a link put
	 * into ready/ by hand is no message file, and is moved aside. */
	if (dq_read_file_nofollow(path, MAX_BODY, &data, &len) < 0) {
		if (errno == EFBIG || errno == EISDIR || errno == ENXIO || errno == ELOOP)
			errno = EBADMSG;
		return errno == ENOENT ? 0 : -1;
	}
	*doc = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &je);
	free(data);
	if (!*doc || !json_is_object(*doc) ||
	    !json_is_string(json_object_get(*doc, "message_id")) ||
	    !json_is_integer(json_object_get(*doc, "sequence_number")) ||
	    !json_object_get(*doc, "body")) {
		json_decref(*doc);
		*doc = NULL;
		errno = EBADMSG;
		return -1;
	}
	return 1;
}

/*
 * A message file that cannot be read as one (disk damage, a hand edit) is
 * moved aside to tmp/corrupt.<name> for a human, never delivered or lost.
 */
static void
quarantine(struct spool *sp, const char *path, const char *name)
{
	char to[PATH_MAX];
	int e = errno;

	if (mkpath(to, sizeof to, "%s/tmp/corrupt.%s", sp->dir, name) == 0 &&
	    rename(path, to) == 0)
		dq_log(DQ_ERROR, "spool_corrupt", json_pack("{s:s,s:s}",
		    "queue", sp->name, "file", to),
		    "unreadable message file moved aside: %s", strerror(e));
	else
		dq_log(DQ_ERROR, "spool_corrupt", json_pack("{s:s,s:s}",
		    "queue", sp->name, "file", path),
		    "unreadable message file: %s", strerror(e));
}

/*
 * Move the locked entry e to dead/ with a reason: claim it by renaming it
 * into tmp/, write the dead file beside it, link that into dead/, drop
 * the claim.  1 done, 0 someone else moved it first, -1 error.
 */
static int
bury(struct spool *sp, const struct ent *e, const char *reason,
    const char *desc, struct dq_err *err)
{
	char lk[PATH_MAX], claim[PATH_MAX], tmp[PATH_MAX], dead[PATH_MAX];
	char ts[25];
	json_t *doc = NULL;
	char *text = NULL;
	int r, ret = -1;

	if (mkpath(lk, sizeof lk, "%s/locked/%s", sp->dir, e->name) < 0 ||
	    mkpath(claim, sizeof claim, "%s/tmp/claim.%s", sp->dir, e->name) < 0 ||
	    mkpath(tmp, sizeof tmp, "%s/tmp/dead.%s", sp->dir, e->name) < 0 ||
	    mkpath(dead, sizeof dead, "%s/dead/%0*llu.%lu", sp->dir,
	    SEQ_DIGITS, e->seq, e->dc) < 0)
		return syserr(err, "name", sp->dir);
	if (rename(lk, claim) < 0)
		return errno == ENOENT ? 0 : syserr(err, "claim", lk);
	if ((r = read_doc(claim, &doc)) <= 0) {
		if (r == 0)
			return 1;
		if (errno == EBADMSG) {
			quarantine(sp, claim, e->name);
			return 1;
		}
		syserr(err, "read", claim);
		goto undo;
	}
	dq_rfc3339_ms(dq_now_ms(), ts);
	json_object_set_new(doc, "dead_letter_reason", json_string(reason));
	json_object_set_new(doc, "dead_letter_description", json_string(desc));
	json_object_set_new(doc, "dead_lettered_at", json_string(ts));
	text = dq_json_dumps(doc);
	if (write_file(tmp, text, strlen(text)) < 0) {
		syserr(err, "write", tmp);
		goto undo;
	}
	/* EEXIST: a claim recovered after its dead file was linked. */
	if (link(tmp, dead) < 0 && errno != EEXIST) {
		syserr(err, "link", dead);
		unlink(tmp);
		goto undo;
	}
	unlink(tmp);
	if (mkpath(tmp, sizeof tmp, "%s/dead", sp->dir) == 0 && dq_fsync_dir(tmp) < 0) {
		syserr(err, "fsync", tmp);
		goto out;	/* the claim stays: recovery finds the dead file */
	}
	if (unlink(claim) < 0 && errno != ENOENT)
		dq_log(DQ_WARNING, "spool_io", json_pack("{s:s}", "queue", sp->name),
		    "unable to remove %s: %s", claim, strerror(errno));
	dq_log(DQ_WARNING, "dead_lettered", json_pack("{s:s,s:s?,s:O,s:I,s:s}",
	    "queue", sp->name, "image_id",
	    json_string_value(json_object_get(json_object_get(doc, "body"), "image_id")),
	    "message_id", json_object_get(doc, "message_id"),
	    "delivery_count", (json_int_t)e->dc, "reason", reason),
	    "dead-lettered: %s: %s", reason, desc);
	ret = 1;
	goto out;
undo:
	/* Put the message back under its lock: nothing was lost. */
	if (rename(claim, lk) < 0)
		dq_log(DQ_ERROR, "spool_io", json_pack("{s:s}", "queue", sp->name),
		    "unable to return %s: %s", claim, strerror(errno));
out:
	free(text);
	json_decref(doc);
	return ret;
}

/*
 * Return expired leases: to ready/ with the same count, to dead/ when it
 * has had max_delivery_attempts deliveries or was taken from dead/.  Then
 * recover the claims and temporary files of crashed processes.
 */
static int
sweep(struct spool *sp, struct dq_err *err)
{
	char path[PATH_MAX], from[PATH_MAX], to[PATH_MAX], desc[80];
	DIR *d;
	struct dirent *de;
	struct ent e;
	struct stat st;
	int64_t now = dq_now_ms();
	long maxd = max_attempts();

	if (mkpath(path, sizeof path, "%s/locked", sp->dir) < 0 || !(d = opendir(path)))
		return syserr(err, "open", path);
	while ((de = readdir(d))) {
		if (parse_name(de->d_name, 1, &e) < 0 || e.exp >= now)
			continue;
		if (!e.dl && (long)e.dc >= maxd) {
			snprintf(desc, sizeof desc,
			    "lease expired on delivery %lu of at most %ld", e.dc, maxd);
			if (bury(sp, &e, "MaxDeliveryCountExceeded", desc, err) < 0)
				goto fail;
			continue;
		}
		if (mkpath(from, sizeof from, "%s/%s", path, e.name) < 0 ||
		    mkpath(to, sizeof to, "%s/%s/%0*llu.%lu", sp->dir,
		    e.dl ? "dead" : "ready", SEQ_DIGITS, e.seq, e.dc) < 0) {
			syserr(err, "name", path);
			goto fail;
		}
		if (rename(from, to) < 0) {
			if (errno == ENOENT)
				continue;	/* renewed, settled or swept meanwhile */
			syserr(err, "return", from);
			goto fail;
		}
		dq_log(DQ_INFO, "lease_expired", json_pack("{s:s,s:I,s:I}",
		    "queue", sp->name, "sequence_number", (json_int_t)e.seq,
		    "delivery_count", (json_int_t)e.dc),
		    "lease expired, message returned to %s", e.dl ? "dead" : "ready");
	}
	closedir(d);

	if (mkpath(path, sizeof path, "%s/tmp", sp->dir) < 0 || !(d = opendir(path)))
		return syserr(err, "open", path);
	while ((de = readdir(d))) {
		int claim = strncmp(de->d_name, "claim.", 6) == 0;

		if (!claim && strncmp(de->d_name, "msg.", 4) != 0 &&
		    strncmp(de->d_name, "dead.", 5) != 0)
			continue;
		if (mkpath(from, sizeof from, "%s/%s", path, de->d_name) < 0 ||
		    lstat(from, &st) < 0 ||
		    now - ctime_ms(&st) < (claim ? CLAIM_STALE_MS : TMP_STALE_MS))
			continue;
		if (!claim) {
			unlink(from);	/* never sent, or a second name of a sent one */
			continue;
		}
		if (parse_name(de->d_name + 6, 1, &e) < 0)
			continue;
		if (mkpath(to, sizeof to, "%s/dead/%0*llu.%lu", sp->dir,
		    SEQ_DIGITS, e.seq, e.dc) == 0 && access(to, F_OK) == 0) {
			unlink(from);
			continue;
		}
		if (mkpath(to, sizeof to, "%s/locked/%s", sp->dir, e.name) == 0 &&
		    rename(from, to) == 0)
			dq_log(DQ_WARNING, "claim_recovered", json_pack("{s:s,s:I}",
			    "queue", sp->name, "sequence_number", (json_int_t)e.seq),
			    "a stale dead-letter claim was returned to locked/");
	}
	closedir(d);
	return 0;
fail:
	closedir(d);
	return -1;
}

/* The record {"message","receipt"} for a message file's doc. */
static json_t *
make_record(struct spool *sp, json_t *doc, unsigned long long seq,
    unsigned long dc, const char *token, int64_t exp, int dl, int peek)
{
	json_t *rc = json_object(), *v;
	char ts[25];

	json_object_set_new(rc, "backend", json_string("local"));
	json_object_set_new(rc, "queue", json_string(sp->name));
	json_object_set(rc, "message_id", json_object_get(doc, "message_id"));
	if (token)
		json_object_set_new(rc, "lock_token", json_string(token));
	json_object_set_new(rc, "delivery_count", json_integer((json_int_t)dc));
	json_object_set_new(rc, "sequence_number", json_integer((json_int_t)seq));
	if ((v = json_object_get(doc, "enqueued_at")))
		json_object_set(rc, "enqueued_at", v);
	if (exp) {
		dq_rfc3339_ms(exp, ts);
		json_object_set_new(rc, "locked_until", json_string(ts));
	}
	if (dl) {
		json_object_set_new(rc, "dead_letter", json_true());
		if ((v = json_object_get(doc, "dead_letter_reason")))
			json_object_set(rc, "dead_letter_reason", v);
		if ((v = json_object_get(doc, "dead_letter_description")))
			json_object_set(rc, "dead_letter_description", v);
	}
	if (peek)
		json_object_set_new(rc, "peek", json_true());
	return json_pack("{s:O,s:o}", "message", json_object_get(doc, "body"),
	    "receipt", rc);
}

/* Take up to max messages now: rename each into locked/. */
static int
take(struct spool *sp, int max, int dl, json_t *out, struct dq_err *err)
{
	const char *src = dl ? "dead" : "ready";
	char from[PATH_MAX], to[PATH_MAX], token[37], toname[NAME_MAX + 1];
	struct ent *v = NULL;
	size_t n = 0;
	int taken = 0, r;
	json_t *doc;

	if (list_dir(sp, src, 0, &v, &n, err) < 0)
		return -1;
	if (n > 1)
		qsort(v, n, sizeof *v, cmp_ent);
	for (size_t i = 0; i < n && taken < max; i++) {
		int64_t exp = dq_now_ms() + lease_ms();

		dq_uuid_new(token);
		if (mkpath(toname, sizeof toname, "%0*llu.%lu.%s.%lld%s", SEQ_DIGITS,
		    v[i].seq, v[i].dc + 1, token, (long long)exp, dl ? ".d" : "") < 0 ||
		    mkpath(from, sizeof from, "%s/%s/%s", sp->dir, src, v[i].name) < 0 ||
		    mkpath(to, sizeof to, "%s/locked/%s", sp->dir, toname) < 0) {
			syserr(err, "name", sp->dir);
			goto fail;
		}
		if (rename(from, to) < 0) {
			if (errno == ENOENT)
				continue;	/* another receiver won it */
			syserr(err, "take", from);
			goto fail;
		}
		if ((r = read_doc(to, &doc)) <= 0) {
			if (r == 0)
				continue;	/* the lease already ran out */
			if (errno != EBADMSG) {
				/* Ours until the lease runs out, then redelivered. */
				syserr(err, "read", to);
				goto fail;
			}
			quarantine(sp, to, toname);
			continue;
		}
		json_array_append_new(out, make_record(sp, doc, v[i].seq,
		    v[i].dc + 1, token, exp, dl, 0));
		json_decref(doc);
		taken++;
	}
	free(v);
	return taken;
fail:
	free(v);
	if (taken == 0)
		return -1;
	/* What was taken is delivered; the error will come back next time. */
	dq_log_err(DQ_WARNING, "spool_io", json_pack("{s:s}", "queue", sp->name), err);
	return taken;
}

/* Look without taking: ready/ and locked/ (or dead/ and locked/ .d). */
static int
peek(struct spool *sp, int max, int dl, json_t *out, struct dq_err *err)
{
	char path[PATH_MAX];
	struct ent *v = NULL;
	size_t n = 0;
	int count = 0, r, ret = -1;
	json_t *doc;

	if (list_dir(sp, dl ? "dead" : "ready", 0, &v, &n, err) < 0)
		goto out;
	if (list_dir(sp, "locked", dl, &v, &n, err) < 0)
		goto out;
	if (n > 1)
		qsort(v, n, sizeof *v, cmp_ent);
	for (size_t i = 0; i < n && count < max; i++) {
		if (mkpath(path, sizeof path, "%s/%s/%s", sp->dir,
		    v[i].locked ? "locked" : dl ? "dead" : "ready", v[i].name) < 0) {
			syserr(err, "name", sp->dir);
			goto out;
		}
		if ((r = read_doc(path, &doc)) <= 0) {
			if (r < 0 && errno != EBADMSG) {
				syserr(err, "read", path);
				goto out;
			}
			continue;	/* moved meanwhile, or corrupt */
		}
		json_array_append_new(out, make_record(sp, doc, v[i].seq, v[i].dc,
		    NULL, v[i].locked ? v[i].exp : 0, dl, 1));
		json_decref(doc);
		count++;
	}
	ret = count;
out:
	free(v);
	return ret;
}

static int
local_receive(struct dq_queue *q, int max, int64_t wait_ms, int flags,
    json_t *out, struct dq_err *err)
{
	struct spool *sp = q->priv;
	int64_t deadline = dq_now_ms() + (wait_ms > 0 ? wait_ms : 0), now;
	int n, dl = (flags & DQ_RECV_DEAD_LETTER) != 0;

	if (max <= 0)
		return 0;
	if (flags & DQ_RECV_PEEK)
		return peek(sp, max, dl, out, err);
	for (;;) {
		if (sweep(sp, err) < 0)
			return -1;
		if ((n = take(sp, max, dl, out, err)) != 0)
			return n;
		if ((now = dq_now_ms()) >= deadline)
			return 0;
		dq_sleep_ms(deadline - now < poll_ms() ? deadline - now : poll_ms());
	}
}

/* Highest sequence number present, for a missing or damaged counter. */
static int
scan_max_seq(struct spool *sp, unsigned long long *max, struct dq_err *err)
{
	static const char *subs[] = { "ready", "dead", "locked" };
	struct ent *v = NULL;
	size_t n = 0;

	*max = 0;
	for (size_t i = 0; i < 3; i++) {
		if (list_dir(sp, subs[i], 0, &v, &n, err) < 0 ||
		    (i == 2 && list_dir(sp, subs[i], 1, &v, &n, err) < 0)) {
			free(v);
			return -1;
		}
	}
	for (size_t i = 0; i < n; i++)
		if (v[i].seq > *max)
			*max = v[i].seq;
	free(v);
	return 0;
}

/* The next sequence number, made durable before use.  Under the flock. */
static int
next_seq(struct spool *sp, unsigned long long *seq, struct dq_err *err)
{
	char path[PATH_MAX], tmp[PATH_MAX], buf[32];
	unsigned char *data;
	size_t len;
	unsigned long long cur = 0;
	char *end;
	int ok = 0, n;

	if (mkpath(path, sizeof path, "%s/seq", sp->dir) < 0 ||
	    mkpath(tmp, sizeof tmp, "%s/tmp/seq.new", sp->dir) < 0)
		return syserr(err, "name", sp->dir);
	if (dq_read_file(path, 64, &data, &len) == 0) {
		if (len > 0 && len < sizeof buf) {
			memcpy(buf, data, len);
			buf[len] = '\0';
			errno = 0;
			cur = strtoull(buf, &end, 10);
			ok = !errno && end != buf && (*end == '\n' || *end == '\0');
		}
		free(data);
		if (!ok)
			dq_log(DQ_WARNING, "spool_counter", json_pack("{s:s}",
			    "queue", sp->name), "damaged counter %s: rebuilt", path);
	} else if (errno != ENOENT)
		return syserr(err, "read", path);
	if (!ok && scan_max_seq(sp, &cur, err) < 0)
		return -1;
	*seq = cur + 1;
	if (*seq >= 10000000000000000ULL) {
		errno = EOVERFLOW;
		return syserr(err, "count in", path);
	}
	n = snprintf(buf, sizeof buf, "%llu\n", *seq);
	if (write_file(tmp, buf, (size_t)n) < 0)
		return syserr(err, "write", tmp);
	if (rename(tmp, path) < 0)
		return syserr(err, "rename", tmp);
	if (dq_fsync_dir(sp->dir) < 0)
		return syserr(err, "fsync", sp->dir);
	return 0;
}

static int mkdir_shared(const char *path);

/* The bucket of a send at t: the end of its slice of window/ID_BUCKETS. */
static int64_t
bucket_end(int64_t t, int64_t window)
{
	int64_t w = window / ID_BUCKETS > 0 ? window / ID_BUCKETS : 1;

	return (t / w + 1) * w;
}

/* The buckets that may hold an id sent within the window, ids/ listed once. */
struct buckets {
	int64_t *end;
	size_t n, cap;
	int removed;		/* expired ids removed by this listing */
};

static int
has_bucket(const struct buckets *b, int64_t end)
{
	for (size_t i = 0; i < b->n; i++)
		if (b->end[i] == end)
			return 1;
	return 0;
}

static void
add_bucket(struct buckets *b, int64_t end)
{
	if (has_bucket(b, end))
		return;
	if (b->n == b->cap)
		b->end = dq_xrealloc(b->end, (b->cap = b->cap ? b->cap * 2 : 32) *
		    sizeof *b->end);
	b->end[b->n++] = end;
}

/* Remove an expired bucket: its ids, then itself. */
static void
remove_bucket(const char *path, struct buckets *b)
{
	char file[PATH_MAX];
	DIR *d;
	struct dirent *de;

	if (!(d = opendir(path)))
		return;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.' &&
		    mkpath(file, sizeof file, "%s/%s", path, de->d_name) == 0 &&
		    unlink(file) == 0)
			b->removed++;
	closedir(d);
	if (rmdir(path) < 0 && errno != ENOENT)
		dq_log(DQ_WARNING, "spool_io", json_pack("{s:s}", "dir", path),
		    "unable to remove expired id bucket %s: %s", path, strerror(errno));
}

static int
is_hex64(const char *s)
{
	return strlen(s) == 64 && strspn(s, "0123456789abcdef") == 64;
}

/* A bucket's end from its name: 0, or -1 when the name is none. */
static int
bucket_name(const char *s, int64_t *end)
{
	char *e;
	long long v;

	if (!*s || !all_digits(s, strlen(s)))
		return -1;
	errno = 0;
	v = strtoll(s, &e, 10);
	if (errno || *e)
		return -1;
	*end = v;
	return 0;
}

/* An id file of the old layout, from/<sha256>: into its bucket in dir, or gone. */
static void
migrate_id(const char *dir, const char *from_dir, const char *name, int64_t now,
    int64_t window, struct buckets *b)
{
	char from[PATH_MAX], to[PATH_MAX];
	struct stat st;
	int64_t t, end;

	if (mkpath(from, sizeof from, "%s/%s", from_dir, name) < 0 ||
	    lstat(from, &st) < 0 || !S_ISREG(st.st_mode))
		return;
	t = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
	if (now - t >= window) {
		if (unlink(from) == 0)
			b->removed++;
		return;
	}
	end = bucket_end(t, window);
	if (mkpath(to, sizeof to, "%s/%lld", dir, (long long)end) < 0 ||
	    (!has_bucket(b, end) && mkdir_shared(to) < 0) ||
	    mkpath(to, sizeof to, "%s/%lld/%s", dir, (long long)end, name) < 0 ||
	    rename(from, to) < 0) {
		dq_log(DQ_WARNING, "spool_io", json_pack("{s:s}", "file", from),
		    "unable to move id %s into its bucket: %s", from, strerror(errno));
		return;
	}
	add_bucket(b, end);
}

/*
 * Move what the old directory holds into ids/: its live buckets as they
 * are, its ids of the old layout into buckets; then remove it.  The old
 * layout's ids/ is renamed aside first, so that the ids/ every send lists
 * is a new, small directory (a directory does not shrink when emptied).
 */
static void
migrate_old(struct spool *sp, const char *dir, const char *old, int64_t now,
    int64_t window, struct buckets *b)
{
	char from[PATH_MAX], to[PATH_MAX];
	DIR *d;
	struct dirent *de;
	int64_t end;
	int moved = 0;

	if (!(d = opendir(old)))
		return;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		if (is_hex64(de->d_name)) {
			migrate_id(dir, old, de->d_name, now, window, b);
			moved++;
		} else if (bucket_name(de->d_name, &end) == 0 &&
		    mkpath(from, sizeof from, "%s/%s", old, de->d_name) == 0) {
			if (end <= now - window)
				remove_bucket(from, b);
			else if (mkpath(to, sizeof to, "%s/%s", dir, de->d_name) == 0 &&
			    rename(from, to) == 0)
				add_bucket(b, end);
		}
	}
	closedir(d);
	if (rmdir(old) < 0)
		dq_log(DQ_WARNING, "spool_io", json_pack("{s:s}", "dir", old),
		    "unable to remove %s after moving its ids: %s", old, strerror(errno));
	if (moved)
		dq_log(DQ_INFO, "ids_migrated", json_pack("{s:s,s:i}", "queue", sp->name,
		    "count", moved), "moved %d duplicate-detection ids of the old layout "
		    "into time buckets", moved);
}

/*
 * The names of ids/: live buckets into b, expired ones removed; 1 when
 * an id of the old layout is among them, 0, or -1 with errno.
 */
static int
scan_ids(const char *dir, int64_t now, int64_t window, struct buckets *b)
{
	char path[PATH_MAX];
	DIR *d;
	struct dirent *de;
	int64_t end;
	int old = 0;

	if (!(d = opendir(dir)))
		return -1;
	for (;;) {
		errno = 0;
		if (!(de = readdir(d)))
			break;
		if (de->d_name[0] == '.')
			continue;
		if (is_hex64(de->d_name))
			old = 1;
		else if (bucket_name(de->d_name, &end) < 0)
			continue;
		else if (end > now - window)
			add_bucket(b, end);
		else if (mkpath(path, sizeof path, "%s/%s", dir, de->d_name) == 0)
			remove_bucket(path, b);
	}
	if (errno) {
		int e = errno;

		closedir(d);
		errno = e;
		return -1;
	}
	closedir(d);
	return old;
}

/*
 * List ids/ under the flock: the buckets still live into b, expired ones
 * removed, a spool of the old layout migrated (and a migration that a
 * crash interrupted, ids.old/, finished).  0, or -1 with errno.
 */
static int
list_buckets(struct spool *sp, int64_t now, int64_t window, struct buckets *b)
{
	char dir[PATH_MAX], old[PATH_MAX];
	struct stat st;
	int r;

	if (mkpath(dir, sizeof dir, "%s/ids", sp->dir) < 0 ||
	    mkpath(old, sizeof old, "%s/ids.old", sp->dir) < 0)
		return -1;
	if (lstat(old, &st) == 0) {
		if (mkdir_shared(dir) < 0)
			return -1;
		migrate_old(sp, dir, old, now, window, b);
	}
	/* ids/ removed under a running sender: made again, as by an open */
	if ((r = scan_ids(dir, now, window, b)) < 0 && errno == ENOENT &&
	    mkdir_shared(dir) == 0)
		r = 0;
	if (r < 0)
		return -1;
	if (r > 0) {
		if (rename(dir, old) < 0 || mkdir_shared(dir) < 0)
			return -1;
		b->n = 0;
		migrate_old(sp, dir, old, now, window, b);
	}
	if (b->removed)
		dq_log(DQ_DEBUG, "ids_purged", json_pack("{s:s,s:i}",
		    "queue", sp->name, "count", b->removed),
		    "removed %d expired duplicate-detection ids", b->removed);
	return 0;
}

/* 1 when the id (hash) was sent within the window, 0 not, -1 errno. */
static int
seen_id(struct spool *sp, const struct buckets *b, const char *hash, int64_t now,
    int64_t window)
{
	char path[PATH_MAX];
	struct stat st;

	for (size_t i = 0; i < b->n; i++) {
		if (mkpath(path, sizeof path, "%s/ids/%lld/%s", sp->dir,
		    (long long)b->end[i], hash) < 0)
			return -1;
		if (stat(path, &st) < 0) {
			if (errno == ENOENT)
				continue;
			return -1;
		}
		if (now - ((int64_t)st.st_mtim.tv_sec * 1000 +
		    st.st_mtim.tv_nsec / 1000000) < window)
			return 1;
	}
	return 0;
}

/*
 * Record a sent id, its mtime set to the time whose bucket it goes into:
 * the kernel's own stamp comes later, from a coarser clock, and could
 * fall past the bucket's end.  A failure is only logged: the message is
 * sent, and a lost id costs at most a duplicate.
 */
static void
record_id(struct spool *sp, const struct buckets *b, const char *hash,
    const char *message_id, int64_t window)
{
	char path[PATH_MAX];
	int64_t now = dq_now_ms(), end = bucket_end(now, window);
	struct timespec ts[2];
	int fd = -1;

	if (mkpath(path, sizeof path, "%s/ids/%lld", sp->dir, (long long)end) < 0 ||
	    (!has_bucket(b, end) && mkdir_shared(path) < 0) ||
	    mkpath(path, sizeof path, "%s/ids/%lld/%s", sp->dir, (long long)end, hash) < 0 ||
	    (fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, FILE_MODE)) < 0 ||
	    dq_write_all(fd, message_id, strlen(message_id)) < 0 ||
	    dq_write_all(fd, "\n", 1) < 0)
		dq_log(DQ_WARNING, "spool_io", json_pack("{s:s,s:s}",
		    "queue", sp->name, "message_id", message_id),
		    "unable to record id for duplicate detection: %s", strerror(errno));
	if (fd >= 0) {
		ts[0].tv_sec = ts[1].tv_sec = (time_t)(now / 1000);
		ts[0].tv_nsec = ts[1].tv_nsec = (long)(now % 1000) * 1000000;
		/* EPERM on another user's file: its stamp is then the kernel's. */
		(void)futimens(fd, ts);
		close(fd);
	}
}

/* fsync of ready/ after a send; the test hook DQ_TEST_SEND_FSYNC_FAIL=1
 * makes it fail (EIO), as a disk failing after the message was published. */
static int
sync_ready(const char *dir)
{
	if (dq_cfg.test_send_fsync_fail) {
		errno = EIO;
		return -1;
	}
	return dq_fsync_dir(dir);
}

static int
local_send(struct dq_queue *q, json_t *body, const char *message_id,
    struct dq_err *err)
{
	struct spool *sp = q->priv;
	char lock[PATH_MAX], tmp[PATH_MAX], dst[PATH_MAX];
	char hash[65], uuid[37], ts[25];
	unsigned long long seq = 0;
	struct buckets ids = { 0 };
	int64_t now, window = (int64_t)(dq_cfg.dup_window_seconds * 1000);
	json_t *doc = NULL;
	char *text = NULL;
	size_t idlen;
	int fd = -1, ret = -1, tries, published = 0, seen;

	if (!message_id) {
		dq_uuid_new(uuid);
		message_id = uuid;
	}
	if ((idlen = strlen(message_id)) == 0 || idlen > MAX_ID_LEN) {
		dq_err_record(err, "bad_message_id",
		    "message id must be 1 to %d bytes", MAX_ID_LEN);
		return -1;
	}
	if (!body) {
		dq_err_record(err, "bad_message", "no message body");
		return -1;
	}
	dq_sha256_hex(message_id, idlen, hash);
	if (mkpath(lock, sizeof lock, "%s/lock", sp->dir) < 0 ||
	    mkpath(tmp, sizeof tmp, "%s/tmp/msg.%ld", sp->dir, (long)getpid()) < 0)
		return syserr(err, "name", sp->dir);
	/* A new open per send: flock excludes threads of one process too. */
	if ((fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, FILE_MODE)) < 0)
		return syserr(err, "open", lock);
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			syserr(err, "lock", lock);
			goto out;
		}
	}
	now = dq_now_ms();
	if (window > 0) {
		if (list_buckets(sp, now, window, &ids) < 0 ||
		    (seen = seen_id(sp, &ids, hash, now, window)) < 0) {
			syserr(err, "read the ids of", sp->dir);
			goto out;
		}
		if (seen) {
			dq_log(DQ_INFO, "duplicate", json_pack("{s:s,s:s}",
			    "queue", sp->name, "message_id", message_id),
			    "dropped as a duplicate within the detection window");
			ret = 1;
			goto out;
		}
	}
	dq_rfc3339_ms(now, ts);
	/* EEXIST means the counter went backwards: take the next one. */
	for (tries = 0; ; tries++) {
		if (next_seq(sp, &seq, err) < 0)
			goto out;
		json_decref(doc);
		free(text);
		text = NULL;
		doc = json_pack("{s:s,s:s,s:I,s:O}", "message_id", message_id,
		    "enqueued_at", ts, "sequence_number", (json_int_t)seq, "body", body);
		if (!doc) {
			dq_err_record(err, "bad_message_id",
			    "message id is not valid UTF-8");
			goto out;
		}
		text = dq_json_dumps(doc);
		if (strlen(text) > MAX_BODY) {
			dq_err_record(err, "message_too_large",
			    "message of %zu bytes exceeds the local queue's %d",
			    strlen(text), MAX_BODY);
			goto out;
		}
		if (mkpath(dst, sizeof dst, "%s/ready/%0*llu.0", sp->dir,
		    SEQ_DIGITS, seq) < 0) {
			syserr(err, "name", sp->dir);
			goto out;
		}
		if (write_file(tmp, text, strlen(text)) < 0) {
			syserr(err, "write", tmp);
			goto out;
		}
		if (link(tmp, dst) == 0)
			break;
		if (errno != EEXIST || tries >= 1000) {
			syserr(err, "publish", dst);
			unlink(tmp);
			goto out;
		}
		dq_log(DQ_WARNING, "spool_counter", json_pack("{s:s}", "queue",
		    sp->name), "sequence number %llu in use: counter behind", seq);
		if (tries == 0) {
			/* Rebuild the counter from the directories. */
			char sp_seq[PATH_MAX];

			if (mkpath(sp_seq, sizeof sp_seq, "%s/seq", sp->dir) == 0)
				unlink(sp_seq);
		}
	}
	unlink(tmp);
	/* Published: from here a failure leaves the outcome unknown. */
	published = 1;
	if (mkpath(dst, sizeof dst, "%s/ready", sp->dir) < 0 || sync_ready(dst) < 0) {
		syserr(err, "fsync", dst);
		goto out;
	}
	ret = 0;
	/*
	 * Sent.  The id comes after: a crash before it costs a duplicate,
	 * which is harmless, and a failure to write it is only logged.
	 */
	if (window > 0)
		record_id(sp, &ids, hash, message_id, window);
out:
	free(ids.end);
	free(text);
	json_decref(doc);
	if (fd >= 0)
		close(fd);	/* releases the flock */
	return ret < 0 && published ? DQ_SEND_UNKNOWN : ret;
}

/* Check a receipt and read its lock: 0, or -1 with a record error. */
static int
rcpt_parse(struct spool *sp, json_t *receipt, struct rcpt *r, struct dq_err *err)
{
	json_t *seq = json_object_get(receipt, "sequence_number");
	json_t *dc = json_object_get(receipt, "delivery_count");
	const char *backend = json_string_value(json_object_get(receipt, "backend"));
	const char *queue = json_string_value(json_object_get(receipt, "queue"));

	r->token = json_string_value(json_object_get(receipt, "lock_token"));
	if (!backend || strcmp(backend, "local") != 0 || !queue ||
	    strcmp(queue, sp->name) != 0) {
		dq_err_record(err, "bad_receipt",
		    "receipt is not from local queue %s", sp->name);
		return -1;
	}
	if (!r->token) {
		dq_err_record(err, "bad_receipt", "receipt has no lock token "
		    "(a peeked message cannot be settled)");
		return -1;
	}
	if (!dq_uuid_valid(r->token) || !json_is_integer(seq) ||
	    json_integer_value(seq) < 0 || !json_is_integer(dc) ||
	    json_integer_value(dc) < 1) {
		dq_err_record(err, "bad_receipt", "malformed local queue receipt");
		return -1;
	}
	r->seq = (unsigned long long)json_integer_value(seq);
	r->dc = (unsigned long)json_integer_value(dc);
	return 0;
}

/* The locked entry of a receipt: 1 found, 0 gone (lock_lost set), -1 error. */
static int
find_locked(struct spool *sp, json_t *receipt, struct rcpt *r, struct ent *e,
    struct dq_err *err)
{
	char path[PATH_MAX], prefix[SEQ_DIGITS + 64];
	DIR *d;
	struct dirent *de;
	size_t plen;
	int found = 0;

	if (rcpt_parse(sp, receipt, r, err) < 0)
		return -1;
	if (mkpath(prefix, sizeof prefix, "%0*llu.%lu.%s.", SEQ_DIGITS, r->seq,
	    r->dc, r->token) < 0 ||
	    mkpath(path, sizeof path, "%s/locked", sp->dir) < 0)
		return syserr(err, "name", sp->dir);
	plen = strlen(prefix);
	if (!(d = opendir(path)))
		return syserr(err, "open", path);
	while (!found && (de = readdir(d)))
		found = strncmp(de->d_name, prefix, plen) == 0 &&
		    parse_name(de->d_name, 1, e) == 0;
	closedir(d);
	if (!found)
		lock_lost(err, sp, r);
	return found;
}

/*
 * A settle or a renew finds the message's file by its lock token, then
 * renames or removes it.  Another holder of the same lock (a second lease
 * keeper, a dq-dequeue --renew from a terminal) may rename it to a later
 * expiry in between: the name is found again, a few times, before the
 * lock counts as lost.
 */
#define LOCK_RACES 4

/* Each op: 0 done, -1 failed (err set), -2 the name had gone (raced). */
static int
op_complete(struct spool *sp, const struct ent *e, json_t *receipt, const void *arg,
    struct dq_err *err)
{
	char path[PATH_MAX];

	if (mkpath(path, sizeof path, "%s/locked/%s", sp->dir, e->name) < 0)
		return syserr(err, "name", sp->dir);
	if (unlink(path) < 0)
		return errno == ENOENT ? -2 : syserr(err, "remove", path);
	return 0;
}

struct why {
	const char *reason, *desc;
};

static int
op_bury(struct spool *sp, const struct ent *e, json_t *receipt, const void *arg,
    struct dq_err *err)
{
	const struct why *w = arg;
	int f = bury(sp, e, w->reason, w->desc, err);

	return f < 0 ? -1 : f == 0 ? -2 : 1;
}

static int
op_abandon(struct spool *sp, const struct ent *e, json_t *receipt, const void *arg,
    struct dq_err *err)
{
	char from[PATH_MAX], to[PATH_MAX], desc[80];
	int f;

	/* As Service Bus does: the last allowed delivery abandoned is dead. */
	if (!e->dl && (long)e->dc >= max_attempts()) {
		snprintf(desc, sizeof desc, "abandoned on delivery %lu of at most %ld",
		    e->dc, max_attempts());
		if ((f = bury(sp, e, "MaxDeliveryCountExceeded", desc, err)) < 0)
			return -1;
		return f == 0 ? -2 : 1;
	}
	if (mkpath(from, sizeof from, "%s/locked/%s", sp->dir, e->name) < 0 ||
	    mkpath(to, sizeof to, "%s/%s/%0*llu.%lu", sp->dir,
	    e->dl ? "dead" : "ready", SEQ_DIGITS, e->seq, e->dc) < 0)
		return syserr(err, "name", sp->dir);
	if (rename(from, to) < 0)
		return errno == ENOENT ? -2 : syserr(err, "return", from);
	return 0;
}

static int
op_renew(struct spool *sp, const struct ent *e, json_t *receipt, const void *arg,
    struct dq_err *err)
{
	char from[PATH_MAX], to[PATH_MAX], ts[25];
	int64_t exp = dq_now_ms() + lease_ms();

	if (mkpath(from, sizeof from, "%s/locked/%s", sp->dir, e->name) < 0 ||
	    mkpath(to, sizeof to, "%s/locked/%0*llu.%lu.%s.%lld%s", sp->dir,
	    SEQ_DIGITS, e->seq, e->dc, e->token, (long long)exp, e->dl ? ".d" : "") < 0)
		return syserr(err, "name", sp->dir);
	if (rename(from, to) < 0)
		return errno == ENOENT ? -2 : syserr(err, "renew", from);
	dq_rfc3339_ms(exp, ts);
	json_object_set_new(receipt, "locked_until", json_string(ts));
	return 0;
}

/* op on the locked message of receipt: its result, or -1 (lock_lost when gone). */
static int
on_locked(struct dq_queue *q, json_t *receipt,
    int (*op)(struct spool *, const struct ent *, json_t *, const void *, struct dq_err *),
    const void *arg, struct dq_err *err)
{
	struct spool *sp = q->priv;
	struct rcpt r;
	struct ent e;
	int f;

	for (int tries = 0; tries < LOCK_RACES; tries++) {
		if ((f = find_locked(sp, receipt, &r, &e, err)) <= 0)
			return -1;
		if ((f = op(sp, &e, receipt, arg, err)) != -2)
			return f;
	}
	return lock_lost(err, sp, &r);
}

static int
local_complete(struct dq_queue *q, json_t *receipt, struct dq_err *err)
{
	return on_locked(q, receipt, op_complete, NULL, err);
}

static int
local_dead_letter(struct dq_queue *q, json_t *receipt, const char *reason,
    const char *description, struct dq_err *err)
{
	const struct why w = { reason ? reason : "DeadLettered", description ? description : "" };

	return on_locked(q, receipt, op_bury, &w, err) < 0 ? -1 : 0;
}

static int
local_abandon(struct dq_queue *q, json_t *receipt, struct dq_err *err)
{
	return on_locked(q, receipt, op_abandon, NULL, err);
}

static int
local_renew(struct dq_queue *q, json_t *receipt, struct dq_err *err)
{
	return on_locked(q, receipt, op_renew, NULL, err);
}

/* mkdir, setgid so that files keep the spool's group; EEXIST is fine. */
static int
mkdir_shared(const char *path)
{
	struct stat st;

	if (mkdir(path, DIR_MODE) < 0)
		return errno == EEXIST ? 0 : -1;
	if (stat(path, &st) < 0 || chmod(path, (st.st_mode & 07777) | S_ISGID) < 0)
		return -1;
	return 0;
}

static int
setup(struct spool *sp, const char *top, struct dq_err *err)
{
	static const char *subs[] = { "tmp", "ready", "locked", "dead", "ids" };
	char path[PATH_MAX];

	if (dq_mkdirs(top, DIR_MODE) < 0)
		return syserr(err, "create", top);
	if (mkpath(path, sizeof path, "%s/queues", top) < 0 || mkdir_shared(path) < 0 ||
	    mkdir_shared(sp->dir) < 0)
		return syserr(err, "create", errno == ENAMETOOLONG ? top : sp->dir);
	for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
		if (mkpath(path, sizeof path, "%s/%s", sp->dir, subs[i]) < 0 ||
		    mkdir_shared(path) < 0)
			return syserr(err, "create", path);
	return 0;
}

/*
 * --check creates nothing.  A spool not created yet is no error (the
 * first send or receive creates it) when its nearest existing ancestor
 * takes a probe; otherwise each directory must be usable and tmp/ must
 * take a probe file written, synced and removed, which a read-only or
 * full file system refuses.
 */
static int
local_check(struct dq_queue *q, struct dq_err *err)
{
	struct spool *sp = q->priv;
	static const char *subs[] = { "tmp", "ready", "locked", "dead", "ids" };
	char path[PATH_MAX];
	struct stat st;

	if (stat(sp->dir, &st) < 0 && errno == ENOENT) {
		if (dq_probe_ancestor(sp->dir, path, sizeof path) < 0)
			goto fail;
		dq_log(DQ_INFO, "check_missing", json_pack("{s:s,s:s}", "queue", sp->name,
		    "dir", sp->dir), "local queue %s: %s does not exist yet; the first "
		    "dq-enqueue or dq-dequeue creates it (%s takes files)", sp->name, sp->dir, path);
		return 0;
	}
	for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
		if (mkpath(path, sizeof path, "%s/%s", sp->dir, subs[i]) < 0)
			goto fail;
		if (stat(path, &st) < 0 && errno == ENOENT) {
			dq_err_system(err, DQ_EX_CONFIG, "bad_spool", "local queue %s: %s is "
			    "missing; dq-enqueue or dq-dequeue recreates it when they can write "
			    "%s", sp->name, path, sp->dir);
			return -1;
		}
		if (access(path, R_OK | W_OK | X_OK) < 0)
			goto fail;
	}
	if (mkpath(path, sizeof path, "%s/tmp", sp->dir) < 0 || dq_probe_dir(path, path, sizeof path) < 0)
		goto fail;
	return 0;
fail:
	syserr(err, "use", path);
	if (err && err->status != DQ_EX_CONFIG) {
		err->status = DQ_EX_UNAVAILABLE;
		err->retryable = 0;
	}
	return -1;
}

static void
local_close(struct dq_queue *q)
{
	struct spool *sp;

	if (!q)
		return;
	sp = q->priv;
	free(sp->dir);
	free(sp->name);
	free(sp);
	free(q);
}

static struct dq_queue *local_open(const char *, const char *, int, struct dq_err *);

static const struct dq_queue_ops local_ops = {
	.name = "local",
	.send = local_send,
	.receive = local_receive,
	.complete = local_complete,
	.abandon = local_abandon,
	.dead_letter = local_dead_letter,
	.renew = local_renew,
	.check = local_check,
	.close = local_close,
};

struct dq_queue *
dq_queue_local_open(const char *dir, const char *name, struct dq_err *err)
{
	return local_open(dir, name, 1, err);
}

struct dq_queue *
dq_queue_local_attach(const char *dir, const char *name, struct dq_err *err)
{
	return local_open(dir, name, 0, err);
}

static struct dq_queue *
local_open(const char *dir, const char *name, int create, struct dq_err *err)
{
	struct spool *sp;
	struct dq_queue *q;

	if (!dir || !*dir) {
		dq_err_system(err, DQ_EX_CONFIG, "no_local_dir",
		    "local queue: DQ_LOCAL_DIR is not set");
		return NULL;
	}
	if (!valid_queue_name(name)) {
		dq_err_system(err, DQ_EX_CONFIG, "bad_queue_name",
		    "local queue: bad queue name \"%s\" (letters, digits, '.', '_', "
		    "'-'; not starting with '.')", name ? name : "");
		return NULL;
	}
	sp = dq_xcalloc(1, sizeof *sp);
	sp->name = dq_xstrdup(name);
	sp->dir = dq_xasprintf("%s/queues/%s", dir, name);
	/* Leave room for the longest name below the queue directory. */
	if (strlen(sp->dir) + 160 >= PATH_MAX) {
		errno = ENAMETOOLONG;
		syserr(err, "use", dir);
		goto fail;
	}
	if (create && setup(sp, dir, err) < 0)
		goto fail;
	q = dq_xcalloc(1, sizeof *q);
	q->ops = &local_ops;
	q->name = sp->name;
	q->priv = sp;
	return q;
fail:
	free(sp->dir);
	free(sp->name);
	free(sp);
	return NULL;
}
