/* queue.c - choosing the queue backend. */
#include <stdlib.h>
#include <string.h>

#include "dq.h"

struct dq_queue *
dq_queue_open(const char *name, struct dq_err *err)
{
	struct dq_queue *q;

	if (!name)
		name = dq_cfg.queue;
	if (!dq_safe_token(name)) {
		dq_err_system(err, DQ_EX_USAGE, "bad_queue", "invalid queue name '%s'", name);
		return NULL;
	}
	if (dq_cfg.servicebus_connection_string || dq_cfg.servicebus_namespace) {
		/* Never fall back to the local spool when Azure is asked for. */
		dq_err_system(err, DQ_EX_CONFIG, "backend_unavailable",
		    "the servicebus queue backend (%s) is not built into this version; "
		    "unset it and set DQ_LOCAL_DIR for the local spool",
		    dq_cfg.servicebus_connection_string ? "AZURE_SERVICEBUS_CONNECTION_STRING" :
		    "AZURE_SERVICEBUS_NAMESPACE");
		return NULL;
	}
	if (dq_cfg.local_dir) {
		if (!(q = dq_queue_local_open(dq_cfg.local_dir, name, err)))
			return NULL;
		dq_log(DQ_INFO, "backend", json_pack("{s:s,s:s,s:s}", "queue", "local",
		    "queue_name", name, "dir", dq_cfg.local_dir),
		    "queue: local %s (%s)", name, dq_cfg.local_dir);
		return q;
	}
	dq_err_system(err, DQ_EX_CONFIG, "no_queue",
	    "no queue configured: set AZURE_SERVICEBUS_CONNECTION_STRING, "
	    "AZURE_SERVICEBUS_NAMESPACE or DQ_LOCAL_DIR");
	return NULL;
}

void
dq_queue_close(struct dq_queue *q)
{
	if (q)
		q->ops->close(q);
}
