/* dq-dequeue - receive messages under lock, or settle and renew them. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dq.h"

static const char synopsis[] =
    "usage: dq-dequeue [-q QUEUE] [-n MAX] [-w SECONDS] [--dead-letter] [--peek]\n"
    "       dq-dequeue --tokens FD [--drain | --once] [--max-runtime SECONDS] [--summary FILE]\n"
    "                  [-q QUEUE] [-n MAX] [-w SECONDS] [--dead-letter]\n"
    "       dq-dequeue --settle [--tokens FD] [--require KEY] [--max-attempts N] < records\n"
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

/*
 * ---- the stream: at most MAX messages in flight, a slot back per token ----
 *
 * dq-dequeue --tokens FD receives, prints and keeps the lock of each
 * message until the settle stage at the end of the pipeline writes its
 * lock token back on FD (a pipe, as make's jobserver passes its tokens);
 * it receives again as soon as a slot is free.  It ends when the mode says
 * so (a drained queue, one window, the runtime, a signal), then closes its
 * output and goes on renewing until every token is back, or until FD ends
 * (the settle stage is gone: what is still out is left to its locks).
 */
enum { LOOP, DRAIN, ONCE };

#define SLICE_MS 1000	/* a receive waits at most this long between looks at FD and the signals */

struct held {
	char *token;
	struct dq_lease *lease;
	int64_t since;
};

static struct {
	int fd, sigfd, eof, stopping, out_broken, out_closed;
	struct dq_keeper *keeper;
	struct held *held;
	int nheld;
	long received, returned, abandoned, completed, dead, failed;
	int64_t longest_ms;
	char buf[4096];
	size_t len;
} sm = { .fd = -1, .sigfd = -1 };

static void
keeper_fatal(const struct dq_err *err, json_t *ctx)
{
	dq_stop(status, err, ctx);
}

/* A token came back, "LOCK_TOKEN SETTLED FAILED": its message is settled and its slot free. */
static void
token_back(char *tok)
{
	char *settled = strchr(tok, ' '), *failed = NULL;

	if (settled) {
		*settled++ = '\0';
		if ((failed = strchr(settled, ' ')))
			*failed++ = '\0';
	}
	sm.completed += settled && strcmp(settled, "completed") == 0;
	sm.dead += settled && strcmp(settled, "dead-lettered") == 0;
	sm.failed += failed && strcmp(failed, "1") == 0;
	for (int i = 0; i < sm.nheld; i++) {
		if (strcmp(sm.held[i].token, tok) != 0)
			continue;
		int64_t took = dq_now_ms() - sm.held[i].since;

		if (took > sm.longest_ms)
			sm.longest_ms = took;
		dq_keeper_release(sm.keeper, sm.held[i].lease);
		free(sm.held[i].token);
		sm.held[i] = sm.held[--sm.nheld];
		sm.returned++;
		return;
	}
	dq_log(DQ_DEBUG, "token_unknown", json_pack("{s:s}", "lock_token", tok),
	    "a token of no message in flight: ignored");
}

/* Wait up to ms (-1: no limit) for tokens or a signal, and take what came. */
static void
await(int ms)
{
	/* stdout with no events: POLLERR once the next stage has closed the pipe */
	struct pollfd fds[3] = { { sm.sigfd, POLLIN, 0 }, { sm.fd, POLLIN, 0 }, { STDOUT_FILENO, 0, 0 } };
	struct signalfd_siginfo si;
	char *nl, *line;
	ssize_t r;

	if (sm.out_broken || sm.out_closed)
		fds[2].fd = -1;
	if (sm.eof)
		fds[1].fd = -1;
	if (poll(fds, 3, ms) < 0) {
		if (errno == EINTR)
			return;
		dq_die(DQ_EX_IOERR, "poll: %s", strerror(errno));
	}
	if ((fds[0].revents & POLLIN) && read(sm.sigfd, &si, sizeof si) == sizeof si && !sm.stopping) {
		sm.stopping = (int)si.ssi_signo;
		dq_log(DQ_INFO, "shutdown", json_pack("{s:i}", "signal", sm.stopping),
		    "signal %d: receiving no more, keeping the locks of the %d in flight", sm.stopping, sm.nheld);
	}
	if (fds[2].revents & (POLLERR | POLLHUP)) {
		dq_log(DQ_WARNING, "downstream_gone", NULL, "stdout: the next stage is gone: receiving no more");
		sm.out_broken = 1;
	}
	if (sm.eof || !fds[1].revents)
		return;
	if ((r = read(sm.fd, sm.buf + sm.len, sizeof sm.buf - sm.len)) <= 0) {
		if (r < 0 && errno == EINTR)
			return;
		sm.eof = 1;
		return;
	}
	sm.len += (size_t)r;
	for (line = sm.buf; (nl = memchr(line, '\n', sm.len - (size_t)(line - sm.buf))); line = nl + 1) {
		*nl = '\0';
		token_back(line);
	}
	sm.len -= (size_t)(line - sm.buf);
	memmove(sm.buf, line, sm.len);
	if (sm.len == sizeof sm.buf)
		sm.len = 0;	/* no token is that long */
}

