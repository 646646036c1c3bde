"""Real Weaviate and Ollama servers on loopback, built from source with `go install`.

No Docker engine is assumed. Binaries are cached under `cache_dir/bin/<name>-<version>/`, so
only the first run pays for the build. A server already answering at the configured URL is
used as it is and never stopped by us.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from core.readiness import ServiceError, http_ok, wait_until_ready
from core.servers import OLLAMA, SERVICES, WEAVIATE, Service, cpu_variant, is_ready
from core.settings import Settings


def build(service: Service, settings: Settings, log=print) -> Path:
    """`go install` the pinned tag once; later calls return the cached binary."""
    target = service.binary_path(settings)
    if target.exists():
        return target
    if shutil.which("go") is None:
        raise ServiceError(f"building {service.name} needs the Go toolchain (`go`) on PATH")
    version = service.version(settings)
    env = {**os.environ, "CGO_ENABLED": "1"}
    if service is OLLAMA:
        env["CGO_CFLAGS"] = env["CGO_CXXFLAGS"] = cpu_variant()[1]
        env["CPATH"] = os.pathsep.join(filter(None, [str(_llama_vendor_headers(settings)), env.get("CPATH")]))
    log(f"building {service.name} {version} with go install (first run only, several minutes)…")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"teambot-{service.name}-") as gobin:
        env["GOBIN"] = gobin
        proc = subprocess.run(
            ["go", "install", f"{service.module}@{version}"], env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise ServiceError(f"go install of {service.name} {version} failed:\n{tail}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(gobin) / service.binary), target)
    log(f"built {service.name} {version} in {time.monotonic() - started:.0f}s → {target}")
    return target


MINIAUDIO_SDIST = "miniaudio==1.71"  # carries miniaudio.h 0.11.25, the API llama.cpp's mtmd uses


def _llama_vendor_headers(settings: Settings) -> Path:
    """Headers of llama.cpp's `vendor/` folder, which Go module zips leave out.

    nlohmann/json and stb come from Debian packages; miniaudio.h from the `miniaudio` sdist on PyPI.
    """
    missing = [pkg for header, pkg in (
        ("/usr/include/nlohmann/json_fwd.hpp", "nlohmann-json3-dev"),
        ("/usr/include/stb/stb_image.h", "libstb-dev"),
    ) if not Path(header).exists()]
    if missing:
        raise ServiceError(f"building ollama needs C headers: apt-get install {' '.join(missing)}")
    include = settings.cache_dir / "include"
    header = include / "miniaudio" / "miniaudio.h"
    if header.exists():
        return include
    with tempfile.TemporaryDirectory(prefix="teambot-miniaudio-") as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", tmp, MINIAUDIO_SDIST],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise ServiceError(f"could not fetch {MINIAUDIO_SDIST} for miniaudio.h:\n{proc.stderr[-800:]}")
        sdist = next(Path(tmp).glob("miniaudio-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("/miniaudio/miniaudio.h"))
            data = tar.extractfile(member).read()
    header.parent.mkdir(parents=True, exist_ok=True)
    header.write_bytes(data)
    return include


def weaviate_env(settings: Settings, data: Path, grpc_port: int, *, host: str, hostname: str,
                 cluster_password: str) -> dict[str, str]:
    """The environment of one Weaviate node (alone, or one of a cluster) keeping `data`."""
    api_key = settings.weaviate_key
    env = {
        "PERSISTENCE_DATA_PATH": str(data),
        "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "false" if api_key else "true",
        "DEFAULT_VECTORIZER_MODULE": "none",
        "ENABLE_MODULES": "",
        "GRPC_PORT": str(grpc_port),
        "CLUSTER_HOSTNAME": hostname,
        # Gossip and Raft on `host`, and the Go profiling listener (all interfaces otherwise) off.
        # gRPC has no host setting in v1.38: it listens on every interface, so set an API key
        # (below) or keep its port behind a firewall.
        "CLUSTER_ADVERTISE_ADDR": host,
        "CLUSTER_BIND_ADDR": host,
        "GO_PROFILING_DISABLE": "true",
        "CLUSTER_BASIC_AUTH_USERNAME": "teambot",
        "CLUSTER_BASIC_AUTH_PASSWORD": cluster_password,
        "DISABLE_TELEMETRY": "true",
        "LOG_LEVEL": "warning",
        "QUERY_DEFAULTS_LIMIT": "25",
    }
    if api_key:
        env |= {
            "AUTHENTICATION_APIKEY_ENABLED": "true", "AUTHENTICATION_APIKEY_ALLOWED_KEYS": api_key,
            "AUTHENTICATION_APIKEY_USERS": "teambot",
        }
    return env


def _command(service: Service, settings: Settings, binary: Path) -> tuple[list[str], dict[str, str]]:
    url = urlparse(service.url(settings))
    host, port = url.hostname or "127.0.0.1", url.port
    data = settings.data_dir / service.name
    data.mkdir(parents=True, exist_ok=True)
    if service is WEAVIATE:
        # A single node: gossip and Raft stay on loopback; the node-to-node data API also ignores
        # the bind address, so a password only this process knows keeps others out of it.
        env = weaviate_env(settings, data, settings.weaviate_grpc_port, host="127.0.0.1", hostname="teambot",
                           cluster_password=secrets.token_urlsafe(24))
        if (port or 8080) != 8080:
            # A second Weaviate on this machine (tests, another team) must not fight over the
            # cluster and Raft ports; it takes the four after its REST port.
            rest = port or 8080
            env |= {
                "CLUSTER_GOSSIP_BIND_PORT": str(rest + 1), "CLUSTER_DATA_BIND_PORT": str(rest + 2),
                "RAFT_PORT": str(rest + 3), "RAFT_INTERNAL_RPC_PORT": str(rest + 4),
            }
        return [str(binary), "--host", host, "--port", str(port or 8080), "--scheme", "http"], env
    return [str(binary), "serve"], ollama_env(settings, f"{host}:{port or 11434}", data / "models")


def ollama_env(settings: Settings, address: str, models: Path) -> dict[str, str]:
    """The environment of an `ollama serve` answering at `address` (host:port) from `models`."""
    env = {"OLLAMA_HOST": address, "OLLAMA_MODELS": str(models), "OLLAMA_KEEP_ALIVE": "30m", "OLLAMA_NOPRUNE": "1"}
    if settings.ollama_num_parallel:
        env["OLLAMA_NUM_PARALLEL"] = str(settings.ollama_num_parallel)
    return env


def start(service: Service, settings: Settings, log=print, wait: float = 120.0) -> str:
    """Start the service unless one already answers; returns 'running', 'external' or 'started',
    once every port its clients use answers."""
    if http_ok(service.url(settings) + service.health_path):
        # A server is there (ours, or another's), maybe still opening a port: wait for it, never
        # start a second one on the same ports and data.
        wait_until_ready(lambda: is_ready(service, settings, timeout=1.0), what=service.name, timeout=wait)
        pid = _read_pid(service, settings)
        return "running" if pid and _alive(pid) else "external"
    binary = build(service, settings, log=log)
    cmd, extra_env = _command(service, settings, binary)
    launch(
        service.name, cmd, extra_env, pid_file=service.pid_file(settings), log_file=service.log_file(settings),
        ready=lambda: is_ready(service, settings, timeout=1.0), wait=wait,
    )
    return "started"


def launch(
    name: str, cmd: list[str], env: dict[str, str], *, pid_file: Path, log_file: Path,
    ready: Callable[[], bool], wait: float = 120.0,
) -> None:
    """Run `cmd` in a session of its own (it and its children stop together), its output appended
    to `log_file` and its pid in `pid_file`; return once `ready()` holds."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(str(proc.pid))

    def exited() -> str | None:
        if proc.poll() is None:
            return None
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-10:])
        return f"{name} exited with code {proc.returncode}; log {log_file}:\n{tail}"

    wait_until_ready(ready, what=f"{name} (log {log_file})", timeout=wait, failed=exited)


