"""When a server teambot talks to is up: every port its clients use answers a real request.

Weaviate is up when its REST API says ready *and* its gRPC port answers a health check: the
client needs both, and gRPC opens after REST (a node restarted on its data dir was once declared
up while gRPC still refused). Ollama is up when `/api/version` answers and, where a model is
expected, the model is listed. One check per kind and one wait, shared by `teambot services`,
the cluster and replica code, the bots' health endpoint and the test fixtures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

WEAVIATE_READY = "/v1/.well-known/ready"
# A cluster node reports not ready while the cluster elects a Raft leader, yet serves searches
# and writes: a client picking a usable node asks for `live`.
WEAVIATE_LIVE = "/v1/.well-known/live"
OLLAMA_VERSION = "/api/version"
POLL = 0.25
# Every gRPC channel teambot opens gets subchannels of its own. gRPC shares connections between
# channels to the same address by default, and with them a dead connection's reconnect backoff:
# a client made right after a Weaviate node restarted inherited an older client's failure and
# was refused for seconds while the node served (the cluster test's 'Connection refused').
GRPC_CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


class ServiceError(RuntimeError):
    """A server could not be started or did not come up; the message says which and where to look."""


def http_ok(url: str, *, headers: dict[str, str] | None = None, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def bearer(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def grpc_serving(host: str, port: int, *, api_key: str | None = None, timeout: float = 1.0) -> bool:
    """Whether a gRPC server answers the standard health check (`grpc.health.v1.Health/Check`)
    with SERVING: the call weaviate-client makes on connecting, with its messages."""
    import grpc
    from weaviate.proto.v1 import health_weaviate_pb2 as health

    metadata = [("authorization", f"Bearer {api_key}")] if api_key else None
    with grpc.insecure_channel(f"{host}:{port}", options=GRPC_CHANNEL_OPTIONS) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=health.WeaviateHealthCheckRequest.SerializeToString,
            response_deserializer=health.WeaviateHealthCheckResponse.FromString,
        )
        try:
            reply = check(health.WeaviateHealthCheckRequest(), timeout=timeout, metadata=metadata)
        except grpc.RpcError:
            return False
    return reply.status == health.WeaviateHealthCheckResponse.SERVING


def weaviate_ready(url: str, grpc_port: int, *, api_key: str | None = None, path: str = WEAVIATE_READY,
                   timeout: float = 1.0) -> bool:
    """Whether the Weaviate node at `url` answers `path` with 200 and its gRPC port is serving."""
    return (http_ok(url + path, headers=bearer(api_key), timeout=timeout)
            and grpc_serving(urlsplit(url).hostname or "127.0.0.1", grpc_port, api_key=api_key, timeout=timeout))


def ollama_ready(url: str, model: str | None = None, *, timeout: float = 1.0) -> bool:
    """Whether the Ollama server at `url` answers, and lists `model` (with or without `:latest`) if given."""
    if model is None:
        return http_ok(url + OLLAMA_VERSION, timeout=timeout)
    try:
        response = httpx.get(url + "/api/tags", timeout=timeout)
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    wanted = {model, f"{model}:latest"}
    return any(m.get("model", m.get("name")) in wanted for m in response.json().get("models", []))


def wait_until_ready(
    ready: Callable[[], bool], *, what: str, timeout: float, failed: Callable[[], str | None] | None = None,
    poll: float = POLL,
) -> None:
    """Return once `ready()` holds; ServiceError after `timeout` seconds, or at once when `failed()`
    names a reason (the process exited)."""
    deadline = time.monotonic() + timeout
    while True:
        if failed is not None and (reason := failed()):
            raise ServiceError(reason)
        if ready():
            return
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} did not become ready within {timeout:.0f}s")
        time.sleep(poll)
