"""Two Slack bot processes behind one load balancer, sharing one feedback store on PostgreSQL.

The deployment as an operator would run it: two real `teambot slack --http` processes, each with
its own data dir and health listener, the same PostgreSQL, signing secret and user-hash salt;
haproxy (teambot/balancer.py) at the one URL Slack posts to, health-checking each bot's /healthz
on its health listener. Slack is the stand-in (testing/slack_standin.py); the answers come from
the real pipeline over the handbook, with the real model.

What it shows: mentions sent through the balancer are spread over both replicas and each is
answered once, in its thread; the same event delivered again with X-Slack-Retry-Num (as Slack
redelivers after a slow ack), its retries sent straight to each replica, is answered once and
recorded once, because the event id is claimed in the shared store; and with one replica
SIGKILLed, the next mentions are answered by the survivor (haproxy sends a request the dead one
refuses to the other, and then marks it DOWN).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench.harness import free_port_block
from bots.health import HEALTH_PATH
from bots.slack.app import EVENTS_PATH
from feedback.store import AnswerRecord, DeliveredEventRecord, FeedbackStore
from teambot.balancer import Balancer
from testing import slack_standin as slack
from tests.conftest import ROOT
from tests.postgres import fresh_database
from tests.slack_harness import SIGNING_SECRET, metric_value
from testing.slack_standin import BOT_TOKEN, SlackStandIn, signed

CHANNEL = "C0REPLICAS"
QUESTIONS = [
    "Which tool do expense claims go in?",
    "How many days of paid vacation do full-time employees get?",
    "How do I roll back a deploy?",
]
REDELIVERED = "Where is the on-call runbook?"
AFTER_THE_KILL = ["How do I request time off?", "Who do I page when production is down?"]
ANSWER_TIMEOUT = 360.0  # the CPU-bound model, shared by both replicas: twice the slowest seen under load


@dataclass
class BotProcess:
    """One `teambot slack --http` process: its events port and its health listener's."""

    name: str
    process: subprocess.Popen
    port: int
    health_port: int
    log: Path

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{EVENTS_PATH}"

    def metric(self, name: str, **labels: str) -> float:
        exposition = httpx.get(f"http://127.0.0.1:{self.health_port}/metrics", timeout=10).text
        return metric_value(exposition, name, **labels)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # as `docker stop`: the answers in progress are finished first
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _listening(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
        return True
    except httpx.HTTPError:
        return False


def _wait(check, timeout: float, what: str, bots: list[BotProcess] = ()):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {bot.name} ---\n{bot.log_tail()}" for bot in bots)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.1)
    return result


def start_bot(name: str, port: int, health_port: int, data_dir: Path, env: dict[str, str]) -> BotProcess:
    data_dir.mkdir(parents=True)
    log = data_dir / "bot.log"
    with log.open("wb") as out:  # `python -m` from the checkout: this tree's code, whatever is installed
        process = subprocess.Popen(
            [sys.executable, "-m", "teambot.cli", "slack", "--http", "--host", "127.0.0.1"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={**env, "TEAMBOT_DATA_DIR": str(data_dir), "TEAMBOT_HTTP_PORT": str(port),
                 "TEAMBOT_HEALTH_PORT": str(health_port)},
        )
    return BotProcess(name, process, port, health_port, log)


@dataclass
class Cluster:
    bots: list[BotProcess]
    balancer: Balancer
    standin: SlackStandIn
    store: FeedbackStore

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.balancer.port}{EVENTS_PATH}"

    def deliver(self, body: str, *, to: str | None = None, retry: int | None = None) -> None:
        """POST an Events API request as Slack does: through the balancer, or straight `to` a replica."""
        headers = signed(SIGNING_SECRET, body, "application/json", retry=retry)
        response = httpx.post(to or self.url, content=body, headers=headers, timeout=10)
        assert response.status_code == 200, (response.status_code, response.text)

    def answer_in(self, thread: str) -> slack.Message:
        """The bot's finished answer in the thread of the mention `thread` (waiting for it)."""

        def done():
            messages = self.standin.thread(CHANNEL, thread)
            return messages if messages and not messages[-1].streaming and messages[-1].answer_id else None

        messages = _wait(done, ANSWER_TIMEOUT, f"the answer in thread {thread}", self.bots)
        return messages[-1]

    def streams_in(self, thread: str) -> int:
        return len(self.standin.find("chat.startStream", channel=CHANNEL, thread_ts=thread))

    def recorded(self, where) -> int:
        with Session(self.store.engine) as session:
            return session.scalar(select(func.count()).select_from(AnswerRecord).where(where))


@pytest.fixture
def cluster(handbook, postgres_url, tmp_path) -> Iterator[Cluster]:
    database = fresh_database(postgres_url)
    settings = handbook.service.settings
    env = {
        **os.environ,
        "TEAMBOT_WEAVIATE_URL": settings.weaviate_url, "TEAMBOT_WEAVIATE_GRPC_PORT": str(settings.weaviate_grpc_port),
        "TEAMBOT_OLLAMA_URL": settings.ollama_url, "TEAMBOT_MODEL": settings.model,
        "TEAMBOT_COLLECTION": handbook.collection, "TEAMBOT_MAX_ANSWER_TOKENS": "24", "TEAMBOT_TOP_K": "2",
        "TEAMBOT_FEEDBACK_DB_URL": database, "TEAMBOT_USER_HASH_SALT": "replicas-share-this-salt",
        "TEAMBOT_SLACK_SIGNING_SECRET": SIGNING_SECRET, "TEAMBOT_SLACK_BOT_TOKEN": BOT_TOKEN,
        "TEAMBOT_USER_QUESTIONS_PER_MINUTE": "0", "TEAMBOT_CHANNEL_QUESTIONS_PER_MINUTE": "0",
    }
    with ExitStack() as stack:
        standin = SlackStandIn().start()
        stack.callback(standin.stop)
        env["TEAMBOT_SLACK_API_URL"] = standin.api_url
        # Chosen once the stand-in listens: its own port must not land in this block.
        first = free_port_block(5)  # the balancer, two events ports, two health listeners
        bots = []
        for i in (1, 2):
            bot = start_bot(f"bot-{i}", first + i, first + 2 + i, tmp_path / f"bot-{i}", env)
            stack.callback(bot.stop)
            bots.append(bot)
        for bot in bots:
            _wait(lambda: bot.process.poll() is not None or _listening(bot.port), 180, f"{bot.name} to listen", bots)
            assert bot.process.poll() is None, f"{bot.name} exited:\n{bot.log_tail()}"
        balancer = Balancer("bots", first, tuple((b.name, f"127.0.0.1:{b.port}", b.health_port) for b in bots),
                            HEALTH_PATH, tmp_path / "lb")
        balancer.start()
        stack.callback(balancer.stop)
        _wait(lambda: {s["status"] for s in balancer.server_states().values()} == {"UP"}, 60, "both bots UP", bots)
        store = FeedbackStore(database)
        stack.callback(store.engine.dispose)
        yield Cluster(bots, balancer, standin, store)


def test_two_bot_replicas_answer_each_event_once_and_survive_one_killed(cluster):
    bots, standin, balancer = cluster.bots, cluster.standin, cluster.balancer

    # Three mentions and one more event through the balancer: two for each replica. The last one
    # Slack delivers again (its retries keep the event id), each retry straight to one replica,
    # so both see it whichever took it first.
    mentions = [slack.mention(question, channel=CHANNEL) for question in QUESTIONS]
    redelivered = slack.mention(REDELIVERED, channel=CHANNEL)
    body = slack.event_body(redelivered, event_id="Ev0REPLICAS")
    for event in mentions:
        cluster.deliver(slack.event_body(event))
    cluster.deliver(body)
    for attempt, bot in enumerate(bots, start=1):
        cluster.deliver(body, to=bot.events_url, retry=attempt)
    for event in [*mentions, redelivered]:
        assert cluster.answer_in(event["ts"]).text.strip()
    served = {name: state["served"] for name, state in balancer.server_states().items()}
    assert served == {"bot-1": 2, "bot-2": 2}, served  # leastconn takes turns between idle servers
    asked = [bot.metric("teambot_questions_total", platform="slack") for bot in bots]
    assert asked == [2, 2], asked  # each replica answered what it was sent, the redelivery not again
    assert sum(bot.metric("teambot_event_redeliveries_total", taken="no") for bot in bots) == 2
    assert sum(bot.metric("teambot_event_redeliveries_total", taken="yes") for bot in bots) == 0

    # One replica SIGKILLed: haproxy sends the next mentions to the survivor, one of them after
    # the dead one refused it (sent before two failed health checks take the dead one out).
    dead, survivor = bots[1], bots[0]
    dead.process.send_signal(signal.SIGKILL)
    dead.process.wait(10)
    later = [slack.mention(question, channel=CHANNEL) for question in AFTER_THE_KILL]
    for event in later:
        cluster.deliver(slack.event_body(event))
    for event in later:
        assert cluster.answer_in(event["ts"]).text.strip()
    assert survivor.metric("teambot_questions_total", platform="slack") == asked[0] + len(later)
    _wait(lambda: balancer.server_states()[dead.name]["status"] == "DOWN", 5, "haproxy to mark bot-2 DOWN")
    assert balancer.server_states()[dead.name]["redispatched"] >= 1

    # Every thread has one answer, in the thread, from one stream, recorded once in the shared PostgreSQL.
    for event in [*mentions, redelivered, *later]:
        thread = event["ts"]
        assert [m.thread_ts for m in standin.thread(CHANNEL, thread)] == [thread]
        assert cluster.streams_in(thread) == 1, thread
        assert cluster.recorded(AnswerRecord.thread == thread) == 1, thread
    assert cluster.recorded(AnswerRecord.platform == "slack") == len(mentions) + 1 + len(later)
    with Session(cluster.store.engine) as session:
        assert session.scalar(select(func.count()).select_from(DeliveredEventRecord).where(
            DeliveredEventRecord.event_id == "Ev0REPLICAS")) == 1
