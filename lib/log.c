/*
 * log.c - the one log emitter.
 *
 * JSON lines on stderr ({"ts","level","prog","event","msg",...context})
 * when stderr is not a terminal or DQ_LOG_FORMAT=json, so Log Analytics
 * can query them; "prog: object: message" lines on a terminal.  The level
 * and format are read from the environment on first use, so a program
 * can log before its configuration is validated.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <pthread.h>

#include "dq.h"

static int log_ready, log_json, log_min = DQ_INFO;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static void (*log_sink)(const char *line);
static const char *level_names[] = { "DEBUG", "INFO", "WARNING", "ERROR" };

static void
log_setup(void)
{
	const char *lv = getenv("LOG_LEVEL"), *fmt = getenv("DQ_LOG_FORMAT");

	if (lv) {
		for (int i = 0; i < 4; i++)
			if (strcasecmp(lv, level_names[i]) == 0)
				log_min = i;
		if (strcasecmp(lv, "WARN") == 0)
			log_min = DQ_WARNING;
	}
	if (fmt && strcmp(fmt, "json") == 0)
		log_json = 1;
	else if (fmt && strcmp(fmt, "text") == 0)
		log_json = 0;
	else
		log_json = !isatty(STDERR_FILENO);
	log_ready = 1;
}

int
dq_log_enabled(enum dq_level lv)
{
	if (!log_ready)
		log_setup();
	return (int)lv >= log_min;
}

void
dq_log(enum dq_level lv, const char *event, json_t *ctx, const char *fmt, ...)
{
	char msg[2048], ts[25];
	va_list ap;
	char *line = NULL;

	if (!dq_log_enabled(lv)) {
		json_decref(ctx);
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (log_json) {
		json_t *o = json_object();

		dq_rfc3339_ms(dq_now_ms(), ts);
		json_object_set_new(o, "ts", json_string(ts));
		json_object_set_new(o, "level", json_string(level_names[lv]));
		json_object_set_new(o, "prog", json_string(dq_prog));
		json_object_set_new(o, "event", json_string(event));
		json_object_set_new(o, "msg", json_string(msg));
		if (ctx)
			json_object_update_missing(o, ctx);
		line = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15) | JSON_ENSURE_ASCII);
		json_decref(o);
	} else {
		const char *obj = NULL;
		static const char *keys[] = { "image_id", "file", "message_id", "input" };

		for (size_t i = 0; ctx && !obj && i < sizeof keys / sizeof keys[0]; i++)
			obj = json_string_value(json_object_get(ctx, keys[i]));
		if (obj)
			line = dq_xasprintf("%s: %s: %s", dq_prog, obj, msg);
		else
			line = dq_xasprintf("%s: %s", dq_prog, msg);
	}
	json_decref(ctx);
	if (!line)
		return;
	pthread_mutex_lock(&log_mu);
	if (log_sink)
		log_sink(line);
	else {
		fprintf(stderr, "%s\n", line);
		fflush(stderr);
	}
	pthread_mutex_unlock(&log_mu);
	free(line);
}

void
dq_log_sink(void (*fn)(const char *line))
{
	pthread_mutex_lock(&log_mu);
	log_sink = fn;
	pthread_mutex_unlock(&log_mu);
}

void
dq_log_err(enum dq_level lv, const char *event, json_t *ctx, const struct dq_err *e)
{
	if (!ctx)
		ctx = json_object();
	json_object_set_new(ctx, "code", json_string(e->code));
	json_object_set_new(ctx, "retryable", json_boolean(e->retryable));
	json_object_set_new(ctx, "scope", json_string(e->scope == DQ_SCOPE_SYSTEM ? "system" : "record"));
	if (e->http_status)
		json_object_set_new(ctx, "http_status", json_integer(e->http_status));
	if (e->request_id[0])
		json_object_set_new(ctx, "request_id", json_string(e->request_id));
	dq_log(lv, event, ctx, "%s", e->msg);
}
