/*
 * loop.c - the record loops: one record at a time, or N at once.
 *
 * dq_each_record reads stdin and calls a function per record; the
 * programs whose work on a record is quick use it.  A stage whose work
 * takes long (an analysis, a model call) uses the parallel form, which
 * owns everything that makes that safe:
 *
 * - A pool of threads, fed through a queue of jobs by the reading
 *   thread, which reads on only when a thread is free: at most 2N
 *   records are in hand, and a record read from a pipe is not left
 *   waiting while its lock runs out.
 * - The lease keeper (lease.c) holds every record from the moment it is
 *   read until it is written out, renewing its lock.  A job's thread
 *   works on a copy of the record, so the keeper and the work never share
 *   a Jansson object; the record written out is that copy with the
 *   receipt as last renewed.
 * - Input that ends on a signal: SIGTERM and SIGINT (those not ignored
 *   from the start) are blocked in every thread and taken by one, which sets the shutdown flag and wakes the
 *   reader through a pipe (stdin is read through a cookie that polls
 *   both).  From then on no job starts: what is in hand, and what stdin
 *   holds without waiting, is passed on with the retryable record error
 *   "shutdown", and the jobs in flight finish.
 * - One writer at a time on stdout, whole lines, in the order records are
 *   done.  A system error (dq_stop) takes the output lock for good before
 *   it exits, so no line is cut and none is added after it.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dq.h"

struct dq_job {
	struct dq_lease *lease;
	struct dq_job *next;
};

/* stdout and the status: taken by dq_emit and dq_stop, also outside a loop */
static pthread_mutex_t output_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t status_lock = PTHREAD_MUTEX_INITIALIZER;

/* The one parallel loop of the process. */
static struct {
	const struct dq_parallel *par;
	int running;			/* threads other than the caller's exist */
	int status;			/* under status_lock */
	struct dq_keeper *keeper;
	pthread_mutex_t queue_lock;	/* the jobs waiting, the flags */
	pthread_cond_t work_cv;		/* a job waits, or the input ended */
	pthread_cond_t room_cv;		/* a thread took a job, or shutdown */
	struct dq_job *pending, **pending_tail;
	int npending, input_done, stopping;
	int wake_pipe[2];
	sigset_t signals;
} loop = {
	.queue_lock = PTHREAD_MUTEX_INITIALIZER,
	.work_cv = PTHREAD_COND_INITIALIZER,
	.room_cv = PTHREAD_COND_INITIALIZER,
	.pending_tail = &loop.pending,
	.wake_pipe = { -1, -1 },
};

int
dq_each_record(void (*fn)(json_t *, void *), void *arg)
{
	int status = 0;
	struct dq_reader rd;
	json_t *rec;
	int r;

	dq_reader_init(&rd, stdin, "<stdin>");
	while ((r = dq_read_record(&rd, &rec)) != 0) {
		if (r == -2) {
			dq_log(DQ_ERROR, "io_error", NULL, "<stdin>: %s", strerror(errno));
			status = dq_status_merge(status, DQ_EX_IOERR);
			break;
		}
		if (r < 0) {
			status = dq_status_merge(status, DQ_EX_DATAERR);
			continue;
		}
		fn(rec, arg);
		json_decref(rec);
	}
	dq_reader_free(&rd);
	return status;
}

int
dq_emit_try(json_t *rec)
{
	char *line = dq_json_dumps(rec);
	int r = 0, e;

	pthread_mutex_lock(&output_lock);
	if (fputs(line, stdout) == EOF || fputc('\n', stdout) == EOF || fflush(stdout) == EOF)
		r = -1;
	e = errno;
	pthread_mutex_unlock(&output_lock);
	free(line);
	errno = e;
	return r;
}

void
dq_emit(json_t *rec)
{
	if (dq_emit_try(rec) == 0)
		return;
	pthread_mutex_lock(&output_lock);	/* for good: no line after this */
	dq_log(DQ_ERROR, "io_error", NULL, "stdout: %s", strerror(errno));
	if (loop.running)
		_exit(DQ_EX_IOERR);	/* the other threads hold records: no clean-up */
	exit(DQ_EX_IOERR);
}

