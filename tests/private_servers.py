"""Private Weaviate and Ollama servers for fault tests, and a stand-in Ollama that misbehaves.

The shared servers (8080/11434) serve every other test and must never be stopped, so tests
that stop and restart servers start their own on free loopback ports with their own data
dirs, and stop them when done.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from bench.harness import free_port_block
from teambot import devmodel, services
from core.settings import Settings, load_settings


def private_settings(data_dir: Path, **overrides) -> Settings:
    rest = free_port_block(5)
    grpc = free_port_block(1, taken=set(range(rest, rest + 5)))
    ollama = free_port_block(1, taken=set(range(rest, rest + 5)) | {grpc})
    return load_settings(**{
        "weaviate_url": f"http://127.0.0.1:{rest}", "weaviate_grpc_port": grpc,
        "ollama_url": f"http://127.0.0.1:{ollama}", "data_dir": data_dir,
        "feedback_db_url": f"sqlite:///{data_dir / 'feedback.db'}",
        # Short prompts and answers: each generation on the CPU costs seconds.
        "max_answer_tokens": 16, "top_k": 2, "user_questions_per_minute": 0, "channel_questions_per_minute": 0,
        **overrides,
    })


def start(service: services.Service, settings: Settings) -> None:
    state = services.start(service, settings, log=lambda _m: None)
    assert state == "started", f"{service.name} at {service.url(settings)} was already answering ({state})"


@contextmanager
def private_servers(data_dir: Path, **overrides) -> Iterator[Settings]:
    """Weaviate and Ollama (with the dev model) of our own; stopped on exit."""
    settings = private_settings(data_dir, **overrides)
    try:
        for service in services.SERVICES:
            start(service, settings)
        devmodel.ensure_dev_model(settings, log=lambda _m: None)
        yield settings
    finally:
        for service in services.SERVICES:
            with suppress(Exception):
                services.stop(service, settings)


class FakeOllama:
    """An HTTP server where Ollama would be, counting chat requests. Modes:
    `hang` (accept the request, never answer), `fail` (503, as Ollama under overload),
    `drip` (stream a word every 50 ms, without end, as a model stuck in a loop would),
    `forward` (pass to a real Ollama at `upstream`). `fail_next` makes the next N chat
    requests fail before the mode applies. `disconnected` is set once a dripping stream's
    client has gone away."""

    def __init__(self, mode: str = "hang", upstream: str = "") -> None:
        self.mode, self.upstream = mode, upstream
        self.fail_next = 0
        self.chat_requests = 0
        self.disconnected = threading.Event()
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeOllama":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._released.set()  # let hanging requests go
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002
                pass

            def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, body: bytes | None) -> None:
                response = httpx.request(
                    self.command, fake.upstream + self.path, content=body, timeout=300,
                    headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
                )
                content_type = response.headers.get("Content-Type", "application/json")
                self._reply(response.status_code, response.content, content_type)

            def do_GET(self) -> None:
                if fake.upstream:
                    self._forward(None)
                else:
                    self._reply(200, json.dumps({"version": "0.0.0-fake"}).encode())

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/api/chat":
                    return self._forward(body) if fake.upstream else self._reply(404, b'{"error":"not found"}')
                with fake._lock:
                    fake.chat_requests += 1
                    failing = fake.fail_next > 0 or fake.mode == "fail"
                    fake.fail_next = max(0, fake.fail_next - 1)
                if failing:
                    return self._reply(503, json.dumps({"error": "server busy, please try again"}).encode())
                if fake.mode == "hang":
                    fake._released.wait()
                    return
                if fake.mode == "drip":
                    return self._drip(json.loads(body)["model"])
                self._forward(body)

            def _drip(self, model: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                n = 0
                while not fake._released.is_set():
                    line = {"model": model, "created_at": "2026-12-01T00:00:00Z", "done": False,
                            "message": {"role": "assistant", "content": f"step{n} "}}
                    try:
                        self.wfile.write(json.dumps(line).encode() + b"\n")
                        self.wfile.flush()
                    except OSError:  # the client hung up: what a cut-off generation must do
                        fake.disconnected.set()
                        return
                    n += 1
                    time.sleep(0.05)

        return Handler
