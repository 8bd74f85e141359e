#!/usr/bin/env python3
"""httpd.py - a scripted HTTP test server on 127.0.0.1 that counts what it sees.

Python 3 standard library only.  It binds 127.0.0.1 on a free port and
writes the port to --port-file (and stdout).  Its answers come from a
script (--script FILE, or POST /_fake/script at run time), a JSON object:

  {"answers": [ANSWER, ...]}

used in order, each ANSWER "times" times (default 1); the last one then
repeats forever.  An ANSWER is

  {"status": 503, "headers": {"Retry-After": "2"}, "body": "...",
   "delay_ms": 0, "drop": false, "truncate": false, "times": 1,
   "method": "PUT", "path": "/raw-images/"}

"method" and "path" (a prefix), when given, restrict an answer to the
requests that fit: each request takes the first answer that fits and is
not used up, else the last that fits (a request that none fits is 404).
"drop": true closes the connection without an answer; "truncate": true
sends the headers and half the body, then closes it.  A header value
"{http_date+N}" becomes the HTTP date N seconds from now.  Without a
script every request gets 200 "ok".  Each answer carries
x-ms-request-id: fake-<n> unless it names a request id of its own.

What it saw is written to --stats-file (atomically, after every request)
and served at GET /_fake/stats: {"requests": N, "connections": M,
"log": [{"n", "t_ms", "conn", "method", "path", "headers", "body_len",
"body"}]} (body: its first 4096 bytes as text).
Requests to /_fake/ are not counted, nor is a connection that carried
only those.  Later fakes (Blob, Service Bus, Azure OpenAI, identity)
subclass Handler and override answer().
"""
import argparse
import email.utils
import json
import os
import signal
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REQUEST_ID_HEADERS = ("x-ms-request-id", "apim-request-id", "x-request-id")


def matches(answer, method, path):
    """Whether an ANSWER's "method" and "path" (a prefix) fit a request."""
    m = answer.get("method")
    return (not m or m == method) and path.startswith(answer.get("path", ""))


class State:
    """The script and the counts, shared by every connection's thread."""

    def __init__(self, script, stats_file):
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.stats_file = stats_file
        self.requests = 0
        self.connections = 0
        self.log = []
        self.set_script(script)

    def set_script(self, script):
        with self.lock:
            self.answers = list((script or {}).get("answers", []))
            self.used = [0] * len(self.answers)

    def next_answer(self, method, path):
        """The answer for the next request (the caller holds the lock): the
        first answer that matches it and is not used up, else the last one
        that matches, which repeats."""
        matching = [i for i, a in enumerate(self.answers) if matches(a, method, path)]
        if not matching:
            return {"status": 200, "body": "ok"} if not self.answers else \
                {"status": 404, "body": "no answer scripted for %s %s" % (method, path)}
        for i in matching:
            if self.used[i] < int(self.answers[i].get("times", 1)):
                self.used[i] += 1
                return self.answers[i]
        return self.answers[matching[-1]]

    def snapshot(self):
        return {"requests": self.requests, "connections": self.connections,
                "log": list(self.log)}

    def save(self):
        if not self.stats_file:
            return
        tmp = "%s.%d.tmp" % (self.stats_file, threading.get_ident())
        with open(tmp, "w") as f:
            json.dump(self.snapshot(), f)
        os.replace(tmp, self.stats_file)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"     # keep-alive
    server_version = "dq-fake"
    sys_version = ""

    def setup(self):
        super().setup()
        self.conn_id = None           # counted on its first counted request

    def log_message(self, fmt, *args):  # quiet: the stats say what came
        pass

    # -- reading the request --
    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def count(self, body):
        st = self.server.state
        with st.lock:
            if self.conn_id is None:
                st.connections += 1
                self.conn_id = st.connections
            st.requests += 1
            st.log.append({"n": st.requests, "conn": self.conn_id,
                           "t_ms": round((time.monotonic() - st.t0) * 1000, 1),
                           "method": self.command, "path": self.path,
                           "headers": {k: v for k, v in self.headers.items()},
                           "body_len": len(body),
                           "body": body[:4096].decode("utf-8", "replace")})
            n = st.requests
            answer = st.next_answer(self.command, self.path)
            st.save()
        return n, answer

    # -- answering --
    def send(self, status, headers=None, body=b""):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def control(self, body):
        st = self.server.state
        if self.path == "/_fake/stats":
            with st.lock:
                data = json.dumps(st.snapshot())
            self.send(200, {"Content-Type": "application/json"}, data)
        elif self.path == "/_fake/script" and self.command == "POST":
            st.set_script(json.loads(body or b"{}"))
            self.send(204)
        else:
            self.send(404, body="no such control\n")

    def answer(self, n, answer, body):
        """Answer request number n (1-based) with a script ANSWER."""
        time.sleep(float(answer.get("delay_ms", 0)) / 1000)
        if answer.get("drop"):
            self.close_connection = True
            return
        if answer.get("truncate"):
            # the whole length promised, half the body sent, the connection closed
            body = answer.get("body", "").encode()
            self.send_response(int(answer.get("status", 200)))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        headers = {}
        for k, v in answer.get("headers", {}).items():
            if isinstance(v, str) and v.startswith("{http_date+") and v.endswith("}"):
                v = email.utils.formatdate(time.time() + float(v[11:-1]), usegmt=True)
            headers[k] = str(v)
        if not any(k.lower() in REQUEST_ID_HEADERS for k in headers):
            headers["x-ms-request-id"] = "fake-%d" % n
        self.send(int(answer.get("status", 200)), headers, answer.get("body", ""))

    def handle_any(self):
        body = self.read_body()
        if self.path.startswith("/_fake/"):
            self.control(body)
            return
        n, answer = self.count(body)
        self.answer(n, answer, body)

    # CONNECT too: as a proxy it counts the tunnels asked for (and answers
    # from the script: a 2xx is not a tunnel, so answer an error)
    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = handle_any
    do_CONNECT = handle_any


def serve(handler=Handler, argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--script", help="JSON script of answers")
    p.add_argument("--port-file", help="write the port here once listening")
    p.add_argument("--stats-file", help="write the counts here after each request")
    p.add_argument("--tls-cert", help="serve https with this certificate (PEM)")
    p.add_argument("--tls-key", help="and this key (PEM)")
    args = p.parse_args(argv)
    script = None
    if args.script:
        with open(args.script) as f:
            script = json.load(f)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    srv.state = State(script, args.stats_file)
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.state.save()
    port = srv.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    print(port, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        srv.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    serve()
