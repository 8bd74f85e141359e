/*
 * spool-test - unit and stress tests of the local spool queue (lib/queue/local.c).
 *
 * usage: spool-test [-d DIR] [TEST...]
 * Runs the named tests (all when none) in DIR (default: a new directory
 * under $TMPDIR) and prints TAP: "ok N - name" or "not ok N - name" with
 * the reason on stderr.  Exit 0 when all pass, 1 otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dq.h"

static char *top;	/* DQ_LOCAL_DIR of the tests */

#define CHECK(c) do { \
	if (!(c)) { \
		fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
		goto fail; \
	} \
} while (0)

static void
reset_cfg(void)
{
	dq_cfg.lock_seconds = 300;
	dq_cfg.dup_window_seconds = 600;
	dq_cfg.poll_ms = 10;
	dq_cfg.max_delivery_attempts = 5;
}

static struct dq_queue *
qopen(const char *name)
{
	struct dq_err err;
	struct dq_queue *q = dq_queue_local_open(top, name, &err);

	if (!q)
		fprintf(stderr, "open %s: %s: %s\n", name, err.code, err.msg);
	return q;
}

static int
send_n(struct dq_queue *q, const char *id, int n)
{
	struct dq_err err;
	json_t *body = json_pack("{s:i}", "n", n);
	int r = q->ops->send(q, body, id, &err);

	if (r < 0)
		fprintf(stderr, "send %s: %s: %s\n", id ? id : "(null)", err.code, err.msg);
	json_decref(body);
	return r;
}

/* Receive into a new array; NULL on error. */
static json_t *
recv_(struct dq_queue *q, int max, int64_t wait_ms, int flags)
{
	struct dq_err err;
	json_t *out = json_array();
	int n = q->ops->receive(q, max, wait_ms, flags, out, &err);

	if (n < 0) {
		fprintf(stderr, "receive: %s: %s\n", err.code, err.msg);
		json_decref(out);
		return NULL;
	}
	if ((size_t)n != json_array_size(out)) {
		fprintf(stderr, "receive returned %d for %zu records\n", n,
		    json_array_size(out));
		json_decref(out);
		return NULL;
	}
	return out;
}

static json_t *
rc(json_t *rec)
{
	return json_object_get(rec, "receipt");
}

static json_int_t
ival(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);

	return json_is_integer(v) ? json_integer_value(v) : -1;
}

