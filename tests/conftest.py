"""Shared fixtures. Tests run against the real Weaviate and Ollama (`teambot services up`) and a
real PostgreSQL; a test that needs any server is marked `services` automatically, from the
fixtures it uses (directly or through other fixtures), so `pytest -m "not services"` is the
quick run that needs none."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _cli_logging_undone():
    """A test that runs the CLI gets its root handler (configure_logging): removed afterwards, so a
    bot's thread still logging after the test cannot write past pytest's capture onto the report."""
    from core.logging_setup import RedactingFormatter

    root = logging.getLogger()
    level = root.level
    yield
    for handler in list(root.handlers):
        if isinstance(handler.formatter, RedactingFormatter):
            root.removeHandler(handler)
    root.setLevel(level)

ROOT = Path(__file__).resolve().parent.parent
HANDBOOK = ROOT / "examples" / "handbook"


# Fixtures that need a real server running: Weaviate and/or Ollama (shared or private ones), PostgreSQL.
SERVER_FIXTURES = {"services", "weaviate", "handbook", "servers", "ollama_client", "postgres_url"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        needs = set(getattr(item, "fixturenames", ())) & SERVER_FIXTURES
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("store_url") == "postgresql":
            needs.add("postgres_url")  # fetched by store_url itself, for that parameter only
        if needs:
            item.add_marker(pytest.mark.services)


# A server the suite starts with (`teambot services up`) may still be opening a port: wait this long.
SERVER_WAIT = 60.0


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for tests: real servers from the environment, private data dir and feedback DB."""
    data = tmp_path_factory.mktemp("teambot-data")
    return load_settings(
        data_dir=data,
        feedback_db_url=f"sqlite:///{data / 'feedback.db'}",
        # Short answers keep the CPU-bound model quick; the behaviour under test is the same.
        max_answer_tokens=int(os.environ.get("TEAMBOT_TEST_MAX_TOKENS", "80")),
        # Tests ask far faster than people do; tests/test_security.py turns the limits on.
        user_questions_per_minute=0,
        channel_questions_per_minute=0,
    )


def _require(settings: Settings, *names: str) -> Settings:
    """`settings` once every port of the named servers answers (Weaviate: REST and gRPC; Ollama: the
    API with the configured model listed), as `teambot services up` waits for them."""
    from core import readiness, servers

    checks = {
        "Weaviate": lambda: servers.is_ready(servers.WEAVIATE, settings),
        "Ollama": lambda: readiness.ollama_ready(settings.ollama_url, settings.model),
    }
    try:
        readiness.wait_until_ready(lambda: all(checks[name]() for name in names), what=" and ".join(names),
                                   timeout=SERVER_WAIT)
    except readiness.ServiceError:
        missing = [name for name in names if not checks[name]()]
        pytest.fail(f"{' and '.join(missing)} not reachable: run `teambot services up` first", pytrace=False)
    return settings


@pytest.fixture(scope="session")
def weaviate(settings: Settings) -> Settings:
    """Settings, once the real Weaviate answers (indexing and search tests need no model)."""
    return _require(settings, "Weaviate")


@pytest.fixture(scope="session")
def services(settings: Settings) -> Settings:
    return _require(settings, "Weaviate", "Ollama")


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server (Debian's binaries, an unprivileged cluster in a temp dir) for the session."""
    from tests.postgres import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """An empty feedback database, on SQLite and on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.db'}"
    from tests.postgres import fresh_database

    return fresh_database(request.getfixturevalue("postgres_url"))


@dataclass
class Handbook:
    service: "AnswerService"  # noqa: F821
    collection: str
    docs: Path  # a private copy of examples/handbook that tests may change
    indexer: "Indexer"  # noqa: F821


def unique_collection(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def drop_collection(settings: Settings, name: str) -> None:
    from bench.harness import drop_collections

    drop_collections(settings, [name])


@pytest.fixture(scope="session")
def handbook(services: Settings, tmp_path_factory: pytest.TempPathFactory):
    """The sample handbook ingested into a fresh collection, and an AnswerService over it."""
    from pipeline.indexing import Indexer
    from pipeline.querying import AnswerService

    docs = tmp_path_factory.mktemp("handbook") / "handbook"
    shutil.copytree(HANDBOOK, docs)
    collection = unique_collection("Handbook")
    indexer = Indexer(services, collection)
    report = indexer.ingest([docs])
    assert not report.skipped, report.skipped
    yield Handbook(AnswerService(services), collection, docs, indexer)
    drop_collection(services, collection)
