/* queue.c - choosing the queue backend, and the queues receipts name. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "dq.h"

/* DESIGN §1's choice: "servicebus" or "local" and the credential, or NULL (78). */
const char *
dq_queue_choice(const char **cred, struct dq_err *err)
{
	if (dq_cfg.servicebus_connection_string) {
		*cred = "connection string (AZURE_SERVICEBUS_CONNECTION_STRING)";
		return "servicebus";
	}
	if (dq_cfg.servicebus_namespace) {
		*cred = "managed identity";
		return "servicebus";
	}
	if (dq_cfg.local_dir) {
		*cred = "none (local)";
		return "local";
	}
	dq_err_system(err, DQ_EX_CONFIG, "no_queue",
	    "no queue configured: set AZURE_SERVICEBUS_CONNECTION_STRING, "
	    "AZURE_SERVICEBUS_NAMESPACE or DQ_LOCAL_DIR");
	return NULL;
}

static struct dq_queue *
queue_open(const char *name, int create, struct dq_err *err)
{
	struct dq_queue *q;
	const char *cred, *b;

	if (!name)
		name = dq_cfg.queue;
	if (!dq_safe_token(name)) {
		dq_err_system(err, DQ_EX_USAGE, "bad_queue", "invalid queue name '%s'", name);
		return NULL;
	}
	if (!(b = dq_queue_choice(&cred, err)))
		return NULL;
	if (strcmp(b, "servicebus") == 0) {
		/* Never fall back to the local spool when Azure is asked for. */
		dq_err_system(err, DQ_EX_CONFIG, "backend_unavailable",
		    "the servicebus queue backend (%s) is not built into this version; "
		    "unset it and set DQ_LOCAL_DIR for the local spool",
		    dq_cfg.servicebus_connection_string ? "AZURE_SERVICEBUS_CONNECTION_STRING" :
		    "AZURE_SERVICEBUS_NAMESPACE");
		return NULL;
	}
	if (!(q = (create ? dq_queue_local_open : dq_queue_local_attach)(dq_cfg.local_dir, name, err)))
		return NULL;
	dq_log(DQ_INFO, "backend", json_pack("{s:s,s:s,s:s}", "queue", "local",
	    "queue_name", name, "dir", dq_cfg.local_dir),
	    "queue: local %s (%s)", name, dq_cfg.local_dir);
	return q;
}

struct dq_queue *
dq_queue_open(const char *name, struct dq_err *err)
{
	return queue_open(name, 1, err);
}

struct dq_queue *
dq_queue_open_check(const char *name, struct dq_err *err)
{
	return queue_open(name, 0, err);
}

/*
 * The queues records name: a receipt settles or renews only through the
 * queue it came from, on the backend it came from.  Few queues ever
 * appear in one stream, so a short array; the mutex makes a lookup safe
 * from the lease keeper's thread while a stage's threads look up too.
 */
#define QUEUES_MAX 8

struct dq_queues {
	pthread_mutex_t lock;
	struct dq_queue *open[QUEUES_MAX];
};

struct dq_queues *
dq_queues_new(void)
{
	struct dq_queues *qs = dq_xcalloc(1, sizeof *qs);

	pthread_mutex_init(&qs->lock, NULL);
	return qs;
}

struct dq_queue *
dq_queues_for(struct dq_queues *qs, json_t *receipt, struct dq_err *err)
{
	const char *name = json_string_value(json_object_get(receipt, "queue"));
	const char *backend = json_string_value(json_object_get(receipt, "backend"));
	struct dq_queue *q = NULL;
	size_t i;

	if (!name)
		name = dq_cfg.queue;
	pthread_mutex_lock(&qs->lock);
	for (i = 0; i < QUEUES_MAX && qs->open[i]; i++)
		if (strcmp(qs->open[i]->name, name) == 0)
			break;
	if (i == QUEUES_MAX) {
		dq_err_system(err, DQ_EX_USAGE, "too_many_queues",
		    "records name more than %d queues", QUEUES_MAX);
		goto out;
	}
	if (!qs->open[i] && !(qs->open[i] = dq_queue_open(name, err)))
		goto out;
	if (!backend || strcmp(backend, dq_queue_backend(qs->open[i])) != 0) {
		dq_err_system(err, DQ_EX_CONFIG, "backend_mismatch",
		    "record was received from backend %s, configured is %s",
		    backend ? backend : "(none)", dq_queue_backend(qs->open[i]));
		goto out;
	}
	q = qs->open[i];
out:
	pthread_mutex_unlock(&qs->lock);
	return q;
}

void
dq_queues_free(struct dq_queues *qs)
{
	if (!qs)
		return;
	for (size_t i = 0; i < QUEUES_MAX && qs->open[i]; i++)
		dq_queue_close(qs->open[i]);
	pthread_mutex_destroy(&qs->lock);
	free(qs);
}

void
dq_queue_close(struct dq_queue *q)
{
	if (q)
		q->ops->close(q);
}

const char *
dq_queue_backend(const struct dq_queue *q)
{
	return q->ops->name;
}

int
dq_queue_send(struct dq_queue *q, json_t *body, const char *message_id, struct dq_err *err)
{
	return q->ops->send(q, body, message_id, err);
}

int
dq_queue_receive(struct dq_queue *q, int max, int64_t wait_ms, int flags, json_t *out,
    struct dq_err *err)
{
	return q->ops->receive(q, max, wait_ms, flags, out, err);
}

int
dq_queue_complete(struct dq_queue *q, json_t *receipt, struct dq_err *err)
{
	return q->ops->complete(q, receipt, err);
}

int
dq_queue_abandon(struct dq_queue *q, json_t *receipt, struct dq_err *err)
{
	return q->ops->abandon(q, receipt, err);
}

int
dq_queue_can_dead_letter(const struct dq_queue *q)
{
	return q->ops->dead_letter != NULL;
}

int
dq_queue_dead_letter(struct dq_queue *q, json_t *receipt, const char *reason,
    const char *description, struct dq_err *err)
{
	if (!q->ops->dead_letter) {
		dq_err_system(err, DQ_EX_CONFIG, "no_dead_letter",
		    "the %s queue backend cannot dead-letter a message itself", q->ops->name);
		return -1;
	}
	return q->ops->dead_letter(q, receipt, reason, description, err);
}

int
dq_queue_renew(struct dq_queue *q, json_t *receipt, struct dq_err *err)
{
	return q->ops->renew(q, receipt, err);
}

int
dq_queue_check(struct dq_queue *q, struct dq_err *err)
{
	return q->ops->check(q, err);
}