/* A message received but not passed on: back to the queue now. */
static void
give_back(struct dq_queue *q, json_t *rec, const char *why)
{
	struct dq_err err;

	if (dq_queue_abandon(q, json_object_get(rec, "receipt"), &err) < 0) {
		if (err.scope == DQ_SCOPE_SYSTEM)
			dq_stop(status, &err, dq_record_log_ctx(rec));
		dq_log_err(DQ_WARNING, "abandon_failed", dq_record_log_ctx(rec), &err);
		return;
	}
	sm.abandoned++;
	dq_log(DQ_INFO, "abandoned", dq_record_log_ctx(rec), "abandoned unstarted: %s", why);
}

/* Print rec and keep its lock until its token comes back; 0, or -1 when stdout is gone. */
static int
pass_on(json_t *rec)
{
	const char *tok = json_string_value(json_object_get(json_object_get(rec, "receipt"), "lock_token"));
	int r = 0;

	if (dq_emit_try(rec) < 0) {
		if (errno != EPIPE) {
			dq_log(DQ_ERROR, "io_error", NULL, "stdout: %s", strerror(errno));
			status = dq_status_merge(status, DQ_EX_IOERR);
		} else
			dq_log(DQ_WARNING, "downstream_gone", NULL,
			    "stdout: the next stage is gone: receiving no more");
		sm.out_broken = 1;
		r = -1;
	} else if (tok) {
		sm.held = dq_xrealloc(sm.held, (size_t)(sm.nheld + 1) * sizeof *sm.held);
		sm.held[sm.nheld].token = dq_xstrdup(tok);
		sm.held[sm.nheld].since = dq_now_ms();
		sm.held[sm.nheld].lease = dq_keeper_hold(sm.keeper, json_incref(rec));
		sm.nheld++;
	}
	return r;
}

/* No more output: the stages downstream see the end of their input. */
static void
close_output(void)
{
	int fd = open("/dev/null", O_WRONLY);

	sm.out_closed = 1;
	fflush(stdout);
	if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0)
		dq_die(DQ_EX_IOERR, "/dev/null: %s", strerror(errno));
	close(fd);
}

/* Up to max messages, waiting up to wait_ms in slices; -1 on a queue error (err). */
static int
receive_some(struct dq_queue *q, int max, int64_t wait_ms, int flags, json_t *out,
    struct dq_err *err)
{
	int64_t deadline = dq_now_ms() + wait_ms, left;
	int n;

	for (;;) {
		left = deadline - dq_now_ms();
		if ((n = dq_queue_receive(q, max, left < SLICE_MS ? (left > 0 ? left : 0) : SLICE_MS,
		    flags, out, err)) != 0 || left <= SLICE_MS)
			return n;
		await(0);
		if (sm.stopping || sm.eof)
			return 0;
	}
}

/* --summary FILE: the end of the stream in one line, for a script. */
static void
write_summary(const char *file, const char *why)
{
	char *tmp = dq_xasprintf("%s.tmp", file);
	FILE *f = fopen(tmp, "w");

	if (!f || fprintf(f, "%s %ld %ld %ld %ld %ld %ld %d\n", why, sm.received, sm.returned,
	    sm.completed, sm.dead, sm.failed, sm.abandoned, sm.nheld) < 0 || fclose(f) != 0 ||
	    rename(tmp, file) < 0) {
		dq_log(DQ_ERROR, "io_error", NULL, "--summary %s: %s", file, strerror(errno));
		status = dq_status_merge(status, DQ_EX_IOERR);
	}
	free(tmp);
}

