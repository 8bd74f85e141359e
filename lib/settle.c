/*
 * settle.c - what becomes of a record at the end of the pipeline: a
 * failure marker or not; completed, abandoned or dead-lettered.
 *
 * dq-put (what to store: an artifact, a failure marker or nothing) and
 * dq-dequeue --settle (dq_settle: the settlement, its log events and the
 * record's "settled") both ask dq_record_fate(), so the two halves of the
 * decision cannot drift apart.
 *
 * The one judgement in it is whose fault an error is.  A failure of the
 * image's own (unreadable, no reference for its SKU, an answer that fails
 * validation) is final when it is permanent, or retryable on the last
 * delivery: it leaves a failure marker and is dead-lettered.  An error
 * that is about the circumstances (a shutdown, a lost lock, a missing raw
 * image, a backend that did not answer) never leaves a marker: below the
 * attempt limit it is abandoned, at the limit it is dead-lettered with its
 * own reason, and a redrive finds nothing in its way.
 */
#include <string.h>

#include "dq.h"

/* Error codes that are no fault of the image's content. */
static const struct {
	const char *code;
	const char *why;
} circumstances[] = {
	{ "shutdown", "the stage was stopping and did not start it" },
	{ "lock_lost", "the message's lock was lost" },
	{ "raw_missing", "the raw image was not (yet) in the store" },
	{ "dead_letter_same_id", "a redrive under the message's own id was refused" },
	{ "bad_receipt", "the receipt could not be used" },
};

int
dq_error_is_images(json_t *error)
{
	const char *code = json_string_value(json_object_get(error, "code"));
	json_int_t http = json_integer_value(json_object_get(error, "http_status"));

	/* A backend that timed out, throttled or failed is an outage. */
	if (http == 408 || http == 429 || http >= 500)
		return 0;
	for (size_t i = 0; code && i < sizeof circumstances / sizeof circumstances[0]; i++)
		if (strcmp(code, circumstances[i].code) == 0)
			return 0;
	return 1;
}

/* The decision's own log event, if it deserves one. */
static const struct {
	enum dq_level level;
	const char *name;
} events[] = {
	[DQ_EVENT_NONE] = { DQ_DEBUG, NULL },
	[DQ_EVENT_POISON] = { DQ_ERROR, "poison" },
	[DQ_EVENT_NOT_RESENT] = { DQ_WARNING, "not_resent" },
	[DQ_EVENT_INCOMPLETE] = { DQ_WARNING, "incomplete" },
};

/* Each action's past tense, which the record's "settled" says, and its
 * log event. */
static const struct {
	const char *past;
	const char *event;
} actions[] = {
	[DQ_COMPLETE] = { "completed", "completed" },
	[DQ_ABANDON] = { "abandoned", "abandoned" },
	[DQ_DEAD_LETTER] = { "dead-lettered", NULL },	/* the backend logs dead_lettered */
};

