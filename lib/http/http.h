/*
 * http.h - private to lib/http/: libcurl as curl.c loads it (dlopen at
 * the first request), for http.c.
 */
#ifndef DQ_HTTP_H
#define DQ_HTTP_H

#include <curl/curl.h>
#include <openssl/ssl.h>

/* libcurl's functions, and OpenSSL's two for DQ_CA_FILE (NULL when
 * libcurl has another TLS library). */
struct dq_curl_api {
	CURLcode (*global_init)(long);
	CURLSH *(*share_init)(void);
	CURLSHcode (*share_setopt)(CURLSH *, CURLSHoption, ...);
	CURL *(*easy_init)(void);
	void (*easy_cleanup)(CURL *);
	void (*easy_reset)(CURL *);
	CURLcode (*easy_setopt)(CURL *, CURLoption, ...);
	CURLcode (*easy_perform)(CURL *);
	CURLcode (*easy_getinfo)(CURL *, CURLINFO, ...);
	const char *(*easy_strerror)(CURLcode);
	struct curl_slist *(*slist_append)(struct curl_slist *, const char *);
	void (*slist_free_all)(struct curl_slist *);
	curl_version_info_data *(*version_info)(CURLversion);
	X509_STORE *(*ctx_cert_store)(const SSL_CTX *);
	int (*store_load_file)(X509_STORE *, const char *);
};
extern struct dq_curl_api dq_curl;

/*
 * This thread's easy handle over the process's pool, reset for a new
 * request; libcurl is loaded and the pool made by the first call.  NULL
 * with err ("http_init": 78 when libcurl cannot be loaded, 75 when it
 * cannot start); what names the request for the message.
 */
CURL *dq_curl_handle(const char *what, struct dq_err *err);
/* DQ_CA_FILE for h's TLS: added to the trust store (OpenSSL), else substituted. */
void dq_curl_ca(CURL *h);

#endif