void
dq_stop(int status, const struct dq_err *err, json_t *ctx)
{
	pthread_mutex_lock(&output_lock);	/* for good: no record after this */
	dq_log_err(DQ_ERROR, "system_error", ctx, err);
	pthread_mutex_lock(&status_lock);
	status = dq_status_merge(dq_status_merge(status, loop.status), err->status);
	if (loop.running)
		_exit(dq_finish_stdout(status));
	exit(dq_finish_stdout(status));
}

void
dq_threads_started(void)
{
	loop.running = 1;
}

static void
keeper_fatal(const struct dq_err *err, json_t *ctx)
{
	dq_stop(0, err, ctx);
}

static void
merge_status(int status)
{
	pthread_mutex_lock(&status_lock);
	loop.status = dq_status_merge(loop.status, status);
	pthread_mutex_unlock(&status_lock);
}

int
dq_job_keep(struct dq_job *job)
{
	return dq_lease_keep(loop.keeper, job->lease);
}

/* A record not started: the stage's record error "shutdown"; its status. */
static int
refuse(json_t *rec)
{
	struct dq_err err;

	dq_err_set(&err, DQ_SCOPE_RECORD, DQ_EX_TEMPFAIL, 1, "shutdown",
	    "not started: %s is shutting down", dq_prog);
	return loop.par->fail(rec, &err, loop.par->arg);
}

/* One job on its thread: the work on a copy, then the copy passed on. */
static void
run(struct dq_job *job, int stopping)
{
	json_t *rec, *copy, *receipt;

	rec = dq_lease_lock(job->lease);
	copy = json_deep_copy(rec);
	dq_lease_unlock(job->lease);
	merge_status(stopping ? refuse(copy) : loop.par->work(copy, job, loop.par->arg));
	/* no renewal after this: the record is passed on with its last receipt */
	rec = dq_lease_lock(job->lease);
	dq_lease_end(job->lease);
	if ((receipt = json_object_get(rec, "receipt")))
		json_object_set_new(copy, "receipt", json_deep_copy(receipt));
	dq_emit(copy);
	dq_lease_unlock(job->lease);
	json_decref(copy);
}

static void *
worker(void *arg)
{
	struct dq_job *job;
	int stopping;

	for (;;) {
		pthread_mutex_lock(&loop.queue_lock);
		while (!loop.pending && !loop.input_done)
			pthread_cond_wait(&loop.work_cv, &loop.queue_lock);
		if (!(job = loop.pending)) {
			pthread_mutex_unlock(&loop.queue_lock);
			return arg;
		}
		if (!(loop.pending = job->next))
			loop.pending_tail = &loop.pending;
		loop.npending--;
		stopping = loop.stopping;
		pthread_cond_signal(&loop.room_cv);
		pthread_mutex_unlock(&loop.queue_lock);

		run(job, stopping);
		dq_keeper_release(loop.keeper, job->lease);
		free(job);
	}
}

/*
 * stdin through a cookie: a read waits for input or for the wake pipe.
 * Once shutting down, what is already there is still read (its records
 * are passed on, not started), then it is the end of input.
 */
