"""The Slack bot in HTTP mode (with /healthz and /metrics) on loopback, talking to the Slack
stand-in; used by the fault, bad-input and security tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
from pydantic import SecretStr
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier

from bots.slack_app import EVENTS_PATH, SlackBot, http_server
from bots.slack_blocks import PLACEHOLDER, STREAMING_MARK
from tests import slack_standin as slack
from tests.slack_standin import BOT_TOKEN, SlackStandIn

SIGNING_SECRET = "e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6"


def with_slack_secrets(settings, **changes):
    return settings.model_copy(update={
        "slack_signing_secret": SecretStr(SIGNING_SECRET), "slack_bot_token": SecretStr(BOT_TOKEN), **changes,
    })


def signed_headers(body: str | bytes, content_type: str, secret: str = SIGNING_SECRET) -> dict:
    ts = str(int(time.time()))
    return {
        "Content-Type": content_type, "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": SignatureVerifier(secret).generate_signature(timestamp=ts, body=body),
    }


@dataclass
class SlackHttpBot:
    base: str
    standin: SlackStandIn
    bot: SlackBot

    @property
    def events_url(self) -> str:
        return self.base + EVENTS_PATH

    def post(self, body: str | bytes, content_type: str = "application/json", **kw) -> httpx.Response:
        return httpx.post(self.events_url, content=body, headers=signed_headers(body, content_type, **kw), timeout=30)

    def event(self, event: dict) -> httpx.Response:
        return self.post(slack.event_body(event))

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base + path, timeout=30)

    def reply_to(self, event: dict, timeout: float = 300.0) -> dict:
        """The bot's last word in the event's thread: the answer (with blocks) that replaced its
        placeholder, or a short reply posted instead of one."""
        channel, thread = event["channel"], event.get("thread_ts") or event["ts"]
        first = self.standin.wait_call("chat.postMessage", channel=channel, thread_ts=thread, timeout=timeout)
        if first.args["text"] != PLACEHOLDER:
            return first.args
        return self.standin.wait_call(
            "chat.update", channel=channel, ts=first.response["ts"], timeout=timeout,
            where=lambda c: "blocks" in c.args or STREAMING_MARK not in c.args["text"],
        ).args

    def ask(self, text: str, *, channel: str = "C0FAULTS", user: str = "U0ALICE") -> dict:
        event = slack.mention(text, channel=channel, user=user)
        assert self.event(event).status_code == 200
        return self.reply_to(event)


@contextmanager
def slack_http_bot(settings, service, store, standin: SlackStandIn) -> Iterator[SlackHttpBot]:
    bot = SlackBot(settings, service, store, WebClient(token=BOT_TOKEN, base_url=standin.api_url), stream_interval=0)
    server = http_server(bot.app, "127.0.0.1", 0, settings=settings, service=service)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield SlackHttpBot(f"http://127.0.0.1:{server.server_port}", standin, bot)
    finally:
        server.shutdown()
        server.server_close()
        bot.close()
        thread.join()


def answer_sections(reply: dict) -> list[str]:
    return [b["text"]["text"] for b in reply.get("blocks", []) if b["type"] == "section"]


class CannedAnswers:
    """A stand-in for AnswerService that answers every question with the same text (after the
    real service's validation), for tests about the adapter rather than the answers."""

    def __init__(self, settings, text: str = "Expense claims go in Ledgerly within 30 days.") -> None:
        from pipeline.querying import AnswerService

        self.settings, self.text = settings, text
        self._validate = AnswerService.validate
        self.questions: list[tuple[str, str | None]] = []

    def validate(self, question: str) -> str:
        return self._validate(self, question)

    def ask(self, question, *, collection=None, history=(), on_token=None):
        from pipeline.answer import Answer

        question = self.validate(question)
        self.questions.append((question, collection))
        if on_token:
            on_token(self.text)
        return Answer(question=question, text=self.text, sources=[], model="canned",
                      collection=collection or self.settings.collection)


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`, from /metrics text."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
