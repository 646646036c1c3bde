"""Faults against real servers: Weaviate and Ollama stopped and restarted under a running Slack
bot, a generation that hangs, a flaky model server (retries, circuit breaker), an ingest killed
half-way, and a feedback writer killed mid-burst.

Servers that get stopped are private ones (free loopback ports, a temp data dir), never the
shared servers the other tests use.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from core.errors import KnowledgeBaseUnavailable, ModelTimeout, ModelUnavailable
from feedback.store import FeedbackStore
from pipeline.resilience import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpen, RetryPolicy, call
from teambot import services
from teambot.cli import app
from testing import slack_standin as slack
from tests.private_servers import FakeOllama, private_servers, start
from tests.slack_harness import metric_value, slack_http_bot, with_slack_secrets
from testing.slack_standin import SlackStandIn

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "Which tool do expense claims go in?"
COLLECTION = "FaultDocs"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------- retries and the breaker


def test_transient_failures_are_retried_with_growing_waits_then_given_up():
    calls, waits = [], []

    def flaky():
        calls.append(1)
        raise ConnectionError("connection refused")

    with pytest.raises(ConnectionError):
        call(flaky, policy=RetryPolicy(attempts=4, backoff=1.0), is_failure=lambda e: isinstance(e, ConnectionError),
             sleep=waits.append)
    assert len(calls) == 4 and len(waits) == 3
    for retry, wait in enumerate(waits, 1):  # exponential, with jitter in the upper half
        assert 2 ** (retry - 1) * 0.5 <= wait <= 2 ** (retry - 1)

    outcomes = iter([ConnectionError("refused"), "answer"])

    def recovers():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    policy = RetryPolicy(attempts=3, backoff=0)
    assert call(recovers, policy=policy, is_failure=lambda e: True, sleep=waits.append) == "answer"


def test_errors_that_are_not_server_failures_are_not_retried_and_do_not_trip_the_breaker():
    breaker = CircuitBreaker("weaviate", failure_threshold=1, cooldown=30)
    calls = []

    def buggy():
        calls.append(1)
        raise ValueError("a bug, not an outage")

    for _ in range(3):
        with pytest.raises(ValueError):
            call(buggy, policy=RetryPolicy(attempts=3), breaker=breaker,
                 is_failure=lambda e: isinstance(e, ConnectionError), sleep=lambda _s: None)
    assert len(calls) == 3 and breaker.state == CLOSED


def test_breaker_opens_after_consecutive_failures_fails_fast_then_lets_one_trial_through():
    clock = Clock()
    breaker = CircuitBreaker("ollama", failure_threshold=3, cooldown=30, clock=clock)
    calls = []

    def dead():
        calls.append(1)
        raise ConnectionError("refused")

    def attempt(fn):
        return call(fn, policy=RetryPolicy(attempts=1), breaker=breaker, is_failure=lambda e: True)

    for _ in range(3):
        with pytest.raises(ConnectionError):
            attempt(dead)
    assert breaker.state == OPEN and len(calls) == 3
    with pytest.raises(CircuitOpen):
        attempt(dead)
    assert len(calls) == 3  # not called while open

    clock.now += 30
    assert breaker.state == HALF_OPEN
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.release()
    with pytest.raises(ConnectionError):
        attempt(dead)  # the trial fails: open again for a full cool-down
    assert breaker.state == OPEN and len(calls) == 4
    clock.now += 30
    assert attempt(lambda: "answer") == "answer" and breaker.state == CLOSED


# ---------------------------------------------------------------------- private servers and a bot


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Private Weaviate + Ollama with the expenses page indexed; stopped after the module."""
    from pipeline.indexing import Indexer
    from pipeline.stores import forget_store

    with private_servers(tmp_path_factory.mktemp("fault-servers"), collection=COLLECTION) as settings:
        report = Indexer(settings, COLLECTION).ingest([ROOT / "examples/handbook/expenses.md"])
        assert report.indexed and not report.skipped
        yield settings
        for name in (COLLECTION, "FaultIngestKilled", "FaultIngestClean"):
            forget_store(settings, name)


@pytest.fixture(scope="module")
def standin():
    s = SlackStandIn().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def faults_bot(servers, standin, tmp_path_factory):
    from pipeline.querying import AnswerService

    config = with_slack_secrets(servers)
    store = FeedbackStore(f"sqlite:///{tmp_path_factory.mktemp('fault-store') / 'feedback.db'}")
    with slack_http_bot(config, AnswerService(config), store, standin) as bot:
        yield bot


