#!/bin/sh
# ingest.cgi - load the dq environment, then run dq-ingest (CGI or FastCGI,
# or dq-ingest --check from a shell).
# Web servers give a CGI program no environment of its own: it comes from
# DQ_ENV_FILE (default /etc/dq/env; root-owned, not world-readable).
env=${DQ_ENV_FILE:-/etc/dq/env}
if ! [ -r "$env" ]; then
	echo "ingest.cgi: cannot read $env" >&2
	# from a shell (--check): a configuration error
	[ -n "${GATEWAY_INTERFACE:-}" ] || exit 78
	printf 'Status: 500 Internal Server Error\r\nContent-Type: application/json\r\n\r\n'
	printf '{"error":{"code":"internal","message":"the server is misconfigured"}}\n'
	exit 1
fi
set -a
# shellcheck source=/dev/null
. "$env"
set +a
# Installed as PREFIX/libexec/dq/ingest.cgi beside PREFIX/bin/dq-ingest;
# DQ_INGEST (from the file) names another binary.
bin=${DQ_INGEST:-${0%/*}/../../bin/dq-ingest}
[ -x "$bin" ] || bin=dq-ingest
# Options (--check) from a command line only: in a CGI request the
# arguments are the words of a query (RFC 3875 4.4), the client's.
[ -z "${GATEWAY_INTERFACE:-}" ] || set --
exec "$bin" "$@"
