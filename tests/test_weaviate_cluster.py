"""A real 3-node Weaviate cluster on loopback (`teambot services up --weaviate-nodes 3`), with
teambot's collections replicated on all three and searched and written at QUORUM.

One scenario, as an operator would live it: index the handbook; kill the node the bot talks to
(SIGKILL) while questions keep coming and another folder is being ingested: every question is
answered (one that the cluster holds up while it elects a new Raft leader is sent again to the
other live node) and the ingest completes from the other nodes; restart the node on its data dir
and it catches up; then with two nodes down the bot says the knowledge base is unavailable, at
once, not at the search timeout.
Answers use the real pipeline up to the model (embedder, hybrid search, relevance gate, prompt),
with the scripted generator in Ollama's place: the subject is the knowledge base.
"""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest
from typer.testing import CliRunner

from bench.harness import free_port_block
from core.errors import KnowledgeBaseUnavailable
from pipeline.indexing import Indexer
from pipeline.stores import admin_client, close_stores
from teambot import weaviate_cluster
from teambot.cli import app
from tests.conftest import HANDBOOK
from testing.doubles import ScriptedAnswers

QUESTIONS = [
    "Which tool do expense claims go in?",
    "How many days of paid vacation do full-time employees get?",
    "How do I roll back a deploy?",
    "Who do I page when production is down?",
]


def _same_counts(config, collection: str) -> int:
    """The objects each of the three nodes holds of `collection`, if all hold as many; else -1."""
    counts = weaviate_cluster.object_counts(config, 3, collection)
    return counts["weaviate-0"] if len(counts) == 3 and len(set(counts.values())) == 1 else -1


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return result


@pytest.fixture(scope="module")
def cluster(settings, weaviate, tmp_path_factory):
    base = free_port_block(weaviate_cluster.INTERNAL_OFFSET + 12)
    data = tmp_path_factory.mktemp("cluster")
    config = settings.model_copy(update={
        "data_dir": data, "weaviate_url": f"http://127.0.0.1:{base}", "weaviate_grpc_port": base + 50,
        "weaviate_replication_factor": 3, "weaviate_consistency": "QUORUM", "retry_backoff": 0.2,
    })
    config = config.model_copy(update={"weaviate_peers": weaviate_cluster.peers_setting(config, 3).split(",")})
    env = {"TEAMBOT_DATA_DIR": str(data), "TEAMBOT_WEAVIATE_URL": config.weaviate_url,
           "TEAMBOT_WEAVIATE_GRPC_PORT": str(config.weaviate_grpc_port), "TEAMBOT_OLLAMA_URL": settings.ollama_url}
    # The nodes API counts objects once they are flushed from memory to disk, and a node that was
    # down is compared with the others every ASYNC_REPLICATION_FREQUENCY (30 s by default): both
    # soon, for the test (the nodes inherit them, also node 0 when the test restarts it).
    flush = pytest.MonkeyPatch()
    flush.setenv("PERSISTENCE_MEMTABLES_FLUSH_IDLE_AFTER_SECONDS", "2")
    flush.setenv("ASYNC_REPLICATION_FREQUENCY", "2s")
    flush.setenv("ASYNC_REPLICATION_ALIVE_NODES_CHECKING_FREQUENCY", "1s")
    up = CliRunner().invoke(app, ["services", "up", "--weaviate-nodes", "3", "--no-model"], env=env)
    try:
        assert up.exit_code == 0, up.output
        yield config, env
    finally:
        close_stores()
        weaviate_cluster.stop(config)
        flush.undo()


def test_a_replicated_knowledge_base_survives_a_node_and_says_so_when_two_are_gone(cluster, tmp_path):
    config, env = cluster
    members = weaviate_cluster.nodes(config, 3)
    status = CliRunner().invoke(app, ["services", "status", "--json"], env=env)
    report = json.loads(status.output)
    assert [report[n.name]["cluster_status"] for n in members] == ["HEALTHY"] * 3
    assert all(report[n.name]["ready"] for n in members)

    docs = tmp_path / "handbook"
    shutil.copytree(HANDBOOK, docs)
    assert Indexer(config, "Handbook").ingest([docs]).indexed
    client = admin_client(config)
    try:
        target = client.alias.get(alias_name="Handbook").collection
        replication = client.collections.use(target).config.get().replication_config
    finally:
        client.close()
    assert replication.factor == 3
    # A copy on each node (the nodes API counts objects lazily: a few seconds late).
    _wait(lambda: _same_counts(config, target) > 0, 60, "every node to count the handbook")

    service = ScriptedAnswers(config, reply="See the handbook [1].", pipeline=True)
    answered, failures, stop = [], [], threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            question = QUESTIONS[len(answered) % len(QUESTIONS)]
            try:
                answer = service.ask(question, collection="Handbook")
                answered.append(answer)
                assert answer.sources, question
            except Exception as exc:  # noqa: BLE001 - collected, asserted below
                failures.append(exc)
            time.sleep(0.1)

    more = tmp_path / "runbooks"
    more.mkdir()
    for n in range(12):
        (more / f"runbook-{n:02d}.md").write_text(
            f"# Runbook {n}\n\n" + "\n\n".join(f"## Step {k}\n\nRestart worker pool {n}-{k} after draining its "
                                                f"queue, then check the dashboard for errors." for k in range(4)))
    ingest: dict = {}
    underway, killed = threading.Event(), threading.Event()

    def on_progress(_progress) -> None:
        # The ingest holds on its first step until node 0 is dead: the kill lands mid-run, always.
        underway.set()
        killed.wait(60)

    asker = threading.Thread(target=keep_asking)
    writer = threading.Thread(target=lambda: ingest.update(
        report=Indexer(config, "Runbooks").ingest([more], on_progress=on_progress)))
    asker.start()
    _wait(lambda: len(answered) >= 3, 60, "answers before the kill")
    writer.start()
    assert underway.wait(120), "the ingest did not begin"
    weaviate_cluster.kill_node(config, members[0])  # the node every client was talking to
    killed.set()
    before = len(answered)
    writer.join(timeout=180)
    _wait(lambda: len(answered) >= before + 8, 120, "answers after the kill")
    stop.set()
    asker.join()
    assert not failures, failures[:3]
    assert not writer.is_alive() and len(ingest["report"].indexed) == 12, ingest

    # Restarted on its data dir, the node rejoins and catches up on what it missed.
    weaviate_cluster.start(config, 3)
    client = admin_client(config)
    try:
        runbooks = client.alias.get(alias_name="Runbooks").collection
    finally:
        client.close()
    written = ingest["report"].chunks_written
    _wait(lambda: _same_counts(config, runbooks) == written, 120, "node 0 to catch up")

    # Two nodes down: no quorum. A clear error, soon: the search is not left to its timeout.
    for node in members[1:]:
        weaviate_cluster.kill_node(config, node)
    started = time.monotonic()
    with pytest.raises(KnowledgeBaseUnavailable) as caught:
        service.ask(QUESTIONS[0], collection="Handbook")
    took = time.monotonic() - started
    assert took < config.retrieval_timeout / 2, took
    assert caught.value.user_message == "The knowledge base is unavailable, try again shortly."
    status = CliRunner().invoke(app, ["services", "status"], env=env)
    assert status.exit_code == 1 and "weaviate-1 DOWN" in status.output
