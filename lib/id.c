/* id.c - image and message ids: random UUIDs and name-based UUIDv5. */
#include <string.h>
#include <uuid/uuid.h>
#include <openssl/evp.h>

#include "dq.h"

void
dq_uuid_new(char out[static 37])
{
	uuid_t u;

	uuid_generate_random(u);
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
	EVP_DigestInit_ex(ctx, EVP_sha1(), NULL);
	EVP_DigestUpdate(ctx, ns, sizeof ns);
	EVP_DigestUpdate(ctx, name, strlen(name));
	EVP_DigestFinal_ex(ctx, md, &n);
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
