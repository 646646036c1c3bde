"""teambot on Slack (Bolt): answers @mentions, direct messages (also in Slack's agent view, with
suggested prompts and a thread title), `/ask` and replies in the threads it answers in (no new
mention needed), always in the question's thread; the answer streams natively (bots.slack_reply),
and 👍/👎 come from its feedback buttons and from reactions (removing a 👍/👎 reaction takes back
the vote it cast, unless the user has voted differently since).

Each channel's rule (bots.channel_rules) decides the rest: plain questions answered without a
mention, other bots answered, who may ask (users, user groups), citations required, private
(ephemeral) answers with "Share with the channel", and the experts that "I need more help" tags
in the thread, with "Mark resolved" for the asker and the experts.

Every request is acknowledged at once (Bolt acks events before running the listener; actions,
commands and views call `ack()` first). Questions go to the shared conversation core
(`bots.conversation`), which answers them on its own bounded pool, so long generations never
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
import time
from datetime import timedelta

from slack_bolt import App, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bots.channel_rules import ChannelRule
from bots.conversation import Conversations, Question, Refusal
from bots.request_guard import MAX_BODY_BYTES, RequestGuard
from bots.slack_blocks import (
    FEEDBACK, FEEDBACK_MODAL, HANDOFF, LEGACY_VOTE_DOWN, LEGACY_VOTE_UP, RESOLVE, SHARE, answer_tail,
    defuse_mass_mentions, escape, feedback_from_view, feedback_modal, handoff_block, handoff_message,
    markdown_messages, resolved_blocks, vote_of,
)
from bots.slack_reply import AppendBudget, SlackPrivateReply, SlackReply
from bots.wsgi import HttpServer, wsgi_server
from core import metrics
from core.settings import Settings, secret_value
from feedback.store import FeedbackStore, UnknownAnswer

log = logging.getLogger("teambot.slack")

PLATFORM = "slack"
EVENTS_PATH = "/slack/events"
# Who sees a Slack conversation, from an event's channel_type or a command's channel_name.
_SLACK_AUDIENCE = {"im": "direct_message", "mpim": "private_channel", "group": "private_channel"}
_SLACK_COMMAND_AUDIENCE = {"directmessage": "direct_message", "privategroup": "private_channel"}
EVENT_MEMORY = timedelta(hours=1)  # Slack redelivers within minutes (immediately, ~1 min, ~5 min)
TITLE_CHARS = 80
# Message subtypes that are a person writing; every other subtype (edits, joins, bot posts) is not.
_HUMAN_SUBTYPES = {None, "file_share", "thread_broadcast"}
REACTION_VOTES = {"+1": 1, "thumbsup": 1, "-1": -1, "thumbsdown": -1}

THANKS = "Thanks for the feedback!"
THANKS_NOTE = "Thanks, your note was saved. It helps improve the answers."
ANSWER_GONE = "I can't find that answer any more, so the vote was not recorded."
CANNOT_POST = (
    "I can't post in this conversation. Invite me with `/invite @teambot`, or ask me in a direct message."
)
NO_EXPERTS = "No one is set up to take questions in this channel yet; a channel admin can add experts."
ALREADY_WAITING = "The experts were already asked to help with this answer; they will reply in the thread."
HELP_REQUESTED = "I've asked the experts to help; they will reply in the thread."
HANDOFF_FAILED = "Sorry, I couldn't reach the experts right now. Please try again shortly."
NOT_YOURS = "Only the person who asked or the experts who were tagged can mark this resolved."
ALREADY_RESOLVED = "This was already marked resolved."
OFFER_HANDOFF = "Would you like a person to look at it?"
GROUP_MEMORY = 300.0  # seconds a user group's members are kept before asking Slack again


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


class SlackBot:
    """The Bolt app and its listeners; one per process."""

    def __init__(
        self, settings: Settings, service, store: FeedbackStore, client: WebClient | None = None,
        *, conversations: Conversations | None = None, budget: AppendBudget | None = None,
    ) -> None:
        self.settings, self.service, self.store = settings, service, store
        self.conversations = conversations or Conversations(settings, service, store)
        self.budget = budget or AppendBudget()
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
        self.app.event("assistant_thread_started")(self._on_agent_thread_started)
        self.app.event("reaction_added")(self._on_reaction)
        self.app.event("reaction_removed")(self._on_reaction_removed)
        self.app.command("/ask")(self._on_ask)
        self.app.action(FEEDBACK)(self._on_feedback_button)
        self.app.action(HANDOFF)(self._on_handoff)
        self.app.action(RESOLVE)(self._on_resolve)
        self.app.action(SHARE)(self._on_share)
        self.app.action(re.compile(f"^({LEGACY_VOTE_UP}|{LEGACY_VOTE_DOWN})$"))(self._on_legacy_vote)
        self.app.view(FEEDBACK_MODAL)(self._on_feedback_submitted)
        # Last: event types the bot does not use are acknowledged and dropped, so Slack does
        # not redeliver them (Bolt answers 404 to an unhandled event).
        self.app.event(re.compile(".*"))(self._ignore_event)
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._groups_lock = threading.Lock()
        self._audiences: dict[str, tuple[float, str]] = {}  # channel → (when asked, who sees it)

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
        if retry := request.headers.get("x-slack-retry-num"):
            reason = (request.headers.get("x-slack-retry-reason") or [""])[0]
            log.info("event %s delivered again (retry %s, %s)%s", event_id, retry[0], reason,
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

    def _on_agent_thread_started(self, event: dict, client: WebClient) -> None:
        """Someone opened teambot in Slack's agent view: offer the configured questions."""
        thread = event.get("assistant_thread") or {}
        prompts = self.settings.slack_suggested_prompts
        if not prompts or not thread.get("channel_id"):
            return
        try:
            client.assistant_threads_setSuggestedPrompts(
                channel_id=thread["channel_id"], thread_ts=thread["thread_ts"], title="Ask about the team's documents",
                prompts=[{"title": p if len(p) <= 75 else p[:74] + "…", "message": p} for p in prompts],
            )
        except SlackApiError as exc:
            log.warning("could not offer suggested prompts: %s", exc.response.get("error"))

    def _on_message(self, event: dict, body: dict, context, client: WebClient) -> None:
        # Direct messages (which never come as app_mention; agent view threads are DM threads),
        # follow-ups in channel threads the bot answers in, and, where the channel's rule says so,
        # plain questions. A message that mentions anyone is left alone: a mention of the bot
        # arrives as app_mention as well, and one of someone else is meant for them.
        if self._own(event, context) or event.get("subtype") not in _HUMAN_SUBTYPES | {"bot_message"}:
            return
        text = event.get("text") or ""
        direct = event.get("channel_type") == "im"
        if not direct and "<@" in text:
            return
        team = body.get("team_id") or event.get("team")
        rule = self._rule(event.get("channel"), team)
        addressed = direct or self._is_follow_up(event)
        from_bot = bool(event.get("bot_id")) or event.get("subtype") == "bot_message"
        if self.conversations.wanted(rule, text, addressed=addressed, from_bot=from_bot):
            self._take_question(event, team, context.bot_user_id, client, rule)

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
            rule=rule, groups=self._groups_of(client, user, rule.allowed_groups) if rule.restricted else frozenset(),
            where=self._audience(client, channel, event.get("channel_type")),
        )
        # An agent view thread gets the first question as its title.
        titled = event.get("channel_type") == "im" and event.get("thread_ts") and not self.store.thread_history(
            PLATFORM, channel, thread, 1)
        private = rule.private and event.get("channel_type") != "im" and bool(event.get("user"))
        reply = (SlackPrivateReply(client, channel, thread, user=user) if private
                 else SlackReply(client, channel, thread, user=user, team=team, budget=self.budget))
        if refusal := self.conversations.submit(question, reply):
            if private or refusal.outcome == "not_allowed":
                self._ephemeral(client, channel, user, thread, refusal.text)
            else:
                self._post(client, channel, thread, refusal.text)
        elif titled:
            self._set_title(client, channel, thread, question.text)

    def _groups_of(self, client: WebClient, user: str | None, groups: tuple[str, ...]) -> frozenset[str]:
        """Those of `groups` (Slack user group ids) that `user` belongs to; members are kept for a
        few minutes, so a busy channel does not ask Slack on every question."""
        if not user:
            return frozenset()
        found = set()
        for group in groups:
            with self._groups_lock:
                known = self._groups.get(group)
            if known is None or time.monotonic() - known[0] > GROUP_MEMORY:
                try:
                    members = frozenset(client.usergroups_users_list(usergroup=group)["users"])
                except SlackApiError as exc:  # not a member as far as can be told: the rule stays closed
                    log.warning("could not list the members of user group %s: %s", group, exc.response.get("error"))
                    continue
                with self._groups_lock:
                    self._groups[group] = (time.monotonic(), members)
                known = (0.0, members)
            if user in known[1]:
                found.add(group)
        return frozenset(found)

    def _audience(self, client: WebClient, channel: str, channel_type: str | None) -> str:
        """Who sees the conversation: a message event says (`channel_type`); an app_mention does
        not, so Slack is asked, and a channel it cannot describe counts as private."""
        if channel_type:
            return _SLACK_AUDIENCE.get(channel_type, "public")
        with self._groups_lock:
            known = self._audiences.get(channel)
        if known and time.monotonic() - known[0] < GROUP_MEMORY:
            return known[1]
        try:
            info = client.conversations_info(channel=channel)["channel"]
        except SlackApiError as exc:
            log.warning("could not tell who sees channel %s (%s); its answers count as private",
                        channel, exc.response.get("error"))
            return "private_channel"
        audience = ("direct_message" if info.get("is_im") else
                    "private_channel" if info.get("is_private") or info.get("is_mpim") else "public")
        with self._groups_lock:
            self._audiences[channel] = (time.monotonic(), audience)
        return audience

    def _command_audience(self, client: WebClient, channel: str, name: str) -> str:
        # A command names DMs and group DMs by kind, but a channel by its name, private or not.
        if name.startswith("mpdm-"):
            return "private_channel"
        return _SLACK_COMMAND_AUDIENCE.get(name) or self._audience(client, channel, None)

    @staticmethod
    def _set_title(client: WebClient, channel: str, thread: str, question: str) -> None:
        title = " ".join(question.split())
        if len(title) > TITLE_CHARS:
            title = title[: TITLE_CHARS - 1] + "…"
        try:
            client.assistant_threads_setTitle(channel_id=channel, thread_ts=thread, title=title)
        except SlackApiError as exc:
            log.warning("could not title the thread: %s", exc.response.get("error"))

    def _on_ask(self, ack, command: dict, client: WebClient, respond) -> None:
        channel, user, team = command["channel_id"], command["user_id"], command.get("team_id")
        rule = self._rule(channel, team)
        admitted = self.conversations.admit(Question(
            platform=PLATFORM, text=question_text(command.get("text") or "", None), user=user, workspace=team,
            channel=channel, thread="", collection=self.settings.collection_for(channel, team), rule=rule,
            groups=self._groups_of(client, user, rule.allowed_groups) if rule.restricted else frozenset(),
            where=self._command_audience(client, channel, command.get("channel_name") or ""),
        ))
        if isinstance(admitted, Refusal):
            usage = " Usage: `/ask which tool do expense claims go in?`" if admitted.outcome == "invalid" else ""
            ack(admitted.text + usage)  # shown only to the asker
            return
        ack()
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

    # ------------------------------------------------------------------ feedback

    def _on_feedback_button(self, ack, body: dict, action: dict, client: WebClient) -> None:
        ack()
        if vote := vote_of(action.get("value") or ""):
            self._vote(body, *vote, client)
        else:
            log.warning("a feedback button with an unknown value: %r", action.get("value"))

    def _on_legacy_vote(self, ack, body: dict, action: dict, client: WebClient) -> None:
        ack()  # the 👍/👎 buttons of answers posted before feedback_buttons
        self._vote(body, action["value"], 1 if action["action_id"] == LEGACY_VOTE_UP else -1, client)

    def _vote(self, body: dict, answer_id: str, value: int, client: WebClient) -> None:
        user, channel = body["user"]["id"], body.get("channel", {}).get("id")
        message = body.get("message") or {}
        thread = message.get("thread_ts") or message.get("ts")
        # The form first: its trigger_id expires 3 s after the click, however slow the database is.
        # The 👎 is stored below either way; the form only adds a reason or a better answer.
        form_open = value < 0 and self._open_feedback_form(client, body["trigger_id"], answer_id, channel, thread)
        try:
            self.store.rate(answer_id, platform=PLATFORM, user_id=user, value=value)
        except UnknownAnswer:
            self._ephemeral(client, channel, user, thread, ANSWER_GONE)
            return
        metrics.observe_vote(PLATFORM, value)
        if not form_open:
            self._ephemeral(client, channel, user, thread, THANKS)

    @staticmethod
    def _open_feedback_form(client: WebClient, trigger_id: str, answer_id: str, channel, thread) -> bool:
        try:
            client.views_open(trigger_id=trigger_id, view=feedback_modal(answer_id, channel, thread))
            return True
        except SlackApiError as exc:
            log.warning("could not open the feedback form: %s", exc.response.get("error"))
            return False

    def _on_feedback_submitted(self, ack, body: dict, view: dict, client: WebClient) -> None:
        ack()
        meta, reason, correction = feedback_from_view(view)
        user = body["user"]["id"]
        try:
            self.store.rate(meta["answer"], platform=PLATFORM, user_id=user, value=-1, reason=reason, correction=correction)
        except (UnknownAnswer, KeyError):
            log.warning("feedback for an unknown answer: %s", meta)
            return
        if not (reason or correction):
            return
        record = self.store.get_answer(meta["answer"])
        rule = self._rule(record.channel, record.workspace)
        blocks = None
        if rule.has_experts:  # a 👎 with a reason is where a person can help most
            blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"{THANKS_NOTE} {OFFER_HANDOFF}"}},
                      handoff_block(meta["answer"])]
        self._ephemeral(client, meta.get("channel"), user, meta.get("thread"), THANKS_NOTE, blocks)

    # ------------------------------------------------------------------ hand-off to people, sharing

    def _on_handoff(self, ack, body: dict, action: dict, client: WebClient) -> None:
        """ "I need more help": tag the channel's experts in the answer's thread, once."""
        ack()
        user, channel = body["user"]["id"], (body.get("channel") or {}).get("id")
        record = self.store.get_answer(action.get("value") or "")
        if record is None:
            self._ephemeral(client, channel, user, None, ANSWER_GONE)
            return
        thread = record.thread or None
        rule = self._rule(record.channel, record.workspace)
        if not rule.has_experts:
            self._ephemeral(client, record.channel, user, thread, NO_EXPERTS)
            return
        handoff, opened = self.store.request_handoff(record.id, platform=PLATFORM, user_id=user)
        if not opened:
            self._ephemeral(client, record.channel, user, thread, ALREADY_WAITING)
            return
        text, blocks = handoff_message(self.store.shown_answer(record.id), asker=user, users=rule.expert_users,
                                       groups=rule.expert_groups, handoff_id=handoff.id)
        try:
            posted = client.chat_postMessage(channel=record.channel, thread_ts=thread, text=text, blocks=blocks)
        except SlackApiError as exc:
            log.error("could not ask the experts in %s: %s", record.channel, exc.response.get("error"))
            self.store.cancel_handoff(handoff.id)  # so that the next click tries again
            self._ephemeral(client, record.channel, user, thread, HANDOFF_FAILED)
            return
        self.store.set_handoff_message(handoff.id, posted["ts"])
        metrics.observe_handoff(PLATFORM, "requested")
        self._ephemeral(client, record.channel, user, thread, HELP_REQUESTED)

    def _on_resolve(self, ack, body: dict, action: dict, client: WebClient) -> None:
        """ "Mark resolved", for the asker and the experts."""
        ack()
        user, channel = body["user"]["id"], (body.get("channel") or {}).get("id")
        message = body.get("message") or {}
        thread = message.get("thread_ts")
        handoff = self.store.get_handoff(int(action["value"])) if (action.get("value") or "").isdigit() else None
        record = self.store.get_answer(handoff.answer_id) if handoff else None
        if record is None:
            self._ephemeral(client, channel, user, thread, ANSWER_GONE)
            return
        rule = self._rule(record.channel, record.workspace)
        mine = self.store.user_hash(PLATFORM, user) in (record.user_hash, handoff.requested_by)
        if not mine and not rule.is_expert(user, self._groups_of(client, user, rule.expert_groups)):
            self._ephemeral(client, channel, user, thread, NOT_YOURS)
            return
        if not self.store.resolve_handoff(handoff.id, platform=PLATFORM, user_id=user):
            self._ephemeral(client, channel, user, thread, ALREADY_RESOLVED)
            return
        metrics.observe_handoff(PLATFORM, "resolved")
        try:
            client.chat_update(channel=channel, ts=message.get("ts") or handoff.message_id,
                               text=f"Resolved by <@{user}>.", blocks=resolved_blocks(message.get("blocks") or [], user))
        except SlackApiError as exc:
            log.warning("could not mark the hand-off message resolved: %s", exc.response.get("error"))

    def _on_share(self, ack, body: dict, action: dict, client: WebClient, respond) -> None:
        """ "Share with the channel" under a private answer: post it for everyone, with its buttons."""
        ack()
        user = body["user"]["id"]
        record = self.store.get_answer(action.get("value") or "")
        if record is None or record.user_hash != self.store.user_hash(PLATFORM, user):
            respond(text=ANSWER_GONE, response_type="ephemeral", replace_original=False)
            return
        answer = self.store.shown_answer(record.id)
        rule = self._rule(record.channel, record.workspace)
        shared = f"<@{user}> shared an answer to: {escape(' '.join(answer.question.split())[:500])}"
        messages = markdown_messages(answer.text.strip(),
                                     answer_tail(answer, votes=True, handoff=rule.has_experts))
        ts = []
        for i, (text, blocks) in enumerate(messages):
            if i == 0:
                blocks = [{"type": "context", "elements": [{"type": "mrkdwn", "text": shared}]}, *blocks]
            ts.append(client.chat_postMessage(channel=record.channel, thread_ts=record.thread or None, text=text,
                                              blocks=blocks)["ts"])
        self.store.set_message_id(record.id, ts[-1], parts=ts[:-1])
        respond(delete_original=True)  # the private copy; the shared one carries the votes now

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
    def _ephemeral(client: WebClient, channel: str | None, user: str | None, thread: str | None, text: str,
                   blocks: list[dict] | None = None) -> None:
        if not channel or not user:
            return
        try:
            client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread, text=text, blocks=blocks)
        except SlackApiError as exc:
            log.warning("could not tell %s: %s", user, exc.response.get("error"))


# ---------------------------------------------------------------------- running


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