static int
stream(const char *qname, int max, double wait, int flags, int mode, long max_runtime,
    const char *summary, sigset_t *sigs)
{
	struct dq_err err;
	struct dq_queue *q = dq_queue_open(qname, &err);
	int64_t start = dq_now_ms(), wait_ms = (int64_t)(wait * 1000);
	const char *why = NULL;
	json_t *out, *rec;
	size_t i;
	int n, at_start;
	long before;

	if (!q)
		dq_stop(status, &err, NULL);
	if ((sm.sigfd = signalfd(-1, sigs, SFD_CLOEXEC)) < 0)
		dq_die(DQ_EX_IOERR, "signalfd: %s", strerror(errno));
	signal(SIGPIPE, SIG_IGN);	/* a stage gone downstream is an EPIPE, seen */
	sm.keeper = dq_keeper_start(keeper_fatal);
	dq_threads_started();
	dq_log(DQ_INFO, "stream_start", json_pack("{s:s,s:i}", "queue", q->name, "max_messages", max),
	    "receiving from %s, at most %d messages in flight", q->name, max);
	while (!why) {
		await(0);
		if (sm.stopping)
			why = "signal";
		else if (sm.eof)
			why = "settle_gone";
		else if (sm.out_broken)
			why = "downstream_gone";
		else if (max_runtime > 0 &&
		    dq_now_ms() + wait_ms + sm.longest_ms + 1000 >= start + max_runtime * 1000)
			why = "max_runtime";
		if (why)
			break;
		if (sm.nheld >= max) {
			await(max_runtime > 0 ? SLICE_MS : -1);
			continue;
		}
		at_start = sm.nheld;
		before = sm.returned;
		out = json_array();
		/* draining, the queue's end is only known with nothing out: until
		 * then take what is there without waiting, and wait for a token */
		if ((n = receive_some(q, max - sm.nheld, mode == DRAIN && at_start > 0 ? 0 : wait_ms,
		    flags, out, &err)) < 0) {
			json_decref(out);
			dq_stop(status, &err, NULL);	/* what is out is left to its locks */
		}
		json_array_foreach(out, i, rec) {
			if (sm.stopping || sm.out_broken) {
				give_back(q, rec, sm.stopping ? "a signal came while it was received" :
				    "the next stage is gone");
				continue;
			}
			sm.received++;
			dq_log(DQ_INFO, "received", dq_record_log_ctx(rec), "received from %s%s", q->name,
			    flags & DQ_RECV_DEAD_LETTER ? " (dead-letter queue)" : "");
			if (pass_on(rec) < 0)
				give_back(q, rec, "the next stage is gone");
		}
		json_decref(out);
		if (mode == ONCE)
			why = "once";
		else if (mode == DRAIN && n == 0 && at_start == 0 && !sm.stopping && !sm.eof)
			why = "drained";
		else if (mode == DRAIN && n == 0) {
			/* empty, but some were out and may come back: wait for one */
			while (sm.returned == before && sm.nheld > 0 && !sm.stopping && !sm.eof &&
			    !sm.out_broken)
				await(-1);
		}
	}
	close_output();
	dq_log(DQ_INFO, "stream_stop", json_pack("{s:s,s:i}", "reason", why, "in_flight", sm.nheld),
	    "receiving no more (%s): waiting for the %d in flight to be settled", why, sm.nheld);
	while (sm.nheld > 0 && !sm.eof)
		await(-1);
	if (sm.nheld > 0) {
		dq_log(DQ_WARNING, "unsettled", json_pack("{s:i}", "unsettled", sm.nheld),
		    "%d messages in flight were not settled (the settle stage is gone): "
		    "their locks run out and they are delivered again", sm.nheld);
		status = dq_status_merge(status, DQ_EX_TEMPFAIL);
	}
	for (int j = 0; j < sm.nheld; j++)
		dq_keeper_release(sm.keeper, sm.held[j].lease);
	dq_keeper_stop(sm.keeper);
	dq_log(DQ_INFO, "stream_end", json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:i}", "reason", why,
	    "received", (json_int_t)sm.received, "settled", (json_int_t)sm.returned,
	    "completed", (json_int_t)sm.completed, "dead_lettered", (json_int_t)sm.dead,
	    "failed", (json_int_t)sm.failed, "abandoned", (json_int_t)sm.abandoned,
	    "unsettled", sm.nheld),
	    "received %ld, settled %ld (%ld completed, %ld failed for good), %d unsettled",
	    sm.received, sm.returned, sm.completed, sm.failed, sm.nheld);
	if (summary)
		write_summary(summary, why);
	for (int j = 0; j < sm.nheld; j++)
		free(sm.held[j].token);
	free(sm.held);
	dq_queue_close(q);
	return 0;
}

