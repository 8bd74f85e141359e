#!/usr/bin/env python3
"""openai.py - a strict fake of Azure OpenAI chat completions on 127.0.0.1.

Python 3 standard library only, on httpd.py (same options, same stats,
same script of answers).  Every request is checked as the service would,
before the script is consulted:

  path      /openai/deployments/$FAKE_DEPLOYMENT/chat/completions?api-version=V
            (V one of 2024-10-21, 2025-04-01-preview), or /openai/v1/chat/completions
            (also under /api/projects/<p>) with "model": $FAKE_DEPLOYMENT;
            another deployment: 404 DeploymentNotFound
  auth      "api-key: $FAKE_OPENAI_KEY", or with FAKE_OPENAI_BEARER=1 any
            "Authorization: Bearer <token>" holding S3CRET (the identity
            fake's tokens); else 401
  body      messages: one system or developer message (not both) and a user
            message with an image_url data URL; max_completion_tokens; a
            strict json_schema response_format (every property required,
            additionalProperties false, no keyword Azure refuses); never
            temperature, top_p, max_tokens and the other parameters GPT-5
            rejects; reasoning_effort none|low|medium|high|xhigh: else 400
            unsupported_parameter / unsupported_value

A script ANSWER (httpd.py's) with "status" other than 200, "drop" or
"truncate" is sent as it is (faults).  Otherwise it is a completion:

  {"findings": {...}}          the model's JSON (the schema's object)
  {"content": "text"}          content as given (malformed JSON)
  {"refusal": "text"}          a refusal
  {"finish_reason": "length"}  that finish_reason (content empty unless given)
  "delay_ms": N                any of these after N ms (a model's latency)

The default answer is "no defect".  usage counts prompt tokens as the
text's bytes / 4 plus the image's patches (32-px, at most 1536) + 70.
"""
import base64
import json
import os
import struct
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import httpd  # noqa: E402

DEPLOYMENT = os.environ.get("FAKE_DEPLOYMENT", "gpt-5-2")
KEY = os.environ.get("FAKE_OPENAI_KEY", "")
BEARER = os.environ.get("FAKE_OPENAI_BEARER") == "1"
VERSIONS = ("2024-10-21", "2025-04-01-preview")
REJECTED = ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty",
            "logprobs", "top_logprobs", "logit_bias")
UNSUPPORTED_KEYWORDS = ("minLength", "maxLength", "pattern", "format", "minimum", "maximum",
                        "multipleOf", "patternProperties", "minItems", "maxItems", "uniqueItems")
NO_DEFECT = {"defect_detected": False, "defect_type": "none", "severity": "none",
             "description": "no defect visible", "confidence": 0.9, "boxes": []}


