/* cli.c - start-up shared by the programs. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dq.h"

void
dq_cli_config(void)
{
	struct dq_err err;

	if (dq_config_load(&err) < 0) {
		dq_log_err(DQ_ERROR, "config", NULL, &err);
		exit(err.status);
	}
}

void
dq_usage(const char *synopsis, const char *why)
{
	if (why) {
		fprintf(stderr, "%s: %s\n%s", dq_prog, why, synopsis);
		exit(DQ_EX_USAGE);
	}
	fputs(synopsis, stdout);
	exit(dq_finish_stdout(0));
}

void
dq_cli_option(int c, const char *synopsis)
{
	switch (c) {
	case 'h': dq_usage(synopsis, NULL);
	case 'V': dq_cli_version();
	case 'P': dq_cli_print_config();
	default: dq_usage(synopsis, "unknown option");
	}
}

void
dq_cli_version(void)
{
	printf("%s %s\n", dq_prog, DQ_VERSION);
	exit(dq_finish_stdout(0));
}

void
dq_cli_print_config(void)
{
	dq_config_print(stdout, dq_prog);
	exit(dq_finish_stdout(0));
}

/*
 * --check: the configuration and the backends a program uses, before any
 * record is touched, creating nothing.  The containers a program will
 * write take a probe (store's DQ_CHECK_* bits), the queue one in its
 * spool.  78 for a configuration or authorisation problem (a read-only
 * container included), 69 for a backend that does not answer or takes no
 * writes (a full disk), 0 when all is well.
 */
void
dq_cli_check(int store, int queue, const char *qname)
{
	struct dq_err err;
	struct dq_store *s = NULL;
	struct dq_queue *q = NULL;
	int st = 0;

	if (store && (!(s = dq_store_open(&err)) || dq_store_check(s, &err) < 0 ||
	    ((store & DQ_CHECK_RAW) && dq_store_probe(s, dq_cfg.raw_container, &err) < 0) ||
	    ((store & DQ_CHECK_PROCESSED) && dq_store_probe(s, dq_cfg.processed_container, &err) < 0)))
		goto fail;
	if (queue && (!(q = dq_queue_open_check(qname, &err)) || dq_queue_check(q, &err) < 0))
		goto fail;
	dq_log(DQ_INFO, "check_ok", NULL, "configuration and backends are usable");
	goto out;
fail:
	st = err.status == DQ_EX_CONFIG || err.status == DQ_EX_USAGE ? err.status : DQ_EX_UNAVAILABLE;
	dq_log_err(DQ_ERROR, "check_failed", NULL, &err);
out:
	dq_store_close(s);
	dq_queue_close(q);
	exit(dq_finish_stdout(st));
}
