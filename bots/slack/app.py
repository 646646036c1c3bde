"""teambot on Slack (Bolt): answers @mentions, direct messages (also in Slack's agent view, with
suggested prompts when its messages open), `/ask` and replies in the threads it answers in (no new
mention needed), always in the question's thread; the answer streams natively as the thread's
agent session, titled with its question, and Slack's Stop button (`agent_session_stopped`) ends
the generation (bots.slack.reply).
Votes, the 👎 form and reactions are bots.slack.feedback's; "I need more help", "Mark resolved"
and "Share with the channel" bots.slack.handoff's; both decide through bots.answer_actions, as
Discord does.

Each channel's rule (bots.channel_rules) decides the rest: plain questions answered without a
mention, other bots answered, who may ask (users, user groups), citations required, private
(ephemeral) answers with "Share with the channel", and the experts that "I need more help" tags
in the thread, with "Mark resolved" for the asker and the experts.

Every request is acknowledged at once (Bolt acks events before running the listener; actions,
commands and views call `ack()` first, and `/ask` says a refusal through its response_url).
Questions go to the shared conversation core (`bots.conversation`), which answers them on its own bounded pool, so long generations never
hold up the acknowledgements of later requests; this module parses Slack's events. An event is
taken once: its id is claimed in the shared store, so a redelivery (Slack retries an event it
saw no timely ack for) is dropped by this process, by a restarted one and by other replicas.
`SlackBot` builds the Bolt `App` (pass a `WebClient` to talk to another Slack API URL);
`http_server` and `serve_socket_mode` run it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
from datetime import datetime, timedelta, timezone

from slack_bolt import App, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bots.answer_actions import AnswerActions
from bots.channel_rules import ChannelRule
from bots.conversation import Conversations, Question, Refusal
from bots.request_guard import MAX_BODY_BYTES, RequestGuard
from bots.slack.blocks import defuse_mass_mentions
from bots.slack.directory import SlackDirectory
from bots.slack.feedback import SlackFeedback
from bots.slack.handoff import SlackHandoff
from bots.slack.reply import StreamBudget, SlackPrivateReply, SlackReply, ephemeral
from bots.wsgi import HttpServer, wsgi_server
from core import metrics
from core.settings import Settings, secret_value
from feedback.store import FeedbackStore

log = logging.getLogger("teambot.slack")

PLATFORM = "slack"
EVENTS_PATH = "/slack/events"
EVENT_MEMORY = timedelta(hours=1)  # Slack redelivers within minutes (immediately, ~1 min, ~5 min)
# Message subtypes that are a person writing; every other subtype (edits, joins, bot posts) is not.
_HUMAN_SUBTYPES = {None, "file_share", "thread_broadcast"}
CANNOT_POST = (
    "I can't post in this conversation. Invite me with `/invite @teambot`, or ask me in a direct message."
)
USAGE = " Usage: `/ask which tool do expense claims go in?`"


class SlackConfigError(RuntimeError):
    pass


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


class MentionSafeClient(WebClient):
    """A WebClient whose every call (messages, streams, ephemerals, updates, views) has its mass
    mentions defused: the one place all outgoing text passes, so no path can skip it."""

    @classmethod
    def of(cls, client: WebClient) -> "MentionSafeClient":
        if isinstance(client, cls):
            return client
        return cls(token=client.token, base_url=client.base_url, timeout=client.timeout, ssl=client.ssl,
                   proxy=client.proxy, headers=client.headers, team_id=client.default_params.get("team_id"), logger=client.logger,
                   retry_handlers=list(client.retry_handlers))

    def api_call(self, api_method: str, *, json: dict | None = None, data: dict | None = None,
                 params: dict | None = None, **kwargs):
        return super().api_call(api_method, json=defuse_mass_mentions(json), data=defuse_mass_mentions(data),
                                params=defuse_mass_mentions(params), **kwargs)


def _posted_at(ts: str) -> datetime | None:
    """A message's ts is when Slack took it (seconds since the epoch): the thread's own order."""
    try:
        return datetime.fromtimestamp(float(ts), timezone.utc)
    except (TypeError, ValueError, OverflowError):
        return None


class SlackBot:
    """The Bolt app and its listeners; one per process."""

    def __init__(
        self, settings: Settings, service, store: FeedbackStore, client: WebClient | None = None,
        *, conversations: Conversations | None = None, budget: StreamBudget | None = None,
    ) -> None:
        self.settings, self.service, self.store = settings, service, store
        self.conversations = conversations or Conversations(settings, service, store)
        self.budget = budget or StreamBudget()
        if client is None:
            token = secret_value(settings.slack_bot_token)
            if not token:
                raise SlackConfigError("TEAMBOT_SLACK_BOT_TOKEN is not set (the bot token, xoxb-…)")
            client = WebClient(token=token, base_url=settings.slack_api_url)
        client = MentionSafeClient.of(client)
        client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
        # Without a signing secret, a random one: no HTTP request can pass verification (Socket
        # Mode requests are not signed and do not need it); slack_sdk refuses a blank one.
        self.app = App(
            client=client, name="teambot", logger=log,
            signing_secret=secret_value(settings.slack_signing_secret) or secrets.token_hex(32),
        )

        self.app.middleware(self._mention_safe_client)
        self.app.middleware(self._take_each_event_once)
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.event("app_home_opened")(self._on_home_opened)
        self.app.event("agent_session_stopped")(self._on_stop)
        self.app.command("/ask")(self._on_ask)
        self.directory = SlackDirectory()
        self.actions = AnswerActions(store, self.conversations, PLATFORM)
        SlackFeedback(self.actions).register(self.app)
        SlackHandoff(self.actions, self.directory).register(self.app)
        # Last: event types the bot does not use are acknowledged and dropped, so Slack does
        # not redeliver them (Bolt answers 404 to an unhandled event).
        self.app.event(re.compile(".*"))(self._ignore_event)

    def close(self) -> None:
        """Wait for the answers in progress, then stop."""
        self.conversations.close()

    # ------------------------------------------------------------------ receiving questions

    @staticmethod
    def _mention_safe_client(context, next) -> BoltResponse | None:
        # Bolt gives each request's listeners a WebClient of its own, not the app's: every one
        # passes the same filter.
        context["client"] = MentionSafeClient.of(context.client)
        return next()

    def _take_each_event_once(self, body: dict, request, next) -> BoltResponse | None:
        # Slack redelivers an event (X-Slack-Retry-Num; Socket Mode's retry_attempt, which Bolt
        # passes on as the same header) when it saw no timely ack, and keeps its event_id; with
        # several replicas behind one URL, a redelivery may reach another process. Runs after
        # Bolt's signature check, so forged requests cannot fill the table. A slash command or a
        # click has no event id, and Slack never sends one twice: a second request with the same
        # signature (a captured request replayed within Bolt's 5-minute window) is dropped.
        event_id = body.get("event_id") or _replay_key(request)
        if not event_id:
            return next()
        try:
            taken = self.store.claim_event(PLATFORM, event_id, ttl=EVENT_MEMORY)
        except Exception:  # noqa: BLE001 - without the store, answering twice beats not answering
            log.exception("could not check event %s against the store; handling it", event_id)
            taken = True
        # Socket Mode's first delivery comes with retry_attempt 0, which Bolt passes on as "0".
        if (retry := _retry_number(request)) > 0:
            reason = (request.headers.get("x-slack-retry-reason") or [""])[0]
            log.info("event %s delivered again (retry %d, %s)%s", event_id, retry, reason,
                     "" if taken else ": already taken")
            metrics.observe_redelivery(PLATFORM, reason, taken)
        if not taken:
            return BoltResponse(status=200, body="")
        return next()

    @staticmethod
    def _ignore_event(event: dict) -> None:
        log.debug("ignoring a %s event", event.get("type"))

    def _rule(self, channel: str | None, team: str | None) -> ChannelRule:
        """The channel's rule; a direct message (a D… channel) gets the rules' `[dm]`."""
        return self.conversations.rule_for(channel, team, direct=(channel or "").startswith("D"))

    @staticmethod
    def _own(event: dict, context) -> bool:
        return event.get("user") == context.bot_user_id or (bool(event.get("bot_id")) and event.get("bot_id") == context.bot_id)

    def _on_mention(self, event: dict, body: dict, context, client: WebClient) -> None:
        if self._own(event, context):
            return  # never itself, whatever the rules
        team = body.get("team_id") or event.get("team")
        rule = self._rule(event.get("channel"), team)
        if self.conversations.wanted(rule, event.get("text") or "", addressed=True, from_bot=bool(event.get("bot_id"))):
            self._take_question(event, team, context.bot_user_id, client, rule)

    def _on_home_opened(self, event: dict, set_suggested_prompts=None) -> None:
        """Someone opened teambot's messages (its agent view): offer the configured questions.
        Bolt gives a messages-tab event `set_suggested_prompts`, which for an agent app is set on
        the conversation (with a thread_ts, Slack drops it silently)."""
        prompts = self.settings.slack_suggested_prompts
        if event.get("tab") != "messages" or not prompts or set_suggested_prompts is None:
            return
        try:
            set_suggested_prompts(title="Ask about the team's documents",
                                  prompts=[{"title": p if len(p) <= 75 else p[:74] + "…", "message": p} for p in prompts])
        except SlackApiError as exc:
            log.warning("could not offer suggested prompts: %s", exc.response.get("error"))

    def _on_stop(self, event: dict) -> None:
        """Someone pressed Slack's Stop on a thread's session: their answers there end (Slack has
        already ended the streaming messages) and the reply says so. Another asker's answer in
        the same thread goes on (posted whole if Slack cut its stream)."""
        channel, thread, user = event.get("channel"), event.get("thread_ts"), event.get("user")
        if channel and thread and not self.conversations.stop(PLATFORM, channel, thread, user=user):
            log.info("nothing of %s to stop in %s (thread %s)", user, channel, thread)

    def _on_message(self, event: dict, body: dict, context, client: WebClient) -> None:
        # Direct messages (which never come as app_mention; agent view threads are DM threads),
        # follow-ups in channel threads the bot answers in, and, where the channel's rule says so,
        # plain questions. A message that mentions anyone is left alone: a mention of the bot
        # arrives as app_mention as well, and one of someone else is meant for them.
        if self._own(event, context) or self._expert_reply(event, context, client):
            return
        if event.get("subtype") not in _HUMAN_SUBTYPES | {"bot_message"}:
            return
        text = event.get("text") or ""
        direct = event.get("channel_type") == "im"
        if not direct and "<@" in text:
            return
        thread = event.get("thread_ts")
        if not direct and thread and thread != event.get("ts") and self.actions.people_answering(event.get("channel"), thread):
            return  # a hand-off waits here: the thread is for the people helping (a mention still asks the bot)
        team = body.get("team_id") or event.get("team")
        rule = self._rule(event.get("channel"), team)
        addressed = direct or self._is_follow_up(event)
        from_bot = bool(event.get("bot_id")) or event.get("subtype") == "bot_message"
        if self.conversations.wanted(rule, text, addressed=addressed, from_bot=from_bot):
            self._take_question(event, team, context.bot_user_id, client, rule)

    def _expert_reply(self, event: dict, context, client: WebClient) -> bool:
        """An expert's reply in a waiting hand-off's thread (kept for the draft answer, and not
        answered: mentions of the asker included), or an edit or deletion of one. True when taken."""
        subtype = event.get("subtype")
        if subtype == "message_changed":  # the bot's own streamed edits arrive as these too
            message = event.get("message") or {}
            return bool(message.get("ts")) and not self._own(message, context) and self.actions.expert_reply_changed(message["ts"], message.get("text") or "")
        if subtype == "message_deleted":
            return bool(event.get("deleted_ts")) and self.actions.expert_reply_changed(event["deleted_ts"], None)
        thread, user = event.get("thread_ts"), event.get("user")
        if subtype not in _HUMAN_SUBTYPES or event.get("bot_id") or not user or not thread or thread == event.get("ts"):
            return False
        return self.actions.expert_reply(
            event.get("channel"), thread, event["ts"], user, event.get("text") or "",
            lambda rule: self.directory.groups_of(client, user, rule.expert_groups), posted_at=_posted_at(event["ts"]),
        )

    def _is_follow_up(self, event: dict) -> bool:
        """A reply in a channel thread where the bot has answered (`_on_message` has already
        left out messages that mention anyone)."""
        thread = event.get("thread_ts")
        if not thread or thread == event.get("ts"):
            return False
        return bool(self.store.thread_history(PLATFORM, event.get("channel"), thread, 1))

    def _take_question(self, event: dict, team: str | None, bot_user_id: str | None, client: WebClient,
                       rule: ChannelRule) -> None:
        channel = event["channel"]
        thread = event.get("thread_ts") or event["ts"]
        user = event.get("user") or event.get("bot_id")
        question = Question(
            platform=PLATFORM, text=question_text(event.get("text") or "", bot_user_id), user=user,
            workspace=team, channel=channel, thread=thread, collection=self.settings.collection_for(channel, team),
            rule=rule, groups=self.directory.groups_of(client, user, rule.allowed_groups) if rule.restricted else frozenset(),
            where=self.directory.audience(client, channel, event.get("channel_type")),
        )
        private = rule.private and event.get("channel_type") != "im" and bool(event.get("user"))
        reply = (SlackPrivateReply(client, channel, thread, user=user) if private
                 else SlackReply(client, channel, thread, user=user, team=team, budget=self.budget))
        if refusal := self.conversations.submit(question, reply):
            if private or refusal.outcome == "not_allowed":
                ephemeral(client, channel, user, thread, refusal.text)
            else:
                self._post(client, channel, thread, refusal.text)

    def _on_ask(self, ack, command: dict, client: WebClient, respond) -> None:
        # Acknowledged first: Slack's 3 s are not spent on the user-group and channel lookups.
        # What is said to the asker alone then goes through the command's response_url.
        ack()
        channel, user, team = command["channel_id"], command["user_id"], command.get("team_id")
        rule = self._rule(channel, team)
        admitted = self.conversations.admit(Question(
            platform=PLATFORM, text=question_text(command.get("text") or "", None), user=user, workspace=team,
            channel=channel, thread="", collection=self.settings.collection_for(channel, team), rule=rule,
            groups=self.directory.groups_of(client, user, rule.allowed_groups) if rule.restricted else frozenset(),
            where=self.directory.command_audience(client, channel, command.get("channel_name") or ""),
        ))
        if isinstance(admitted, Refusal):
            respond(text=admitted.text + (USAGE if admitted.outcome == "invalid" else ""), response_type="ephemeral")
            return
        if rule.private and not channel.startswith("D"):
            self.conversations.enqueue(admitted, SlackPrivateReply(client, channel, None, user=user))
            return
        # A slash command has no message to reply to: the bot posts the question, then answers
        # in that message's thread like everywhere else.
        reply = SlackReply(client, channel, None, user=user, team=team, budget=self.budget, asked_by=user)
        self.conversations.enqueue(admitted, reply)
        if reply.thread is None:  # the question could not be posted
            respond(text=CANNOT_POST, response_type="ephemeral")

    @staticmethod
    def _post(client: WebClient, channel: str, thread: str, text: str) -> str | None:
        try:
            return client.chat_postMessage(channel=channel, thread_ts=thread, text=text)["ts"]
        except SlackApiError as exc:
            log.error("could not reply in %s: %s", channel, exc.response.get("error"))
            return None


# ---------------------------------------------------------------------- running


def _retry_number(request) -> int:
    value = (request.headers.get("x-slack-retry-num") or ["0"])[0]
    return int(value) if value.isdigit() else 0


def _replay_key(request) -> str | None:
    """A signed HTTP request's identity: its signature covers its timestamp and body."""
    signature = (request.headers.get("x-slack-signature") or [""])[0]
    return f"signed:{hashlib.sha256(signature.encode()).hexdigest()[:40]}" if signature else None


def http_server(app: App, host: str, port: int) -> HttpServer:
    """A server (bots.wsgi: a bounded thread pool, idle connections closed) for the Events API and interactivity requests at EVENTS_PATH, verified
    by Bolt. `serve_forever()` runs it, `shutdown()` stops it. (/healthz and /metrics have a
    listener of their own: bots.health.)"""
    return wsgi_server(RequestGuard(SlackRequestHandler(app, path=EVENTS_PATH)), host, port, max_body=MAX_BODY_BYTES)


def serve_socket_mode(app: App, app_token: str, stop: threading.Event | None = None) -> None:
    """Receive events over Socket Mode (app-level token xapp-…) until `stop` is set or Ctrl-C."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    handler = SocketModeHandler(app, app_token)
    try:
        handler.connect()
        (stop or threading.Event()).wait()
    finally:
        handler.close()