def _status_cli(settings):
    env = {
        "TEAMBOT_WEAVIATE_URL": settings.weaviate_url, "TEAMBOT_WEAVIATE_GRPC_PORT": str(settings.weaviate_grpc_port),
        "TEAMBOT_OLLAMA_URL": settings.ollama_url, "TEAMBOT_DATA_DIR": str(settings.data_dir),
    }
    return CliRunner().invoke(app, ["services", "status", "--json"], env=env)


def test_the_weaviate_we_start_keeps_its_internal_ports_to_itself(servers):
    import httpx
    import psutil

    pid = services._read_pid(services.WEAVIATE, servers)
    listening = {
        c.laddr.port: c.laddr.ip for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN
    }
    rest = servers.weaviate_host_port[1]
    # REST, gossip and Raft on loopback; no profiling listener; gRPC (no host setting in v1.38)
    # and the node-to-node data API are the only ones on every interface.
    assert {port for port, ip in listening.items() if ip != "127.0.0.1"} <= {servers.weaviate_grpc_port, rest + 2}
    assert listening[rest] == "127.0.0.1" and rest + 1 in listening and 6060 not in listening
    # ... and the data API turns away anyone without the password the server was started with.
    response = httpx.get(f"http://127.0.0.1:{rest + 2}/indices/{COLLECTION}/shards/x/objects", timeout=5)
    assert response.status_code == 401


def test_weaviate_outage_gets_a_clear_reply_and_answers_resume_when_it_returns(servers, faults_bot):
    health = faults_bot.get("/healthz")
    assert health.status_code == 200
    assert health.json()["weaviate"] == {"ok": True, "circuit": CLOSED} and health.json()["ollama"]["ok"]

    services.stop(services.WEAVIATE, servers)
    try:
        reply = faults_bot.ask(QUESTION)
        assert reply.text == KnowledgeBaseUnavailable.user_message and not reply.blocks

        health = faults_bot.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable"
        assert not health.json()["weaviate"]["ok"] and health.json()["ollama"]["ok"]
        status = _status_cli(servers)
        assert status.exit_code == 1 and json.loads(status.stdout)["weaviate"]["ready"] is False
    finally:
        start(services.WEAVIATE, servers)

    # Same process, no restart: the next question reconnects and is answered from the documents.
    reply = faults_bot.ask(QUESTION)
    assert reply.answer_id, reply.text
    assert any("Expenses" in s for s in reply.sections if s.startswith("*Sources*"))
    assert faults_bot.get("/healthz").status_code == 200
    assert _status_cli(servers).exit_code == 0

    # /metrics counted the failure, the answer's stages and a vote on it.
    click = slack.feedback_click(reply.last, "up")
    assert faults_bot.post(slack.interaction_body(click), "application/x-www-form-urlencoded").status_code == 200
    faults_bot.standin.wait_call("chat.postEphemeral", channel="C0FAULTS")
    metrics = faults_bot.get("/metrics").text
    assert metric_value(metrics, "teambot_errors_total", platform="slack", kind="KnowledgeBaseUnavailable") >= 1
    assert metric_value(metrics, "teambot_stage_seconds_count", stage="generate") >= 1
    assert metric_value(metrics, "teambot_feedback_total", platform="slack", value="up") >= 1


def test_ollama_outage_gets_a_clear_reply_and_answers_resume_when_it_returns(servers, faults_bot):
    services.stop(services.OLLAMA, servers)
    try:
        reply = faults_bot.ask(QUESTION)
        assert reply.text == ModelUnavailable.user_message and not reply.blocks
        health = faults_bot.get("/healthz")
        assert health.status_code == 503 and not health.json()["ollama"]["ok"] and health.json()["weaviate"]["ok"]
    finally:
        start(services.OLLAMA, servers)

    reply = faults_bot.ask(QUESTION)
    assert reply.answer_id, reply.text
    assert faults_bot.get("/healthz").status_code == 200


