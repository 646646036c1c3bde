"""A threaded WSGI server for the bots' HTTP endpoints (Slack's Events API, /healthz, /metrics)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger("teambot.http")


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: in a burst, further connections wait for a
    # SYN retransmit (1 s, then 3 s), past Slack's 3 s ack limit (bench/bot_load.py).
    request_queue_size = 128


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s - %s", self.address_string(), format % args)


def wsgi_server(app: Callable, host: str, port: int) -> WSGIServer:
    """`serve_forever()` runs it, `shutdown()` stops it; port 0 picks a free one."""
    return make_server(host, port, app, server_class=ThreadingWSGIServer, handler_class=_QuietHandler)
