/*
 * curl.c - libcurl, loaded by the first request, and the process's pool of
 * connections over it (DESIGN §6); private to lib/http/ (http.h).
 *
 * dlopen under pthread_once, then curl_global_init, then one share
 * handle of connections, TLS sessions and DNS answers for every thread,
 * its locks guarding only the pool, never a request under way.  Each
 * thread has its own easy handle over it, made on its first request,
 * reset and reused for the next, freed when the thread ends.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "dq.h"
#include "http/http.h"

/* ---- libcurl ---- */

#ifndef DQ_LIBCURL
#define DQ_LIBCURL "libcurl.so.4"
#endif

/*
 * libcurl is loaded with dlopen, not linked: linked, its load alone
 * (libcurl and the libraries it needs: nghttp2, libssh2, LDAP, GSSAPI...)
 * costs every program that has a network backend some 5 ms of CPU at each
 * start, before main, whether it makes a request or not - twice what
 * dq-ingest costs to refuse a request (bench/startup.sh).  Loaded by the first
 * request, it costs only the programs that make one, once.  OpenSSL's two
 * functions for DQ_CA_FILE come through the same handle (libcurl's
 * libssl), NULL when libcurl has another TLS library.
 */
struct dq_curl_api dq_curl;

#define C dq_curl

static const struct {
	const char *name;
	size_t off;
	int optional;
} syms[] = {
#define SYM(f, name) { name, offsetof(struct dq_curl_api, f), 0 }
	SYM(global_init, "curl_global_init"),
	SYM(share_init, "curl_share_init"),
	SYM(share_setopt, "curl_share_setopt"),
	SYM(easy_init, "curl_easy_init"),
	SYM(easy_cleanup, "curl_easy_cleanup"),
	SYM(easy_reset, "curl_easy_reset"),
	SYM(easy_setopt, "curl_easy_setopt"),
	SYM(easy_perform, "curl_easy_perform"),
	SYM(easy_getinfo, "curl_easy_getinfo"),
	SYM(easy_strerror, "curl_easy_strerror"),
	SYM(slist_append, "curl_slist_append"),
	SYM(slist_free_all, "curl_slist_free_all"),
	SYM(version_info, "curl_version_info"),
#undef SYM
	{ "SSL_CTX_get_cert_store", offsetof(struct dq_curl_api, ctx_cert_store), 1 },
	{ "X509_STORE_load_file", offsetof(struct dq_curl_api, store_load_file), 1 },
};

static char load_error[256];

/* 0 with C filled, or -1 with load_error. */
static int
load(void)
{
	void *lib = dlopen(DQ_LIBCURL, RTLD_NOW | RTLD_LOCAL);

	if (!lib) {
		snprintf(load_error, sizeof load_error, "%s", dlerror());
		return -1;
	}
	for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
		void *f = dlsym(lib, syms[i].name);

		if (!f && !syms[i].optional) {
			snprintf(load_error, sizeof load_error, "%s: no %s", DQ_LIBCURL, syms[i].name);
			return -1;
		}
		memcpy((char *)&C + syms[i].off, &f, sizeof f);
	}
	return 0;
}

/* ---- the process's pool, made by the first request ---- */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static CURLcode init_rc;
static CURLSH *share;
static pthread_mutex_t share_lock[CURL_LOCK_DATA_LAST];
static pthread_key_t easy_key;
static int openssl_backend;	/* DQ_CA_FILE can be added, not only substituted */
static _Thread_local CURL *easy;

static void
lock(CURL *h, curl_lock_data data, curl_lock_access access, void *arg)
{
	pthread_mutex_lock(&share_lock[data]);
}

static void
unlock(CURL *h, curl_lock_data data, void *arg)
{
	pthread_mutex_unlock(&share_lock[data]);
}

static void
easy_free(void *h)
{
	C.easy_cleanup(h);
}

static void
init(void)
{
	const curl_version_info_data *v;

	if (load() < 0) {
		init_rc = CURLE_FAILED_INIT;
		return;
	}
	if ((init_rc = C.global_init(CURL_GLOBAL_DEFAULT)) != CURLE_OK)
		return;
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&share_lock[i], NULL);
	if (!(share = C.share_init()) ||
	    C.share_setopt(share, CURLSHOPT_LOCKFUNC, lock) ||
	    C.share_setopt(share, CURLSHOPT_UNLOCKFUNC, unlock) ||
	    C.share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) ||
	    C.share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) ||
	    C.share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) ||
	    pthread_key_create(&easy_key, easy_free) != 0) {
		init_rc = CURLE_FAILED_INIT;
		return;
	}
	v = C.version_info(CURLVERSION_NOW);
	openssl_backend = v->ssl_version && strncmp(v->ssl_version, "OpenSSL", 7) == 0 &&
	    C.ctx_cert_store && C.store_load_file;
}

CURL *
dq_curl_handle(const char *what, struct dq_err *err)
{
	pthread_once(&once, init);
	if (init_rc != CURLE_OK) {
		if (load_error[0])
			dq_err_system(err, DQ_EX_CONFIG, "http_init", "%s: libcurl: %s", what,
			    load_error);
		else
			dq_err_system(err, DQ_EX_TEMPFAIL, "http_init",
			    "%s: libcurl could not start: %s", what, C.easy_strerror(init_rc));
		return NULL;
	}
	if (!easy) {
		if (!(easy = C.easy_init())) {
			dq_err_system(err, DQ_EX_TEMPFAIL, "http_init", "%s: libcurl: out of memory", what);
			return NULL;
		}
		C.easy_setopt(easy, CURLOPT_SHARE, share);
		pthread_setspecific(easy_key, easy);
	} else
		C.easy_reset(easy);	/* keeps its connections and the share */
	return easy;
}

/* DQ_CA_FILE added to the trust store OpenSSL already has. */
static CURLcode
add_ca(CURL *h, void *ssl_ctx, void *arg)
{
	X509_STORE *store = C.ctx_cert_store(ssl_ctx);

	return store && C.store_load_file(store, dq_cfg.ca_file) == 1 ?
	    CURLE_OK : CURLE_SSL_CACERT_BADFILE;
}

void
dq_curl_ca(CURL *h)
{
	if (!dq_cfg.ca_file || !*dq_cfg.ca_file)
		return;
	if (openssl_backend)
		C.easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, add_ca);
	else
		C.easy_setopt(h, CURLOPT_CAINFO, dq_cfg.ca_file);	/* substituted: the best it can */
}