def stop(service: Service, settings: Settings, timeout: float = 30.0) -> str:
    state = terminate(service.pid_file(settings), timeout)
    return "external" if state == "not running" and is_ready(service, settings) else state


def terminate(pid_file: Path, timeout: float = 30.0) -> str:
    """Stop the process group of a `launch`ed process (SIGTERM, then SIGKILL after `timeout`):
    'stopped' or 'not running'."""
    pid = read_pid(pid_file)
    if not pid or not _alive(pid):
        pid_file.unlink(missing_ok=True)
        return "not running"
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return "stopped"


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def is_running(pid_file: Path) -> bool:
    """Whether the process a pid file names is alive (a process this data dir started)."""
    pid = read_pid(pid_file)
    return bool(pid and _alive(pid))


def _read_pid(service: Service, settings: Settings) -> int | None:
    return read_pid(service.pid_file(settings))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; check its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def status(settings: Settings) -> dict[str, dict[str, object]]:
    report: dict[str, dict[str, object]] = {}
    for service in SERVICES:
        pid = _read_pid(service, settings)
        report[service.name] = {
            "url": service.url(settings),
            "ready": is_ready(service, settings),
            "managed": bool(pid and _alive(pid)),
            "binary_cached": service.binary_path(settings).exists(),
        }
    return report
