/* dq-dequeue - receive messages under lock, or settle and renew them. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "dq.h"

static const char synopsis[] =
    "usage: dq-dequeue [-q QUEUE] [-n MAX] [-w SECONDS] [--dead-letter] [--peek]\n"
    "       dq-dequeue --settle [--require KEY] [--max-attempts N] < records\n"
    "       dq-dequeue --renew < records\n";

static int status;
static struct dq_queue *queues[8];

static _Noreturn void
usage(const char *why)
{
	dq_usage(synopsis, why);
}

static json_t *
ctx_of(json_t *rec)
{
	json_t *r = json_object_get(rec, "receipt");
	json_t *m = json_object_get(rec, "message");

	return json_pack("{s:s?,s:s?,s:I}",
	    "image_id", json_string_value(json_object_get(m, "image_id")),
	    "message_id", json_string_value(json_object_get(r, "message_id")),
	    "delivery_count", json_integer_value(json_object_get(r, "delivery_count")));
}

/* The queue a receipt names; one open handle per queue name. */
static struct dq_queue *
queue_for(json_t *receipt)
{
	const char *name = json_string_value(json_object_get(receipt, "queue"));
	struct dq_err err;
	size_t i;

	for (i = 0; i < 8 && queues[i]; i++)
		if (name && strcmp(queues[i]->name, name) == 0)
			return queues[i];
	if (i == 8)
		dq_die(DQ_EX_USAGE, "records name more than 8 queues");
	if (!(queues[i] = dq_queue_open(name, &err)))
		dq_stop(status, &err, NULL);
	if (strcmp(json_string_value(json_object_get(receipt, "backend")) ?
	    json_string_value(json_object_get(receipt, "backend")) : "", dq_queue_backend(queues[i])) != 0) {
		dq_err_system(&err, DQ_EX_CONFIG, "backend_mismatch",
		    "record was received from backend %s, configured is %s",
		    json_string_value(json_object_get(receipt, "backend")), dq_queue_backend(queues[i]));
		dq_stop(status, &err, NULL);
	}
	return queues[i];
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
		dq_log(DQ_INFO, flags & DQ_RECV_PEEK ? "peeked" : "received", ctx_of(rec),
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
	dq_log_err(DQ_ERROR, "settle_failed", ctx_of(rec), err);
	if (!dq_record_has_error(rec, NULL))
		dq_record_set_error(rec, "settle", err);
	status = dq_status_merge(status, err->status);
}

/* The settle table: each action's past tense, which is also its log event. */
static const struct {
	const char *past;
	const char *event;
} settled_as[] = {
	[DQ_COMPLETE] = { "completed", "completed" },
	[DQ_ABANDON] = { "abandoned", "abandoned" },
	[DQ_DEAD_LETTER] = { "dead-lettered", NULL },	/* the backend logs dead_lettered */
};

static void
settle(json_t *rec, const char *require, long max_attempts)
{
	json_t *receipt = json_object_get(rec, "receipt");
	struct dq_queue *q;
	struct dq_err err;
	struct dq_fate f;
	enum dq_action done;
	int r, dead = json_is_true(json_object_get(receipt, "dead_letter"));

	if (!json_is_object(receipt) || !json_string_value(json_object_get(receipt, "lock_token"))) {
		dq_log(DQ_ERROR, "no_receipt", ctx_of(rec), "record has no receipt with a lock: nothing to settle");
		status = dq_status_merge(status, DQ_EX_DATAERR);
		return;
	}
	q = queue_for(receipt);
	dq_record_fate(rec, max_attempts, require, &f);
	if (f.event && strcmp(f.event, "incomplete") == 0)
		dq_log(DQ_WARNING, f.event, ctx_of(rec),
		    "record lacks \"%s\": abandoned, not completed", require);
	else if (f.event && strcmp(f.event, "poison") != 0)
		dq_log(DQ_WARNING, f.event, ctx_of(rec), "%s", f.description);
	if (f.action == DQ_DEAD_LETTER && dead)
		f.action = DQ_ABANDON;	/* read from the dead-letter queue: back there */
	else if (f.action == DQ_DEAD_LETTER) {
		json_t *ctx = ctx_of(rec);

		json_object_set_new(ctx, "reason", json_string(f.reason));
		dq_log(DQ_ERROR, "poison", ctx, "%s: %s%s", f.reason,
		    f.description ? f.description : "",
		    dq_queue_can_dead_letter(q) ? "" : " (abandoned for the broker to dead-letter)");
		if (!dq_queue_can_dead_letter(q))
			f.action = DQ_ABANDON;	/* Service Bus: the broker dead-letters at MaxDeliveryCount */
	}
	switch (f.action) {
	case DQ_COMPLETE:
		r = dq_queue_complete(q, receipt, &err);
		break;
	case DQ_ABANDON:
		r = dq_queue_abandon(q, receipt, &err);
		break;
	default:
		r = dq_queue_dead_letter(q, receipt, f.reason, f.description ? f.description : "", &err);
		break;
	}
	if (r < 0) {
		settle_failed(rec, &err);
		return;
	}
	/* Print what happened: an abandon of the last delivery is a dead-lettering. */
	done = f.action == DQ_ABANDON && r == 1 ? DQ_DEAD_LETTER : f.action;
	json_object_set_new(rec, "settled", json_string(settled_as[done].past));
	if (settled_as[done].event)
		dq_log(DQ_INFO, settled_as[done].event, ctx_of(rec), "%s", settled_as[done].past);
}

static void
renew(json_t *rec)
{
	json_t *receipt = json_object_get(rec, "receipt");
	struct dq_err err;

	if (!json_is_object(receipt) || !json_string_value(json_object_get(receipt, "lock_token"))) {
		dq_log(DQ_ERROR, "no_receipt", ctx_of(rec), "record has no receipt with a lock: nothing to renew");
		status = dq_status_merge(status, DQ_EX_DATAERR);
		return;
	}
	if (dq_queue_renew(queue_for(receipt), receipt, &err) < 0)
		settle_failed(rec, &err);
	else
		dq_log(DQ_DEBUG, "renewed", ctx_of(rec), "lock renewed until %s",
		    json_string_value(json_object_get(receipt, "locked_until")));
}

static long max_attempts;
static const char *require;

static void
settle_one(json_t *rec, void *arg)
{
	settle(rec, require, max_attempts);
	dq_emit(rec);
}

static void
renew_one(json_t *rec, void *arg)
{
	renew(rec);
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

	c = dq_each_record(do_settle ? settle_one : renew_one, NULL);
	status = dq_status_merge(status, c);
	for (size_t i = 0; i < 8 && queues[i]; i++)
		dq_queue_close(queues[i]);
	return dq_finish_stdout(status);
}
