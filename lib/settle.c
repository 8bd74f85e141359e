/*
 * settle.c - what becomes of a record at the end of the pipeline: a
 * failure marker or not; completed, abandoned or dead-lettered.
 *
 * dq-put (the marker) and dq-dequeue --settle (the settlement) both ask
 * dq_record_fate(), so the two halves of the decision cannot drift apart.
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

void
dq_record_fate(json_t *rec, long max_attempts, const char *require, struct dq_fate *f)
{
	json_t *e = json_object_get(rec, "error"), *sk = json_object_get(rec, "skipped");
	json_int_t dc = json_integer_value(json_object_get(json_object_get(rec, "receipt"),
	    "delivery_count"));
	int retryable = 0, final;

	memset(f, 0, sizeof *f);
	f->action = DQ_COMPLETE;
	if (dq_record_has_error(rec, &retryable)) {
		/* Without a receipt there is no last delivery: only a permanent error is final. */
		final = !retryable || (dc > 0 && dc >= max_attempts);
		if (!(f->reason = json_string_value(json_object_get(e, "code"))))
			f->reason = "error";
		f->description = json_string_value(json_object_get(e, "message"));
		f->marker = final && dq_error_is_images(e);
		f->action = final ? DQ_DEAD_LETTER : DQ_ABANDON;
		if (final)
			f->event = "poison";
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
			f->event = "poison";
		}
	} else if (json_is_true(json_object_get(json_object_get(rec, "enqueued"), "duplicate"))) {
		f->action = DQ_ABANDON;
		f->reason = "not_resent";
		f->description = "the queue dropped the resend as a duplicate: "
		    "not resent, so not removed";
		f->event = "not_resent";
	} else if (require && !json_object_get(rec, require)) {
		f->action = DQ_ABANDON;
		f->reason = "incomplete";
		f->description = "the record lacks the key --require names";
		f->event = "incomplete";
	}
}