void
dq_record_fate(json_t *rec, long max_attempts, const char *require,
    const struct dq_queue *q, struct dq_fate *f)
{
	json_t *e = json_object_get(rec, "error"), *sk = json_object_get(rec, "skipped");
	json_t *receipt = json_object_get(rec, "receipt");
	json_int_t dc = json_integer_value(json_object_get(receipt, "delivery_count"));
	int retryable = 0, final, marker = 0;

	memset(f, 0, sizeof *f);
	f->action = DQ_COMPLETE;
	if (dq_record_has_error(rec, &retryable)) {
		/* Without a receipt there is no last delivery: only a permanent error is final. */
		final = !retryable || (dc > 0 && dc >= max_attempts);
		if (!(f->reason = json_string_value(json_object_get(e, "code"))))
			f->reason = "error";
		f->description = json_string_value(json_object_get(e, "message"));
		marker = final && dq_error_is_images(e);
		f->action = final ? DQ_DEAD_LETTER : DQ_ABANDON;
		if (final)
			f->event = DQ_EVENT_POISON;
	} else if (sk) {
		const char *why = json_string_value(json_object_get(sk, "reason"));
		json_t *se = json_object_get(sk, "error");

		if (why && strcmp(why, "failed") == 0) {
			/* A redelivery of a message that already failed for good:
			 * dead-lettered again with the failure's own reason. */
			f->action = DQ_DEAD_LETTER;
			f->reason = json_string_value(json_object_get(se, "code"));
			f->description = json_string_value(json_object_get(se, "message"));
			if (!f->reason) {
				f->reason = "failure_marker";
				f->description = "a failure marker answers for this message";
			}
			f->event = DQ_EVENT_POISON;
		}
	} else if (json_is_true(json_object_get(json_object_get(rec, "enqueued"), "duplicate"))) {
		f->action = DQ_ABANDON;
		f->reason = "not_resent";
		f->description = "the queue dropped the resend as a duplicate: "
		    "not resent, so not removed";
		f->event = DQ_EVENT_NOT_RESENT;
	} else if (require && !json_object_get(rec, require)) {
		f->action = DQ_ABANDON;
		f->reason = "incomplete";
		f->description = "the record lacks the key --require names";
		f->event = DQ_EVENT_INCOMPLETE;
	}
	/* What dq-put stores: the artifact, else the image's own failure for
	 * good; for a record skipped as done or failed already, nothing. */
	if (!sk && json_object_get(rec, "artifact"))
		f->keep = DQ_KEEP_ARTIFACT;
	else if (!sk && marker)
		f->keep = DQ_KEEP_MARKER;
	if (f->action != DQ_DEAD_LETTER)
		return;
	if (json_is_true(json_object_get(receipt, "dead_letter"))) {
		/* Read from the dead-letter queue: abandoned, it goes back there. */
		f->action = DQ_ABANDON;
		f->event = DQ_EVENT_NONE;
	} else if (q && !dq_queue_can_dead_letter(q)) {
		/* Service Bus: the broker dead-letters at MaxDeliveryCount. */
		f->action = DQ_ABANDON;
		f->broker = 1;
	}
}

static void
log_decision(json_t *rec, const struct dq_fate *f, const char *require)
{
	json_t *ctx;

	if (f->event == DQ_EVENT_NONE)
		return;
	ctx = dq_record_log_ctx(rec);
	if (f->event == DQ_EVENT_POISON) {
		json_object_set_new(ctx, "reason", json_string(f->reason));
		dq_log(events[f->event].level, events[f->event].name, ctx, "%s: %s%s", f->reason,
		    f->description ? f->description : "",
		    f->broker ? " (abandoned for the broker to dead-letter)" : "");
	} else if (f->event == DQ_EVENT_INCOMPLETE)
		dq_log(events[f->event].level, events[f->event].name, ctx,
		    "record lacks \"%s\": abandoned, not completed", require);
	else
		dq_log(events[f->event].level, events[f->event].name, ctx, "%s", f->description);
}

int
dq_settle(struct dq_queue *q, json_t *rec, long max_attempts, const char *require,
    struct dq_err *err)
{
	json_t *receipt = json_object_get(rec, "receipt");
	struct dq_fate f;
	enum dq_action done;
	int r;

	dq_record_fate(rec, max_attempts, require, q, &f);
	log_decision(rec, &f, require);
	switch (f.action) {
	case DQ_COMPLETE:
		r = dq_queue_complete(q, receipt, err);
		break;
	case DQ_ABANDON:
		r = dq_queue_abandon(q, receipt, err);
		break;
	default:
		r = dq_queue_dead_letter(q, receipt, f.reason, f.description ? f.description : "",
		    err);
		break;
	}
	if (r < 0)
		return -1;
	/* What happened: an abandon of the last delivery is a dead-lettering. */
	done = f.action == DQ_ABANDON && r == 1 ? DQ_DEAD_LETTER : f.action;
	json_object_set_new(rec, "settled", json_string(actions[done].past));
	if (actions[done].event)
		dq_log(DQ_INFO, actions[done].event, dq_record_log_ctx(rec), "%s", actions[done].past);
	return 0;
}
