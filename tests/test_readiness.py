"""A server teambot starts is up only when every port its clients use answers a real request.

A stand-in `weaviate-server` (tests/late_grpc_server.py) answers REST at once and opens gRPC only
on the test's cue, as a real node restarted on its data dir does: `services up` for one node and
for a cluster must not say "started" in between, since weaviate-client's first call then fails
with "gRPC … Connection refused". Ollama is up only with the expected model listed.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.harness import free_port_block
from core import readiness
from core.servers import WEAVIATE, is_ready
from core.settings import load_settings
from pipeline.stores import live_node
from teambot import services, weaviate_cluster
from tests.waiting import wait_until

STAND_IN = Path(__file__).with_name("late_grpc_server.py")


@pytest.fixture
def late_grpc(tmp_path, monkeypatch):
    """Settings whose cached Weaviate binary is the stand-in, and the file that opens its gRPC port."""
    gate = tmp_path / "open-grpc"
    monkeypatch.setenv("LATE_GRPC_GATE", str(gate))
    rest = free_port_block(3)
    grpc = free_port_block(3, taken=set(range(rest, rest + 3)))
    settings = load_settings(
        cache_dir=tmp_path / "cache", data_dir=tmp_path / "data", weaviate_url=f"http://127.0.0.1:{rest}",
        weaviate_grpc_port=grpc, weaviate_api_key=None,
    )
    binary = WEAVIATE.binary_path(settings)
    binary.parent.mkdir(parents=True)
    binary.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STAND_IN}" "$@"\n')
    binary.chmod(0o755)
    yield settings, gate
    services.stop(WEAVIATE, settings, timeout=5)
    weaviate_cluster.stop(settings)


def _start_in_background(start) -> tuple[threading.Thread, dict]:
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(state=start()), daemon=True)
    thread.start()
    return thread, result


def test_a_weaviate_is_not_started_until_its_grpc_port_serves(late_grpc):
    settings, gate = late_grpc
    thread, result = _start_in_background(lambda: services.start(WEAVIATE, settings, log=lambda _m: None, wait=120))
    wait_until(lambda: readiness.http_ok(settings.weaviate_url + readiness.WEAVIATE_READY), timeout=60)
    # REST says ready, gRPC refuses: not up, neither for `services up` nor for a client picking a node.
    assert not is_ready(WEAVIATE, settings)
    assert not readiness.grpc_serving("127.0.0.1", settings.weaviate_grpc_port)
    thread.join(timeout=1.0)
    assert thread.is_alive(), f"services.start returned {result} while gRPC still refused connections"

    gate.touch()
    thread.join(timeout=60)
    assert result == {"state": "started"}
    assert is_ready(WEAVIATE, settings)
    assert live_node(settings, wait=5) == (settings.weaviate_url, settings.weaviate_grpc_port)


def test_a_cluster_is_not_up_until_every_node_serves_grpc(late_grpc):
    settings, gate = late_grpc
    members = weaviate_cluster.nodes(settings, 3)
    thread, result = _start_in_background(lambda: weaviate_cluster.start(settings, 3, log=lambda _m: None, wait=120))
    wait_until(lambda: all(readiness.http_ok(n.url + readiness.WEAVIATE_READY) for n in members), timeout=60)
    assert not any(status["ready"] for status in weaviate_cluster.status(settings).values())
    thread.join(timeout=1.0)
    assert thread.is_alive(), f"the cluster was declared up ({result}) while gRPC still refused connections"

    gate.touch()
    thread.join(timeout=60)
    assert result == {"state": ["started"] * 3}
    assert all(status["ready"] for status in weaviate_cluster.status(settings).values())


def test_a_server_that_exits_while_starting_is_named_at_once(late_grpc, monkeypatch):
    settings, _gate = late_grpc
    monkeypatch.delenv("LATE_GRPC_GATE")  # the stand-in dies on its missing setting
    with pytest.raises(services.ServiceError, match=r"weaviate exited with code 1; log .*weaviate.log"):
        services.start(WEAVIATE, settings, log=lambda _m: None, wait=120)


class _Ollama(BaseHTTPRequestHandler):
    models: list[str] = []

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self) -> None:
        payload = {"/api/version": {"version": "0.24.0"},
                   "/api/tags": {"models": [{"name": m, "model": m} for m in self.models]}}.get(self.path)
        body = json.dumps(payload).encode()
        self.send_response(200 if payload else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_ollama_is_up_for_a_model_only_once_the_model_is_listed():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ollama)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert readiness.ollama_ready(url)
        assert not readiness.ollama_ready(url, "teambot-dev")
        _Ollama.models = ["other:latest", "teambot-dev:latest"]
        assert readiness.ollama_ready(url, "teambot-dev")
    finally:
        server.shutdown()
        server.server_close()
        _Ollama.models = []
    assert not readiness.ollama_ready(url)  # nothing listens any more


def test_waiting_gives_up_with_what_it_waited_for():
    with pytest.raises(readiness.ServiceError, match="the thing did not become ready within 0s"):
        readiness.wait_until_ready(lambda: False, what="the thing", timeout=0.3, poll=0.05)