static const char *
sval(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

/* The test's body number of a record. */
static json_int_t
num(json_t *rec)
{
	return ival(json_object_get(rec, "message"), "n");
}

static int64_t
until_ms(json_t *rec)
{
	int64_t ms = 0;

	if (dq_parse_rfc3339_ms(sval(rc(rec), "locked_until"), &ms) < 0)
		return -1;
	return ms;
}

static int
count_files(const char *queue, const char *sub)
{
	char path[4096];
	DIR *d;
	struct dirent *de;
	int n = 0;

	snprintf(path, sizeof path, "%s/queues/%s/%s", top, queue, sub);
	if (!(d = opendir(path)))
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* Settle with op; returns the op's result and leaves err filled. */
enum op { COMPLETE, ABANDON, RENEW, DEAD };

static int
settle(struct dq_queue *q, enum op op, json_t *rec, struct dq_err *err)
{
	json_t *r = rc(rec);

	memset(err, 0, sizeof *err);
	switch (op) {
	case COMPLETE:
		return q->ops->complete(q, r, err);
	case ABANDON:
		return q->ops->abandon(q, r, err);
	case RENEW:
		return q->ops->renew(q, r, err);
	case DEAD:
		return q->ops->dead_letter(q, r, "bad_image", "the image is bad", err);
	}
	return -1;
}

static int
is_lock_lost(const struct dq_err *e)
{
	return strcmp(e->code, "lock_lost") == 0 && e->scope == DQ_SCOPE_RECORD &&
	    e->retryable == 1 && e->status == DQ_EX_TEMPFAIL;
}

static int
t_send_receive_complete(void)
{
	struct dq_queue *q = qopen("basic");
	json_t *out = NULL, *r;
	struct dq_err err;
	int64_t now = dq_now_ms(), ms;
	const char *ids[] = { "a", "b", "c" };

	CHECK(q);
	for (int i = 0; i < 3; i++)
		CHECK(send_n(q, ids[i], i) == 0);
	CHECK(count_files("basic", "ready") == 3);
	CHECK((out = recv_(q, 10, 0, 0)) && json_array_size(out) == 3);
	for (int i = 0; i < 3; i++) {
		json_t *rec = json_array_get(out, (size_t)i);

		r = rc(rec);
		CHECK(num(rec) == i);
		CHECK(strcmp(sval(r, "backend"), "local") == 0);
		CHECK(strcmp(sval(r, "queue"), "basic") == 0);
		CHECK(strcmp(sval(r, "message_id"), ids[i]) == 0);
		CHECK(dq_uuid_valid(sval(r, "lock_token")));
		CHECK(ival(r, "delivery_count") == 1);
		CHECK(ival(r, "sequence_number") == i + 1);
		CHECK(dq_parse_rfc3339_ms(sval(r, "enqueued_at"), &ms) == 0);
		CHECK(ms >= now - 1000 && ms <= dq_now_ms());
		CHECK(until_ms(rec) >= now + 299000);
		CHECK(!json_object_get(r, "peek") && !json_object_get(r, "dead_letter"));
	}
	CHECK(count_files("basic", "ready") == 0 && count_files("basic", "locked") == 3);
	/* nothing more to take while they are locked */
	{
		json_t *none = recv_(q, 10, 0, 0);

		CHECK(none && json_array_size(none) == 0);
		json_decref(none);
	}
	for (int i = 0; i < 3; i++)
		CHECK(settle(q, COMPLETE, json_array_get(out, (size_t)i), &err) == 0);
	CHECK(count_files("basic", "ready") == 0 && count_files("basic", "locked") == 0);
	/* a second complete with the same receipt finds nothing */
	CHECK(settle(q, COMPLETE, json_array_get(out, 0), &err) < 0 && is_lock_lost(&err));
	json_decref(out);
	CHECK((out = recv_(q, 10, 0, 0)) && json_array_size(out) == 0);
	json_decref(out);
	q->ops->close(q);
	return 0;
fail:
	json_decref(out);
	if (q)
		q->ops->close(q);
	return -1;
}

static int
t_order_and_max(void)
{
	struct dq_queue *q = qopen("order");
	json_t *a = NULL, *b = NULL;

	CHECK(q);
	for (int i = 0; i < 5; i++)
		CHECK(send_n(q, NULL, i) == 0);
	CHECK((a = recv_(q, 2, 0, 0)) && json_array_size(a) == 2);
	CHECK(num(json_array_get(a, 0)) == 0 && num(json_array_get(a, 1)) == 1);
	CHECK((b = recv_(q, 10, 1000, 0)) && json_array_size(b) == 3);
	CHECK(num(json_array_get(b, 0)) == 2 && num(json_array_get(b, 2)) == 4);
	/* no message id given: a fresh uuid each */
	CHECK(dq_uuid_valid(sval(rc(json_array_get(b, 0)), "message_id")));
	CHECK(strcmp(sval(rc(json_array_get(b, 0)), "message_id"),
	    sval(rc(json_array_get(b, 1)), "message_id")) != 0);
	json_decref(a);
	json_decref(b);
	q->ops->close(q);
	return 0;
fail:
	json_decref(a);
	json_decref(b);
	if (q)
		q->ops->close(q);
	return -1;
}

static int
t_wait(void)
{
	struct dq_queue *q = qopen("wait");
	json_t *out = NULL;
	int64_t t0;
	pid_t pid;
	int st;

	CHECK(q);
	t0 = dq_now_ms();
	CHECK((out = recv_(q, 5, 150, 0)) && json_array_size(out) == 0);
	CHECK(dq_now_ms() - t0 >= 150 && dq_now_ms() - t0 < 2000);
	json_decref(out);
	out = NULL;
	/* a message sent while a receiver waits ends the wait */
	CHECK((pid = fork()) >= 0);
	if (pid == 0) {
		dq_sleep_ms(100);
		_exit(send_n(q, "late", 1) == 0 ? 0 : 1);
	}
	t0 = dq_now_ms();
	CHECK((out = recv_(q, 5, 10000, 0)) && json_array_size(out) == 1);
	CHECK(dq_now_ms() - t0 < 5000);
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	json_decref(out);
	q->ops->close(q);
	return 0;
fail:
	json_decref(out);
	if (q)
		q->ops->close(q);
	return -1;
}

static int
t_duplicate(void)
{
	struct dq_queue *q = qopen("dup");
	json_t *out = NULL, *body = NULL;
	struct dq_err err;
	char longid[200];

	CHECK(q);
	CHECK(send_n(q, "img-1", 1) == 0);
	CHECK(send_n(q, "img-1", 2) == 1);
	CHECK(send_n(q, "img-2", 3) == 0);
	CHECK((out = recv_(q, 10, 0, 0)) && json_array_size(out) == 2);
	CHECK(num(json_array_get(out, 0)) == 1 && num(json_array_get(out, 1)) == 3);
	json_decref(out);
	out = NULL;
	/* past the window the same id is a new message */
	dq_cfg.dup_window_seconds = 0.05;
	dq_sleep_ms(120);
	CHECK(send_n(q, "img-1", 4) == 0);
	CHECK((out = recv_(q, 10, 0, 0)) && json_array_size(out) == 1);
	CHECK(num(json_array_get(out, 0)) == 4);
	/* an id of 128 bytes is fine, 129 is a record error */
	memset(longid, 'x', sizeof longid);
	longid[128] = '\0';
	CHECK(send_n(q, longid, 5) == 0);
	longid[128] = 'x';
	longid[129] = '\0';
	body = json_object();
	CHECK(q->ops->send(q, body, longid, &err) == -1);
	CHECK(err.scope == DQ_SCOPE_RECORD && strcmp(err.code, "bad_message_id") == 0);
	json_decref(body);
	json_decref(out);
	q->ops->close(q);
	return 0;
fail:
	json_decref(body);
	json_decref(out);
	if (q)
		q->ops->close(q);
	return -1;
}

/* The ids of a queue, in every bucket of ids/; -1 on error. */
static int
count_ids(const char *queue, int *buckets)
{
	char path[2048], sub[4096];
	DIR *d, *e;
	struct dirent *de, *fe;
	int n = 0;

	*buckets = 0;
	snprintf(path, sizeof path, "%s/queues/%s/ids", top, queue);
	if (!(d = opendir(path)))
		return -1;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
		if (!(e = opendir(sub))) {
			n++;	/* a file of the old layout */
			continue;
		}
		++*buckets;
		while ((fe = readdir(e)))
			n += fe->d_name[0] != '.';
		closedir(e);
	}
	closedir(d);
	return n;
}

/* The bucket (its end, ms) holding message id mid, or -1; path filled. */
static long long
find_id(const char *queue, const char *mid, char *path, size_t n)
{
	char dir[2048], hash[65];
	DIR *d;
	struct dirent *de;
	struct stat st;
	long long end = -1;

	dq_sha256_hex(mid, strlen(mid), hash);
	snprintf(dir, sizeof dir, "%s/queues/%s/ids", top, queue);
	if (!(d = opendir(dir)))
		return -1;
	while (end < 0 && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, n, "%s/%s/%s", dir, de->d_name, hash);
		if (stat(path, &st) == 0)
			end = strtoll(de->d_name, NULL, 10);
	}
	closedir(d);
	return end;
}

/* Set a file's mtime to ms since the epoch. */
static int
set_mtime(const char *path, int64_t ms)
{
	struct timespec ts[2];

	ts[0].tv_sec = ts[1].tv_sec = (time_t)(ms / 1000);
	ts[0].tv_nsec = ts[1].tv_nsec = (long)(ms % 1000) * 1000000;
	return utimensat(AT_FDCWD, path, ts, 0);
}

/* Age every bucket of ids/ by ms (renaming it): 0, or -1. */
static int
age_buckets(const char *queue, int64_t ms)
{
	char dir[2048], from[4096], to[4096];
	long long ends[64];
	int n = 0;
	DIR *d;
	struct dirent *de;

	snprintf(dir, sizeof dir, "%s/queues/%s/ids", top, queue);
	if (!(d = opendir(dir)))
		return -1;
	while ((de = readdir(d)) && n < 64)
		if (de->d_name[0] != '.')
			ends[n++] = strtoll(de->d_name, NULL, 10);
	closedir(d);
	for (int i = 0; i < n; i++) {
		snprintf(from, sizeof from, "%s/%lld", dir, ends[i]);
		snprintf(to, sizeof to, "%s/%lld", dir, ends[i] - ms);
		if (rename(from, to) < 0)
			return -1;
	}
	return 0;
}

