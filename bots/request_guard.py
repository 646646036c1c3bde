"""Turns away malformed requests to the Slack HTTP endpoint before Bolt parses them.

Bolt answers a body that is not UTF-8, or JSON that does not parse or is not an object, with
a 500 and a traceback in the log. Slack never sends such requests, so they get a short 400
here (413 when oversized); signature checks stay Bolt's. Anything well-formed passes through
unchanged.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs

log = logging.getLogger("teambot.slack")

MAX_BODY_BYTES = 1024 * 1024  # Slack's payloads are a few KB; a message is at most 40,000 characters


def problem(body: bytes, content_type: str) -> str | None:
    """Why `body` cannot be a Slack request, or None if it is well-formed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "the request body is not UTF-8"
    if not text.strip():
        return "the request body is empty"
    # Bolt's rule: JSON when declared so or when it looks like it, else a form (maybe with a JSON payload).
    if content_type.startswith("application/json") or text.lstrip().startswith("{"):
        return _json_object(text)
    payload = parse_qs(text).get("payload")
    return _json_object(payload[0]) if payload else None


def _json_object(text: str) -> str | None:
    try:
        data = json.loads(text)
    except ValueError:
        return "the request body is not valid JSON"
    return None if isinstance(data, dict) else "the request body is not a JSON object"


class RequestGuard:
    """WSGI middleware for POST requests to the Slack endpoint."""

    def __init__(self, app: Callable, max_body: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_body = app, max_body

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return self._refuse(start_response, "400 Bad Request", "invalid Content-Length")
        if length > self.max_body:
            reason = f"the request body is over {self.max_body} bytes"
            return self._refuse(start_response, "413 Payload Too Large", reason)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        reason = problem(body, environ.get("CONTENT_TYPE") or "")
        if reason:
            return self._refuse(start_response, "400 Bad Request", reason)
        environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)

    @staticmethod
    def _refuse(start_response: Callable, status: str, reason: str) -> list[bytes]:
        log.info("refused a request to the Slack endpoint: %s", reason)
        body = json.dumps({"error": reason}).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
