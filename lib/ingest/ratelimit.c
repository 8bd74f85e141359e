/*
 * ratelimit.c - token buckets shared by every CGI process of one host.
 *
 * A bucket is a small file under DIR/ratelimit/, named by the SHA-256 of
 * its id so neither an API key nor a caller's name ever appears in a file
 * name.  It holds "units last_ms" (a token is 60000 units, so refilling
 * per_minute units a millisecond is exact integer arithmetic); a missing
 * or empty file is a full bucket.  Each take is open, flock, read, refill
 * by the time passed, take, write, close: short enough that the lock is
 * never contended long.  A peek that finds no file creates none.
 *
 * The state is bounded: a bucket refills from empty to full in one minute
 * whatever its rate (capacity per_minute, refilled per_minute a minute),
 * so a file not written for IDLE_MS is a full bucket, the same as no file.
 * About once every IDLE_MS one process (the one that wins the flock of
 * DIR/ratelimit/.sweep) removes such files.  It removes a file only under
 * that file's flock, after checking again that it is still idle; a taker
 * that locked a file the sweeper removed meanwhile sees it unlinked
 * (st_nlink 0) and opens the new one, so no take is ever written into a
 * removed file.  The files left are those written in the last two
 * minutes: one per address and key active in that time.
 *
 * Limits are per host (per replica): nothing here is shared between
 * machines.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ingest.h"

#define IDLE_MS 60000		/* a bucket is full again after this */
#define SWEEP_FILE ".sweep"

static int64_t
mtime_ms(const struct stat *st)
{
	return (int64_t)st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000;
}

/* Remove bucket files idle for IDLE_MS; best effort, never an error. */
static void
sweep_idle(const char *dir, int64_t now_ms)
{
	char path[4096];
	DIR *d;
	struct dirent *de;
	struct stat st;
	int fd, removed = 0;

	if (snprintf(path, sizeof path, "%s/" SWEEP_FILE, dir) >= (int)sizeof path)
		return;
	/* Cheap for everyone: one stat a request, the sweep once a minute. */
	if (stat(path, &st) == 0 && now_ms - mtime_ms(&st) < IDLE_MS)
		return;
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
		return;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0 || fstat(fd, &st) < 0 ||
	    (st.st_size > 0 && now_ms - mtime_ms(&st) < IDLE_MS)) {
		close(fd);	/* another process sweeps, or just did */
		return;
	}
	/* The mark first: a sweep that fails half-way waits its minute too. */
	if (pwrite(fd, "sweep\n", 6, 0) != 6 || futimens(fd, NULL) < 0 || !(d = opendir(dir))) {
		close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		int bfd;

		if (de->d_name[0] == '.')
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode) || now_ms - mtime_ms(&st) < IDLE_MS)
			continue;
		bfd = openat(dirfd(d), de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (bfd < 0)
			continue;
		/* Under its lock, and only if still idle and still linked. */
		if (flock(bfd, LOCK_EX | LOCK_NB) == 0 && fstat(bfd, &st) == 0 &&
		    st.st_nlink > 0 && now_ms - mtime_ms(&st) >= IDLE_MS &&
		    unlinkat(dirfd(d), de->d_name, 0) == 0)
			removed++;
		close(bfd);
	}
	closedir(d);
	close(fd);
	if (removed)
		dq_log(DQ_DEBUG, "ratelimit_sweep", json_pack("{s:i}", "removed", removed),
		    "removed %d idle rate-limit buckets", removed);
}

/*
 * The bucket's file, open and locked: fd >= 0; -1 with errno; -2 when
 * peek found no file (a full bucket).
 */
static int
bucket_open(const char *path, int peek)
{
	for (int i = 0; i < 8; i++) {
		struct stat st;
		int fd = open(path, (peek ? O_RDONLY : O_RDWR | O_CREAT) | O_CLOEXEC | O_NOFOLLOW,
		    0600);

		if (fd < 0)
			return peek && errno == ENOENT ? -2 : -1;
		if (flock(fd, LOCK_EX) < 0) {
			int e = errno;

			close(fd);
			errno = e;
			return -1;
		}
		if (fstat(fd, &st) == 0 && st.st_nlink > 0)
			return fd;
		close(fd);	/* removed by the sweeper meanwhile: the new one */
	}
	errno = EAGAIN;
	return -1;
}

int
dq_ratelimit_take(const char *dir, const char *id, long per_minute,
    int64_t now_ms, int peek, int *retry_after, struct dq_err *err)
{
	char hex[65], bdir[4096], path[4096], state[64];
	long long tokens, last, cap;
	ssize_t n;
	int fd = -1, rc = -1, len;

	*retry_after = 0;
	if (per_minute <= 0)
		return 1;
	if (per_minute > 1000000)
		per_minute = 1000000;	/* keeps the arithmetic inside 64 bits */
	cap = (long long)per_minute * 60000;
	if (dir == NULL || *dir == '\0') {
		dq_err_system(err, DQ_EX_CONFIG, "config",
		    "rate limits need DQ_STATE_DIR");
		return -1;
	}
	dq_sha256_hex(id, strlen(id), hex);
	if (snprintf(bdir, sizeof bdir, "%s/ratelimit", dir) >= (int)sizeof bdir ||
	    dq_mkdirs(bdir, 0700) < 0 ||
	    snprintf(path, sizeof path, "%s/%.32s", bdir, hex) >= (int)sizeof path) {
		dq_err_system(err, dq_errno_status(errno, NULL), "io", "%s/ratelimit: %s", dir, strerror(errno));
		return -1;
	}
	sweep_idle(bdir, now_ms);
	if ((fd = bucket_open(path, peek)) == -2)
		return 1;
	if (fd < 0) {
		dq_err_system(err, dq_errno_status(errno, NULL), "io", "%s: %s", path, strerror(errno));
		goto out;
	}
	n = pread(fd, state, sizeof state - 1, 0);
	if (n < 0) {
		dq_err_system(err, dq_errno_status(errno, NULL), "io", "%s: %s", path, strerror(errno));
		goto out;
	}
	state[n] = '\0';
	if (sscanf(state, "%lld %lld", &tokens, &last) != 2 || tokens < 0 ||
	    tokens > cap || last > now_ms + 60000) {
		tokens = cap;
		last = now_ms;
	}
	if (now_ms > last) {
		long long add = (now_ms - last) * per_minute;

		tokens = tokens + add > cap ? cap : tokens + add;
		last = now_ms;
	}
	if (tokens >= 60000) {
		rc = 1;
		if (!peek)
			tokens -= 60000;
	} else {
		long long ms = (60000 - tokens) / per_minute;

		*retry_after = (int)((ms + 999) / 1000);
		if (*retry_after < 1)
			*retry_after = 1;
		rc = 0;
	}
	if (!peek) {
		len = snprintf(state, sizeof state, "%lld %lld\n", tokens, last);
		if (pwrite(fd, state, (size_t)len, 0) != len || ftruncate(fd, len) < 0) {
			dq_err_system(err, dq_errno_status(errno, NULL), "io", "%s: %s", path, strerror(errno));
			rc = -1;
		}
	}
out:
	if (fd >= 0)
		close(fd);
	return rc;
}