/* Expired buckets go whole with the next send; live ones stay. */
static int
t_dup_purge(void)
{
	struct dq_queue *q = qopen("purge");
	char id[32];
	int b;

	CHECK(q);
	for (int i = 0; i < 127; i++) {
		snprintf(id, sizeof id, "id-%d", i);
		CHECK(send_n(q, id, i) == 0);
	}
	CHECK(count_ids("purge", &b) == 127 && b >= 1);
	/* two windows on, every bucket has expired: the next send removes them */
	CHECK(age_buckets("purge", 2 * 600000) == 0);
	CHECK(send_n(q, "id-last", 127) == 0);
	CHECK(count_ids("purge", &b) == 1 && b == 1);
	CHECK(send_n(q, "id-5", 201) == 0);	/* forgotten with its bucket */
	q->ops->close(q);
	/* the same in real time */
	CHECK((q = qopen("purge-rt")));
	dq_cfg.dup_window_seconds = 0.05;
	CHECK(send_n(q, "id-before", 203) == 0);
	dq_sleep_ms(100);
	CHECK(send_n(q, "id-after", 204) == 0);
	CHECK(count_ids("purge-rt", &b) == 1 && b == 1);
	q->ops->close(q);
	return 0;
fail:
	if (q)
		q->ops->close(q);
	return -1;
}

/*
 * An id is a duplicate for exactly the window, by its send time; its
 * bucket ends at most window/16 after that time; a bucket is removed
 * once its end is a window past, and not before.
 */
static int
t_dup_buckets(void)
{
	struct dq_queue *q = qopen("buckets");
	char path[4096], path2[4096], dir[2048];
	int64_t w = 600000, t0, t1, now;
	long long end;
	struct stat st;
	int b, fd;

	CHECK(q);
	t0 = dq_now_ms();
	CHECK(send_n(q, "a", 1) == 0);
	t1 = dq_now_ms();
	CHECK((end = find_id("buckets", "a", path, sizeof path)) > 0);
	CHECK(stat(path, &st) == 0);
	now = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
	CHECK(now >= t0 && now <= t1);
	CHECK(end > now && end <= now + w / 16);
	/* sent a window less 2 s ago: still a duplicate */
	CHECK(set_mtime(path, dq_now_ms() - w + 2000) == 0);
	CHECK(send_n(q, "a", 2) == 1);
	/* a window and 1 ms ago, in a bucket not yet expired: a new message */
	CHECK(set_mtime(path, dq_now_ms() - w - 1) == 0);
	CHECK(send_n(q, "a", 3) == 0);
	/* a bucket whose end is a window past goes; one 5 s younger stays */
	now = dq_now_ms();
	snprintf(dir, sizeof dir, "%s/queues/buckets/ids/%lld", top, (long long)(now - w - 1));
	CHECK(mkdir(dir, 0775) == 0);
	snprintf(path, sizeof path, "%s/x", dir);
	CHECK((fd = open(path, O_WRONLY | O_CREAT, 0664)) >= 0 && close(fd) == 0);
	snprintf(dir, sizeof dir, "%s/queues/buckets/ids/%lld", top,
	    (long long)(now - w + 5000));
	CHECK(mkdir(dir, 0775) == 0);
	snprintf(path2, sizeof path2, "%s/y", dir);
	CHECK((fd = open(path2, O_WRONLY | O_CREAT, 0664)) >= 0 && close(fd) == 0);
	CHECK(send_n(q, "b", 4) == 0);
	CHECK(access(path, F_OK) < 0 && errno == ENOENT);
	CHECK(access(path2, F_OK) == 0);
	CHECK(count_ids("buckets", &b) == 3);	/* a (sent again: restamped), b, y */
	CHECK(send_n(q, "a", 5) == 1);
	q->ops->close(q);
	return 0;
fail:
	if (q)
		q->ops->close(q);
	return -1;
}

/* ids/<sha256> of the old layout: a live one moves into its bucket and
 * still catches its duplicate; an expired one goes. */
static int
t_dup_migrate(void)
{
	struct dq_queue *q = qopen("migrate");
	char hash[65], path[2048], found[4096];
	int64_t w = 600000, t;
	long long end;
	int fd, b;

	CHECK(q);
	t = dq_now_ms() - 10000;
	dq_sha256_hex("old-live", 8, hash);
	snprintf(path, sizeof path, "%s/queues/migrate/ids/%s", top, hash);
	CHECK((fd = open(path, O_WRONLY | O_CREAT, 0664)) >= 0 &&
	    write(fd, "old-live\n", 9) == 9 && close(fd) == 0);
	CHECK(set_mtime(path, t) == 0);
	dq_sha256_hex("old-dead", 8, hash);
	snprintf(path, sizeof path, "%s/queues/migrate/ids/%s", top, hash);
	CHECK((fd = open(path, O_WRONLY | O_CREAT, 0664)) >= 0 && close(fd) == 0);
	CHECK(set_mtime(path, dq_now_ms() - w - 1000) == 0);
	CHECK(count_ids("migrate", &b) == 2 && b == 0);
	CHECK(send_n(q, "new", 1) == 0);
	CHECK(access(path, F_OK) < 0 && errno == ENOENT);
	CHECK((end = find_id("migrate", "old-live", found, sizeof found)) > t &&
	    end <= t + w / 16);
	CHECK(count_ids("migrate", &b) == 2);
	CHECK(send_n(q, "old-live", 2) == 1);
	CHECK(send_n(q, "old-dead", 3) == 0);
	snprintf(path, sizeof path, "%s/queues/migrate/ids.old", top);
	CHECK(access(path, F_OK) < 0 && errno == ENOENT);
	/* a migration a crash interrupted: ids.old/ is finished by the next send */
	CHECK(mkdir(path, 0775) == 0);
	dq_sha256_hex("crashed", 7, hash);
	snprintf(found, sizeof found, "%s/%s", path, hash);
	CHECK((fd = open(found, O_WRONLY | O_CREAT, 0664)) >= 0 && close(fd) == 0);
	CHECK(send_n(q, "other", 4) == 0);
	CHECK(access(path, F_OK) < 0 && errno == ENOENT);
	CHECK(send_n(q, "crashed", 5) == 1);
	q->ops->close(q);
	return 0;
fail:
	if (q)
		q->ops->close(q);
	return -1;
}

static int
t_abandon(void)
{
	struct dq_queue *q = qopen("abandon");
	json_t *out = NULL;
	struct dq_err err;

	CHECK(q);
	CHECK(send_n(q, "m", 1) == 0);
	for (int dc = 1; dc <= 3; dc++) {
		CHECK((out = recv_(q, 1, 0, 0)) && json_array_size(out) == 1);
		CHECK(ival(rc(json_array_get(out, 0)), "delivery_count") == dc);
		CHECK(settle(q, ABANDON, json_array_get(out, 0), &err) == 0);
		/* the abandoned lock is gone */
		CHECK(settle(q, COMPLETE, json_array_get(out, 0), &err) < 0 && is_lock_lost(&err));
		json_decref(out);
		out = NULL;
	}
	CHECK(count_files("abandon", "ready") == 1);
	q->ops->close(q);
	return 0;
fail:
	json_decref(out);
	if (q)
		q->ops->close(q);
	return -1;
}

