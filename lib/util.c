/* util.c - memory, errors, exit status, files, time and hashing helpers. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "dq.h"

const char *dq_prog = "dq";

void
dq_init(const char *argv0)
{
	const char *p = strrchr(argv0, '/');

	dq_prog = p ? p + 1 : argv0;
	/* Logs and timestamps never depend on the caller's locale or zone. */
	setenv("TZ", "UTC", 1);
	tzset();
}

void *
dq_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		dq_die(DQ_EX_TEMPFAIL, "out of memory");
	return p;
}

void *
dq_xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);

	if (!p)
		dq_die(DQ_EX_TEMPFAIL, "out of memory");
	return p;
}

void *
dq_xrealloc(void *o, size_t n)
{
	void *p = realloc(o, n ? n : 1);

	if (!p)
		dq_die(DQ_EX_TEMPFAIL, "out of memory");
	return p;
}

char *
dq_xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		dq_die(DQ_EX_TEMPFAIL, "out of memory");
	return p;
}

char *
dq_xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		dq_die(DQ_EX_TEMPFAIL, "out of memory");
	va_end(ap);
	return s;
}

void
dq_die(int status, const char *fmt, ...)
{
	va_list ap;
	char msg[1024];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	dq_log(DQ_ERROR, "fatal", NULL, "%s", msg);
	exit(status);
}

void
dq_wipe(void *p, size_t n)
{
	OPENSSL_cleanse(p, n);
}

/* DESIGN §3: when several apply, the first of this list wins. */
static const int order[] = { 64, 78, 74, 66, 65, 75, 69 };

int
dq_status_merge(int a, int b)
{
	for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
		if (a == order[i] || b == order[i])
			return order[i];
	return a ? a : b;
}

/*
 * dq(7)'s table of what a failed system call means for the exit status.
 * A refusal (permissions, a read-only file system) or a path that can
 * never work is configuration, 78; a resource that ran out and comes
 * back (disk space, descriptors, memory, an interrupted or would-block
 * call) is transient, 75; anything else is an I/O error, 74.
 */
static const struct {
	int errnum;
	int status;
	enum dq_errno_kind kind;
} errno_statuses[] = {
	{ EACCES, DQ_EX_CONFIG, DQ_ERRNO_REFUSED },
	{ EPERM, DQ_EX_CONFIG, DQ_ERRNO_REFUSED },
	{ EROFS, DQ_EX_CONFIG, DQ_ERRNO_REFUSED },
	{ ENOTDIR, DQ_EX_CONFIG, DQ_ERRNO_BAD_PATH },
	{ ENAMETOOLONG, DQ_EX_CONFIG, DQ_ERRNO_BAD_PATH },
	{ ELOOP, DQ_EX_CONFIG, DQ_ERRNO_BAD_PATH },
	{ ENOSPC, DQ_EX_TEMPFAIL, DQ_ERRNO_NO_SPACE },
	{ EDQUOT, DQ_EX_TEMPFAIL, DQ_ERRNO_NO_SPACE },
	{ EMFILE, DQ_EX_TEMPFAIL, DQ_ERRNO_BUSY },
	{ ENFILE, DQ_EX_TEMPFAIL, DQ_ERRNO_BUSY },
	{ ENOMEM, DQ_EX_TEMPFAIL, DQ_ERRNO_BUSY },
	{ EAGAIN, DQ_EX_TEMPFAIL, DQ_ERRNO_BUSY },
	{ EINTR, DQ_EX_TEMPFAIL, DQ_ERRNO_BUSY },
};

int
dq_errno_status(int e, enum dq_errno_kind *kind)
{
	for (size_t i = 0; i < sizeof errno_statuses / sizeof errno_statuses[0]; i++)
		if (errno_statuses[i].errnum == e) {
			if (kind)
				*kind = errno_statuses[i].kind;
			return errno_statuses[i].status;
		}
	if (kind)
		*kind = DQ_ERRNO_IO;
	return DQ_EX_IOERR;
}

int
dq_finish_stdout(int status)
{
	if (fflush(stdout) != 0 || ferror(stdout) || fclose(stdout) != 0) {
		dq_log(DQ_ERROR, "io_error", NULL, "stdout: %s", strerror(errno ? errno : EIO));
		return dq_status_merge(status, DQ_EX_IOERR);
	}
	return status;
}

/*
 * Open path for reading without blocking (a FIFO without a writer, a
 * device), then keep it only if it is a regular file: O_NONBLOCK, fstat,
 * refuse, clear O_NONBLOCK.  A directory is EISDIR, anything else that
 * is not a regular file ENXIO (what open(2) says of FIFOs and devices it
 * cannot use).
 */
