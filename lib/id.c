/*
 * id.c - image and message ids: random UUIDs and name-based UUIDv5.
 *
 * A random id costs no system call of its own: getrandom(2) fills a
 * buffer of ids per thread at a time (libuuid's uuid_generate makes a
 * getrandom and four more calls for each; its text functions make none).  A child of fork(2) must not hand out the ids its
 * parent's buffer still holds, so the child empties it (pthread_atfork;
 * only the forking thread goes on in the child, and its buffer is the one
 * emptied).
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <uuid/uuid.h>
#include <openssl/evp.h>

#include "dq.h"

#define ID_BYTES	16
#define POOL_IDS	64		/* ids per getrandom(2) */

static _Thread_local unsigned char pool[ID_BYTES * POOL_IDS];
static _Thread_local size_t pool_off = sizeof pool;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
pool_drop(void)
{
	explicit_bzero(pool, sizeof pool);
	pool_off = sizeof pool;
}

static void
atfork_register(void)
{
	if (pthread_atfork(NULL, NULL, pool_drop) != 0)
		dq_die(DQ_EX_TEMPFAIL, "unable to register a fork handler");
}

static void
pool_fill(void)
{
	size_t got = 0;
	ssize_t r;

	while (got < sizeof pool) {
		if ((r = getrandom(pool + got, sizeof pool - got, 0)) < 0) {
			if (errno == EINTR)
				continue;
			dq_die(DQ_EX_TEMPFAIL, "getrandom: %s", strerror(errno));
		}
		got += (size_t)r;
	}
	pool_off = 0;
}

/* RFC 9562 §5.4: 122 random bits, version 4, variant 10. */
void
dq_uuid_new(char out[static 37])
{
	uuid_t u;

	pthread_once(&atfork_once, atfork_register);
	if (pool_off + ID_BYTES > sizeof pool)
		pool_fill();
	memcpy(u, pool + pool_off, ID_BYTES);
	explicit_bzero(pool + pool_off, ID_BYTES);
	pool_off += ID_BYTES;
	u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);
	u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
	uuid_unparse_lower(u, out);
}

/* RFC 9562 §5.5: SHA-1 over namespace bytes and name, version 5. */
void
dq_uuid_v5(const char *ns_uuid, const char *name, char out[static 37])
{
	uuid_t ns, u;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	if (!ctx)
		dq_die(DQ_EX_TEMPFAIL, "out of memory");
	if (uuid_parse(ns_uuid, ns) < 0)
		memset(ns, 0, sizeof ns);
	if (EVP_DigestInit_ex(ctx, dq_md_sha1(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, ns, sizeof ns) != 1 ||
	    EVP_DigestUpdate(ctx, name, strlen(name)) != 1 ||
	    EVP_DigestFinal_ex(ctx, md, &n) != 1)
		dq_die(DQ_EX_TEMPFAIL, "SHA-1 failed");
	EVP_MD_CTX_free(ctx);
	memcpy(u, md, 16);
	u[6] = (unsigned char)((u[6] & 0x0f) | 0x50);
	u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
	uuid_unparse_lower(u, out);
}

int
dq_uuid_valid(const char *s)
{
	static const char hex[] = "0123456789abcdef";

	if (!s || strlen(s) != 36)
		return 0;
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return 0;
		} else if (!strchr(hex, s[i]) || s[i] == '\0')
			return 0;
	}
	return 1;
}