static int
t_lease_expiry(void)
{
	struct dq_queue *q = qopen("lease");
	json_t *a = NULL, *b = NULL;
	struct dq_err err;

	CHECK(q);
	dq_cfg.lock_seconds = 0.1;
	CHECK(send_n(q, "m", 1) == 0);
	CHECK((a = recv_(q, 1, 0, 0)) && json_array_size(a) == 1);
	CHECK((b = recv_(q, 1, 0, 0)) && json_array_size(b) == 0);
	json_decref(b);
	dq_sleep_ms(150);
	CHECK((b = recv_(q, 1, 0, 0)) && json_array_size(b) == 1);
	CHECK(ival(rc(json_array_get(b, 0)), "delivery_count") == 2);
	CHECK(ival(rc(json_array_get(b, 0)), "sequence_number") ==
	    ival(rc(json_array_get(a, 0)), "sequence_number"));
	CHECK(strcmp(sval(rc(json_array_get(b, 0)), "lock_token"),
	    sval(rc(json_array_get(a, 0)), "lock_token")) != 0);
	/* the stale token can do nothing */
	dq_cfg.lock_seconds = 300;
	CHECK(settle(q, COMPLETE, json_array_get(a, 0), &err) < 0 && is_lock_lost(&err));
	CHECK(settle(q, RENEW, json_array_get(a, 0), &err) < 0 && is_lock_lost(&err));
	CHECK(settle(q, ABANDON, json_array_get(a, 0), &err) < 0 && is_lock_lost(&err));
	CHECK(settle(q, DEAD, json_array_get(a, 0), &err) < 0 && is_lock_lost(&err));
	CHECK(count_files("lease", "dead") == 0 && count_files("lease", "locked") == 1);
	CHECK(settle(q, COMPLETE, json_array_get(b, 0), &err) == 0);
	CHECK(count_files("lease", "locked") == 0 && count_files("lease", "ready") == 0);
	json_decref(a);
	json_decref(b);
	q->ops->close(q);
	return 0;
fail:
	json_decref(a);
	json_decref(b);
	if (q)
		q->ops->close(q);
	return -1;
}

static int
t_max_delivery(void)
{
	struct dq_queue *q = qopen("poison");
	json_t *out = NULL, *r;
	struct dq_err err;

	CHECK(q);
	dq_cfg.max_delivery_attempts = 3;
	dq_cfg.lock_seconds = 0.05;
	CHECK(send_n(q, "poison-1", 9) == 0);
	for (int dc = 1; dc <= 3; dc++) {
		CHECK((out = recv_(q, 1, 0, 0)) && json_array_size(out) == 1);
		CHECK(ival(rc(json_array_get(out, 0)), "delivery_count") == dc);
		json_decref(out);
		out = NULL;
		dq_sleep_ms(80);
	}
	/* the third lease ran out: dead, not delivered a fourth time */
	CHECK((out = recv_(q, 1, 0, 0)) && json_array_size(out) == 0);
	json_decref(out);
	CHECK(count_files("poison", "dead") == 1 && count_files("poison", "ready") == 0 &&
	    count_files("poison", "locked") == 0 && count_files("poison", "tmp") == 0);
	dq_cfg.lock_seconds = 300;
	CHECK((out = recv_(q, 5, 0, DQ_RECV_DEAD_LETTER)) && json_array_size(out) == 1);
	r = rc(json_array_get(out, 0));
	CHECK(num(json_array_get(out, 0)) == 9);
	CHECK(json_is_true(json_object_get(r, "dead_letter")));
	CHECK(strcmp(sval(r, "dead_letter_reason"), "MaxDeliveryCountExceeded") == 0);
	CHECK(strcmp(sval(r, "dead_letter_description"),
	    "lease expired on delivery 3 of at most 3") == 0);
	CHECK(strcmp(sval(r, "message_id"), "poison-1") == 0);
	CHECK(settle(q, COMPLETE, json_array_get(out, 0), &err) == 0);
	json_decref(out);
	CHECK((out = recv_(q, 5, 0, DQ_RECV_DEAD_LETTER)) && json_array_size(out) == 0);
	json_decref(out);
	q->ops->close(q);
	return 0;
fail:
	json_decref(out);
	if (q)
		q->ops->close(q);
	return -1;
}

static int
t_abandon_at_limit(void)
{
	struct dq_queue *q = qopen("abandon-limit");
	json_t *out = NULL;
	struct dq_err err;

	CHECK(q);
	dq_cfg.max_delivery_attempts = 2;
	CHECK(send_n(q, "m", 1) == 0);
	for (int dc = 1; dc <= 2; dc++) {
		CHECK((out = recv_(q, 1, 0, 0)) && json_array_size(out) == 1);
		CHECK(ival(rc(json_array_get(out, 0)), "delivery_count") == dc);
		/* the last delivery abandoned is dead-lettered, and abandon says so */
		CHECK(settle(q, ABANDON, json_array_get(out, 0), &err) == (dc == 2));
		json_decref(out);
		out = NULL;
	}
	CHECK((out = recv_(q, 1, 0, 0)) && json_array_size(out) == 0);
	json_decref(out);
	CHECK((out = recv_(q, 1, 0, DQ_RECV_DEAD_LETTER)) && json_array_size(out) == 1);
	CHECK(strcmp(sval(rc(json_array_get(out, 0)), "dead_letter_reason"),
	    "MaxDeliveryCountExceeded") == 0);
	json_decref(out);
	q->ops->close(q);
	return 0;
fail:
	json_decref(out);
	if (q)
		q->ops->close(q);
	return -1;
}

static int
t_renew(void)
{
	struct dq_queue *q = qopen("renew");
	json_t *out = NULL, *other = NULL;
	struct dq_err err;
	int64_t l1, l2;

	CHECK(q);
	dq_cfg.lock_seconds = 0.2;
	CHECK(send_n(q, "m", 1) == 0);
	CHECK((out = recv_(q, 1, 0, 0)) && json_array_size(out) == 1);
	CHECK((l1 = until_ms(json_array_get(out, 0))) > 0);
	/* renewed every 100 ms, the 200 ms lease outlives 600 ms */
	for (int i = 0; i < 6; i++) {
		dq_sleep_ms(100);
		CHECK(settle(q, RENEW, json_array_get(out, 0), &err) == 0);
		CHECK((other = recv_(q, 1, 0, 0)) && json_array_size(other) == 0);
		json_decref(other);
		other = NULL;
	}
	CHECK((l2 = until_ms(json_array_get(out, 0))) >= l1 + 500);
	CHECK(l2 <= dq_now_ms() + 200);
	CHECK(ival(rc(json_array_get(out, 0)), "delivery_count") == 1);
	CHECK(settle(q, COMPLETE, json_array_get(out, 0), &err) == 0);
	CHECK(count_files("renew", "locked") == 0 && count_files("renew", "ready") == 0);
	json_decref(out);
	q->ops->close(q);
	return 0;
fail:
	json_decref(out);
	json_decref(other);
	if (q)
		q->ops->close(q);
	return -1;
}