static int
read_regular(const char *path, int oflags, size_t max, unsigned char **data,
    size_t *len)
{
	int fd, e, fl;
	struct stat st;
	unsigned char *buf = NULL;
	size_t cap, n = 0;
	ssize_t r;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | oflags)) < 0)
		return -1;
	if (fstat(fd, &st) < 0)
		goto fail;
	if (!S_ISREG(st.st_mode)) {
		errno = S_ISDIR(st.st_mode) ? EISDIR : ENXIO;
		goto fail;
	}
	if ((fl = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		goto fail;
	if ((size_t)st.st_size > max) {
		errno = EFBIG;
		goto fail;
	}
	cap = (size_t)st.st_size + 1;
	buf = dq_xmalloc(cap);
	for (;;) {
		if (n == cap)
			buf = dq_xrealloc(buf, cap *= 2);	/* it grew meanwhile */
		r = read(fd, buf + n, cap - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > max) {
			errno = EFBIG;
			goto fail;
		}
	}
	close(fd);
	*data = buf;
	*len = n;
	return 0;
fail:
	e = errno;
	free(buf);
	close(fd);
	errno = e;
	return -1;
}

int
dq_read_file(const char *path, size_t max, unsigned char **data, size_t *len)
{
	return read_regular(path, 0, max, data, len);
}

int
dq_read_file_nofollow(const char *path, size_t max, unsigned char **data, size_t *len)
{
	return read_regular(path, O_NOFOLLOW, max, data, len);
}

int
dq_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t r;

	while (len > 0) {
		r = write(fd, p, len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

int
dq_mkdirs(const char *path, int mode)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof buf) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; ; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;

			*p = '\0';
			if (mkdir(buf, (mode_t)mode) < 0 && errno != EEXIST)
				return -1;
			*p = c;
			if (c == '\0')
				break;
		}
	}
	return 0;
}

int
dq_probe_dir(const char *dir, char *buf, size_t n)
{
	static const char block[4096];
	char id[37], probe[PATH_MAX];
	int fd, e;

	dq_uuid_new(id);
	if (snprintf(probe, sizeof probe, "%s/.dq-probe.%s", dir, id) >= (int)sizeof probe)
		return errno = ENAMETOOLONG, -1;
	if (buf != dir)
		snprintf(buf, n, "%s", dir);
	if ((fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
		return -1;
	e = dq_write_all(fd, block, sizeof block) < 0 || fsync(fd) < 0 ? errno : 0;
	if (close(fd) < 0 && !e)
		e = errno;
	if (unlink(probe) < 0 && !e)
		e = errno;
	return e ? (errno = e, -1) : 0;
}

int
dq_probe_ancestor(const char *path, char *buf, size_t n)
{
	char dir[PATH_MAX];
	struct stat st;
	char *slash;
	int e;

	if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
		return errno = ENAMETOOLONG, -1;
	while (stat(dir, &st) < 0) {
		if (errno != ENOENT)
			goto fail;
		if (!(slash = strrchr(dir, '/')))
			return dq_probe_dir(".", buf, n);
		*(slash == dir ? slash + 1 : slash) = '\0';
	}
	if (S_ISDIR(st.st_mode))
		return dq_probe_dir(dir, buf, n);
	errno = ENOTDIR;
fail:
	e = errno;
	snprintf(buf, n, "%s", dir);
	errno = e;
	return -1;
}

int
dq_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r;

	if (fd < 0)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

int
dq_write_atomic(const char *path, const void *data, size_t len, int mode)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	char id[37];
	const char *slash = strrchr(path, '/');
	int fd, e;
	size_t dl = slash ? (size_t)(slash - path) : 1;

	dq_uuid_new(id);
	if (slash) {
		if (dl >= sizeof dir)
			return errno = ENAMETOOLONG, -1;
		memcpy(dir, path, dl);
		dir[dl] = '\0';
		if (snprintf(tmp, sizeof tmp, "%s/.tmp.%s", dir, id) >= (int)sizeof tmp)
			return errno = ENAMETOOLONG, -1;
	} else {
		strcpy(dir, ".");
		if (snprintf(tmp, sizeof tmp, ".tmp.%s", id) >= (int)sizeof tmp)
			return errno = ENAMETOOLONG, -1;
	}
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode)) < 0)
		return -1;
	if (dq_write_all(fd, data, len) < 0 || fsync(fd) < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0)
		goto fail;
	dq_fsync_dir(dir);
	return 0;
fail:
	e = errno;
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	errno = e;
	return -1;
}

void
dq_err_set(struct dq_err *e, enum dq_scope scope, int status, int retryable,
    const char *code, const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return;
	memset(e, 0, sizeof *e);
	e->scope = scope;
	e->status = status;
	e->retryable = retryable;
	snprintf(e->code, sizeof e->code, "%s", code);
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
}

int64_t
dq_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
dq_sleep_ms(int64_t ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

void
dq_rfc3339(time_t t, char buf[static 21])
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, 21, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void
dq_rfc3339_ms(int64_t ms, char buf[static 25])
{
	struct tm tm;
	time_t t = (time_t)(ms / 1000);
	char s[21];

	gmtime_r(&t, &tm);
	strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%S", &tm);
	char out[48];

	snprintf(out, sizeof out, "%.19s.%03dZ", s, (int)(ms % 1000));
	memcpy(buf, out, 24);
	buf[24] = '\0';
}

int
dq_parse_rfc3339_ms(const char *s, int64_t *ms)
{
	struct tm tm;
	const char *p;
	int frac = 0, digits = 0;

	memset(&tm, 0, sizeof tm);
	if (!s || !(p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)))
		return -1;
	if (*p == '.') {
		for (p++; *p >= '0' && *p <= '9'; p++)
			if (digits < 3) {
				frac = frac * 10 + (*p - '0');
				digits++;
			}
		while (digits < 3) {
			frac *= 10;
			digits++;
		}
	}
	if (strcmp(p, "Z") != 0)
		return -1;
	*ms = (int64_t)timegm(&tm) * 1000 + frac;
	return 0;
}

int
dq_parse_rfc3339(const char *s, time_t *t)
{
	int64_t ms;

	if (dq_parse_rfc3339_ms(s, &ms) < 0)
		return -1;
	*t = (time_t)(ms / 1000);
	return 0;
}
