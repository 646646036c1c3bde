"""`/healthz` and `/metrics` of a running bot, on a listener of their own.

`/healthz` asks Weaviate and Ollama whether they are ready (200 when both are, 503 otherwise)
and reports each server's circuit breaker; container health checks and load balancers poll it.
`/metrics` is Prometheus text. The listener binds to TEAMBOT_HEALTH_HOST:TEAMBOT_HEALTH_PORT,
loopback by default, so neither is public next to the Slack events endpoint unless asked for.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST

from bots.wsgi import wsgi_server
from core import metrics, servers
from core.settings import Settings

log = logging.getLogger("teambot.health")

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
PROBE_TIMEOUT = 2.0


def health_report(settings: Settings, service=None) -> tuple[int, dict]:
    """(HTTP status, report) for the two servers the answers depend on."""
    report: dict[str, object] = {}
    breakers = getattr(service, "breakers", {}) or {}
    for server in servers.SERVICES:
        entry: dict[str, object] = {"ok": servers.is_ready(server, settings, timeout=PROBE_TIMEOUT)}
        if server.name in breakers:
            entry["circuit"] = breakers[server.name].state
        report[server.name] = entry
    ok = all(entry["ok"] for entry in report.values())
    return (200 if ok else 503), {"status": "ok" if ok else "unavailable", **report}


class HealthRoutes:
    """WSGI middleware: answers the health and metrics paths, passes everything else on."""

    def __init__(self, app: Callable, settings: Settings, service=None) -> None:
        self.app, self.settings, self.service = app, settings, service

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "GET")
        if path == HEALTH_PATH and method in ("GET", "HEAD"):
            status, report = health_report(self.settings, self.service)
            reason = "OK" if status == 200 else "Service Unavailable"
            return self._send(start_response, f"{status} {reason}", "application/json", json.dumps(report).encode())
        if path == METRICS_PATH and method in ("GET", "HEAD"):
            return self._send(start_response, "200 OK", CONTENT_TYPE_LATEST, metrics.exposition())
        return self.app(environ, start_response)

    @staticmethod
    def _send(start_response: Callable, status: str, content_type: str, body: bytes) -> list[bytes]:
        start_response(status, [
            ("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
        ])
        return [body]


class HealthListenerError(RuntimeError):
    """The health listener cannot bind its address; the message says what to change."""


def _not_found(environ: dict, start_response: Callable) -> list[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"not found\n"]


def start_health_listener(settings: Settings, service=None, *, port: int | None = None):
    """Serve /healthz and /metrics on TEAMBOT_HEALTH_HOST:TEAMBOT_HEALTH_PORT (or `port`; 0 picks a
    free one) in a daemon thread; the server (`shutdown()` stops it), or None when the setting is 0."""
    if port is None:
        if not settings.health_port:
            return None
        port = settings.health_port
    try:
        server = wsgi_server(HealthRoutes(_not_found, settings, service), settings.health_host, port)
    except OSError as exc:
        raise HealthListenerError(
            f"cannot listen on {settings.health_host}:{port} for /healthz and /metrics ({exc.strerror or exc}): "
            "set TEAMBOT_HEALTH_PORT to a free port, or 0 to turn the listener off."
        ) from None
    threading.Thread(target=server.serve_forever, name="teambot-health", daemon=True).start()
    log.info("health and metrics at http://%s:%d%s and %s", settings.health_host, server.server_port,
             HEALTH_PATH, METRICS_PATH)
    return server
