"""haproxy in front of several servers of one kind, on one loopback URL.

Clients keep one URL; behind it, `balance leastconn` sends each request to the server with the
fewest in flight (a streamed answer holds its connection for seconds, so counting requests
beats taking turns). An HTTP health check every second takes a server out after two failures
and back in after one success. A request whose server refuses the connection, or dies before
answering anything, is sent again to another server (`retry-on conn-failure empty-response`,
`option redispatch 1`): safe for servers where a replayed request only does the work again
(Ollama generating, a bot answering an event Slack would redeliver anyway). A response that
has begun cannot be replayed; the client sees it cut off.

haproxy (Debian's `haproxy` package) runs in the foreground as a process of ours, with a pid file
and a log like the servers of `teambot.services`; the config is written to
data_dir/run/<name>-haproxy.cfg on every start. Each server's state comes from haproxy's stats
socket (`show stat`).

A server may be health-checked on a port of its own: a Slack bot answers /healthz on its health
listener (TEAMBOT_HEALTH_PORT), not next to its events endpoint.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from teambot import services

HAPROXY = "haproxy"
# Long enough for the slowest streamed answer; the client's own timeout ends it sooner.
STREAM_TIMEOUT = "10m"
MONITOR_PATH = "/haproxy-alive"  # answered by haproxy itself: is the balancer up
# A bot's /healthz asks Weaviate (REST, gRPC) and Ollama in turn, up to 2 s each on a loaded
# machine; a dead server is still seen at once (connection refused).
CHECK_TIMEOUT = "7s"
# Request bodies (prompts with their documents) up to this size can be replayed on another server.
BUFFER_BYTES = 65536
_SOCKET_PATH_MAX = 100  # AF_UNIX paths are at most 107 bytes


class BalancerError(services.ServiceError):
    pass


@dataclass(frozen=True)
class Balancer:
    """haproxy on 127.0.0.1:`port`, spreading requests over `servers` ((name, host:port) pairs)
    that answer 200 at `health_path` when healthy; a (name, host:port, check port) triple is
    health-checked on that port of the same host instead."""

    name: str
    port: int
    servers: tuple[tuple[str, str] | tuple[str, str, int], ...]
    health_path: str
    data_dir: Path

    @property
    def config_file(self) -> Path:
        return self.data_dir / "run" / f"{self.name}-haproxy.cfg"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "run" / f"{self.name}-haproxy.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / f"{self.name}-haproxy.log"

    @property
    def stats_socket(self) -> Path:
        path = self.data_dir / "run" / f"{self.name}-haproxy.sock"
        if len(str(path)) <= _SOCKET_PATH_MAX:
            return path
        tag = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"teambot-{tag}.sock"

    def config(self) -> str:
        servers = "".join(_server_line(*server) for server in self.servers)
        return f"""\
# Written by teambot (teambot/balancer.py) on every start; edits are lost.
global
    log stderr format raw local0 info
    stats socket {self.stats_socket} mode 600 level admin
    tune.bufsize {BUFFER_BYTES}

defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect 2s
    timeout client {STREAM_TIMEOUT}
    timeout server {STREAM_TIMEOUT}
    timeout http-request 30s
    timeout queue 30s
    timeout check {CHECK_TIMEOUT}
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response

frontend {self.name}
    bind 127.0.0.1:{self.port}
    monitor-uri {MONITOR_PATH}
    default_backend {self.name}-servers

backend {self.name}-servers
    balance leastconn
    option httpchk GET {self.health_path}
    http-check expect status 200
    default-server check inter 1s fall 2 rise 1
{servers}"""

    def is_running(self) -> bool:
        return services.is_running(self.pid_file)

    def start(self, wait: float = 15.0) -> str:
        """Start haproxy, or restart it when its servers changed: 'started', 'running' or 'restarted'."""
        binary = shutil.which(HAPROXY) or shutil.which(HAPROXY, path="/usr/sbin:/usr/local/sbin")
        if binary is None:
            raise BalancerError("haproxy is not installed: apt-get install haproxy (scripts/bootstrap.sh does)")
        text = self.config()
        state = "started"
        if self.is_running():
            if self.config_file.read_text() == text:
                return "running"
            services.terminate(self.pid_file)
            state = "restarted"
        if _port_taken(self.port):
            raise BalancerError(
                f"something already listens on 127.0.0.1:{self.port}, where the {self.name} balancer goes "
                "(a single server from an earlier `teambot services up`? stop it with `teambot services down`)"
            )
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(text)
        check = subprocess.run([binary, "-c", "-q", "-f", str(self.config_file)], capture_output=True, text=True)
        if check.returncode != 0:
            raise BalancerError(f"haproxy rejected {self.config_file}:\n{(check.stdout + check.stderr).strip()[-800:]}")
        services.launch(
            f"{self.name} balancer (haproxy)", [binary, "-W", "-db", "-f", str(self.config_file)], {},
            pid_file=self.pid_file, log_file=self.log_file, ready=self._answers, wait=wait,
        )
        return state

    def stop(self) -> str:
        """'stopped' or 'not running'."""
        return services.terminate(self.pid_file, timeout=10.0)

    def server_states(self) -> dict[str, dict[str, object]]:
        """Each server as haproxy sees it: status (UP, DOWN, `UP 1/2` while a check fails…),
        requests in flight and served in all, and those sent on to another server after this one
        refused them (`redispatched`); {} when haproxy does not answer."""
        try:
            table = self._command("show stat")
        except OSError:
            return {}
        rows = csv.DictReader(table.lstrip("# ").splitlines())
        return {
            row["svname"]: {
                "status": row["status"], "in_flight": int(row["scur"] or 0), "served": int(row["stot"] or 0),
                "redispatched": int(row["wredis"] or 0),
            }
            for row in rows
            if row.get("pxname") == f"{self.name}-servers" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def _answers(self) -> bool:
        """haproxy lists its servers on the stats socket and answers HTTP on its port itself (its
        monitor URI: no request reaches a server, whose counts stay the clients')."""
        if not self.server_states():
            return False
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{MONITOR_PATH}", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _command(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(str(self.stats_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()


def _server_line(name: str, address: str, check_port: int | None = None) -> str:
    return f"    server {name} {address}" + (f" port {check_port}" if check_port else "") + "\n"


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0