static ssize_t
wake_read(void *cookie, char *buf, size_t n)
{
	struct pollfd fds[2] = { { 0, POLLIN, 0 }, { loop.wake_pipe[0], POLLIN, 0 } };
	int stopping;

	for (;;) {
		pthread_mutex_lock(&loop.queue_lock);
		stopping = loop.stopping;
		pthread_mutex_unlock(&loop.queue_lock);
		if (poll(fds, 2, stopping ? 0 : -1) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (fds[0].revents)
			return read(0, buf, n);
		if (stopping)
			return 0;
	}
	(void)cookie;
}

static void *
signal_taker(void *arg)
{
	int sig;

	while (sigwait(&loop.signals, &sig) == 0) {
		pthread_mutex_lock(&loop.queue_lock);
		if (!loop.stopping)
			dq_log(DQ_INFO, "shutdown", json_pack("{s:i}", "signal", sig),
			    "signal %d: starting no new work, finishing what is in flight", sig);
		loop.stopping = 1;
		pthread_cond_broadcast(&loop.room_cv);
		pthread_mutex_unlock(&loop.queue_lock);
		if (write(loop.wake_pipe[1], "x", 1) < 0)
			continue;	/* the pipe is full: the reader is awake already */
	}
	return arg;
}

/* The reader's part of one record: passed on, refused, or queued as a job. */
static void
take(json_t *rec)
{
	const struct dq_parallel *par = loop.par;
	struct dq_job *job;

	if (par->wants && !par->wants(rec, par->arg)) {
		dq_emit(rec);	/* not ours: passed on untouched */
		json_decref(rec);
		return;
	}
	pthread_mutex_lock(&loop.queue_lock);
	if (loop.stopping) {
		pthread_mutex_unlock(&loop.queue_lock);
		merge_status(refuse(rec));
		dq_emit(rec);
		json_decref(rec);
		return;
	}
	job = dq_xcalloc(1, sizeof *job);
	job->lease = dq_keeper_hold(loop.keeper, rec);	/* its lock kept from now on */
	*loop.pending_tail = job;
	loop.pending_tail = &job->next;
	loop.npending++;
	pthread_cond_signal(&loop.work_cv);
	/* Read on only when a thread is free: records in hand stay few. */
	while (loop.npending >= par->jobs && !loop.stopping)
		pthread_cond_wait(&loop.room_cv, &loop.queue_lock);
	pthread_mutex_unlock(&loop.queue_lock);
}

static const int stop_signals[] = { SIGTERM, SIGINT };

int
dq_each_record_parallel(const struct dq_parallel *par)
{
	cookie_io_functions_t io = { .read = wake_read };
	pthread_t *threads = dq_xcalloc((size_t)par->jobs, sizeof *threads), signal_thread;
	struct dq_reader rd;
	FILE *in;
	json_t *rec;
	int r, status;

	loop.par = par;
	/* A signal ignored from the start (a shell's trap '' TERM) stays
	 * ignored: the one who started us decides who stops. */
	sigemptyset(&loop.signals);
	for (size_t i = 0; i < sizeof stop_signals / sizeof stop_signals[0]; i++) {
		struct sigaction sa;

		if (sigaction(stop_signals[i], NULL, &sa) == 0 && sa.sa_handler != SIG_IGN)
			sigaddset(&loop.signals, stop_signals[i]);
	}
	pthread_sigmask(SIG_BLOCK, &loop.signals, NULL);
	if (pipe(loop.wake_pipe) < 0 || !(in = fopencookie(NULL, "r", io)))
		dq_die(DQ_EX_IOERR, "pipe: %s", strerror(errno));
	loop.running = 1;
	if (pthread_create(&signal_thread, NULL, signal_taker, NULL) != 0)
		dq_die(DQ_EX_TEMPFAIL, "cannot start a thread");
	loop.keeper = dq_keeper_start(keeper_fatal);
	for (int i = 0; i < par->jobs; i++)
		if (pthread_create(&threads[i], NULL, worker, NULL) != 0)
			dq_die(DQ_EX_TEMPFAIL, "cannot start a thread");

	dq_reader_init(&rd, in, "<stdin>");
	while ((r = dq_read_record(&rd, &rec)) != 0) {
		if (r == -2) {
			dq_log(DQ_ERROR, "io_error", NULL, "<stdin>: %s", strerror(errno));
			merge_status(DQ_EX_IOERR);
			break;
		}
		if (r < 0)
			merge_status(DQ_EX_DATAERR);
		else
			take(rec);
	}
	dq_reader_free(&rd);
	fclose(in);

	pthread_mutex_lock(&loop.queue_lock);
	loop.input_done = 1;
	pthread_cond_broadcast(&loop.work_cv);
	pthread_mutex_unlock(&loop.queue_lock);
	for (int i = 0; i < par->jobs; i++)
		pthread_join(threads[i], NULL);
	dq_keeper_stop(loop.keeper);
	loop.keeper = NULL;
	free(threads);
	pthread_mutex_lock(&status_lock);
	status = loop.status;
	pthread_mutex_unlock(&status_lock);
	return status;
}
