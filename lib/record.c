/*
 * record.c - JSON Lines between the programs.
 *
 * One compact object per line.  A line that is not an object, carries a
 * duplicate key or an integer beyond int64, is longer than DQ_MAX_LINE,
 * or lacks its newline (a writer killed mid-line) is a malformed record:
 * reported with its position, never acted on.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dq.h"

#define DUMP_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

void
dq_reader_init(struct dq_reader *r, FILE *fp, const char *name)
{
	memset(r, 0, sizeof *r);
	r->fp = fp;
	r->name = name;
}

void
dq_reader_free(struct dq_reader *r)
{
	free(r->buf);
	r->buf = NULL;
}

static void
malformed(struct dq_reader *r, const char *why)
{
	json_t *ctx = json_pack("{s:s,s:I}", "input", r->name, "line", (json_int_t)r->line);

	dq_log(DQ_ERROR, "malformed", ctx, "%s:%lu: malformed record: %s",
	    r->name, r->line, why);
}

/*
 * One line into r->buf, at most DQ_MAX_LINE bytes kept: a longer line is
 * read through to its end and reported, never held whole in memory.
 * Returns the length (0 at end of input), -1 on a read error; *toolong
 * and *newline say how the line ended.
 */
static ssize_t
read_line(struct dq_reader *r, int *toolong, int *newline)
{
	size_t n = 0;
	int c;

	*toolong = *newline = 0;
	if (!r->buf)
		r->buf = dq_xmalloc(r->cap = 4096);
	while ((c = getc(r->fp)) != EOF) {
		if (c == '\n') {
			*newline = 1;
			break;
		}
		if (n >= (size_t)DQ_MAX_LINE) {
			*toolong = 1;
			continue;
		}
		if (n + 2 > r->cap)
			r->buf = dq_xrealloc(r->buf, r->cap *= 2);
		r->buf[n++] = (char)c;
	}
	if (c == EOF && ferror(r->fp))
		return -1;
	r->buf[n] = '\0';
	return (ssize_t)n + *newline + *toolong;
}

int
dq_read_record(struct dq_reader *r, json_t **rec)
{
	ssize_t n;
	int toolong, newline;
	json_t *j;
	json_error_t je;

	*rec = NULL;
	for (;;) {
		n = read_line(r, &toolong, &newline);
		if (n < 0)
			return -2;
		if (n == 0)
			return 0;
		r->line++;
		if (n == 1 && newline)
			continue;	/* blank lines separate nothing */
		break;
	}
	if (toolong) {
		malformed(r, "line longer than 16 MiB");
		return -1;
	}
	if (!newline) {
		malformed(r, "line not terminated (writer interrupted?)");
		return -1;
	}
	j = json_loadb(r->buf, (size_t)n - 1, JSON_REJECT_DUPLICATES, &je);
	if (!j) {
		char why[256];

		snprintf(why, sizeof why, "column %d: %s", je.column, je.text);
		malformed(r, why);
		return -1;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		malformed(r, "not a JSON object");
		return -1;
	}
	*rec = j;
	return 1;
}

char *
dq_json_dumps(json_t *j)
{
	char *s = json_dumps(j, DUMP_FLAGS);

	if (!s)
		dq_die(DQ_EX_TEMPFAIL, "out of memory");
	return s;
}

int
dq_write_record(FILE *fp, json_t *rec)
{
	if (json_dumpf(rec, fp, DUMP_FLAGS) < 0 || fputc('\n', fp) == EOF ||
	    fflush(fp) == EOF)
		return -1;
	return 0;
}

void
dq_record_set_error(json_t *rec, const char *stage, const struct dq_err *e)
{
	json_t *o = json_object();

	json_object_set_new(o, "stage", json_string(stage));
	json_object_set_new(o, "code", json_string(e->code));
	json_object_set_new(o, "message", json_string(e->msg));
	json_object_set_new(o, "retryable", json_boolean(e->retryable));
	json_object_set_new(o, "scope", json_string(e->scope == DQ_SCOPE_SYSTEM ? "system" : "record"));
	if (e->http_status)
		json_object_set_new(o, "http_status", json_integer(e->http_status));
	json_object_set_new(rec, "error", o);
}

int
dq_record_has_error(json_t *rec, int *retryable)
{
	json_t *e = json_object_get(rec, "error");

	if (!e || json_is_null(e))
		return 0;
	if (retryable)
		*retryable = json_is_true(json_object_get(e, "retryable"));
	return 1;
}

double
dq_round(double v, int places)
{
	double m = pow(10, places);

	return round(v * m) / m;
}

int64_t
dq_receipt_locked_until_ms(json_t *receipt)
{
	int64_t ms;

	if (dq_parse_rfc3339_ms(json_string_value(json_object_get(receipt, "locked_until")), &ms) < 0)
		return 0;
	return ms;
}

json_t *
dq_record_log_ctx(json_t *rec)
{
	json_t *receipt = json_object_get(rec, "receipt");

	return json_pack("{s:s?,s:s?,s:I}",
	    "image_id", json_string_value(json_object_get(json_object_get(rec, "message"), "image_id")),
	    "message_id", json_string_value(json_object_get(receipt, "message_id")),
	    "delivery_count", json_integer_value(json_object_get(receipt, "delivery_count")));
}