def image_size(data):
    """(width, height) of a PNG or baseline/progressive JPEG, else (0, 0)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return struct.unpack(">II", data[16:24])
    i = 2
    while data[:2] == b"\xff\xd8" and i + 9 < len(data):
        marker, size = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + size
    return 0, 0


def schema_ok(s, depth=0):
    if depth > 5 or not isinstance(s, dict):
        return False
    if any(k in s for k in UNSUPPORTED_KEYWORDS):
        return False
    if s.get("type") == "object":
        props = s.get("properties", {})
        if s.get("additionalProperties") is not False or sorted(s.get("required", [])) != sorted(props):
            return False
        return all(schema_ok(v, depth + 1) for v in props.values())
    if s.get("type") == "array":
        return schema_ok(s.get("items"), depth + 1)
    return True


class OpenAI(httpd.Handler):
    server_version = "openai-fake"

    def refuse(self, status, code, msg):
        self.send(status, {"Content-Type": "application/json"},
                  json.dumps({"error": {"code": code, "message": msg}}))

    def check(self, body):
        """None when the request is what Azure accepts, else (status, code, message)."""
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        try:
            req = json.loads(body)
        except ValueError:
            return 400, "invalid_request_error", "body is not JSON"
        path = url.path
        if "/api/projects/" in path:
            path = "/openai/v1/" + path.split("/openai/v1/", 1)[-1]
        if path == "/openai/v1/chat/completions":
            if "api-version" in q:
                return 400, "invalid_request_error", "no api-version on the v1 path"
            if req.get("model") != DEPLOYMENT:
                return 404, "DeploymentNotFound", "no such deployment"
        elif path.startswith("/openai/deployments/") and path.endswith("/chat/completions"):
            if path.split("/")[3] != DEPLOYMENT:
                return 404, "DeploymentNotFound", "The API deployment for this resource does not exist."
            if q.get("api-version", [""])[0] not in VERSIONS:
                return 404, "404", "Resource not found (api-version)"
        else:
            return 404, "404", "Resource not found"
        auth = self.headers.get("Authorization", "")
        if not ((KEY and self.headers.get("api-key") == KEY) or
                (BEARER and auth.startswith("Bearer ") and "S3CRET" in auth)):
            return 401, "401", "Access denied due to invalid subscription key or wrong API endpoint."
        for k in REJECTED:
            if k in req:
                return 400, "unsupported_parameter", "Unsupported parameter: '%s'" % k
        if req.get("reasoning_effort", "none") not in ("none", "low", "medium", "high", "xhigh"):
            return 400, "unsupported_value", "Unsupported value: 'reasoning_effort'"
        if not isinstance(req.get("max_completion_tokens"), int):
            return 400, "invalid_request_error", "max_completion_tokens is required"
        msgs = req.get("messages", [])
        roles = [m.get("role") for m in msgs]
        if roles.count("system") + roles.count("developer") != 1 or roles[-1] != "user":
            return 400, "invalid_request_error", "one system or developer message, then the user's"
        rf = req.get("response_format", {})
        js = rf.get("json_schema", {})
        if rf.get("type") != "json_schema" or js.get("strict") is not True or \
                not schema_ok(js.get("schema")):
            return 400, "invalid_request_error", "Invalid schema for response_format"
        images = [p for p in msgs[-1].get("content", []) if p.get("type") == "image_url"]
        if not images or not images[0]["image_url"]["url"].startswith("data:image/"):
            return 400, "invalid_request_error", "no image"
        self.req = req
        return None

    def answer(self, n, answer, body):
        bad = self.check(body)
        if bad:
            self.refuse(*bad)
            return
        if int(answer.get("status", 200)) != 200 or answer.get("drop") or answer.get("truncate"):
            super().answer(n, answer, body)
            return
        time.sleep(float(answer.get("delay_ms", 0)) / 1000)
        msgs = self.req["messages"]
        url = [p for p in msgs[-1]["content"] if p.get("type") == "image_url"][0]["image_url"]["url"]
        w, h = image_size(base64.b64decode(url.split(",", 1)[1]))
        patches = min(1536, -(-w // 32) * -(-h // 32))
        text = sum(len(m["content"]) if isinstance(m["content"], str) else 0 for m in msgs)
        message = {"role": "assistant", "content": None, "refusal": None}
        if "refusal" in answer:
            message["refusal"] = answer["refusal"]
        elif "content" in answer:
            message["content"] = answer["content"]
        elif "finish_reason" not in answer:
            message["content"] = json.dumps(answer.get("findings", NO_DEFECT))
        out = {"id": "chatcmpl-%d" % n, "object": "chat.completion", "model": "gpt-5.2-2025-12-11",
               "choices": [{"index": 0, "message": message,
                            "finish_reason": answer.get("finish_reason", "stop")}],
               "usage": {"prompt_tokens": text // 4 + patches + 70, "completion_tokens": 120,
                         "total_tokens": text // 4 + patches + 190,
                         "prompt_tokens_details": {"cached_tokens": 0},
                         "completion_tokens_details": {"reasoning_tokens": 64}}}
        headers = {"Content-Type": "application/json", "x-ratelimit-remaining-requests": "99"}
        headers.update(answer.get("headers", {}))
        self.send(200, headers, json.dumps(out))


if __name__ == "__main__":
    httpd.serve(OpenAI)
