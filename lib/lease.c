/*
 * lease.c - keeping alive the locks of the records a stage holds.
 *
 * A record received under peek-lock carries a receipt whose lock runs out
 * at locked_until.  While a stage works on it (dq-analyze), the lock must
 * be renewed through the queue the receipt names before it runs out, or
 * the message is delivered again to someone else.
 *
 * The keeper is one thread.  It renews each held lock once half of its
 * lease is gone, and sleeps until the next one is due.  The lease's
 * length is not in the receipt (Service Bus sets it per queue), so it is
 * measured: locked_until minus the time the record was taken in, then
 * minus the time of each renewal.
 *
 * A record is touched by two threads, the keeper (the receipt) and the
 * stage (everything else), and Jansson objects are not thread-safe: each
 * lease has a mutex, and a stage reads or changes its record only between
 * dq_lease_lock() and dq_lease_unlock().  Lock order: the keeper's held_lock,
 * then a lease's lock; the queues (dq_queues_for, the renewal) lock
 * for themselves.
 */
#include <pthread.h>
#include <stdlib.h>

#include "dq.h"

#define BATCH 64		/* renewals taken per pass */

struct dq_lease {
	json_t *rec;
	pthread_mutex_t lock;		/* the record: the stage and the keeper */
	int64_t span_ms;
	int lost, ended, refs;	/* refs: under the keeper's held_lock */
	struct dq_lease *next, *prev;
};

struct dq_keeper {
	pthread_t thread;
	pthread_mutex_t held_lock;	/* held, refs, finished */
	pthread_cond_t cv;
	struct dq_queues *queues;	/* those the receipts name */
	struct dq_lease *held;
	int finished;
	void (*fatal)(const struct dq_err *, json_t *ctx);
};

static int
has_lock(json_t *rec)
{
	json_t *r = json_object_get(rec, "receipt");

	return json_string_value(json_object_get(r, "lock_token")) &&
	    dq_receipt_locked_until_ms(r) > 0;
}

/* When l must be renewed; INT64_MAX for never.  Under l->lock. */
static int64_t
due_ms(struct dq_lease *l)
{
	if (l->lost || l->ended || !has_lock(l->rec))
		return INT64_MAX;
	return dq_receipt_locked_until_ms(json_object_get(l->rec, "receipt")) - l->span_ms / 2;
}

int
dq_lease_keep(struct dq_keeper *k, struct dq_lease *l)
{
	json_t *receipt;
	struct dq_queue *q;
	struct dq_err err;
	int64_t now = dq_now_ms();
	int r = 0;

	pthread_mutex_lock(&l->lock);
	if (l->lost || due_ms(l) > now)
		goto out;
	receipt = json_object_get(l->rec, "receipt");
	if (!(q = dq_queues_for(k->queues, receipt, &err)))
		k->fatal(&err, NULL);
	if ((r = dq_queue_renew(q, receipt, &err)) < 0) {
		if (err.scope == DQ_SCOPE_SYSTEM)
			k->fatal(&err, dq_record_log_ctx(l->rec));
		dq_log_err(DQ_WARNING, "lock_lost", dq_record_log_ctx(l->rec), &err);
		l->lost = 1;
		goto out;
	}
	l->span_ms = dq_receipt_locked_until_ms(receipt) - now;
	dq_log(DQ_DEBUG, "renewed", dq_record_log_ctx(l->rec), "lock renewed until %s",
	    json_string_value(json_object_get(receipt, "locked_until")));
out:
	/* ours only while it has not run out */
	if (!l->lost && has_lock(l->rec) &&
	    dq_receipt_locked_until_ms(json_object_get(l->rec, "receipt")) <= dq_now_ms())
		l->lost = 1;
	r = l->lost ? -1 : 0;
	pthread_mutex_unlock(&l->lock);
	return r;
}

static void
unref(struct dq_keeper *k, struct dq_lease *l)
{
	int last;

	pthread_mutex_lock(&k->held_lock);
	last = --l->refs == 0;
	pthread_mutex_unlock(&k->held_lock);
	if (last) {
		json_decref(l->rec);
		pthread_mutex_destroy(&l->lock);
		free(l);
	}
}

