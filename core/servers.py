"""The two servers teambot depends on, Weaviate and Ollama: where each answers and whether it is ready.

Which binary and data paths `teambot services` uses for each lives here too, so the answering
path can probe a server without importing the code that builds and starts them.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import ollama

from core import readiness
from core.settings import Settings


@dataclass(frozen=True)
class Service:
    name: str
    module: str  # go install target
    binary: str
    health_path: str

    def version(self, settings: Settings) -> str:
        return getattr(settings, f"{self.name}_version")

    def url(self, settings: Settings) -> str:
        return getattr(settings, f"{self.name}_url")

    def binary_path(self, settings: Settings) -> Path:
        variant = f"-{cpu_variant()[0]}" if self.name == "ollama" else ""
        return settings.cache_dir / "bin" / f"{self.name}-{self.version(settings)}{variant}" / self.binary

    def pid_file(self, settings: Settings) -> Path:
        return settings.data_dir / "run" / f"{self.name}.pid"

    def log_file(self, settings: Settings) -> Path:
        return settings.data_dir / "logs" / f"{self.name}.log"


WEAVIATE = Service("weaviate", "github.com/weaviate/weaviate/cmd/weaviate-server", "weaviate-server",
                   readiness.WEAVIATE_READY)
OLLAMA = Service("ollama", "github.com/ollama/ollama", "ollama", readiness.OLLAMA_VERSION)
SERVICES = (WEAVIATE, OLLAMA)


def cpu_variant() -> tuple[str, str]:
    """(cache-key suffix, C flags) for building Ollama's ggml.

    A plain cgo build compiles ggml's CPU kernels for the compiler's baseline (SSE2 on x86-64),
    about ten times slower than with AVX2/FMA; x86-64-v3 enables them on any CPU that has them.
    """
    if platform.machine() in ("x86_64", "AMD64"):
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            flags = ""
        if all(f" {flag}" in flags for flag in ("avx2", "fma", "f16c")):
            return "x86-64-v3", "-O3 -march=x86-64-v3"
    return "generic", "-O3"


def is_ready(service: Service, settings: Settings, timeout: float = 2.0) -> bool:
    """Whether every port a client of the configured server uses answers (`core.readiness`)."""
    if service is WEAVIATE:
        return readiness.weaviate_ready(settings.weaviate_url, settings.weaviate_grpc_port,
                                        api_key=settings.weaviate_key, timeout=timeout)
    return readiness.ollama_ready(service.url(settings), timeout=timeout)


def has_model(client: ollama.Client, name: str) -> bool:
    """Whether the Ollama server behind `client` has the model `name` (with or without `:latest`)."""
    wanted = {name, f"{name}:latest"}
    return any(m.model in wanted for m in client.list().models)


# Several Ollama servers behind one URL (`teambot services up --ollama-replicas N`): replica i
# (1…N) answers on the i-th port after TEAMBOT_OLLAMA_URL's, where a balancer listens, and has a
# pid file data_dir/run/ollama-<i>.pid while teambot runs it.
_REPLICA_PID = re.compile(r"ollama-(\d+)\.pid")


def ollama_replica_urls(settings: Settings) -> list[str]:
    """The Ollama servers behind the balancer at ollama_url: TEAMBOT_OLLAMA_REPLICAS of them, or as
    many as `services up --ollama-replicas` started with this data dir; [] for a single server."""
    count = settings.ollama_replicas
    if count == 1:
        pid_files = (settings.data_dir / "run").glob("ollama-*.pid")
        count = max((int(m[1]) for p in pid_files if (m := _REPLICA_PID.fullmatch(p.name))), default=1)
    if count == 1:
        return []
    url = urlsplit(settings.ollama_url)
    host, port = url.hostname or "127.0.0.1", url.port or 11434
    return [f"{url.scheme}://{host}:{port + i}" for i in range(1, count + 1)]


def ollama_model_urls(settings: Settings) -> list[str]:
    """Where a model is created so that every server answering at ollama_url has it: each replica
    (directly, not through the balancer, which would reach one), or the one server."""
    return ollama_replica_urls(settings) or [settings.ollama_url]
