/* dq-dequeue - receive messages under lock, or settle and renew them. */
#include <getopt.h>
#include <stdlib.h>

#include "dq.h"

static const char synopsis[] =
    "usage: dq-dequeue [-q QUEUE] [-n MAX] [-w SECONDS] [--dead-letter] [--peek]\n"
    "       dq-dequeue --settle [--require KEY] [--max-attempts N] < records\n"
    "       dq-dequeue --renew < records\n";

static int status;
static struct dq_queues *queues;	/* those the receipts name */

static _Noreturn void
usage(const char *why)
{
	dq_usage(synopsis, why);
}

/* The queue of rec's locked receipt, or NULL (logged, 65) for a record
 * without one: nothing to settle or renew. */
static struct dq_queue *
queue_of(json_t *rec, const char *what)
{
	json_t *receipt = json_object_get(rec, "receipt");
	struct dq_queue *q;
	struct dq_err err;

	if (!json_is_object(receipt) || !json_string_value(json_object_get(receipt, "lock_token"))) {
		dq_log(DQ_ERROR, "no_receipt", dq_record_log_ctx(rec),
		    "record has no receipt with a lock: nothing to %s", what);
		status = dq_status_merge(status, DQ_EX_DATAERR);
		return NULL;
	}
	if (!(q = dq_queues_for(queues, receipt, &err)))
		dq_stop(status, &err, NULL);
	return q;
}

static int
receive(const char *qname, long max, double wait, int flags)
{
	struct dq_err err;
	struct dq_queue *q = dq_queue_open(qname, &err);
	json_t *out = json_array(), *rec;
	size_t i;
	int n;

	if (!q)
		dq_stop(status, &err, NULL);
	if ((n = dq_queue_receive(q, (int)max, (int64_t)(wait * 1000), flags, out, &err)) < 0)
		dq_stop(status, &err, NULL);
	json_array_foreach(out, i, rec) {
		dq_log(DQ_INFO, flags & DQ_RECV_PEEK ? "peeked" : "received", dq_record_log_ctx(rec),
		    "%s from %s%s", flags & DQ_RECV_PEEK ? "peeked" : "received", q->name,
		    flags & DQ_RECV_DEAD_LETTER ? " (dead-letter queue)" : "");
		dq_emit(rec);
	}
	json_decref(out);
	dq_queue_close(q);
	return 0;
}

static void
settle_failed(json_t *rec, const struct dq_err *err)
{
	if (err->scope == DQ_SCOPE_SYSTEM)
		dq_stop(status, err, NULL);
	dq_log_err(DQ_ERROR, "settle_failed", dq_record_log_ctx(rec), err);
	if (!dq_record_has_error(rec, NULL))
		dq_record_set_error(rec, "settle", err);
	status = dq_status_merge(status, err->status);
}

static long max_attempts;
static const char *require;

static void
settle_one(json_t *rec, void *arg)
{
	struct dq_queue *q = queue_of(rec, "settle");
	struct dq_err err;

	if (q && dq_settle(q, rec, max_attempts, require, &err) < 0)
		settle_failed(rec, &err);
	dq_emit(rec);
}

static void
renew_one(json_t *rec, void *arg)
{
	struct dq_queue *q = queue_of(rec, "renew");
	json_t *receipt = json_object_get(rec, "receipt");
	struct dq_err err;

	if (q && dq_queue_renew(q, receipt, &err) < 0)
		settle_failed(rec, &err);
	else if (q)
		dq_log(DQ_DEBUG, "renewed", dq_record_log_ctx(rec), "lock renewed until %s",
		    json_string_value(json_object_get(receipt, "locked_until")));
	dq_emit(rec);
}

int
main(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "queue", required_argument, NULL, 'q' },
		{ "max", required_argument, NULL, 'n' },
		{ "wait", required_argument, NULL, 'w' },
		{ "dead-letter", no_argument, NULL, 'D' },
		{ "peek", no_argument, NULL, 'p' },
		{ "settle", no_argument, NULL, 's' },
		{ "renew", no_argument, NULL, 'r' },
		{ "require", required_argument, NULL, 'R' },
		{ "max-attempts", required_argument, NULL, 'm' },
		DQ_COMMON_OPTIONS,
		{ NULL, 0, NULL, 0 },
	};
	const char *qname = NULL;
	long max = 1;
	double wait = 5;
	int check = 0, c, flags = 0, do_settle = 0, do_renew = 0, recv_opts = 0;
	char *end;

	dq_init(argv[0]);
	dq_cli_config();
	max_attempts = dq_cfg.max_delivery_attempts;
	while ((c = getopt_long(argc, argv, "hq:n:w:", opts, NULL)) != -1) {
		switch (c) {
		case 'q': qname = optarg; recv_opts = 1; break;
		case 'n':
			max = strtol(optarg, &end, 10);
			if (*end || max < 1 || max > 1000)
				usage("-n wants a number from 1 to 1000");
			recv_opts = 1;
			break;
		case 'w':
			wait = strtod(optarg, &end);
			if (*end || end == optarg || wait < 0 || wait > 3600)
				usage("-w wants seconds from 0 to 3600");
			recv_opts = 1;
			break;
		case 'D': flags |= DQ_RECV_DEAD_LETTER; recv_opts = 1; break;
		case 'p': flags |= DQ_RECV_PEEK; recv_opts = 1; break;
		case 's': do_settle = 1; break;
		case 'r': do_renew = 1; break;
		case 'R': require = optarg; break;
		case 'm':
			max_attempts = strtol(optarg, &end, 10);
			if (*end || max_attempts < 1)
				usage("--max-attempts wants a positive number");
			break;
		case 'C': check = 1; break;
		default: dq_cli_option(c, synopsis);
		}
	}
	argc -= optind;
	if (check)
		dq_cli_check(0, 1, qname);
	if (argc > 0)
		usage("no arguments expected");
	if (do_settle && do_renew)
		usage("--settle and --renew exclude each other");
	if ((do_settle || do_renew) && recv_opts)
		usage("receive options do not apply to --settle or --renew");
	if (!do_settle && (require || max_attempts != dq_cfg.max_delivery_attempts))
		usage("--require and --max-attempts apply to --settle");

	if (!do_settle && !do_renew) {
		receive(qname, max, wait, flags);
		return dq_finish_stdout(status);
	}

	queues = dq_queues_new();
	c = dq_each_record(do_settle ? settle_one : renew_one, NULL);
	status = dq_status_merge(status, c);
	dq_queues_free(queues);
	return dq_finish_stdout(status);
}