static void *
keeper(void *arg)
{
	struct dq_keeper *k = arg;
	struct dq_lease *due[BATCH], *l;
	int n;

	pthread_mutex_lock(&k->held_lock);
	while (!k->finished) {
		int64_t now = dq_now_ms(), next = now + 1000, d;

		n = 0;
		for (l = k->held; l; l = l->next) {
			/* a record being written out may block on a slow reader: look again soon */
			if (pthread_mutex_trylock(&l->lock) != 0) {
				next = next < now + 20 ? next : now + 20;
				continue;
			}
			d = due_ms(l);
			pthread_mutex_unlock(&l->lock);
			if (d <= now && n < BATCH) {
				l->refs++;
				due[n++] = l;
			} else if (d < next)
				next = d;
		}
		if (n > 0) {
			pthread_mutex_unlock(&k->held_lock);
			for (int i = 0; i < n; i++) {
				dq_lease_keep(k, due[i]);
				unref(k, due[i]);
			}
			pthread_mutex_lock(&k->held_lock);
			continue;
		}
		struct timespec ts = { next / 1000, next % 1000 * 1000000 };

		pthread_cond_timedwait(&k->cv, &k->held_lock, &ts);
	}
	pthread_mutex_unlock(&k->held_lock);
	return NULL;
}

struct dq_keeper *
dq_keeper_start(void (*fatal)(const struct dq_err *, json_t *ctx))
{
	struct dq_keeper *k = dq_xcalloc(1, sizeof *k);

	k->fatal = fatal;
	pthread_mutex_init(&k->held_lock, NULL);
	k->queues = dq_queues_new();
	pthread_cond_init(&k->cv, NULL);	/* CLOCK_REALTIME, as dq_now_ms() */
	if (pthread_create(&k->thread, NULL, keeper, k) != 0)
		dq_die(DQ_EX_TEMPFAIL, "cannot start the lock keeper");
	return k;
}

struct dq_lease *
dq_keeper_hold(struct dq_keeper *k, json_t *rec)
{
	struct dq_lease *l = dq_xcalloc(1, sizeof *l);

	l->rec = rec;
	pthread_mutex_init(&l->lock, NULL);
	l->refs = 1;
	if (has_lock(rec))
		l->span_ms = dq_receipt_locked_until_ms(json_object_get(rec, "receipt")) - dq_now_ms();
	pthread_mutex_lock(&k->held_lock);
	if ((l->next = k->held))
		k->held->prev = l;
	k->held = l;
	pthread_cond_signal(&k->cv);
	pthread_mutex_unlock(&k->held_lock);
	return l;
}

json_t *
dq_lease_lock(struct dq_lease *l)
{
	pthread_mutex_lock(&l->lock);
	return l->rec;
}

void
dq_lease_unlock(struct dq_lease *l)
{
	pthread_mutex_unlock(&l->lock);
}

void
dq_lease_end(struct dq_lease *l)
{
	l->ended = 1;
}

void
dq_keeper_release(struct dq_keeper *k, struct dq_lease *l)
{
	pthread_mutex_lock(&l->lock);
	l->ended = 1;
	pthread_mutex_unlock(&l->lock);
	pthread_mutex_lock(&k->held_lock);
	if (l->prev)
		l->prev->next = l->next;
	else
		k->held = l->next;
	if (l->next)
		l->next->prev = l->prev;
	pthread_mutex_unlock(&k->held_lock);
	unref(k, l);
}

void
dq_keeper_stop(struct dq_keeper *k)
{
	if (!k)
		return;
	pthread_mutex_lock(&k->held_lock);
	k->finished = 1;
	pthread_cond_signal(&k->cv);
	pthread_mutex_unlock(&k->held_lock);
	pthread_join(k->thread, NULL);
	dq_queues_free(k->queues);
	pthread_cond_destroy(&k->cv);
	pthread_mutex_destroy(&k->held_lock);
	free(k);
}
