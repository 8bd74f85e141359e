#!/bin/sh
# worker-entry.sh - the worker image's command, under tini: with no
# arguments one execution of the job, `dq-worker --drain` limited to
# DQ_WORKER_MAX_RUNTIME seconds (below the job's replica timeout; 0: no
# limit), else dq-worker with the arguments given (--check, --print-config).
# The limit is an environment variable, not the job's --args, since az's
# --args cannot take values that begin with "--".
case "${DQ_WORKER_MAX_RUNTIME:-0}" in
'' | *[!0-9]*) echo "worker-entry: DQ_WORKER_MAX_RUNTIME is not a number of seconds" >&2; exit 78 ;;
esac
[ "$#" -gt 0 ] || set -- --drain --max-runtime "${DQ_WORKER_MAX_RUNTIME:-0}"
exec /usr/local/bin/dq-worker "$@"
