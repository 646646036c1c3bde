"""The HTTP server of the bots' endpoints (Slack's Events API, /healthz, /metrics): waitress.

A production WSGI server rather than the standard library's, which holds a thread per open
connection for as long as the client likes: 300 idle or half-sent requests held 300 threads.
waitress serves requests from a fixed pool of threads, closes a connection idle for
CHANNEL_TIMEOUT seconds, and stops accepting new ones past CONNECTION_LIMIT until some close.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from waitress import wasyncore
from waitress.server import create_server

log = logging.getLogger("teambot.http")

THREADS = 8  # handlers only verify and acknowledge; answers run on the conversation pool
CONNECTION_LIMIT = 256
CHANNEL_TIMEOUT = 30.0  # seconds a connection may sit without a request in progress
# A burst of Slack deliveries must not wait for a SYN retransmit (1 s, then 3 s), past Slack's
# 3 s ack limit (bench/bot_load.py).
BACKLOG = 128
MAX_BODY = 8 * 1024 * 1024  # waitress buffers a body whole (to disk past 512 KB) before the app sees it


class HttpServer:
    """`serve_forever()` runs it (on the caller's thread), `shutdown()` stops it from another one;
    `server_port` is the port it listens on (0 asks for a free one)."""

    def __init__(self, app: Callable, host: str, port: int, *, channel_timeout: float = CHANNEL_TIMEOUT,
                 connection_limit: int = CONNECTION_LIMIT, threads: int = THREADS, max_body: int = MAX_BODY) -> None:
        self._server = create_server(
            app, host=host, port=port, threads=threads, connection_limit=connection_limit,
            channel_timeout=channel_timeout, cleanup_interval=max(1, int(channel_timeout // 2)), backlog=BACKLOG,
            max_request_body_size=max_body, ident="teambot", expose_tracebacks=False,
        )
        self.server_port = int(self._server.effective_port)  # waitress gives it as a string
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        # The loop closes its sockets (the trigger among them) on its way out; shutdown() wakes it
        # through the trigger only while it is open: a closed descriptor's number may be reused.
        self._closing = threading.Lock()
        self._closed = False

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=poll_interval, map=self._server._map, count=1)
        finally:
            # On the loop's own thread: no socket is closed under a poll in progress.
            with self._closing:
                wasyncore.close_all(self._server._map)
                self._closed = True
            self._server.task_dispatcher.shutdown()
            self._stopped.set()

    def shutdown(self) -> None:
        self._stopping.set()
        with self._closing:
            if not self._closed:
                self._server.pull_trigger()
        self._stopped.wait()

    def server_close(self) -> None:
        """Nothing left to release after `shutdown` (kept for the callers' stdlib-server habits)."""


def wsgi_server(app: Callable, host: str, port: int, **limits) -> HttpServer:
    return HttpServer(app, host, port, **limits)
