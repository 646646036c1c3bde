"""teambot on Slack (Bolt): answers @mentions, direct messages, `/ask` and replies in the threads
it answers in (no new mention needed), always in the question's thread; streams the answer into
a placeholder, and records 👍/👎 from buttons and reactions (removing a 👍/👎 reaction takes
back the vote it cast, unless the user has voted differently since).

Every request is acknowledged at once (Bolt acks events before running the listener; actions,
commands and views call `ack()` first). Answering runs on a small worker pool of its own, so
long generations never hold up the acknowledgements of later requests. `SlackBot` builds the
Bolt `App` (pass a `WebClient` to talk to another Slack API URL); `http_server` and
`serve_socket_mode` run it.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from slack_bolt import App, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bots.formatting import Throttle
from bots.health import HealthRoutes
from bots.ratelimit import RateLimiter
from bots.request_guard import RequestGuard
from bots.slack_blocks import (
    FEEDBACK_MODAL, PLACEHOLDER, VOTE_DOWN, VOTE_UP, answer_message, escape, feedback_from_view,
    feedback_modal, streaming_text,
)
from pipeline.errors import TeambotError
from pipeline.feedback_store import FeedbackStore, UnknownAnswer
from teambot import metrics
from teambot.settings import Settings, secret_value

log = logging.getLogger("teambot.slack")

PLATFORM = "slack"
EVENTS_PATH = "/slack/events"
ANSWER_WORKERS = 4
STREAM_UPDATE_INTERVAL = 1.5  # seconds between chat.update calls while streaming (Tier 3 limits)
RECENT_KEYS = 10_000
# Message subtypes that are a person writing; every other subtype (edits, joins, bot posts) is not.
_HUMAN_SUBTYPES = {None, "file_share", "thread_broadcast"}
REACTION_VOTES = {"+1": 1, "thumbsup": 1, "-1": -1, "thumbsdown": -1}

THANKS = "Thanks for the feedback!"
THANKS_NOTE = "Thanks, your note was saved. It helps improve the answers."
ANSWER_GONE = "I can't find that answer any more, so the vote was not recorded."
CANNOT_POST = (
    "I can't post in this conversation. Invite me with `/invite @teambot`, or ask me in a direct message."
)


class SlackConfigError(RuntimeError):
    pass


class RecentKeys:
    """A bounded, thread-safe set of recently seen keys: the oldest are forgotten first."""

    def __init__(self, size: int = RECENT_KEYS) -> None:
        self._size = size
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, key: str) -> bool:
        """True the first time `key` is seen (while it is remembered)."""
        with self._lock:
            if key in self._keys:
                return False
            self._keys[key] = None
            if len(self._keys) > self._size:
                self._keys.popitem(last=False)
            return True


_LINK = re.compile(r"<(https?://[^|>]+)(?:\|[^>]*)?>")
_CHANNEL = re.compile(r"<#[A-Z0-9]+\|([^>]*)>")


def question_text(text: str, bot_user_id: str | None) -> str:
    """The question in a Slack message: without the bot's mention, links and entities as typed."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", " ", text)
    text = _LINK.sub(r"\1", text)
    text = _CHANNEL.sub(r"#\1", text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"[ \t]+", " ", text).strip()


@dataclass(frozen=True)
class Question:
    text: str  # validated
    user: str | None
    team: str | None
    channel: str
    thread: str  # ts of the thread's root message
    placeholder: str  # ts of the bot's message that becomes the answer


class _StreamingMessage:
    """Edits the placeholder with the answer so far, at most once per interval."""

    def __init__(self, client: WebClient, channel: str, ts: str, interval: float) -> None:
        self.client, self.channel, self.ts = client, channel, ts
        self.text = ""
        self._throttle = Throttle(interval)

    def add(self, delta: str) -> None:
        self.text += delta
        if self.text.strip() and self._throttle.ready():
            try:
                self.client.chat_update(channel=self.channel, ts=self.ts, text=streaming_text(self.text))
            except SlackApiError as exc:  # a skipped interim edit is harmless
                log.warning("interim update of %s failed: %s", self.ts, exc.response.get("error"))


