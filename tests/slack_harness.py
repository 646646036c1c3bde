"""The Slack bot in HTTP mode on loopback (and its /healthz and /metrics listener), talking to the
Slack stand-in: the one harness of every test that drives the real Bolt app over signed HTTP."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
from pydantic import SecretStr
from slack_sdk import WebClient

from bots.health import start_health_listener
from bots.slack.app import EVENTS_PATH, SlackBot, http_server
from testing import slack_standin as slack
from testing.slack_standin import BOT_TOKEN, Message, SlackStandIn, signed

SIGNING_SECRET = "e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6"


def with_slack_secrets(settings, **changes):
    return settings.model_copy(update={
        "slack_signing_secret": SecretStr(SIGNING_SECRET), "slack_bot_token": SecretStr(BOT_TOKEN), **changes,
    })


@dataclass
class Reply:
    """What the bot posted in a thread for one question, as Slack shows it once it is done."""

    messages: list[Message]

    @property
    def text(self) -> str:
        return "\n".join(m.text for m in self.messages)

    @property
    def last(self) -> Message:
        return self.messages[-1]

    @property
    def blocks(self) -> list[dict]:
        """The blocks under the answer (sources, feedback), or [] for a plain reply."""
        return self.last.blocks if self.messages else []

    @property
    def answer_id(self) -> str | None:
        return self.last.answer_id if self.messages else None

    @property
    def sections(self) -> list[str]:
        return [b["text"]["text"] for b in self.blocks if b["type"] == "section"]

    @property
    def streamed(self) -> bool:
        return bool(self.messages) and all(m.via == "chat.startStream" for m in self.messages)


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
        # Slack always sends a response_url; by default one the stand-in records under a fresh name.
        fields.setdefault("response_url", f"{self.standin.url}/response/{secrets.token_hex(4)}")
        return self.post(slack.slash_command(text, **fields), "application/x-www-form-urlencoded")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.health + path, timeout=30)

    # ------------------------------------------------------------------ what the bot posted

    def _touches(self, channel: str, thread: str) -> int:
        """Calls about a thread (its status, messages in it) that Slack took: a call refused for its
        rate limit is made again after Retry-After."""
        return sum((c.args.get("channel") or c.args.get("channel_id")) == channel and c.args.get("thread_ts") == thread
                   and c.status == 200 for c in self.standin.calls)

    def reply_in(self, channel: str, thread: str, *, calls_before: int = 0, messages_before: int = 0,
                 timeout: float = 300.0) -> Reply:
        """The bot's reply in a thread, once it has started one and has no answer in progress."""
        self.standin.wait_for(lambda _calls: self._touches(channel, thread) > calls_before, timeout)
        assert self.bot.conversations.wait_idle(timeout), "an answer was still in progress"
        return Reply(self.standin.thread(channel, thread)[messages_before:])

    def answered(self, event: dict, timeout: float = 300.0) -> Reply:
        """Send `event`; the reply it gets in its thread."""
        channel, thread = event["channel"], event.get("thread_ts") or event["ts"]
        calls, messages = self._touches(channel, thread), len(self.standin.thread(channel, thread))
        assert self.event(event).status_code == 200
        return self.reply_in(channel, thread, calls_before=calls, messages_before=messages, timeout=timeout)

    def reply_to(self, event: dict, timeout: float = 300.0) -> Reply:
        """The reply to an event sent earlier."""
        return self.reply_in(event["channel"], event.get("thread_ts") or event["ts"], timeout=timeout)

    def ask(self, text: str, *, channel: str = "C0FAULTS", user: str = "U0ALICE") -> Reply:
        return self.answered(slack.mention(text, channel=channel, user=user))

    def settle(self) -> None:
        """Answer one more direct message: requests sent before it have been handled by then."""
        self.answered(slack.direct_message("are you there?", channel="D0SETTLE"))


@contextmanager
def slack_http_bot(settings, service, store, standin: SlackStandIn, **options) -> Iterator[SlackHttpBot]:
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


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`, from /metrics text."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
