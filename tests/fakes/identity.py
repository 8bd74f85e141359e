#!/usr/bin/env python3
"""identity.py - a fake of Azure's managed-identity endpoints on 127.0.0.1.

Python 3 standard library only.  It binds 127.0.0.1 on a free port, writes
the port to DIR/port, and serves:

  GET  /msi/token            Container Apps / App Service, api-version
                             2019-08-01: X-IDENTITY-HEADER, resource,
                             optional client_id (IDENTITY_ENDPOINT)
  POST /<tenant>/oauth2/v2.0/token
                             Entra ID's token endpoint, the workload-
                             identity client-assertion exchange
                             (AZURE_AUTHORITY_HOST)
  GET  /metadata/identity/oauth2/token
                             the VM metadata endpoint (IMDS), api-version
                             2018-02-01, Metadata: true
                             (AZURE_POD_IDENTITY_AUTHORITY_HOST)
  GET  /service              a service that takes the bearer tokens this
                             fake issued: 200, or 401 for any other token,
                             a revoked one or an expired one

Each endpoint checks its documented request and rejects anything else as
Azure does (400 or 401 with a JSON error saying what was wrong; the reason
also goes to DIR/rejected, one a line, no secret in it).  What it expects
comes from the environment at start:

  FAKE_IDENTITY_HEADER  the X-IDENTITY-HEADER value Container Apps checks
  FAKE_CLIENT_ID        the client_id the requests must carry (unset: none
                        for Container Apps and IMDS; workload identity
                        always needs one, default "fake-client")
  FAKE_TENANT           the tenant of the token endpoint (default "fake-tenant")
  FAKE_ASSERTION        the federated token the exchange must carry

Faults and token shapes come from DIR/config.json, read at every request
(a changed file starts its counts anew):

  {"fail": 500, "fail_times": 2}  the first 2 token requests get 500
  {"slow_ms": 3000}               token answers wait that long
  {"malformed": true}             token answers are not JSON
  {"expired": true}               tokens that expired an hour ago
  {"expires_in": 6}               token lifetime in s (default 86400)
  {"numbers": true}               expiry fields as JSON numbers, not strings
  {"only": "expires_in"}          send only expires_in (or "expires_on")
  {"refresh_in": 2}               add refresh_in
  {"revoke": true}                /service refuses every token issued
                                  before this config was written
  {"service_401": true}           /service refuses every token

Counts of accepted token requests per endpoint ("app_service",
"workload", "imds"), of "rejected" ones and of "service" calls are written
to DIR/counts.json (atomically) after every request.  Tokens carry the
marker S3CRET, which tests grep for in every output.
"""
import argparse
import json
import os
import secrets
import signal
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class State:
    def __init__(self, d):
        self.dir = d
        self.lock = threading.Lock()
        self.counts = {"app_service": 0, "workload": 0, "imds": 0, "rejected": 0, "service": 0}
        self.issued = {}  # token -> (issued_at, expires_at)
        self.config_text = None
        self.config = {}
        self.config_at = 0.0
        self.failed = 0
        self.write_counts()

    def load_config(self):
        """The config, re-read; a changed file starts its fault counts anew."""
        path = os.path.join(self.dir, "config.json")
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        with self.lock:
            if text != self.config_text:
                self.config_text = text
                self.config = json.loads(text) if text.strip() else {}
                self.config_at = time.time()
                self.failed = 0
            return dict(self.config), self.config_at

    def take_fault(self, cfg):
        with self.lock:
            if cfg.get("fail") and self.failed < cfg.get("fail_times", 1):
                self.failed += 1
                return cfg["fail"]
        return None

    def count(self, what):
        with self.lock:
            self.counts[what] += 1
            self.write_counts()

    def write_counts(self):
        tmp = os.path.join(self.dir, ".counts.tmp.%d" % threading.get_ident())
        with open(tmp, "w") as f:
            json.dump(self.counts, f)
        os.rename(tmp, os.path.join(self.dir, "counts.json"))

    def reject(self, why):
        with self.lock:
            with open(os.path.join(self.dir, "rejected"), "a") as f:
                f.write(why + "\n")
            self.counts["rejected"] += 1
            self.write_counts()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "identity-fake"

    def log_message(self, fmt, *args):
        pass

    # --- answers -----------------------------------------------------------
    def send(self, status, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", "fake-id-%d" % time.monotonic_ns())
        self.end_headers()
        self.wfile.write(data)

    def refuse(self, status, error, why):
        self.server.state.reject("%s %s: %s" % (self.command, self.path.split("?")[0], why))
        self.send(status, {"error": error, "error_description": why})

    def token(self, kind, resource_key, resource):
        """A token answer in the shape of kind's endpoint, faults applied."""
        st = self.server.state
        cfg, _ = st.load_config()
        st.count(kind)  # on arrival: a slow answer is counted while it waits
        if cfg.get("slow_ms"):
            time.sleep(cfg["slow_ms"] / 1000.0)
        fault = st.take_fault(cfg)
        if fault:
            return self.send(fault, {"error": "fake_fault", "error_description": "injected %d" % fault})
        if cfg.get("malformed"):
            return self.send(200, b'{"access_token": "eyS3CRET', "application/json")
        now = int(time.time())
        life = int(cfg.get("expires_in", 86400))
        if cfg.get("expired"):
            life = -3600
        tok = "eyS3CRET.%s.%s" % (kind, secrets.token_hex(8))
        with st.lock:
            st.issued[tok] = (time.time(), now + life)
        num = (lambda v: v) if cfg.get("numbers") else str
        body = {"access_token": tok, "token_type": "Bearer", resource_key: resource}
        only = cfg.get("only")
        if kind == "workload":
            # Entra v2.0: expires_in a number
            body.pop(resource_key)
            body["expires_in"] = life
            body["ext_expires_in"] = life
        else:
            if only != "expires_on":
                body["expires_in"] = num(life)
            if only != "expires_in":
                body["expires_on"] = num(now + life)
            body["not_before"] = num(now)
        if "refresh_in" in cfg:
            body["refresh_in"] = cfg["refresh_in"]
        self.send(200, body)

    # --- the endpoints -----------------------------------------------------
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if url.path == "/msi/token":
            return self.app_service(q)
        if url.path == "/metadata/identity/oauth2/token":
            return self.imds(q)
        if url.path == "/service":
            return self.service()
        self.refuse(404, "not_found", "no such endpoint")

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
        parts = url.path.strip("/").split("/")
        if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            return self.workload(parts[0], url.query, body)
        self.refuse(404, "not_found", "no such endpoint")

    def one(self, q, name):
        v = q.get(name)
        if v is None:
            return None
        return v[0] if len(v) == 1 else False

    def client_ok(self, q, name="client_id"):
        want = os.environ.get("FAKE_CLIENT_ID")
        got = self.one(q, name)
        if want is None:
            return got is None
        return got == want

    def app_service(self, q):
        want = os.environ.get("FAKE_IDENTITY_HEADER")
        got = self.headers.get_all("X-IDENTITY-HEADER") or []
        if len(got) != 1 or want is None or got[0] != want:
            return self.refuse(401, "unauthorized", "X-IDENTITY-HEADER missing or wrong")
        if self.one(q, "api-version") != "2019-08-01":
            return self.refuse(400, "invalid_request", "api-version must be 2019-08-01")
        res = self.one(q, "resource")
        if not res or "scope" in q or res.endswith("/.default"):
            return self.refuse(400, "invalid_request", "resource (not scope) required")
        if not self.client_ok(q):
            return self.refuse(400, "invalid_request", "client_id does not name this identity")
        if set(q) - {"api-version", "resource", "client_id"}:
            return self.refuse(400, "invalid_request", "unknown query parameter")
        self.token("app_service", "resource", res)

    def imds(self, q):
        if self.headers.get("Metadata") != "true":
            return self.refuse(400, "invalid_request", "Required metadata header not specified")
        if self.headers.get("X-IDENTITY-HEADER") or self.headers.get("Authorization"):
            return self.refuse(400, "invalid_request", "IMDS takes no credential")
        if self.one(q, "api-version") != "2018-02-01":
            return self.refuse(400, "invalid_request", "api-version must be 2018-02-01")
        res = self.one(q, "resource")
        if not res or res.endswith("/.default"):
            return self.refuse(400, "invalid_request", "resource required")
        if not self.client_ok(q):
            return self.refuse(400, "invalid_request",
                               "Identity not found (client_id does not name an assigned identity)")
        if set(q) - {"api-version", "resource", "client_id"}:
            return self.refuse(400, "invalid_request", "unknown query parameter")
        self.token("imds", "resource", res)

    def workload(self, tenant, query, body):
        if tenant != os.environ.get("FAKE_TENANT", "fake-tenant"):
            return self.refuse(400, "invalid_tenant", "no such tenant")
        if query:
            return self.refuse(400, "invalid_request", "the token endpoint takes no query")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype != "application/x-www-form-urlencoded":
            return self.refuse(400, "invalid_request", "the body must be a form post")
        f = urllib.parse.parse_qs(body, keep_blank_values=True, strict_parsing=False)
        if any(len(v) != 1 for v in f.values()):
            return self.refuse(400, "invalid_request", "a form field given twice")
        f = {k: v[0] for k, v in f.items()}
        want = {"grant_type", "client_id", "scope", "client_assertion_type", "client_assertion"}
        if set(f) != want:
            return self.refuse(400, "invalid_request", "form fields must be exactly " + ",".join(sorted(want)))
        if f["grant_type"] != "client_credentials":
            return self.refuse(400, "unsupported_grant_type", "grant_type must be client_credentials")
        if f["client_id"] != os.environ.get("FAKE_CLIENT_ID", "fake-client"):
            return self.refuse(400, "unauthorized_client", "unknown client_id")
        if not f["scope"].endswith("/.default"):
            return self.refuse(400, "invalid_scope", "scope must end in /.default")
        if f["client_assertion_type"] != ASSERTION_TYPE:
            return self.refuse(400, "invalid_request", "client_assertion_type is wrong")
        if f["client_assertion"] != os.environ.get("FAKE_ASSERTION"):
            return self.refuse(401, "invalid_client", "client_assertion does not verify")
        self.token("workload", "scope", f["scope"])

    def service(self):
        st = self.server.state
        cfg, cfg_at = st.load_config()
        st.count("service")
        auth = self.headers.get("Authorization") or ""
        tok = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        with st.lock:
            issued = st.issued.get(tok)
        if (cfg.get("service_401") or issued is None or issued[1] <= time.time()
                or (cfg.get("revoke") and issued[0] < cfg_at)):
            return self.send(401, {"error": {"code": "InvalidAuthenticationToken",
                                             "message": "the token is not valid"}})
        self.send(200, {"ok": True})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="where port, config.json, counts.json and rejected live")
    args = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.state = State(args.dir)
    tmp = os.path.join(args.dir, ".port.tmp")
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, os.path.join(args.dir, "port"))
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    srv.serve_forever()


if __name__ == "__main__":
    main()