static int
t_dead_letter(void)
{
	struct dq_queue *q = qopen("dlq");
	json_t *out = NULL, *r;
	struct dq_err err;

	CHECK(q);
	CHECK(send_n(q, "m1", 1) == 0);
	CHECK(send_n(q, "m2", 2) == 0);
	CHECK((out = recv_(q, 1, 0, 0)) && json_array_size(out) == 1);
	CHECK(settle(q, DEAD, json_array_get(out, 0), &err) == 0);
	/* the lock went with it */
	CHECK(settle(q, COMPLETE, json_array_get(out, 0), &err) < 0 && is_lock_lost(&err));
	json_decref(out);
	CHECK(count_files("dlq", "dead") == 1 && count_files("dlq", "locked") == 0);
	/* the main queue still has m2 only */
	CHECK((out = recv_(q, 5, 0, DQ_RECV_PEEK)) && json_array_size(out) == 1);
	CHECK(num(json_array_get(out, 0)) == 2);
	json_decref(out);
	CHECK((out = recv_(q, 5, 0, DQ_RECV_DEAD_LETTER)) && json_array_size(out) == 1);
	r = rc(json_array_get(out, 0));
	CHECK(num(json_array_get(out, 0)) == 1);
	CHECK(json_is_true(json_object_get(r, "dead_letter")));
	CHECK(strcmp(sval(r, "dead_letter_reason"), "bad_image") == 0);
	CHECK(strcmp(sval(r, "dead_letter_description"), "the image is bad") == 0);
	CHECK(dq_uuid_valid(sval(r, "lock_token")));
	CHECK(ival(r, "delivery_count") == 2);
	/* while locked it is in neither dead/ nor a second DL receive */
	CHECK(count_files("dlq", "dead") == 0);
	/* abandon returns it to the dead-letter queue, not to ready */
	CHECK(settle(q, ABANDON, json_array_get(out, 0), &err) == 0);
	CHECK(count_files("dlq", "dead") == 1 && count_files("dlq", "ready") == 1);
	json_decref(out);
	CHECK((out = recv_(q, 5, 0, DQ_RECV_DEAD_LETTER)) && json_array_size(out) == 1);
	CHECK(settle(q, COMPLETE, json_array_get(out, 0), &err) == 0);
	json_decref(out);
	CHECK((out = recv_(q, 5, 0, DQ_RECV_DEAD_LETTER)) && json_array_size(out) == 0);
	json_decref(out);
	CHECK(count_files("dlq", "dead") == 0 && count_files("dlq", "tmp") == 0);
	q->ops->close(q);
	return 0;
fail:
	json_decref(out);
	if (q)
		q->ops->close(q);
	return -1;
}

static int
t_dead_letter_lease(void)
{
	struct dq_queue *q = qopen("dlq-lease");
	json_t *out = NULL;

	CHECK(q);
	CHECK(send_n(q, "m1", 1) == 0);
	dq_cfg.max_delivery_attempts = 1;
	dq_cfg.lock_seconds = 0.05;
	CHECK((out = recv_(q, 1, 0, 0)) && json_array_size(out) == 1);
	json_decref(out);
	dq_sleep_ms(80);
	/* dead after one delivery; a dead-letter lease that runs out goes back to dead/ */
	CHECK((out = recv_(q, 1, 0, DQ_RECV_DEAD_LETTER)) && json_array_size(out) == 1);
	json_decref(out);
	dq_sleep_ms(80);
	CHECK((out = recv_(q, 1, 0, 0)) && json_array_size(out) == 0);
	CHECK(count_files("dlq-lease", "dead") == 1 && count_files("dlq-lease", "ready") == 0);
	json_decref(out);
	q->ops->close(q);
	return 0;
fail:
	json_decref(out);
	if (q)
		q->ops->close(q);
	return -1;
}

static int
t_peek(void)
{
	struct dq_queue *q = qopen("peek");
	json_t *out = NULL, *locked = NULL, *r;
	struct dq_err err;

	CHECK(q);
	for (int i = 0; i < 3; i++)
		CHECK(send_n(q, NULL, i) == 0);
	CHECK((locked = recv_(q, 1, 0, 0)) && json_array_size(locked) == 1);
	CHECK((out = recv_(q, 10, 0, DQ_RECV_PEEK)) && json_array_size(out) == 3);
	for (int i = 0; i < 3; i++) {
		r = rc(json_array_get(out, (size_t)i));
		CHECK(num(json_array_get(out, (size_t)i)) == i);
		CHECK(json_is_true(json_object_get(r, "peek")));
		CHECK(!json_object_get(r, "lock_token"));
		CHECK(ival(r, "delivery_count") == (i == 0));
		CHECK(!json_object_get(r, "locked_until") == (i != 0));
	}
	/* a peeked receipt settles nothing */
	CHECK(settle(q, COMPLETE, json_array_get(out, 1), &err) < 0);
	CHECK(err.scope == DQ_SCOPE_RECORD && strcmp(err.code, "bad_receipt") == 0);
	json_decref(out);
	CHECK((out = recv_(q, 1, 0, DQ_RECV_PEEK)) && json_array_size(out) == 1);
	json_decref(out);
	CHECK(count_files("peek", "ready") == 2 && count_files("peek", "locked") == 1);
	CHECK((out = recv_(q, 10, 0, 0)) && json_array_size(out) == 2);
	CHECK(ival(rc(json_array_get(out, 0)), "delivery_count") == 1);
	json_decref(out);
	json_decref(locked);
	q->ops->close(q);
	return 0;
fail:
	json_decref(out);
	json_decref(locked);
	if (q)
		q->ops->close(q);
	return -1;
}

static int
t_bad_receipt(void)
{
	struct dq_queue *q = qopen("rcpt-a"), *q2 = qopen("rcpt-b");
	json_t *out = NULL, *r;
	struct dq_err err;

	CHECK(q && q2);
	CHECK(send_n(q, "m", 1) == 0);
	CHECK((out = recv_(q, 1, 0, 0)) && json_array_size(out) == 1);
	/* a receipt of queue a given to queue b */
	CHECK(settle(q2, COMPLETE, json_array_get(out, 0), &err) < 0);
	CHECK(err.scope == DQ_SCOPE_RECORD && strcmp(err.code, "bad_receipt") == 0);
	/* a token that is not a uuid never becomes a path */
	r = rc(json_array_get(out, 0));
	json_object_set_new(r, "lock_token", json_string("../../x"));
	CHECK(settle(q, COMPLETE, json_array_get(out, 0), &err) < 0);
	CHECK(strcmp(err.code, "bad_receipt") == 0 && err.retryable == 0);
	CHECK(count_files("rcpt-a", "locked") == 1);
	json_decref(out);
	q->ops->close(q);
	q2->ops->close(q2);
	return 0;
fail:
	json_decref(out);
	if (q)
		q->ops->close(q);
	if (q2)
		q2->ops->close(q2);
	return -1;
}

