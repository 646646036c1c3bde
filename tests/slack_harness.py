"""The Slack bot in HTTP mode on loopback (and its /healthz and /metrics listener), talking to the
Slack stand-in: the one harness of every test that drives the real Bolt app over signed HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
from pydantic import SecretStr
from slack_sdk import WebClient

from bots.health import start_health_listener
from bots.slack_app import EVENTS_PATH, SlackBot, http_server
from bots.slack_blocks import PLACEHOLDER, STREAMING_MARK
from tests import slack_standin as slack
from tests.slack_standin import BOT_TOKEN, SlackStandIn, signed

SIGNING_SECRET = "e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6"


def with_slack_secrets(settings, **changes):
    return settings.model_copy(update={
        "slack_signing_secret": SecretStr(SIGNING_SECRET), "slack_bot_token": SecretStr(BOT_TOKEN), **changes,
    })


@dataclass
class SlackHttpBot:
    base: str
    standin: SlackStandIn
    bot: SlackBot
    health: str  # the /healthz and /metrics listener

    @property
    def url(self) -> str:
        return self.base + EVENTS_PATH

    @property
    def store(self):
        return self.bot.store

    @property
    def service(self):
        return self.bot.service

    # ------------------------------------------------------------------ what Slack sends

    def post(self, body: str | bytes, content_type: str = "application/json", *, secret: str = SIGNING_SECRET,
             **signing) -> httpx.Response:
        headers = signed(secret, body, content_type, **signing)
        return httpx.post(self.url, content=body, headers=headers, timeout=30)

    def event(self, event: dict, *, event_id: str | None = None, **signing) -> httpx.Response:
        return self.post(slack.event_body(event, event_id=event_id), **signing)

    def interaction(self, payload: dict) -> httpx.Response:
        return self.post(slack.interaction_body(payload), "application/x-www-form-urlencoded")

    def command(self, text: str, **fields) -> httpx.Response:
        return self.post(slack.slash_command(text, **fields), "application/x-www-form-urlencoded")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.health + path, timeout=30)

    # ------------------------------------------------------------------ what the bot posted

    def placeholder(self, channel: str, thread: str, after: int = 0, timeout: float = 300.0) -> str:
        """The ts of the thread's placeholder number `after` (0: its first), waiting for it."""
        def found(_calls):
            posted = self.standin.find("chat.postMessage", channel=channel, thread_ts=thread, text=PLACEHOLDER)
            return posted[after] if len(posted) > after else None

        return self.standin.wait_for(found, timeout=timeout).response["ts"]

    def final(self, channel: str, ts: str, timeout: float = 300.0) -> dict:
        """The placeholder's last update: the answer with blocks, or a short error reply."""
        return self.standin.wait_call(
            "chat.update", channel=channel, ts=ts, timeout=timeout,
            where=lambda c: "blocks" in c.args or STREAMING_MARK not in c.args["text"],
        ).args

    def answered(self, event: dict) -> tuple[str, dict]:
        """Send `event`, return (placeholder ts, final update) of the answer in its thread."""
        channel, thread = event["channel"], event.get("thread_ts") or event["ts"]
        earlier = len(self.standin.find("chat.postMessage", channel=channel, thread_ts=thread, text=PLACEHOLDER))
        assert self.event(event).status_code == 200
        ts = self.placeholder(channel, thread, after=earlier)
        return ts, self.final(channel, ts)

    def reply_to(self, event: dict, timeout: float = 300.0) -> dict:
        """The bot's last word in the event's thread: the answer (with blocks) that replaced its
        placeholder, or a short reply posted instead of one."""
        channel, thread = event["channel"], event.get("thread_ts") or event["ts"]
        first = self.standin.wait_call("chat.postMessage", channel=channel, thread_ts=thread, timeout=timeout)
        if first.args["text"] != PLACEHOLDER:
            return first.args
        return self.final(channel, first.response["ts"], timeout)

    def ask(self, text: str, *, channel: str = "C0FAULTS", user: str = "U0ALICE") -> dict:
        event = slack.mention(text, channel=channel, user=user)
        assert self.event(event).status_code == 200
        return self.reply_to(event)

    def settle(self) -> None:
        """Answer one more direct message: requests sent before it have been handled by then."""
        self.answered(slack.direct_message("are you there?", channel="D0SETTLE"))


@contextmanager
def slack_http_bot(settings, service, store, standin: SlackStandIn, **options) -> Iterator[SlackHttpBot]:
    options.setdefault("stream_interval", 0)
    bot = SlackBot(settings, service, store, WebClient(token=BOT_TOKEN, base_url=standin.api_url), **options)
    server = http_server(bot.app, "127.0.0.1", 0)
    health = start_health_listener(settings, service, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield SlackHttpBot(f"http://127.0.0.1:{server.server_port}", standin, bot,
                           f"http://127.0.0.1:{health.server_port}")
    finally:
        server.shutdown()
        server.server_close()
        health.shutdown()
        health.server_close()
        bot.close()
        thread.join()


def answer_sections(reply: dict) -> list[str]:
    return [b["text"]["text"] for b in reply.get("blocks", []) if b["type"] == "section"]


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`, from /metrics text."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
