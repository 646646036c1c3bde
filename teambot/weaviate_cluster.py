"""A Weaviate cluster on one host, the way Weaviate's own dev scripts run one: `services up
--weaviate-nodes 3`.

Node i answers REST on the configured port + i and gRPC on the configured gRPC port + i; its
gossip, data, Raft and Raft RPC ports are four in a row from REST + 100 + 4i (Raft RPC must be
Raft + 1). Every node is told all Raft members (`RAFT_JOIN`) and how many to expect before
electing a leader (`RAFT_BOOTSTRAP_EXPECT`); nodes 1… join node 0's gossip. The node-to-node
APIs share one basic-auth password per cluster, kept in the data dir (owner-only), so a node
restarted later is let back in. Each node has its own data dir, pid file and log.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx

from core import readiness
from core.servers import WEAVIATE
from core.settings import Settings
from teambot import services

INTERNAL_OFFSET = 100  # node i's internal ports start at REST + INTERNAL_OFFSET + 4i
SECRET_FILE = "weaviate-cluster.secret"


@dataclass(frozen=True)
class Node:
    index: int
    host: str
    rest: int
    grpc: int

    @property
    def name(self) -> str:
        return f"weaviate-{self.index}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.rest}"

    @property
    def gossip(self) -> int:
        return self.rest - self.index + INTERNAL_OFFSET + 4 * self.index

    @property
    def raft(self) -> int:
        return self.gossip + 2

    def peer_setting(self) -> str:
        return f"{self.url}?grpc={self.grpc}"


def nodes(settings: Settings, count: int) -> list[Node]:
    url = urlparse(settings.weaviate_url)
    host, rest = url.hostname or "127.0.0.1", url.port or 8080
    return [Node(i, host, rest + i, settings.weaviate_grpc_port + i) for i in range(count)]


def peers_setting(settings: Settings, count: int) -> str:
    """TEAMBOT_WEAVIATE_PEERS for a cluster of `count` nodes started here."""
    return ",".join(n.peer_setting() for n in nodes(settings, count)[1:])


def _paths(settings: Settings, node: Node) -> tuple[Path, Path, Path]:
    """(data dir, pid file, log file) of a node."""
    return (settings.data_dir / node.name, settings.data_dir / "run" / f"{node.name}.pid",
            settings.data_dir / "logs" / f"{node.name}.log")


def cluster_secret(settings: Settings) -> str:
    path = settings.data_dir / "run" / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret)
    return secret


def node_env(settings: Settings, node: Node, members: list[Node]) -> dict[str, str]:
    data, _, _ = _paths(settings, node)
    env = services.weaviate_env(settings, data, node.grpc, host=node.host, hostname=node.name,
                                cluster_password=cluster_secret(settings)) | {
        "CLUSTER_IN_LOCALHOST": "true",
        "CLUSTER_GOSSIP_BIND_PORT": str(node.gossip),
        "CLUSTER_DATA_BIND_PORT": str(node.gossip + 1),
        "RAFT_PORT": str(node.raft),
        "RAFT_INTERNAL_RPC_PORT": str(node.raft + 1),
        "RAFT_JOIN": ",".join(f"{m.name}:{m.raft}" for m in members),
        "RAFT_BOOTSTRAP_EXPECT": str(len(members)),
    }
    if node.index:
        env["CLUSTER_JOIN"] = f"{members[0].host}:{members[0].gossip}"
    return env


def _get(url: str, settings: Settings, timeout: float = 2.0) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=timeout, headers=readiness.bearer(settings.weaviate_key))
    except httpx.HTTPError:
        return None


def _up(node: Node, settings: Settings) -> bool:
    """Whether the node is ready on REST (it has a Raft leader) and its gRPC port is serving."""
    return readiness.weaviate_ready(node.url, node.grpc, api_key=settings.weaviate_key)


def start_node(settings: Settings, node: Node, members: list[Node], log=print, wait: float = 120.0) -> str:
    """Start one node unless it answers already (its data dir kept: a restart rejoins); 'started'
    once its process answers on REST, or 'running'. `start` waits for the rest: a node's gRPC
    port may open only once the cluster has a Raft leader, which takes the other nodes up."""
    live = node.url + readiness.WEAVIATE_LIVE
    headers = readiness.bearer(settings.weaviate_key)
    if readiness.http_ok(live, headers=headers):  # its process is there (gRPC may follow): never a second
        return "running"
    binary = services.build(WEAVIATE, settings, log=log)
    data, pid_file, log_file = _paths(settings, node)
    data.mkdir(parents=True, exist_ok=True)
    services.launch(
        node.name, [str(binary), "--host", node.host, "--port", str(node.rest), "--scheme", "http"],
        node_env(settings, node, members), pid_file=pid_file, log_file=log_file,
        ready=lambda: readiness.http_ok(live, headers=headers), wait=wait,
    )
    return "started"


def start(settings: Settings, count: int, log=print, wait: float = 180.0) -> list[str]:
    """Start a `count`-node cluster (nodes already up are kept) and wait until every node is live,
    ready (Raft has a leader, which takes all of them up) with its gRPC port serving, and seen
    HEALTHY by the cluster; each node's state."""
    members = nodes(settings, count)
    states = [start_node(settings, n, members, log, wait) for n in members]
    deadline = time.monotonic() + wait
    for node in members:
        readiness.wait_until_ready(
            lambda node=node: _up(node, settings), timeout=max(deadline - time.monotonic(), 0),
            what=f"{node.name} at {node.url} (gRPC {node.grpc}; log {_paths(settings, node)[2]})",
        )
    try:
        readiness.wait_until_ready(
            lambda: set(cluster_health(settings, count).values()) == {"HEALTHY"},
            timeout=max(deadline - time.monotonic(), 0), what="the cluster", poll=0.5,
        )
    except services.ServiceError:
        raise services.ServiceError(f"the cluster is not healthy: {cluster_health(settings, count)}") from None
    return states