static int
t_open_errors(void)
{
	struct dq_err err;
	struct dq_queue *q = NULL;
	char path[4096];
	int fd;

	CHECK(!dq_queue_local_open(top, "..", &err));
	CHECK(err.scope == DQ_SCOPE_SYSTEM && err.status == DQ_EX_CONFIG);
	CHECK(!dq_queue_local_open(top, "a/b", &err));
	CHECK(!dq_queue_local_open(top, "", &err));
	CHECK(!dq_queue_local_open("", "q", &err) && err.status == DQ_EX_CONFIG);
	snprintf(path, sizeof path, "%s/plainfile", top);
	CHECK((fd = open(path, O_WRONLY | O_CREAT, 0644)) >= 0);
	close(fd);
	CHECK(!dq_queue_local_open(path, "q", &err));
	CHECK(err.scope == DQ_SCOPE_SYSTEM && err.status == DQ_EX_CONFIG);
	CHECK(strstr(err.msg, "plainfile") != NULL);
	CHECK((q = qopen("checked")));
	CHECK(q->ops->check(q, &err) == 0);
	q->ops->close(q);
	return 0;
fail:
	if (q)
		q->ops->close(q);
	return -1;
}

/* A spool that cannot be written is a system error, for send and receive. */
static int
t_system_error(void)
{
	struct dq_queue *q = qopen("broken");
	char path[4096];
	struct dq_err err;
	json_t *out = json_array(), *body = json_object();
	int fd;

	CHECK(q);
	snprintf(path, sizeof path, "%s/queues/broken/ready", top);
	CHECK(rmdir(path) == 0);
	CHECK((fd = open(path, O_WRONLY | O_CREAT, 0644)) >= 0);
	close(fd);
	CHECK(q->ops->send(q, body, "m", &err) == -1);
	CHECK(err.scope == DQ_SCOPE_SYSTEM && err.status == DQ_EX_CONFIG);
	CHECK(q->ops->receive(q, 1, 0, 0, out, &err) == -1);
	CHECK(err.scope == DQ_SCOPE_SYSTEM && json_array_size(out) == 0);
	CHECK(q->ops->check(q, &err) == -1 && err.scope == DQ_SCOPE_SYSTEM);
	CHECK(count_files("broken", "tmp") == 0);
	json_decref(out);
	json_decref(body);
	q->ops->close(q);
	return 0;
fail:
	json_decref(out);
	json_decref(body);
	if (q)
		q->ops->close(q);
	return -1;
}

/* A damaged file is moved aside; the others are still delivered. */
static int
t_corrupt(void)
{
	struct dq_queue *q = qopen("corrupt");
	json_t *out = NULL;
	char path[4096];
	int fd;

	CHECK(q);
	snprintf(path, sizeof path, "%s/queues/corrupt/ready/0000000000000000.0", top);
	CHECK((fd = open(path, O_WRONLY | O_CREAT, 0644)) >= 0);
	CHECK(write(fd, "{\"trunc", 7) == 7);
	close(fd);
	snprintf(path, sizeof path, "%s/queues/corrupt/ready/junk", top);
	CHECK((fd = open(path, O_WRONLY | O_CREAT, 0644)) >= 0);
	close(fd);
	CHECK(send_n(q, "m", 1) == 0);
	CHECK((out = recv_(q, 10, 0, 0)) && json_array_size(out) == 1);
	CHECK(num(json_array_get(out, 0)) == 1);
	CHECK(count_files("corrupt", "tmp") == 1);	/* corrupt.<name> */
	json_decref(out);
	q->ops->close(q);
	return 0;
fail:
	json_decref(out);
	if (q)
		q->ops->close(q);
	return -1;
}

/*
 * A sender that crashed between publishing and removing its temporary
 * name leaves a second name of the message in tmp/: a later sender of
 * the same pid must not write through it.
 */
static int
t_crash_leftover(void)
{
	struct dq_queue *q = qopen("leftover");
	json_t *out = NULL;
	char from[4096], to[4096];

	CHECK(q);
	CHECK(send_n(q, "m1", 1) == 0);
	snprintf(from, sizeof from, "%s/queues/leftover/ready/0000000000000001.0", top);
	snprintf(to, sizeof to, "%s/queues/leftover/tmp/msg.%ld", top, (long)getpid());
	CHECK(link(from, to) == 0);
	CHECK(send_n(q, "m2", 2) == 0);
	CHECK((out = recv_(q, 10, 0, 0)) && json_array_size(out) == 2);
	CHECK(num(json_array_get(out, 0)) == 1 && num(json_array_get(out, 1)) == 2);
	CHECK(strcmp(sval(rc(json_array_get(out, 0)), "message_id"), "m1") == 0);
	json_decref(out);
	q->ops->close(q);
	return 0;
fail:
	json_decref(out);
	if (q)
		q->ops->close(q);
	return -1;
}

/* A lost counter is rebuilt from the directories. */
static int
t_counter(void)
{
	struct dq_queue *q = qopen("counter");
	json_t *out = NULL;
	char path[4096];

	CHECK(q);
	for (int i = 0; i < 3; i++)
		CHECK(send_n(q, NULL, i) == 0);
	snprintf(path, sizeof path, "%s/queues/counter/seq", top);
	CHECK(unlink(path) == 0);
	CHECK(send_n(q, NULL, 3) == 0);
	/* behind: "1" while 1..4 exist */
	CHECK(dq_write_atomic(path, "1\n", 2, 0644) == 0);
	CHECK(send_n(q, NULL, 4) == 0);
	CHECK((out = recv_(q, 10, 0, 0)) && json_array_size(out) == 5);
	for (int i = 0; i < 5; i++) {
		CHECK(num(json_array_get(out, (size_t)i)) == i);
		CHECK(ival(rc(json_array_get(out, (size_t)i)), "sequence_number") == i + 1);
	}
	json_decref(out);
	q->ops->close(q);
	return 0;
fail:
	json_decref(out);
	if (q)
		q->ops->close(q);
	return -1;
}

static int
t_permissions(void)
{
	struct dq_queue *q;
	struct stat st;
	char path[4096];
	mode_t old = umask(002);

	q = qopen("shared");
	umask(old);
	CHECK(q);
	CHECK(send_n(q, "m", 1) == 0);
	snprintf(path, sizeof path, "%s/queues/shared/ready", top);
	CHECK(stat(path, &st) == 0);
	CHECK((st.st_mode & S_ISGID) && (st.st_mode & S_IWGRP));
	q->ops->close(q);
	return 0;
fail:
	if (q)
		q->ops->close(q);
	return -1;
}