def test_a_hanging_generation_times_out_into_a_clear_reply(servers, standin, tmp_path):
    from pipeline.querying import AnswerService

    with FakeOllama("hang") as hanging:
        config = with_slack_secrets(servers, ollama_url=hanging.url, generation_timeout=2)
        store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}")
        with slack_http_bot(config, AnswerService(config), store, standin) as bot:
            reply = bot.ask(QUESTION, channel="C0HANGS")
            assert reply.text == ModelTimeout.user_message and not reply.blocks
            assert hanging.chat_requests == 1  # a timeout already waited long: not retried
            # The bot is still there for the next question.
            assert bot.get("/healthz").status_code == 200


def test_a_model_that_never_stops_is_cut_off_at_the_deadline_with_a_note(servers):
    """TEAMBOT_GENERATION_TIMEOUT is a deadline for the whole generation, not per read: a model
    streaming on and on (a new word every 50 ms, forever) is cut off there, the words shown so
    far are kept with a note, and the stream to the model server is closed."""
    from core.answer import Outcome
    from pipeline.querying import AnswerService

    with FakeOllama("drip") as looping:
        config = servers.model_copy(update={"ollama_url": looping.url, "generation_timeout": 2.0})
        service = AnswerService(config)
        streamed: list[str] = []
        started = time.monotonic()
        answer = service.ask(QUESTION, on_token=streamed.append)
        took = time.monotonic() - started
        assert 2.0 <= answer.timings["generate"] < 4.0 and took < 10, answer.timings
        assert answer.text.startswith("step0 step1 ") and "Cut off: the answer took longer than 2 seconds" in answer.text
        assert "".join(streamed) == answer.text and answer.outcome is Outcome.ANSWERED
        assert looping.chat_requests == 1  # not retried: it was answering
        assert looping.disconnected.wait(10)  # the model server stops generating for nobody
        assert service.breakers["ollama"].state == CLOSED
        service.close()


def test_flaky_model_is_retried_then_a_dead_one_is_left_alone_until_its_cool_down_ends(servers):
    from pipeline.querying import AnswerService

    with FakeOllama("forward", upstream=servers.ollama_url) as flaky:
        config = servers.model_copy(update={
            "ollama_url": flaky.url, "retry_attempts": 3, "retry_backoff": 0.05, "circuit_failures": 2,
        })
        service = AnswerService(config)
        clock = Clock()
        breaker = service.breakers["ollama"] = CircuitBreaker("ollama", 2, cooldown=60, clock=clock)

        flaky.mode = "fail"  # every request: 503
        for n in (1, 2):
            with pytest.raises(ModelUnavailable):
                service.ask(QUESTION)
            assert flaky.chat_requests == 3 * n  # three tries per question
        assert breaker.state == OPEN
        with pytest.raises(ModelUnavailable) as refused:
            service.ask(QUESTION)
        assert refused.value.user_message == ModelUnavailable.user_message
        assert flaky.chat_requests == 6  # failed fast: the server was not called

        # The server recovers; after the cool-down one trial goes through, and a transient 503
        # on it is retried.
        flaky.mode, flaky.fail_next = "forward", 1
        clock.now += 60
        answer = service.ask(QUESTION)
        assert flaky.chat_requests == 8
        assert answer.text and answer.retrieved and breaker.state == CLOSED


# ---------------------------------------------------------------------- interrupted ingest


def _objects(settings, collection: str) -> int:
    from pipeline.stores import admin_client

    client = admin_client(settings)
    try:
        if not client.collections.exists(collection):
            return 0
        return client.collections.use(collection).aggregate.over_all(total_count=True).total_count
    finally:
        client.close()


def _kill_when(proc: subprocess.Popen, ready, limit: float = 240) -> None:
    """SIGKILL `proc` as soon as `ready()` holds (or at the limit)."""
    try:
        deadline = time.monotonic() + limit
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()[-2000:]


