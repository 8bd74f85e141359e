/* cli.c - start-up shared by the programs. */
#include <stdlib.h>

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
dq_cli_version(void)
{
	printf("%s %s\n", dq_prog, DQ_VERSION);
	exit(dq_finish_stdout(0));
}

void
dq_cli_print_config(void)
{
	dq_config_print(stdout);
	exit(dq_finish_stdout(0));
}