class SlackBot:
    """The Bolt app and its listeners; one per process."""

    def __init__(
        self, settings: Settings, service, store: FeedbackStore, client: WebClient | None = None,
        *, stream_interval: float = STREAM_UPDATE_INTERVAL,
    ) -> None:
        self.settings, self.service, self.store = settings, service, store
        self.stream_interval = stream_interval
        if client is None:
            token = secret_value(settings.slack_bot_token)
            if not token:
                raise SlackConfigError("TEAMBOT_SLACK_BOT_TOKEN is not set (the bot token, xoxb-…)")
            client = WebClient(token=token)
        client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
        # Without a signing secret, a random one: no HTTP request can pass verification (Socket
        # Mode requests are not signed and do not need it); slack_sdk refuses a blank one.
        self.app = App(
            client=client, name="teambot", logger=log,
            signing_secret=secret_value(settings.slack_signing_secret) or secrets.token_hex(32),
        )
        self._recent_events = RecentKeys()
        self.limiter = RateLimiter.from_settings(settings)
        self._workers = ThreadPoolExecutor(ANSWER_WORKERS, thread_name_prefix="teambot-slack-answer")

        self.app.middleware(self._drop_redelivered_events)
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.event("reaction_added")(self._on_reaction)
        self.app.event("reaction_removed")(self._on_reaction_removed)
        self.app.command("/ask")(self._on_ask)
        self.app.action(VOTE_UP)(self._on_vote)
        self.app.action(VOTE_DOWN)(self._on_vote)
        self.app.view(FEEDBACK_MODAL)(self._on_feedback_submitted)
        # Last: event types the bot does not use are acknowledged and dropped, so Slack does
        # not redeliver them (Bolt answers 404 to an unhandled event).
        self.app.event(re.compile(".*"))(self._ignore_event)

    def close(self) -> None:
        """Wait for the answers in progress, then stop the worker pool."""
        self._workers.shutdown(wait=True)

    # ------------------------------------------------------------------ receiving questions

    def _drop_redelivered_events(self, body: dict, next) -> BoltResponse | None:
        # Slack redelivers an event (X-Slack-Retry-Num) when it saw no timely ack; it keeps the
        # event_id. Runs after Bolt's signature check, so forged requests cannot fill the set.
        event_id = body.get("event_id")
        if event_id and not self._recent_events.add(event_id):
            log.info("ignoring a repeated delivery of event %s", event_id)
            return BoltResponse(status=200, body="")
        return next()

    @staticmethod
    def _ignore_event(event: dict) -> None:
        log.debug("ignoring a %s event", event.get("type"))

    def _on_mention(self, event: dict, body: dict, context, client: WebClient) -> None:
        if event.get("bot_id"):
            return
        self._take_question(event, body.get("team_id") or event.get("team"), context.bot_user_id, client)

    def _on_message(self, event: dict, body: dict, context, client: WebClient) -> None:
        # Direct messages (which never come as app_mention), and follow-ups in channel threads
        # the bot answers in; elsewhere in channels it answers when mentioned.
        if event.get("bot_id") or event.get("subtype") not in _HUMAN_SUBTYPES:
            return
        if event.get("channel_type") == "im" or self._is_follow_up(event):
            self._take_question(event, body.get("team_id") or event.get("team"), context.bot_user_id, client)

    def _is_follow_up(self, event: dict) -> bool:
        """A reply in a channel thread where the bot has answered, addressed to no one in
        particular. A message that mentions anyone is not: a mention of the bot arrives as
        app_mention as well, and one of someone else is meant for them."""
        thread = event.get("thread_ts")
        if not thread or thread == event.get("ts") or "<@" in (event.get("text") or ""):
            return False
        return bool(self.store.thread_history(PLATFORM, event.get("channel"), thread, 1))

    def _take_question(self, event: dict, team: str | None, bot_user_id: str | None, client: WebClient) -> None:
        channel = event["channel"]
        thread = event.get("thread_ts") or event["ts"]
        try:
            text = self.service.validate(question_text(event.get("text") or "", bot_user_id))
        except TeambotError as exc:
            metrics.observe_refusal(PLATFORM, "invalid")
            self._post(client, channel, thread, exc.user_message)
            return
        if limited := self.limiter.check(event.get("user"), channel):
            metrics.observe_refusal(PLATFORM, "rate_limited")
            self._post(client, channel, thread, limited)
            return
        placeholder = self._post(client, channel, thread, PLACEHOLDER)
        if placeholder:
            self._workers.submit(self._answer, client, Question(text, event.get("user"), team, channel, thread, placeholder))

    def _on_ask(self, ack, command: dict, client: WebClient, respond) -> None:
        try:
            text = self.service.validate(question_text(command.get("text") or "", None))
        except TeambotError as exc:
            metrics.observe_refusal(PLATFORM, "invalid")
            ack(f"{exc.user_message} Usage: `/ask which tool do expense claims go in?`")
            return
        channel, user = command["channel_id"], command["user_id"]
        if limited := self.limiter.check(user, channel):
            metrics.observe_refusal(PLATFORM, "rate_limited")
            ack(limited)  # shown only to the asker
            return
        ack()
        # A slash command has no message to reply to: the bot posts the question, then answers
        # in that message's thread like everywhere else.
        try:
            root = client.chat_postMessage(channel=channel, text=f"<@{user}> asked: {escape(text)}")["ts"]
            placeholder = client.chat_postMessage(channel=channel, thread_ts=root, text=PLACEHOLDER)["ts"]
        except SlackApiError as exc:
            log.info("cannot post /ask answer in %s: %s", channel, exc.response.get("error"))
            respond(text=CANNOT_POST, response_type="ephemeral")
            return
        self._workers.submit(self._answer, client, Question(text, user, command.get("team_id"), channel, root, placeholder))

    # ------------------------------------------------------------------ answering

    def _answer(self, client: WebClient, q: Question) -> None:
        try:
            text, blocks = self._compose(client, q)
        except TeambotError as exc:
            metrics.observe_error(PLATFORM, exc)
            log.warning("could not answer in %s: %s", q.channel, exc)
            text, blocks = exc.user_message, None
        except Exception as exc:  # noqa: BLE001 - the user gets a reply and the bot stays up
            metrics.observe_error(PLATFORM, exc)
            log.exception("answering in %s failed", q.channel)
            text, blocks = TeambotError.user_message, None
        try:
            client.chat_update(channel=q.channel, ts=q.placeholder, text=text, blocks=blocks)
        except SlackApiError as exc:
            log.error("could not post the answer in %s: %s", q.channel, exc.response.get("error"))

    def _compose(self, client: WebClient, q: Question) -> tuple[str, list[dict]]:
        history = self.store.thread_history(PLATFORM, q.channel, q.thread, self.settings.history_turns)
        stream = _StreamingMessage(client, q.channel, q.placeholder, self.stream_interval)
        answer = self.service.ask(
            q.text, collection=self.settings.collection_for(q.channel, q.team), history=history, on_token=stream.add,
        )
        # Recorded before the buttons appear, so an immediate vote finds its answer.
        self.store.record_answer(
            answer, platform=PLATFORM, user_id=q.user, workspace=q.team, channel=q.channel, thread=q.thread,
            message_id=q.placeholder,
        )
        metrics.observe_answer(PLATFORM, answer)
        return answer_message(answer)

    @staticmethod
    def _post(client: WebClient, channel: str, thread: str, text: str) -> str | None:
        try:
            return client.chat_postMessage(channel=channel, thread_ts=thread, text=text)["ts"]
        except SlackApiError as exc:
            log.error("could not reply in %s: %s", channel, exc.response.get("error"))
            return None

    # ------------------------------------------------------------------ feedback

    def _on_vote(self, ack, body: dict, action: dict, client: WebClient) -> None:
        ack()
        user, channel = body["user"]["id"], body.get("channel", {}).get("id")
        message = body.get("message") or {}
        thread = message.get("thread_ts") or message.get("ts")
        value = 1 if action["action_id"] == VOTE_UP else -1
        try:
            self.store.rate(action["value"], platform=PLATFORM, user_id=user, value=value)
        except UnknownAnswer:
            self._ephemeral(client, channel, user, thread, ANSWER_GONE)
            return
        metrics.observe_vote(PLATFORM, value)
        if value < 0:  # the vote is stored; the modal only adds a reason or a better answer
            try:
                client.views_open(trigger_id=body["trigger_id"], view=feedback_modal(action["value"], channel, thread))
                return
            except SlackApiError as exc:
                log.warning("could not open the feedback form: %s", exc.response.get("error"))
        self._ephemeral(client, channel, user, thread, THANKS)

    def _on_feedback_submitted(self, ack, body: dict, view: dict, client: WebClient) -> None:
        ack()
        meta, reason, correction = feedback_from_view(view)
        user = body["user"]["id"]
        try:
            self.store.rate(meta["answer"], platform=PLATFORM, user_id=user, value=-1, reason=reason, correction=correction)
        except (UnknownAnswer, KeyError):
            log.warning("feedback for an unknown answer: %s", meta)
            return
        if reason or correction:
            self._ephemeral(client, meta.get("channel"), user, meta.get("thread"), THANKS_NOTE)

    def _reaction_vote(self, event: dict) -> tuple[str, str, int] | None:
        """(answer id, user, +1/-1) for a 👍/👎 reaction on one of the bot's answers, else None.
        `reaction_added` and `reaction_removed` events have the same shape."""
        item = event.get("item") or {}
        value = REACTION_VOTES.get((event.get("reaction") or "").split("::")[0])  # "+1::skin-tone-2"
        if value is None or item.get("type") != "message" or not event.get("user"):
            return None
        answer_id = self.store.answer_for_message(PLATFORM, item.get("ts", ""))
        return (answer_id, event["user"], value) if answer_id else None

    def _on_reaction(self, event: dict) -> None:
        if vote := self._reaction_vote(event):
            answer_id, user, value = vote
            self.store.rate(answer_id, platform=PLATFORM, user_id=user, value=value)
            metrics.observe_vote(PLATFORM, value)

    def _on_reaction_removed(self, event: dict) -> None:
        # Only the vote this reaction cast: a vote changed since (e.g. with a button) stays.
        if vote := self._reaction_vote(event):
            answer_id, user, value = vote
            if self.store.retract(answer_id, platform=PLATFORM, user_id=user, value=value):
                metrics.observe_retraction(PLATFORM, value)

    @staticmethod
    def _ephemeral(client: WebClient, channel: str | None, user: str, thread: str | None, text: str) -> None:
        if not channel:
            return
        try:
            client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread, text=text)
        except SlackApiError as exc:
            log.warning("could not confirm feedback to %s: %s", user, exc.response.get("error"))


# ---------------------------------------------------------------------- running


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: in a burst, further connections wait for a
    # SYN retransmit (1 s, then 3 s), past Slack's 3 s ack limit (bench/bot_load.py).
    request_queue_size = 128


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s - %s", self.address_string(), format % args)


def http_server(app: App, host: str, port: int, *, settings: Settings | None = None, service=None) -> WSGIServer:
    """A threaded server for the Events API and interactivity requests at EVENTS_PATH, verified
    by Bolt; with `settings`, also /healthz and /metrics (bots.health). `serve_forever()` runs
    it, `shutdown()` stops it."""
    wsgi = RequestGuard(SlackRequestHandler(app, path=EVENTS_PATH))
    if settings is not None:
        wsgi = HealthRoutes(wsgi, settings, service)
    return make_server(host, port, wsgi, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)


def serve_socket_mode(app: App, app_token: str, stop: threading.Event | None = None) -> None:
    """Receive events over Socket Mode (app-level token xapp-…) until `stop` is set or Ctrl-C."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    handler = SocketModeHandler(app, app_token)
    try:
        handler.connect()
        (stop or threading.Event()).wait()
    finally:
        handler.close()
