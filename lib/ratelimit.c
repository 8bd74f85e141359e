/*
 * ratelimit.c - token buckets shared by every CGI process of one host.
 *
 * A bucket is a small file under DIR/ratelimit/, named by the SHA-256 of
 * its id so neither an API key nor a caller's name ever appears in a file
 * name.  It holds "units last_ms" (a token is 60000 units, so refilling
 * per_minute units a millisecond is exact integer arithmetic); a missing or empty file is a full
 * bucket.  Each take is open, flock, read, refill by the time passed,
 * take, write, close: short enough that the lock is never contended long.
 * Limits are per host (per replica): nothing here is shared between
 * machines.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "ingest.h"

int
dq_ratelimit_take(const char *dir, const char *id, long per_minute,
    int64_t now_ms, int peek, int *retry_after, struct dq_err *err)
{
	char hex[65], path[4096], state[64];
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
	if (snprintf(path, sizeof path, "%s/ratelimit", dir) >= (int)sizeof path ||
	    dq_mkdirs(path, 0700) < 0 ||
	    snprintf(path, sizeof path, "%s/ratelimit/%.32s", dir, hex) >= (int)sizeof path) {
		dq_err_system(err, DQ_EX_IOERR, "io", "%s/ratelimit: %s", dir, strerror(errno));
		return -1;
	}
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0 ||
	    flock(fd, LOCK_EX) < 0) {
		dq_err_system(err, DQ_EX_IOERR, "io", "%s: %s", path, strerror(errno));
		goto out;
	}
	n = pread(fd, state, sizeof state - 1, 0);
	if (n < 0) {
		dq_err_system(err, DQ_EX_IOERR, "io", "%s: %s", path, strerror(errno));
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
	if (!peek || rc == 0) {
		len = snprintf(state, sizeof state, "%lld %lld\n", tokens, last);
		if (pwrite(fd, state, (size_t)len, 0) != len || ftruncate(fd, len) < 0) {
			dq_err_system(err, DQ_EX_IOERR, "io", "%s: %s", path, strerror(errno));
			rc = -1;
		}
	}
out:
	if (fd >= 0)
		close(fd);
	return rc;
}
