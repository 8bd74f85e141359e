/* status-test - dq_status_merge() of lib/util.c, one pair at a time, for the tests that hold its order to dq(7)'s. */
#include <stdio.h>
#include <stdlib.h>

#include "dq.h"

/*
 * status-test A B
 *	prints dq_status_merge(A, B): the status that wins.
 */
int
main(int argc, char *argv[])
{
	char *end_a, *end_b;
	long a, b;

	if (argc != 3) {
		fprintf(stderr, "usage: status-test A B\n");
		return DQ_EX_USAGE;
	}
	a = strtol(argv[1], &end_a, 10);
	b = strtol(argv[2], &end_b, 10);
	if (*argv[1] == '\0' || *end_a != '\0' || *argv[2] == '\0' || *end_b != '\0' ||
	    a < 0 || a > 255 || b < 0 || b > 255) {
		fprintf(stderr, "status-test: statuses are numbers 0..255\n");
		return DQ_EX_USAGE;
	}
	printf("%d\n", dq_status_merge((int)a, (int)b));
	return 0;
}
