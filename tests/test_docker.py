"""Deployment files: the Dockerfile, docker/compose.yaml, the Ollama entrypoint and
.env.example. There is no Docker engine here, so these check what can be checked without one:
every file the builds and mounts need exists, the compose file is well-formed and consistent,
and its settings are valid teambot settings. `docker compose config` runs when a client with
the compose plugin is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bots.health import HEALTH_PATH
from core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with nothing set: the default."""
    return _DEFAULTED.sub(lambda m: m.group(2), value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_dockerfile_copies_only_files_that_exist_and_runs_the_bot_as_a_non_root_user():
    instructions = _instructions(DOCKERFILE)
    assert instructions[0] == ("FROM", "python:3.11-slim")
    copies = [args.split() for kind, args in instructions if kind == "COPY"]
    assert copies
    for *sources, _dest in copies:
        for source in sources:
            assert not source.startswith("--"), "COPY --from/--chown: extend this test"
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the build context"
    # Everything the package needs is copied: each package setuptools includes.
    copied = {s.rstrip("/") for *sources, _ in copies for s in sources}
    assert {"pyproject.toml", "uv.lock", "teambot", "core", "feedback", "pipeline", "bots", "training"} <= copied

    users = [args for kind, args in instructions if kind == "USER"]
    assert users and users[-1] not in ("root", "0")
    runs = " ".join(args for kind, args in instructions if kind == "RUN")
    assert "useradd" in runs and "onnx_embedder" in runs  # the embedder is in the image, not fetched at run time
    assert "uv export --frozen" in runs and "--extra train" not in runs  # locked versions, no training stack
    assert "pip install --no-deps ." in runs
    assert ("ENTRYPOINT", '["teambot"]') in instructions


def test_the_bot_image_installs_no_torch():
    """What the Dockerfile's `uv export` installs: the bot embeds on onnxruntime, without torch."""
    runs = " ".join(args for kind, args in _instructions(DOCKERFILE) if kind == "RUN")
    export = re.search(r"uv export ([^&]*?) -o ", runs)
    assert export, runs
    uv = Path(sys.executable).parent / "uv"
    locked = subprocess.run([str(uv), "export", *export.group(1).split(), "--no-header"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    names = {line.split("==")[0].strip() for line in locked.splitlines() if "==" in line}
    assert {"onnxruntime", "tokenizers", "haystack-ai", "slack-bolt"} <= names
    assert not names & {"torch", "transformers", "sentence-transformers", "nvidia-cublas-cu12", "triton"}, names


def test_compose_services_use_the_pinned_images_with_health_checks_and_volumes(compose):
    services = compose["services"]
    assert services["weaviate"]["image"] == "cr.weaviate.io/semitechnologies/weaviate:1.38.10"
    assert services["ollama"]["image"] == "ollama/ollama:0.24.0"
    for name in ("weaviate", "ollama", "bot"):
        health = services[name]["healthcheck"]
        assert health["test"] and health["interval"] and health["retries"] > 0, name
    declared = set(compose["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = _interpolate(volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services and condition == {"condition": "service_healthy"}
        if "build" in service:
            context = DOCKER / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE
    # Only the bot is reachable from outside (in the `cluster` profile, the balancer in front of the bots).
    assert [name for name, s in services.items() if s.get("ports")] == ["bot", "balancer"]
    assert services["balancer"]["profiles"] == ["cluster"]


def test_ollama_entrypoint_is_mounted_valid_shell_and_marks_the_model_ready(compose):
    ollama = compose["services"]["ollama"]
    script = DOCKER / "ollama-entrypoint.sh"
    mounted = dict(_interpolate(v).split(":")[:2] for v in ollama["volumes"])
    assert mounted["./ollama-entrypoint.sh"] == ollama["entrypoint"][-1]
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    marker = re.search(r"READY=(\S+)", text).group(1)
    assert marker in " ".join(ollama["healthcheck"]["test"])  # healthy only once the model is there
    assert 'ollama pull "$MODEL"' in text and "TEAMBOT_MODEL" in text


@pytest.mark.parametrize("name", ["bot", "discord"])
def test_the_bot_settings_in_compose_are_valid_and_the_health_check_asks_healthz(compose, name):
    bot = compose["services"][name]
    env = {k: _interpolate(str(v)) for k, v in bot["environment"].items()}
    settings = load_settings(**{k.removeprefix("TEAMBOT_").lower(): v for k, v in env.items()})
    assert settings.weaviate_url == "http://weaviate:8080" and settings.ollama_url == "http://ollama:11434"
    assert settings.model == _interpolate(compose["services"]["ollama"]["environment"]["TEAMBOT_MODEL"])
    # /healthz on the health listener, which stays on the container's loopback: never published.
    check = " ".join(bot["healthcheck"]["test"])
    assert f"127.0.0.1:{settings.health_port}{HEALTH_PATH}" in check and settings.health_host == "127.0.0.1"
    published = [int(_interpolate(p).split(":")[-1]) for p in bot.get("ports", [])]
    assert settings.health_port not in published
    if name == "bot":
        assert published == [settings.http_port] and bot["command"] == ["slack", "--http"]
    else:
        assert published == [] and bot["command"] == ["discord"]


CLUSTER = ["weaviate-1", "weaviate-2", "weaviate-3", "ollama-1", "ollama-2", "balancer", "postgres", "bot-1", "bot-2"]


def _haproxy_servers(config: str) -> dict[str, list[str]]:
    """backend name → its `server` lines (without the keyword)."""
    backends: dict[str, list[str]] = {}
    current = None
    for line in config.splitlines():
        words = line.split()
        if line[:1].strip() and words:  # a section header
            current = words[1] if words[0] == "backend" else None
            if current:
                backends[current] = []
        elif current and words[:1] == ["server"]:
            backends[current].append(" ".join(words[1:]))
    return backends


def test_the_cluster_profile_runs_three_weaviate_nodes_two_ollamas_and_two_bots_behind_haproxy(compose):
    services = compose["services"]
    assert [name for name, s in services.items() if "cluster" in s.get("profiles", [])] == CLUSTER
    # The single-server stack is untouched: no profile (the Discord bot's own aside).
    assert {name: s.get("profiles") for name, s in services.items() if name not in CLUSTER} == {
        "weaviate": None, "ollama": None, "bot": None, "discord": ["discord"], "sync": ["sync"],
    }

    # Weaviate: as teambot/weaviate_cluster.py runs one, and one basic-auth pair for all nodes.
    nodes = [services[f"weaviate-{i}"] for i in (1, 2, 3)]
    envs = [node["environment"] for node in nodes]
    raft = envs[0]["RAFT_PORT"]
    for i, (node, env) in enumerate(zip(nodes, envs), start=1):
        assert node["image"] == services["weaviate"]["image"] and node["healthcheck"]["test"]
        assert env["CLUSTER_HOSTNAME"] == f"weaviate-{i}" and env["RAFT_BOOTSTRAP_EXPECT"] == "3"
        assert env["RAFT_JOIN"] == f"weaviate-1:{raft},weaviate-2:{raft},weaviate-3:{raft}"
        assert env.get("CLUSTER_JOIN") == (None if i == 1 else f"weaviate-1:{envs[0]['CLUSTER_GOSSIP_BIND_PORT']}")
        assert (env["CLUSTER_BASIC_AUTH_USERNAME"], env["CLUSTER_BASIC_AUTH_PASSWORD"]) == (
            "${WEAVIATE_CLUSTER_USER:-teambot}", "${WEAVIATE_CLUSTER_PASSWORD:-}")
        assert f"weaviate-data-{i}:/var/lib/weaviate" in node["volumes"]

    # haproxy: both Ollama servers, both bots (health-checked on their health listener).
    balancer = services["balancer"]
    source = {target: source for source, target in (_interpolate(v).split(":")[:2] for v in balancer["volumes"])}
    config_file = DOCKER / source["/usr/local/etc/haproxy/haproxy.cfg"]  # where the official image reads it
    config = config_file.read_text()
    servers = _haproxy_servers(config)
    assert [s.split()[:2] for s in servers["ollama-servers"]] == [["ollama-1", "ollama-1:11434"],
                                                                  ["ollama-2", "ollama-2:11434"]]
    for name in ("ollama-1", "ollama-2"):
        assert services[name]["image"] == services["ollama"]["image"]
        assert services[name]["entrypoint"] == services["ollama"]["entrypoint"]
        assert balancer["depends_on"][name] == {"condition": "service_healthy"}

    # The bots: valid settings, all three nodes with three copies, Ollama through the balancer,
    # one PostgreSQL store, and started once all of that is healthy.
    for name in ("bot-1", "bot-2"):
        bot = services[name]
        env = {k: _interpolate(str(v)) for k, v in bot["environment"].items()}
        settings = load_settings(**{k.removeprefix("TEAMBOT_").lower(): v for k, v in env.items()})
        assert [url for url, _ in settings.weaviate_nodes] == [f"http://weaviate-{i}:8080" for i in (1, 2, 3)]
        assert settings.weaviate_replication_factor == 3
        assert settings.ollama_url == "http://balancer:11434"
        assert settings.feedback_url.startswith("postgresql+psycopg://teambot:")
        assert "@postgres:5432/teambot" in settings.feedback_url
        assert set(bot["depends_on"]) == {"weaviate-1", "weaviate-2", "weaviate-3", "balancer", "postgres"}
        assert all(c == {"condition": "service_healthy"} for c in bot["depends_on"].values())
        assert bot["command"] == ["slack", "--http"] and not bot.get("ports")  # reached through the balancer
        assert f"{name} {name}:{settings.http_port} port {settings.health_port}" in servers["bot-servers"]
        assert f"127.0.0.1:{settings.health_port}{HEALTH_PATH}" in " ".join(bot["healthcheck"]["test"])
        assert bot["volumes"] == [f"teambot-data-{name[-1]}:/data"]  # each its own data dir
    assert services["bot-1"]["environment"] == services["bot-2"]["environment"]
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]

    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if haproxy:  # the service names do not resolve here: haproxy starts them disabled, as in Docker before DNS
        check = subprocess.run([haproxy, "-c", "-f", str(config_file)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_env_example_lists_every_setting_and_loads_as_it_is():
    text = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?(TEAMBOT_[A-Z0-9_]+)=", text, flags=re.M))
    assert listed == {f"TEAMBOT_{name.upper()}" for name in Settings.model_fields}
    settings = Settings(_env_file=ROOT / ".env.example")  # copied to .env unchanged, it must load
    assert settings.model == "llama2:7b-chat"


def test_readme_production_section_uses_the_compose_file():
    readme = (ROOT / "README.md").read_text()
    assert "docker compose -f docker/compose.yaml" in readme and ".env.example" in readme


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="no docker client with the compose plugin",
)
def test_docker_compose_accepts_the_file_with_and_without_the_example_env():
    for extra in ([], ["--env-file", str(ROOT / ".env.example")]):
        command = ["docker", "compose", "-f", str(COMPOSE), *extra, "config", "--quiet"]
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 0, result.stderr