def test_an_ingest_killed_half_way_is_finished_by_the_next_run_exactly_like_a_clean_one(servers, tmp_path):
    """Killed with SIGKILL mid-write, a plain ingest and then a rebuild: the next run leaves every file
    of a realistic tree with exactly its own chunks, the same chunks a clean run makes."""
    from pipeline import collection_aliases
    from pipeline.indexing import FLUSH_CHUNKS, Indexer
    from pipeline.stores import admin_client
    from tests.doc_trees import BIG, TRICKY, assert_mirrors, chunks_by_source, write

    docs = tmp_path / "docs"
    versions = dict.fromkeys([*TRICKY, BIG], 0)
    write(docs, versions, big_sections=FLUSH_CHUNKS + 40)
    env = {
        **os.environ, "TEAMBOT_WEAVIATE_URL": servers.weaviate_url,
        "TEAMBOT_WEAVIATE_GRPC_PORT": str(servers.weaviate_grpc_port), "TEAMBOT_DATA_DIR": str(servers.data_dir),
    }
    command = [sys.executable, "-m", "teambot.cli", "ingest", str(docs), "-c", "FaultIngestKilled", "--no-progress"]

    def ids(collection: str) -> list[str]:
        return sorted(c["_original_id"] for cs in chunks_by_source(servers, collection).values() for c in cs)

    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _kill_when(proc, lambda: _objects(servers, "FaultIngestKilled") > 0)
    assert 0 < len(chunks_by_source(servers, "FaultIngestKilled")) < len(versions)  # really half-way

    rerun = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clean = Indexer(servers, "FaultIngestClean").ingest([docs])  # meanwhile, the reference
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-2000:]
    assert len(clean.indexed) == len(versions) and not clean.skipped
    after_rerun = ids("FaultIngestKilled")
    assert len(after_rerun) == len(set(after_rerun))  # no duplicates
    assert after_rerun == ids("FaultIngestClean")  # same chunks: nothing missing, no orphans
    assert_mirrors(servers, "FaultIngestKilled", docs, versions)

    # A rebuild killed half-way: the alias never moved, and the next rebuild drops the leftover.
    client = admin_client(servers)
    try:
        before = collection_aliases.inspect(client, "FaultIngestKilled")

        def leftover() -> list[str]:
            return [n for n in client.collections.list_all(simple=True)
                    if n.startswith("FaultIngestKilled_") and n != before.target]

        proc = subprocess.Popen([*command, "--rebuild"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        _kill_when(proc, lambda: any(_objects(servers, n) for n in leftover()))
        assert collection_aliases.inspect(client, "FaultIngestKilled").target == before.target
        assert ids("FaultIngestKilled") == after_rerun  # still answering from the old index, whole
        [abandoned] = leftover()
        rebuilt = subprocess.run([*command, "--rebuild"], env=env, capture_output=True, text=True, timeout=300)
        assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
        assert abandoned not in client.collections.list_all(simple=True) and len(leftover()) == 1
        assert ids("FaultIngestKilled") == after_rerun
        assert_mirrors(servers, "FaultIngestKilled", docs, versions)
    finally:
        client.close()


# ---------------------------------------------------------------------- feedback durability

VOTER = textwrap.dedent("""
    import sys
    from core.answer import Answer
    from feedback.store import FeedbackStore

    store = FeedbackStore(sys.argv[1], user_salt="durability")
    answer = Answer(question="Which tool do expense claims go in?", text="Ledgerly [1].", sources=[],
                    model="teambot-dev", collection="Handbook")
    store.record_answer(answer, platform="slack", user_id="U0ASKER")
    with store.engine.connect() as connection:  # the connection settings every vote below is written with
        print("synchronous", connection.exec_driver_sql("PRAGMA synchronous").scalar(), flush=True)
    print("answer", answer.id, flush=True)
    n = 0
    while True:  # until killed
        user = f"U{n:07d}"
        store.rate(answer.id, platform="slack", user_id=user, value=1 if n % 3 else -1)
        print("ack", user, flush=True)  # only after the commit returned
        n += 1
""")


def test_every_acknowledged_vote_survives_the_writer_being_killed(tmp_path):
    """SIGKILL a process in the middle of a stream of votes: every vote it acknowledged (after its
    commit returned) is in the database. What this proves rests on SQLite's `synchronous=FULL`
    on the writer's own connection (a commit is on disk before it returns), so that is asserted
    too: with OFF or NORMAL a killed process can still keep its commits, but a power cut would not."""
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-c", VOTER, url], cwd=ROOT, stdout=subprocess.PIPE, text=True, bufsize=1,
    )
    lines = []
    try:
        while sum(1 for line in lines if line.startswith("ack ")) < 150:
            line = proc.stdout.readline()
            assert line, "the voter stopped on its own"
            lines.append(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lines += proc.stdout.readlines()  # acknowledgements still in the pipe count too
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    assert lines[0].split() == ["synchronous", "2"]  # FULL
    answer_id = lines[1].split()[1]
    acked = [line.split()[1] for line in lines[2:] if line.startswith("ack ") and line.endswith("\n")]
    store = FeedbackStore(url, user_salt="durability")
    stored = {r.user_hash: r.value for r in store.ratings(answer_id)}
    missing = [u for u in acked if stored.get(store.user_hash("slack", u)) != (1 if int(u[1:]) % 3 else -1)]
    assert not missing, f"{len(missing)} acknowledged votes lost, e.g. {missing[:3]}"
    assert store.get_answer(answer_id).answer_text == "Ledgerly [1]."


# ---------------------------------------------------------------------- searches that hang


def test_a_search_that_hangs_gives_up_and_frees_its_thread(handbook):
    """A Weaviate that takes the search and never answers: the question fails at the retrieval
    timeout, and the search itself ends soon after (it does not hold a pool thread for minutes)."""
    from core import metrics
    from pipeline.querying import AnswerService
    from tests.tcp_proxy import TcpProxy

    with TcpProxy(handbook.service.settings.weaviate_grpc_port) as proxy:
        config = handbook.service.settings.model_copy(update={
            "weaviate_grpc_port": proxy.port, "retrieval_timeout": 2.0, "retry_attempts": 1,
        })
        service = AnswerService(config)
        try:
            assert service.retrieve(QUESTION, handbook.collection)[0]  # through the proxy, it works
            proxy.mode = "stall"
            started = time.monotonic()
            with pytest.raises(KnowledgeBaseUnavailable):
                service.retrieve(QUESTION, handbook.collection)
            assert time.monotonic() - started < 6
            deadline = time.monotonic() + 6
            while metrics.SEARCHES_RUNNING._value.get() > 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert metrics.SEARCHES_RUNNING._value.get() == 0  # the hung search ended by itself
        finally:
            service.close()


def test_a_search_stalled_on_one_node_is_answered_by_another_at_once(handbook):
    """Two ways to one knowledge base, as two nodes of a cluster: the first node takes the search
    and never answers (its gRPC stalls, its REST still says it is alive). The search is sent again
    to the other node and answered in about HEDGE_AFTER_SECONDS, not at the retrieval timeout."""
    from core import metrics
    from pipeline.querying import HEDGE_AFTER_SECONDS, AnswerService
    from tests.tcp_proxy import TcpProxy

    settings = handbook.service.settings
    with TcpProxy(settings.weaviate_grpc_port) as grpc, TcpProxy(urlsplit(settings.weaviate_url).port) as rest:
        config = settings.model_copy(update={
            "weaviate_grpc_port": grpc.port, "retrieval_timeout": 20.0, "retry_attempts": 1,
            "weaviate_peers": [f"http://127.0.0.1:{rest.port}?grpc={settings.weaviate_grpc_port}"],
        })
        service = AnswerService(config)
        try:
            assert service.retrieve(QUESTION, handbook.collection)[0]  # on the first node, through its proxy
            grpc.mode = "stall"
            hedged = metrics.SEARCH_HEDGES._value.get()
            started = time.monotonic()
            docs, _, _ = service.retrieve(QUESTION, handbook.collection)
            took = time.monotonic() - started
            assert "Ledgerly" in " ".join(d.content for d in docs)
            assert metrics.SEARCH_HEDGES._value.get() == hedged + 1
            assert HEDGE_AFTER_SECONDS <= took < config.retrieval_timeout / 2, took
            assert rest.accepted, "the second search did not go to the other node"
        finally:
            service.close()


def test_a_failed_search_does_not_close_the_connection_under_another_running_search(handbook):
    """One search fails and drops the cached connection while another is still running on it:
    the other one still gets its answer."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.querying import AnswerService
    from tests.tcp_proxy import TcpProxy

    with TcpProxy(handbook.service.settings.weaviate_grpc_port) as proxy:
        config = handbook.service.settings.model_copy(update={"weaviate_grpc_port": proxy.port})
        service = AnswerService(config)
        try:
            service.retrieve(QUESTION, handbook.collection)  # connected
            proxy.mode, proxy.lag = "lag", 1.0
            with ThreadPoolExecutor(1) as pool:
                slow = pool.submit(service.retrieve, QUESTION, handbook.collection)
                assert proxy.holding.wait(30)  # the slow search is on the wire now
                service._forget(handbook.collection)  # what a failing search beside it does
                docs, _, _ = slow.result(timeout=30)
            assert docs and "Ledgerly" in " ".join(d.content for d in docs)
        finally:
            service.close()
