/* dq-enqueue - send each record's message to the queue. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "dq.h"

static const char synopsis[] = "usage: dq-enqueue [-q QUEUE] [--new-id | --reprocess] < records\n";

static _Noreturn void
usage(const char *why)
{
	dq_usage(synopsis, why);
}

static struct dq_queue *q;
static int new_id, reprocess, status;

static void
enqueue(json_t *rec, void *arg)
{
	json_t *msg = json_object_get(rec, "message");
	const char *image_id = json_string_value(json_object_get(msg, "image_id"));
	struct dq_err err;
	char mid[37];
	int r;

	if (dq_record_has_error(rec, NULL) || !msg) {
		dq_emit(rec);	/* not ours: passed on untouched */
		return;
	}
	if (dq_message_check(msg, &err) < 0) {
		dq_record_set_error(rec, "enqueue", &err);
		dq_log_err(DQ_ERROR, "rejected", NULL, &err);
		status = dq_status_merge(status, err.status);
		dq_emit(rec);
		return;
	}
	if (!new_id && json_is_true(json_object_get(json_object_get(rec, "receipt"), "dead_letter"))) {
		/* Under its own id the queue would drop it as a duplicate, and a
		 * settle after us would delete the only copy. */
		dq_err_record(&err, "dead_letter_same_id", "read from the dead-letter queue: "
		    "resent under its own message id it would be dropped as a duplicate; "
		    "redrive with dq-enqueue --new-id");
		dq_record_set_error(rec, "enqueue", &err);
		dq_log_err(DQ_ERROR, "rejected", json_pack("{s:s}", "image_id", image_id), &err);
		status = dq_status_merge(status, err.status);
		dq_emit(rec);
		return;
	}
	if (new_id)
		dq_uuid_new(mid);
	else
		snprintf(mid, sizeof mid, "%s", image_id);
	if (reprocess) {
		char now[21];

		dq_rfc3339(time(NULL), now);
		json_object_set_new(msg, "reprocess", json_pack("{s:s}", "requested_at", now));
	}
	if ((r = dq_queue_send(q, msg, mid, &err)) < 0) {
		if (err.scope == DQ_SCOPE_SYSTEM)
			dq_stop(status, &err, json_pack("{s:s}", "image_id", image_id));
		dq_record_set_error(rec, "enqueue", &err);
		dq_log_err(DQ_ERROR, "rejected", json_pack("{s:s}", "image_id", image_id), &err);
		status = dq_status_merge(status, err.status);
	} else {
		json_object_set_new(rec, "enqueued", json_pack("{s:s,s:s}",
		    "queue", q->name, "message_id", mid));
		/* A duplicate is logged by the backend that saw it; the record
		 * says it was not sent, so that a settle does not delete it. */
		if (r == 1)
			json_object_set_new(json_object_get(rec, "enqueued"), "duplicate", json_true());
		if (r == 0)
			dq_log(DQ_INFO, "enqueued", json_pack("{s:s,s:s,s:s}", "image_id", image_id,
			    "message_id", mid, "queue", q->name), "queued on %s", q->name);
	}
	dq_emit(rec);
}

int
main(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "queue", required_argument, NULL, 'q' },
		{ "new-id", no_argument, NULL, 'n' },
		{ "reprocess", no_argument, NULL, 'R' },
		DQ_COMMON_OPTIONS,
		{ NULL, 0, NULL, 0 },
	};
	const char *qname = NULL;
	int check = 0, c;
	struct dq_err err;

	dq_init(argv[0]);
	dq_cli_config();
	while ((c = getopt_long(argc, argv, "hq:", opts, NULL)) != -1) {
		switch (c) {
		case 'q': qname = optarg; break;
		case 'n': new_id = 1; break;
		case 'R': reprocess = new_id = 1; break;
		case 'C': check = 1; break;
		default: dq_cli_option(c, synopsis);
		}
	}
	argc -= optind;
	if (check)
		dq_cli_check(0, 1, qname);
	if (argc > 0)
		usage("no arguments expected: records come on standard input");
	if (!(q = dq_queue_open(qname, &err)))
		dq_stop(0, &err, NULL);
	c = dq_each_record(enqueue, NULL);
	status = dq_status_merge(status, c);
	dq_queue_close(q);
	return dq_finish_stdout(status);
}
