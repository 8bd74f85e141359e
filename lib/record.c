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

int
dq_read_record(struct dq_reader *r, json_t **rec)
{
	ssize_t n;
	json_t *j;
	json_error_t je;

	*rec = NULL;
	for (;;) {
		errno = 0;
		n = getline(&r->buf, &r->cap, r->fp);
		if (n < 0)
			return ferror(r->fp) ? -2 : 0;
		r->line++;
		if (n == 1 && r->buf[0] == '\n')
			continue;	/* blank lines separate nothing */
		break;
	}
	if (r->buf[n - 1] != '\n') {
		malformed(r, "line not terminated (writer interrupted?)");
		return -1;
	}
	if (n > DQ_MAX_LINE) {
		malformed(r, "line too long");
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
