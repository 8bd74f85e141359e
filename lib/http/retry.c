/*
 * retry.c - the one retry policy (DESIGN §6).
 *
 * Exponential backoff with full jitter: the n-th retry waits a time drawn
 * uniformly from [0, min(cap, base * 2^n)], so that many clients that
 * failed together do not come back together.  A server's hint
 * (retry-after-ms, x-ms-retry-after-ms, Retry-After) replaces the draw,
 * capped like it.  Three limits end the retries, whichever comes first:
 * DQ_RETRY_ATTEMPTS attempts in all, DQ_RETRY_BUDGET_MS after the first
 * attempt began, and the caller's deadline (a record's lock): a wait that
 * would end past the budget or the deadline is not started, because the
 * attempt after it could not finish in time anyway.
 *
 * This file does not sleep and calls no libcurl: dq_http_do and a stage
 * retrying its own work (dq-analyze) share it.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "dq.h"

void
dq_retry_init(struct dq_retry *r, int64_t deadline_ms)
{
	memset(r, 0, sizeof *r);
	r->start_ms = dq_now_ms();
	r->deadline_ms = deadline_ms;
}

/* A uniform draw from [0, n], per thread, seeded once by getrandom. */
static int64_t
draw(int64_t n)
{
	static _Thread_local uint64_t s;

	if (n <= 0)
		return 0;
	if (s == 0 && (getrandom(&s, sizeof s, 0) != sizeof s || s == 0))
		s = (uint64_t)dq_now_ms() | 1;
	/* xorshift64* */
	s ^= s >> 12;
	s ^= s << 25;
	s ^= s >> 27;
	return (int64_t)((s * 2685821657736338717ULL) % (uint64_t)(n + 1));
}

int64_t
dq_retry_next(struct dq_retry *r, int64_t hint_ms)
{
	int64_t cap = (int64_t)dq_cfg.retry_cap_ms, base = (int64_t)dq_cfg.retry_base_ms;
	int64_t ceiling = base, wait, now = dq_now_ms();

	r->attempts++;
	if (r->attempts >= dq_cfg.retry_attempts)
		return -1;
	for (int i = 1; i < r->attempts && ceiling < cap; i++)
		ceiling *= 2;
	if (ceiling > cap)
		ceiling = cap;
	wait = hint_ms >= 0 ? (hint_ms < cap ? hint_ms : cap) : draw(ceiling);
	if (now - r->start_ms + wait > (int64_t)dq_cfg.retry_budget_ms)
		return -1;
	if (r->deadline_ms > 0 && now + wait >= r->deadline_ms)
		return -1;
	r->last_wait_ms = wait;
	r->last_ceiling_ms = hint_ms >= 0 ? wait : ceiling;
	r->waited_ms += wait;
	return wait;
}

int
dq_retry_status(long status)
{
	static const long retried[] = { 408, 429, 500, 502, 503, 504 };

	for (size_t i = 0; i < sizeof retried / sizeof retried[0]; i++)
		if (status == retried[i])
			return 1;
	return 0;
}

/* A whole number of ms (a fraction allowed and dropped): 0, or -1. */
static int
millis(const char *s, int64_t *ms)
{
	char *end;
	double d;

	if (!s || !*s || strspn(s, "0123456789.") != strlen(s))
		return -1;
	d = strtod(s, &end);
	if (end == s || *end || d < 0 || d > 86400000.0)
		return -1;
	*ms = (int64_t)d;
	return 0;
}

int64_t
dq_retry_after_ms(const struct dq_http_resp *resp)
{
	static const char *const ms_headers[] = { "retry-after-ms", "x-ms-retry-after-ms" };
	const char *v;
	int64_t ms;
	struct tm tm;

	for (size_t i = 0; i < sizeof ms_headers / sizeof ms_headers[0]; i++)
		if (millis(dq_http_header(resp, ms_headers[i]), &ms) == 0)
			return ms;
	if (!(v = dq_http_header(resp, "retry-after")))
		return -1;
	if (strspn(v, "0123456789") == strlen(v) && *v)
		return millis(v, &ms) == 0 && ms <= 86400 ? ms * 1000 : -1;
	/* An HTTP date, IMF-fixdate (RFC 9110 §5.6.7); in the past: now. */
	memset(&tm, 0, sizeof tm);
	if (!(v = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm)) || *v)
		return -1;
	ms = (int64_t)timegm(&tm) * 1000 - dq_now_ms();
	return ms > 0 ? ms : 0;
}