/*
 * Two processes receive from 200 messages at once, abandoning every
 * tenth on its first delivery: each message is completed exactly once.
 */
#define NMSG 200

static int
receiver(const char *name, int startfd, const char *outpath)
{
	struct dq_queue *q = qopen(name);
	FILE *fp = fopen(outpath, "w");
	struct dq_err err;
	char c;
	int empty = 0;

	if (!q || !fp)
		return 1;
	if (read(startfd, &c, 1) < 0)
		return 1;
	while (empty < 3) {
		json_t *out = recv_(q, 7, 0, 0);
		size_t i;
		json_t *rec;

		if (!out)
			return 1;
		if (json_array_size(out) == 0)
			empty++;
		else
			empty = 0;
		json_array_foreach(out, i, rec) {
			json_int_t n = num(rec), dc = ival(rc(rec), "delivery_count");

			if (n % 10 == 0 && dc == 1) {
				if (settle(q, ABANDON, rec, &err) < 0)
					return 1;
				continue;
			}
			if (settle(q, COMPLETE, rec, &err) < 0)
				return 1;
			fprintf(fp, "%lld %lld\n", (long long)n, (long long)dc);
		}
		json_decref(out);
		if (empty)
			dq_sleep_ms(5);
	}
	q->ops->close(q);
	return fclose(fp) == 0 ? 0 : 1;
}

static int
t_concurrent_receivers(void)
{
	struct dq_queue *q = qopen("race");
	int seen[NMSG] = { 0 }, got[2] = { 0 }, pfd[2] = { -1, -1 }, st;
	pid_t pid[2] = { -1, -1 };
	char path[2][4096];
	long long n, dc;
	FILE *fp;

	CHECK(q);
	for (int i = 0; i < NMSG; i++)
		CHECK(send_n(q, NULL, i) == 0);
	CHECK(pipe(pfd) == 0);
	for (int k = 0; k < 2; k++) {
		snprintf(path[k], sizeof path[k], "%s/race.%d", top, k);
		CHECK((pid[k] = fork()) >= 0);
		if (pid[k] == 0) {
			close(pfd[1]);
			_exit(receiver("race", pfd[0], path[k]));
		}
	}
	close(pfd[0]);
	close(pfd[1]);	/* both start now */
	for (int k = 0; k < 2; k++) {
		CHECK(waitpid(pid[k], &st, 0) == pid[k]);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		CHECK((fp = fopen(path[k], "r")));
		while (fscanf(fp, "%lld %lld", &n, &dc) == 2) {
			CHECK(n >= 0 && n < NMSG);
			CHECK(dc == (n % 10 == 0 ? 2 : 1));
			seen[n]++;
			got[k]++;
		}
		fclose(fp);
	}
	for (int i = 0; i < NMSG; i++)
		CHECK(seen[i] == 1);
	CHECK(got[0] + got[1] == NMSG);
	printf("# receivers completed %d and %d\n", got[0], got[1]);
	CHECK(count_files("race", "ready") == 0 && count_files("race", "locked") == 0);
	q->ops->close(q);
	return 0;
fail:
	if (q)
		q->ops->close(q);
	return -1;
}

/*
 * Three processes race on 100 messages with 30 ms leases, holding each
 * for a random 0-60 ms and renewing or abandoning some: leases expire
 * under renew, complete and the sweep of the others.  A completion
 * succeeds exactly once per message, whatever the stale tokens try.
 */
#define NRACE 100

static int
racer(int k, int startfd, const char *outpath)
{
	struct dq_queue *q = qopen("expiry");
	FILE *fp = fopen(outpath, "w");
	struct dq_err err;
	char c;
	int empty = 0;

	if (!q || !fp || read(startfd, &c, 1) < 0)
		return 1;
	srandom((unsigned)getpid());
	while (empty < 20) {
		json_t *out = recv_(q, 3, 0, 0), *rec;
		size_t i;

		if (!out)
			return 1;
		empty = json_array_size(out) ? 0 : empty + 1;
		json_array_foreach(out, i, rec) {
			long r = random() % 100;
			int s;

			dq_sleep_ms(random() % 60);
			if (r < 10)
				s = settle(q, ABANDON, rec, &err);
			else if (r < 30 && (s = settle(q, RENEW, rec, &err)) == 0)
				s = settle(q, COMPLETE, rec, &err);
			else
				s = settle(q, COMPLETE, rec, &err);
			if (s < 0 && !is_lock_lost(&err)) {
				fprintf(stderr, "racer %d: %s: %s\n", k, err.code, err.msg);
				return 1;
			}
			if (s == 0 && r >= 10)
				fprintf(fp, "%lld\n", (long long)num(rec));
		}
		json_decref(out);
		if (empty)
			dq_sleep_ms(10);
	}
	q->ops->close(q);
	return fclose(fp) == 0 ? 0 : 1;
}

static int
t_concurrent_expiry(void)
{
	struct dq_queue *q = qopen("expiry");
	int seen[NRACE] = { 0 }, pfd[2], st, total = 0;
	pid_t pid[3];
	char path[3][4096];
	long long n;
	FILE *fp;

	CHECK(q);
	dq_cfg.lock_seconds = 0.03;
	dq_cfg.max_delivery_attempts = 1000;
	for (int i = 0; i < NRACE; i++)
		CHECK(send_n(q, NULL, i) == 0);
	CHECK(pipe(pfd) == 0);
	for (int k = 0; k < 3; k++) {
		snprintf(path[k], sizeof path[k], "%s/expiry.%d", top, k);
		CHECK((pid[k] = fork()) >= 0);
		if (pid[k] == 0) {
			close(pfd[1]);
			_exit(racer(k, pfd[0], path[k]));
		}
	}
	close(pfd[0]);
	close(pfd[1]);
	for (int k = 0; k < 3; k++) {
		CHECK(waitpid(pid[k], &st, 0) == pid[k]);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		CHECK((fp = fopen(path[k], "r")));
		while (fscanf(fp, "%lld", &n) == 1) {
			CHECK(n >= 0 && n < NRACE);
			seen[n]++;
			total++;
		}
		fclose(fp);
	}
	for (int i = 0; i < NRACE; i++)
		CHECK(seen[i] == 1);
	CHECK(total == NRACE);
	CHECK(count_files("expiry", "ready") == 0 && count_files("expiry", "locked") == 0 &&
	    count_files("expiry", "dead") == 0);
	q->ops->close(q);
	return 0;
fail:
	if (q)
		q->ops->close(q);
	return -1;
}

