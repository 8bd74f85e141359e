/*
 * digest.c - SHA-256 and SHA-1 through OpenSSL, set up once per process.
 *
 * EVP_sha256() names an algorithm; every EVP_Digest with it looks the
 * implementation up in the providers again (a lock and a table search).
 * EVP_MD_fetch once, on the first hash, keeps it: a program that never
 * hashes never loads OpenSSL's configuration or providers.  The fetched
 * EVP_MD lives until exit (OpenSSL frees it in its atexit handler).
 */
#include <pthread.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "dq.h"

static pthread_once_t once256 = PTHREAD_ONCE_INIT, once1 = PTHREAD_ONCE_INIT;
static EVP_MD *md_sha256, *md_sha1;

static void
fetch256(void)
{
	if (!(md_sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL)))
		dq_die(DQ_EX_CONFIG, "OpenSSL offers no SHA-256");
}

static void
fetch1(void)
{
	if (!(md_sha1 = EVP_MD_fetch(NULL, "SHA1", NULL)))
		dq_die(DQ_EX_CONFIG, "OpenSSL offers no SHA-1");
}

const EVP_MD *
dq_md_sha256(void)
{
	pthread_once(&once256, fetch256);
	return md_sha256;
}

const EVP_MD *
dq_md_sha1(void)
{
	pthread_once(&once1, fetch1);
	return md_sha1;
}

void
dq_sha256_hex(const void *data, size_t len, char hex[static 65])
{
	static const char digits[] = "0123456789abcdef";
	unsigned char md[32];
	unsigned int mdlen = 0;

	if (EVP_Digest(data, len, md, &mdlen, dq_md_sha256(), NULL) != 1 || mdlen != 32)
		dq_die(DQ_EX_TEMPFAIL, "SHA-256 failed");
	for (int i = 0; i < 32; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 15];
	}
	hex[64] = '\0';
}

int
dq_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
	/* Hash both sides first: the comparison then takes the same time
	 * whatever the lengths and wherever they first differ. */
	unsigned char ha[32], hb[32];
	unsigned int n;

	if (EVP_Digest(a, alen, ha, &n, dq_md_sha256(), NULL) != 1 ||
	    EVP_Digest(b, blen, hb, &n, dq_md_sha256(), NULL) != 1)
		dq_die(DQ_EX_TEMPFAIL, "SHA-256 failed");
	return CRYPTO_memcmp(ha, hb, sizeof ha) == 0 && alen == blen;
}