/* The settle stage's half: each settled message's lock token, back to the receiver. */
static int token_fd = -1;

static void
token_out(json_t *rec)
{
	const char *tok = json_string_value(json_object_get(json_object_get(rec, "receipt"), "lock_token"));
	const char *settled = json_string_value(json_object_get(rec, "settled"));
	const char *blob = json_string_value(json_object_get(json_object_get(rec, "stored"), "blob_name"));
	size_t n = blob ? strlen(blob) : 0;
	/* failed for good: dead-lettered, or its failure marker stored (Service
	 * Bus dead-letters it at the delivery limit) */
	int failed = (settled && strcmp(settled, "dead-lettered") == 0) ||
	    (n > 11 && strcmp(blob + n - 11, ".error.json") == 0);

	if (token_fd < 0 || !tok)
		return;
	if (dprintf(token_fd, "%s %s %d\n", tok, settled ? settled : "unsettled", failed) < 0) {
		dq_log(errno == EPIPE ? DQ_WARNING : DQ_ERROR, "tokens_gone", NULL,
		    "--tokens: %s: settling on without giving slots back", strerror(errno));
		token_fd = -1;
	}
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
	if (q)
		token_out(rec);	/* settled or not, the message is out of the pipeline */
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
		{ "tokens", required_argument, NULL, 'T' },
		{ "drain", no_argument, NULL, 'd' },
		{ "once", no_argument, NULL, 'o' },
		{ "max-runtime", required_argument, NULL, 'M' },
		{ "summary", required_argument, NULL, 'U' },
		DQ_COMMON_OPTIONS,
		{ NULL, 0, NULL, 0 },
	};
	const char *qname = NULL;
	long max = 1;
	double wait = 5;
	int check = 0, c, flags = 0, do_settle = 0, do_renew = 0, recv_opts = 0;
	int mode = LOOP, stream_opts = 0;
	long tokens = -1, max_runtime = 0;
	const char *summary = NULL;
	sigset_t sigs;
	struct stat sb;
	char *end;

	/* From the first instruction: a signal to a stream that has received
	 * must be seen, never kill it (the other modes unblock it below). */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
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
		case 'T':
			tokens = strtol(optarg, &end, 10);
			if (*end || end == optarg || tokens < 0 || tokens > 1023 ||
			    fstat((int)tokens, &sb) < 0 || !(S_ISFIFO(sb.st_mode) || S_ISSOCK(sb.st_mode)))
				usage("--tokens wants the number of an open pipe");
			break;
		case 'd':
		case 'o':
			if (mode != LOOP)
				usage("--drain and --once exclude each other");
			mode = c == 'd' ? DRAIN : ONCE;
			stream_opts = 1;
			break;
		case 'M':
			max_runtime = strtol(optarg, &end, 10);
			if (*end || end == optarg || max_runtime < 1 || max_runtime > 86400 * 366)
				usage("--max-runtime wants whole seconds, at least 1");
			stream_opts = 1;
			break;
		case 'U': summary = optarg; stream_opts = 1; break;
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
	if (stream_opts && (tokens < 0 || do_settle || do_renew))
		usage("--drain, --once, --max-runtime and --summary apply to a receive with --tokens");
	if (tokens >= 0 && (do_renew || flags & DQ_RECV_PEEK))
		usage("--tokens applies to a receive or to --settle");

	if (tokens >= 0 && !do_settle) {
		sm.fd = (int)tokens;
		stream(qname, (int)max, wait, flags, mode, max_runtime, summary, &sigs);
		return dq_finish_stdout(status);
	}
	sigprocmask(SIG_UNBLOCK, &sigs, NULL);
	if (tokens >= 0) {
		token_fd = (int)tokens;
		signal(SIGPIPE, SIG_IGN);	/* a receiver gone is an EPIPE on the tokens, seen */
	}
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