def cluster_health(settings: Settings, count: int) -> dict[str, str]:
    """Each member's status as the first node that answers sees it (HEALTHY, UNHEALTHY, …; DOWN
    for a member no live node lists)."""
    members = nodes(settings, count)
    seen: dict[str, str] = {}
    for node in members:
        response = _get(node.url + "/v1/nodes", settings)
        if response is not None and response.status_code == 200:
            seen = {n["name"]: n.get("status", "UNKNOWN") for n in response.json().get("nodes", [])}
            break
    return {n.name: seen.get(n.name, "DOWN") for n in members}


def object_counts(settings: Settings, count: int, collection: str) -> dict[str, int]:
    """Objects of a collection held by each node's own shards (`/v1/nodes?output=verbose`)."""
    counts: dict[str, int] = {}
    for node in nodes(settings, count):
        response = _get(f"{node.url}/v1/nodes/{collection}?output=verbose", settings)
        if response is None or response.status_code != 200:
            continue
        for listed in response.json().get("nodes", []):
            if listed["name"] == node.name:
                counts[node.name] = sum(s.get("objectCount", 0) for s in listed.get("shards") or [])
    return counts


def kill_node(settings: Settings, node: Node, sig: int = signal.SIGKILL) -> None:
    """Send a signal to a node (a fault test's crash)."""
    os.killpg(services.read_pid(_paths(settings, node)[1]), sig)


def running_nodes(settings: Settings) -> list[Node]:
    """The nodes this data dir has pid files for (a cluster started here), in order."""
    found = sorted((settings.data_dir / "run").glob("weaviate-*.pid"))
    count = max((int(p.stem.rsplit("-", 1)[1]) + 1 for p in found if p.stem.rsplit("-", 1)[1].isdigit()), default=0)
    return nodes(settings, count)


def stop(settings: Settings) -> list[tuple[str, str]]:
    """Stop the nodes started here; (name, what happened) each."""
    return [(node.name, services.terminate(_paths(settings, node)[1])) for node in running_nodes(settings)]


def status(settings: Settings) -> dict[str, dict[str, object]]:
    """Each node started here: URL, ready, and its status in the cluster."""
    members = running_nodes(settings)
    health = cluster_health(settings, len(members)) if members else {}
    return {
        n.name: {"url": n.url, "grpc_port": n.grpc, "ready": _up(n, settings),
                 "cluster_status": health.get(n.name, "DOWN")}
        for n in members
    }
