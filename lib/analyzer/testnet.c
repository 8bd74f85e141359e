/*
 * testnet.c - the test hook of a network model (DQ_TEST_ANALYZE_URL), in
 * a file of its own so that only the program that calls it, dq-analyze,
 * links the HTTP layer (and libcurl) for it.
 */
#include <stdio.h>

#include "dq.h"

int
dq_analyzer_test_request(struct dq_err *err)
{
	struct dq_http_req req = { .url = dq_cfg.test_analyze_url };
	struct dq_http_resp resp;
	int rc, spent;
	long st;
	char was[sizeof err->msg];

	if (!dq_cfg.test_analyze_url || !*dq_cfg.test_analyze_url)
		return 0;
	rc = dq_http_do(&req, &resp, err);
	spent = rc < 0 && err->budget_spent;
	st = resp.status;
	snprintf(was, sizeof was, "%s", rc < 0 ? err->msg : "");
	dq_http_resp_free(&resp);
	if (rc == 0 && st >= 200 && st < 300)
		return 0;
	if (rc == 0)
		dq_err_set(err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "test_model_busy",
		    "test hook: the model answered %ld", st);
	else
		dq_err_set(err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "test_model_unavailable",
		    "test hook: %.400s", was);
	err->budget_spent = spent;
	err->http_status = (int)st;
	return -1;
}