/* Two processes send 100 messages each and 20 shared ids at once. */
static int
sender(int k, int startfd)
{
	struct dq_queue *q = qopen("senders");
	char id[32], c;
	int dups = 0, r;

	if (!q || read(startfd, &c, 1) < 0)
		return 100;
	for (int i = 0; i < 120; i++) {
		if (i % 6 == 0)
			snprintf(id, sizeof id, "shared-%d", i / 6);
		else
			snprintf(id, sizeof id, "own-%d-%d", k, i);
		if ((r = send_n(q, id, i)) < 0)
			return 100;
		dups += r;
	}
	q->ops->close(q);
	return dups;
}

static int
t_concurrent_senders(void)
{
	struct dq_queue *q = qopen("senders");
	json_t *out = NULL, *rec;
	pid_t pid[2];
	int pfd[2], st, dups = 0;
	size_t i;
	char *seen;

	CHECK(q);
	CHECK(pipe(pfd) == 0);
	for (int k = 0; k < 2; k++) {
		CHECK((pid[k] = fork()) >= 0);
		if (pid[k] == 0) {
			close(pfd[1]);
			_exit(sender(k, pfd[0]));
		}
	}
	close(pfd[0]);
	close(pfd[1]);
	for (int k = 0; k < 2; k++) {
		CHECK(waitpid(pid[k], &st, 0) == pid[k] && WIFEXITED(st));
		CHECK(WEXITSTATUS(st) <= 20);
		dups += WEXITSTATUS(st);
	}
	CHECK(dups == 20);
	CHECK((out = recv_(q, 1000, 0, 0)) && json_array_size(out) == 220);
	seen = calloc(221, 1);
	json_array_foreach(out, i, rec) {
		json_int_t s = ival(rc(rec), "sequence_number");

		CHECK(s == (json_int_t)i + 1 && !seen[s]);
		seen[s] = 1;
	}
	free(seen);
	json_decref(out);
	q->ops->close(q);
	return 0;
fail:
	json_decref(out);
	if (q)
		q->ops->close(q);
	return -1;
}

/*
 * Two processes send with a window of 20 ms, so that each creates and
 * removes buckets while the other sends: no send fails, none is taken
 * for a duplicate, and what is left expires whole.
 */
static int
purger(int k)
{
	struct dq_queue *q = qopen("purgers");
	char id[32];
	int dups = 0, r;

	if (!q)
		return 100;
	dq_cfg.dup_window_seconds = 0.02;
	for (int i = 0; i < 150; i++) {
		snprintf(id, sizeof id, "p-%d-%d", k, i);
		if ((r = send_n(q, id, i)) < 0)
			return 100;
		dups += r;
	}
	q->ops->close(q);
	return dups;
}

static int
t_concurrent_purge(void)
{
	struct dq_queue *q = NULL;
	pid_t pid[2];
	int st, b;

	for (int k = 0; k < 2; k++) {
		CHECK((pid[k] = fork()) >= 0);
		if (pid[k] == 0)
			_exit(purger(k));
	}
	for (int k = 0; k < 2; k++)
		CHECK(waitpid(pid[k], &st, 0) == pid[k] && WIFEXITED(st) &&
		    WEXITSTATUS(st) == 0);
	CHECK((q = qopen("purgers")));
	dq_cfg.dup_window_seconds = 0.02;
	dq_sleep_ms(60);
	CHECK(send_n(q, "last", 0) == 0);
	CHECK(count_ids("purgers", &b) == 1 && b == 1);
	q->ops->close(q);
	return 0;
fail:
	if (q)
		q->ops->close(q);
	return -1;
}

static const struct {
	const char *name;
	int (*fn)(void);
} tests[] = {
	{ "send_receive_complete", t_send_receive_complete },
	{ "order_and_max", t_order_and_max },
	{ "wait", t_wait },
	{ "duplicate", t_duplicate },
	{ "dup_purge", t_dup_purge },
	{ "dup_buckets", t_dup_buckets },
	{ "dup_migrate", t_dup_migrate },
	{ "abandon", t_abandon },
	{ "lease_expiry", t_lease_expiry },
	{ "max_delivery", t_max_delivery },
	{ "abandon_at_limit", t_abandon_at_limit },
	{ "renew", t_renew },
	{ "dead_letter", t_dead_letter },
	{ "dead_letter_lease", t_dead_letter_lease },
	{ "peek", t_peek },
	{ "bad_receipt", t_bad_receipt },
	{ "open_errors", t_open_errors },
	{ "system_error", t_system_error },
	{ "corrupt", t_corrupt },
	{ "crash_leftover", t_crash_leftover },
	{ "counter", t_counter },
	{ "permissions", t_permissions },
	{ "concurrent_receivers", t_concurrent_receivers },
	{ "concurrent_expiry", t_concurrent_expiry },
	{ "concurrent_senders", t_concurrent_senders },
	{ "concurrent_purge", t_concurrent_purge },
};
#define NTESTS (sizeof tests / sizeof tests[0])

static void
usage(const char *why)
{
	if (why)
		fprintf(stderr, "spool-test: %s\n", why);
	fprintf(stderr, "usage: spool-test [-l] [-d dir] [test ...]\n");
	exit(DQ_EX_USAGE);
}

int
main(int argc, char *argv[])
{
	const char *dir = NULL;
	char tmpl[4096];
	int c, failed = 0, run = 0;

	dq_init(argv[0]);
	while ((c = getopt(argc, argv, "d:hl")) != -1) {
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'l':
			for (size_t i = 0; i < NTESTS; i++)
				printf("%s\n", tests[i].name);
			return 0;
		case 'h':
			usage(NULL);
			break;
		default:
			usage("unknown option");
		}
	}
	argc -= optind;
	argv += optind;
	for (int i = 0; i < argc; i++) {
		size_t k;

		for (k = 0; k < NTESTS && strcmp(argv[i], tests[k].name) != 0; k++)
			;
		if (k == NTESTS)
			usage("unknown test");
	}
	if (!dir) {
		const char *t = getenv("TMPDIR");

		snprintf(tmpl, sizeof tmpl, "%s/spool-test.XXXXXX", t && *t ? t : "/tmp");
		if (!mkdtemp(tmpl)) {
			perror("spool-test: mkdtemp");
			return 1;
		}
		dir = tmpl;
	}
	top = dq_xasprintf("%s/local", dir);
	printf("1..%zu\n", argc ? (size_t)argc : NTESTS);
	for (size_t i = 0; i < NTESTS; i++) {
		int want = argc == 0, r;

		for (int k = 0; k < argc; k++)
			want |= strcmp(argv[k], tests[i].name) == 0;
		if (!want)
			continue;
		reset_cfg();
		fflush(stdout);
		r = tests[i].fn();
		run++;
		printf("%sok %d - %s\n", r == 0 ? "" : "not ", run, tests[i].name);
		failed += r != 0;
	}
	printf("# %d passed, %d failed\n", run - failed, failed);
	free(top);
	return failed ? 1 : 0;
}
