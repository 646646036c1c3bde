"""What the JSON API stand-ins share: a handler that answers with JSON (or bytes) and logs each call
(path, status) on its stand-in, and a server on 127.0.0.1 in a daemon thread."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class JsonApiHandler(BaseHTTPRequestHandler):
    standin = None  # the stand-in answering: it has `calls` and `_lock`

    def reply(self, status: int, body, headers: dict | None = None) -> None:
        with self.standin._lock:
            self.standin.calls.append((urlsplit(self.path).path, status))
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = dict(headers or {})
        default = "application/octet-stream" if isinstance(body, bytes) else "application/json;charset=UTF-8"
        self.send_response(status)
        self.send_header("Content-Type", headers.pop("Content-Type", default))
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


def serve(standin, handler: type[JsonApiHandler]) -> ThreadingHTTPServer:
    # A subclass per server: two stand-ins of one kind running at once each answer for their own.
    bound = type(handler.__name__, (handler,), {"standin": standin})
    server = ThreadingHTTPServer(("127.0.0.1", 0), bound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
