/*
 * http.c - the request, over libcurl (stub: the interface first).
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "dq.h"

void
dq_http_add(struct dq_http_hdrs *h, const char *name, const char *fmt, ...)
{
	(void)h;
	(void)name;
	(void)fmt;
}

int
dq_http_do(const struct dq_http_req *req, struct dq_http_resp *resp, struct dq_err *err)
{
	memset(resp, 0, sizeof *resp);
	dq_err_system(err, DQ_EX_CONFIG, "not_built", "HTTP is not built yet: %s", req->url ? "" : "");
	return -1;
}
