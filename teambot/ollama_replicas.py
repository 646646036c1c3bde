"""Several Ollama servers behind one URL: `teambot services up --ollama-replicas N`.

Replica i (1…N) is an `ollama serve` of its own on the i-th port after TEAMBOT_OLLAMA_URL's
(`core.servers.ollama_replica_urls`), with its own models (data_dir/ollama-<i>/models), pid file
and log, as if on a machine of its own; haproxy (`teambot.balancer`) listens on
TEAMBOT_OLLAMA_URL itself, so every client keeps using the one URL. Models are created on each
replica directly: the dev model by `teambot.devmodel`, fine-tunes by `teambot publish`.

A replica that dies is taken out of the balancer within two seconds; `services up` again
restarts it on its models, and the balancer sends it requests again a second after it answers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from core import readiness
from core.servers import OLLAMA, ollama_replica_urls
from core.settings import Settings
from teambot import services
from teambot.balancer import Balancer


@dataclass(frozen=True)
class Replica:
    index: int
    url: str

    @property
    def name(self) -> str:
        return f"ollama-{self.index}"

    @property
    def address(self) -> str:
        return self.url.split("://", 1)[1]

    def models_dir(self, settings: Settings) -> Path:
        return settings.data_dir / self.name / "models"

    def pid_file(self, settings: Settings) -> Path:
        return settings.data_dir / "run" / f"{self.name}.pid"

    def log_file(self, settings: Settings) -> Path:
        return settings.data_dir / "logs" / f"{self.name}.log"

    def is_ready(self, timeout: float = 2.0) -> bool:
        return readiness.ollama_ready(self.url, timeout=timeout)


def replicas(settings: Settings) -> list[Replica]:
    """The replicas configured (TEAMBOT_OLLAMA_REPLICAS) or started with this data dir; [] for one server."""
    return [Replica(i, url) for i, url in enumerate(ollama_replica_urls(settings), 1)]


def balancer(settings: Settings) -> Balancer:
    return Balancer(
        name="ollama", port=urlsplit(settings.ollama_url).port or 11434,
        servers=tuple((r.name, r.address) for r in replicas(settings)),
        health_path=OLLAMA.health_path, data_dir=settings.data_dir,
    )


def start_replica(settings: Settings, replica: Replica, log=print, wait: float = 120.0) -> str:
    """Start one replica unless it answers already: 'started' or 'running'."""
    if replica.is_ready():
        return "running"
    binary = services.build(OLLAMA, settings, log=log)
    models = replica.models_dir(settings)
    models.mkdir(parents=True, exist_ok=True)
    services.launch(
        replica.name, [str(binary), "serve"], services.ollama_env(settings, replica.address, models),
        pid_file=replica.pid_file(settings), log_file=replica.log_file(settings),
        ready=lambda: replica.is_ready(timeout=1.0), wait=wait,
    )
    return "started"


def start(settings: Settings, log=print) -> dict[str, str]:
    """Start the replicas that do not answer (a killed one comes back on its models), then the
    balancer in front of them; what happened to each, by name."""
    states = {r.name: start_replica(settings, r, log=log) for r in replicas(settings)}
    states["ollama-haproxy"] = balancer(settings).start()
    return states


def stop(settings: Settings) -> dict[str, str]:
    """Stop the balancer, then the replicas ('stopped' or 'not running' each); {} for one server."""
    found = replicas(settings)
    if not found:
        return {}
    states = {"ollama-haproxy": balancer(settings).stop()}
    for replica in found:
        states[replica.name] = services.terminate(replica.pid_file(settings))
    return states


def kill(settings: Settings, replica: Replica, signal_number: int) -> None:
    """Send a signal to a replica and the model runners it started (a fault test's crash)."""
    os.killpg(services.read_pid(replica.pid_file(settings)), signal_number)


def status(settings: Settings) -> dict[str, dict[str, object]]:
    """The balancer (as `ollama`, at ollama_url) and each replica: whether it answers, whether we
    run it, and its state in the balancer (`haproxy`: UP, DOWN…); {} for one server."""
    found = replicas(settings)
    if not found:
        return {}
    lb = balancer(settings)
    seen = lb.server_states()
    up = sum(1 for r in found if seen.get(r.name, {}).get("status") == "UP")
    report: dict[str, dict[str, object]] = {
        "ollama": {
            "url": settings.ollama_url, "ready": services.is_ready(OLLAMA, settings), "managed": lb.is_running(),
            "haproxy": f"{up}/{len(found)} UP" if seen else "not running",
        }
    }
    for replica in found:
        report[replica.name] = {
            "url": replica.url, "ready": replica.is_ready(), "managed": services.is_running(replica.pid_file(settings)),
            "haproxy": seen.get(replica.name, {}).get("status", "unknown"),
        }
    return report
