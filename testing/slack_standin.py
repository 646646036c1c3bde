"""A local stand-in of the Slack Web API, as strict as Slack about what it accepts.

Point `slack_sdk.WebClient(base_url=standin.api_url)` at it. It records every call and keeps the
messages the bot posted, and it refuses what Slack refuses, with Slack's errors:
- Block Kit: known block types only, 50 blocks, section text 3,000, markdown 12,000 a block, and
  12,000 characters of text in all of a payload's blocks together (`invalid_blocks`,
  `msg_blocks_too_long`),
  message text 40,000 (`msg_too_long`), feedback_buttons only in `context_actions`;
- streaming: `chat.startStream` in a channel needs the recipient user and team; appends and
  stops only on a message that is streaming (`message_not_in_streaming_state`; a stream ends
  STREAM_LIFETIME s after it started), 12,000 characters of markdown a call and a message;
- unknown message ts: `message_not_found`; `views.open` with a trigger id older than 3 s:
  `expired_trigger_id` (trigger ids come from `issue_trigger`, as Slack's come with a click);
- ephemeral messages are kept apart (only their user sees them; no ts to edit or react to); a
  click on one carries no `message`, and only its `response_url` can delete or replace it;
- user groups (`usergroups.users.list`): unknown ids are `no_such_subteam`;
- channels (`conversations.info`): public, private or a DM as `channels` sets, else by the id;
- ephemeral messages only to members of the channel (`user_not_in_channel`, where `members` says);
- modals (`views.open`): 100 blocks, title/submit/close 24 characters, private_metadata 3,000,
  input labels 2,000, plain_text_input max_length 3,000;
- agent sessions (`agents.sessions.setStatus`): statuses active, processing, suspended, closed;
  the title (200 characters) only on creation; a stream's stop in its thread ends `processing`;
  `stop_session` is the Stop button (only while processing): Slack ends the thread's streaming
  messages and gives the `agent_session_stopped` event to deliver;
- loading statuses (`assistant.threads.setStatus`) cleared by a message in the thread or after
  `status_lifetime` seconds (Slack: two minutes) without one;
- suggested prompts for an agent app (the manifest's agent_view) set on the conversation: with a
  thread_ts the call succeeds and nothing is shown, as Slack documents;
- rate limits per method and workspace, by Slack's tiers (chat.postMessage: about one a second
  per channel, bursts of a few), answered with HTTP 429, `ratelimited` and a Retry-After header.
It also plays the other side of the conversation: `signed` builds Events API, slash command and
interactivity requests signed like Slack signs them, and `SocketModeStandIn` delivers events
over Socket Mode.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode

from aiohttp import WSMsgType, web
from slack_sdk.signature import SignatureVerifier

TEAM = "T0TEAMBOT"
BOT_USER = "U0TEAMBOT"
BOT_ID = "B0TEAMBOT"
BOT_TOKEN = "xoxb-standin-token"
APP_TOKEN = "xapp-standin-token"

MAX_BLOCKS = 50
SECTION_TEXT = 3000
MARKDOWN_TEXT = 12_000
MESSAGE_TEXT = 40_000
TRIGGER_LIFETIME = 3.0
STREAM_LIFETIME = 300.0
KNOWN_BLOCKS = {
    "actions", "context", "context_actions", "divider", "file", "header", "image", "input", "markdown",
    "rich_text", "section", "table", "video",
}
# https://docs.slack.dev/apis/web-api/rate-limits: calls a minute per workspace.
TIER = {1: 1, 2: 20, 3: 50, 4: 100}
METHOD_TIERS = {
    "chat.startStream": 2, "chat.stopStream": 2, "chat.appendStream": 4, "chat.update": 3, "chat.delete": 3,
    "chat.postEphemeral": 4, "views.open": 4, "assistant.threads.setStatus": 4,
    "assistant.threads.setTitle": 4, "assistant.threads.setSuggestedPrompts": 4, "usergroups.users.list": 2,
    "conversations.info": 3, "agents.sessions.setStatus": 3, "agents.sessions.rename": 3,
}
POST_MESSAGE_PER_CHANNEL = 60  # "one message per second per channel, short bursts allowed"…
POST_MESSAGE_BURST = 3  # …of a few
SESSION_STATUSES = {"active", "processing", "suspended", "closed"}
SESSION_TITLE = 200
STATUS_LIFETIME = 120.0
MODAL_BLOCKS = 100
MODAL_TITLE = 24


@dataclass
class Call:
    method: str
    args: dict
    response: dict = field(default_factory=dict)
    status: int = 200
    at: float = field(default_factory=time.perf_counter)  # when it was answered


@dataclass
class Message:
    """A message the bot posted, as Slack would show it now."""

    channel: str
    ts: str
    thread_ts: str | None
    text: str = ""  # the text, or the markdown streamed into it
    blocks: list = field(default_factory=list)
    streaming: bool = False
    started: float = 0.0
    deleted: bool = False
    via: str = "chat.postMessage"
    user: str | None = None  # an ephemeral message: the one person who sees it

    def button(self, action_id: str) -> dict | None:
        """The button with this action id in the message's `actions` blocks."""
        for block in self.blocks:
            for element in block.get("elements", []) if block.get("type") == "actions" else []:
                if element.get("action_id") == action_id:
                    return element
        return None

    @property
    def answer_id(self) -> str | None:
        """The answer id on its 👍/👎 feedback buttons, if it has them."""
        for block in self.blocks:
            for element in block.get("elements", []) if block.get("type") == "context_actions" else []:
                if element.get("type") == "feedback_buttons":
                    return element["positive_button"]["value"].partition(":")[2]
        return None


class _Bucket:
    def __init__(self, per_minute: int, burst: int | None = None) -> None:
        self.capacity = burst or per_minute
        self.tokens, self.rate, self.updated = float(self.capacity), per_minute / 60, time.monotonic()

    def take(self) -> float:
        """0 if a call may go now, else the seconds until it may."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


_triggers: dict[str, float] = {}
_trigger_ids = itertools.count(1)


def issue_trigger() -> str:
    """A trigger id as Slack sends with a click or a command; valid for 3 seconds."""
    trigger = f"{next(_trigger_ids)}.{int(time.time())}.standin"
    _triggers[trigger] = time.monotonic()
    return trigger


def _text_length(obj) -> int:
    return len(obj.get("text", "")) if isinstance(obj, dict) else 0


def _all_text(obj) -> int:
    """Characters of text anywhere in a block: markdown, section and context text, button labels."""
    if isinstance(obj, list):
        return sum(_all_text(o) for o in obj)
    if not isinstance(obj, dict):
        return 0
    return sum(len(v) if k == "text" and isinstance(v, str) else _all_text(v) for k, v in obj.items())


def blocks_error(blocks) -> str | None:
    """Slack's error for these blocks, or None if it would accept them."""
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        return "invalid_blocks"
    ids = set()
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in KNOWN_BLOCKS:
            return "invalid_blocks"
        if (block_id := block.get("block_id")) is not None:
            if block_id in ids or len(block_id) > 255:
                return "invalid_blocks"
            ids.add(block_id)
        if kind == "section":
            text = block.get("text")
            if not (text or block.get("fields")) or (text and (text.get("type") not in ("mrkdwn", "plain_text")
                                                               or not 0 < _text_length(text) <= SECTION_TEXT)):
                return "invalid_blocks"
        elif kind == "markdown":
            if not isinstance(block.get("text"), str) or not 0 < len(block["text"]) <= MARKDOWN_TEXT:
                return "invalid_blocks"
        elif kind == "context_actions":
            elements = block.get("elements") or []
            if not 0 < len(elements) <= 5 or any(not _feedback_ok(e) for e in elements):
                return "invalid_blocks"
        elif kind == "actions":
            elements = block.get("elements") or []
            if not 0 < len(elements) <= 25 or any(e.get("type") == "feedback_buttons" for e in elements):
                return "invalid_blocks"
        elif kind == "context":
            if not 0 < len(block.get("elements") or []) <= 10:
                return "invalid_blocks"
    # The limit is on the text of all the blocks together, not only the markdown ones.
    return "msg_blocks_too_long" if _all_text(blocks) > MARKDOWN_TEXT else None


def modal_error(view: dict) -> str | None:
    """Slack's error for a modal view, or None (its limits, https://docs.slack.dev/reference/views/modal-views)."""
    if view.get("type") != "modal" or not 0 < _text_length(view.get("title")) <= MODAL_TITLE:
        return "invalid_arguments"
    if any(view.get(k) is not None and not 0 < _text_length(view[k]) <= MODAL_TITLE for k in ("submit", "close")):
        return "invalid_arguments"
    if len(view.get("private_metadata") or "") > 3000 or len(view.get("callback_id") or "") > 255:
        return "invalid_arguments"
    blocks = view.get("blocks") or []
    if not isinstance(blocks, list) or len(blocks) > MODAL_BLOCKS:
        return "invalid_blocks"
    for block in blocks:
        if isinstance(block, dict) and block.get("type") == "input":
            element = block.get("element") or {}
            if not 0 < _text_length(block.get("label")) <= 2000 or not element.get("type"):
                return "invalid_blocks"
            if element.get("type") == "plain_text_input" and not 0 < element.get("max_length", 3000) <= 3000:
                return "invalid_blocks"
    return blocks_error([b for b in blocks if not (isinstance(b, dict) and b.get("type") == "input")])


def _feedback_ok(element: dict) -> bool:
    if element.get("type") == "icon_button":
        return True
    if element.get("type") != "feedback_buttons":
        return False
    buttons = [element.get("positive_button"), element.get("negative_button")]
    return all(
        isinstance(b, dict) and b.get("text", {}).get("type") == "plain_text" and 0 < _text_length(b["text"]) <= 75
        and isinstance(b.get("value"), str) and 0 < len(b["value"]) <= 2000
        for b in buttons
    )


def _chunks_text(args: dict) -> tuple[str | None, str]:
    """(error, markdown) of a streaming call's markdown_text and chunks."""
    text = args.get("markdown_text") or ""
    if len(text) > MARKDOWN_TEXT:
        return "msg_too_long", ""
    for chunk in args.get("chunks") or []:
        kind = chunk.get("type") if isinstance(chunk, dict) else None
        if kind == "markdown_text":
            if not isinstance(chunk.get("text"), str) or len(chunk["text"]) > MARKDOWN_TEXT:
                return "msg_too_long", ""
            text += chunk["text"]
        elif kind not in ("task_update", "plan_update", "blocks"):
            return "invalid_chunks", ""
    return None, text


class SlackStandIn:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.errors: dict[str, str] = {}  # method → error to answer with every time (e.g. not_in_channel)
        self.hooks: dict[str, object] = {}  # method → fn(args), run before the call is answered
        self.socket_mode: SocketModeStandIn | None = None  # set to accept Socket Mode connections
        self.messages: dict[tuple[str, str], Message] = {}
        self.status: dict[tuple[str, str], str] = {}  # (channel, thread) → the loading status set last
        self.status_set: dict[tuple[str, str], float] = {}  # … and when (it shows for status_lifetime)
        self.status_lifetime = STATUS_LIFETIME
        self.sessions: dict[tuple[str, str], dict] = {}  # (channel, thread) → its agent session: status, title
        self.prompts: dict[str, dict] = {}  # conversation → the suggested prompts shown there: title, prompts
        self.members: dict[str, set[str]] = {}  # channel → its members, where a test says (else everyone)
        self.ephemeral: dict[tuple[str, str], Message] = {}  # (channel, message_ts) → an ephemeral message
        self.usergroups: dict[str, list[str]] = {}  # user group id → its members
        # channel id → what conversations.info says of it beyond its id; a channel not named here is
        # public (C…), private (G…) or a DM (D…) by its id's first letter, as older workspaces have it
        self.channels: dict[str, dict] = {}
        self._fail_next: dict[str, list[tuple[str, float | None]]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._changed = threading.Condition()
        self._ts = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def start(self) -> "SlackStandIn":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ steering

    def fail_next(self, method: str, error: str, *, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next `times` calls of `method` with `error` (`ratelimited`: HTTP 429 with
        Retry-After `retry_after` seconds), whatever their arguments."""
        with self._changed:
            self._fail_next.setdefault(method, []).extend([(error, retry_after)] * times)

    # ------------------------------------------------------------------ inspecting

    def find(self, method: str, where=None, **args) -> list[Call]:
        """Calls of `method` whose arguments include `args` and that satisfy `where(call)`."""
        with self._changed:
            return [
                c for c in self.calls
                if c.method == method and all(c.args.get(k) == v for k, v in args.items()) and (where is None or where(c))
            ]

    def wait_call(self, method: str, where=None, timeout: float = 300.0, **args) -> Call:
        """The first call matching like `find`, waiting for it."""
        return self.wait_for(lambda _calls: next(iter(self.find(method, where, **args)), None), timeout)

    def wait_for(self, predicate, timeout: float = 300.0):
        """Block until `predicate(calls)` returns something truthy; return it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (found := predicate(list(self.calls))):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; calls were: {[c.method for c in self.calls]}")
                self._changed.wait(left)
            return found

    def status_shown(self, channel: str, thread: str) -> str | None:
        """The loading status the thread shows now: none after a message, or once it expired."""
        with self._changed:
            set_at = self.status_set.get((channel, thread), 0.0)
            if time.monotonic() - set_at > self.status_lifetime:
                return None
            return self.status.get((channel, thread))

    def stop_session(self, channel: str, thread: str, user: str) -> dict | None:
        """`user` presses Stop on the thread's session (shown only while it is processing): its
        streaming messages end, and the `agent_session_stopped` event Slack sends is returned."""
        with self._changed:
            session = self.sessions.get((channel, thread))
            if session is None or session["status"] != "processing":
                return None
            stopped = [m for m in self.messages.values()
                       if m.channel == channel and m.thread_ts == thread and m.streaming and not m.deleted]
            for message in stopped:
                message.streaming = False
            return {"type": "agent_session_stopped", "channel": channel, "thread_ts": thread, "user": user,
                    "streaming_message_ts": [m.ts for m in stopped], "event_ts": self._next_ts()}

    def find_all(self, channel: str) -> list[Call]:
        """Every call about `channel`, whatever the method."""
        with self._changed:
            return [c for c in self.calls if (c.args.get("channel") or c.args.get("channel_id")) == channel]

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The bot's messages in a thread, oldest first, as shown now (deleted ones gone)."""
        with self._changed:
            return [m for m in self.messages.values()
                    if m.channel == channel and m.thread_ts == thread_ts and not m.deleted]

    def ephemerals(self, user: str, channel: str | None = None) -> list[Message]:
        """What `user` was shown privately (in `channel`), oldest first, deleted ones gone."""
        with self._changed:
            return [m for m in self.ephemeral.values()
                    if m.user == user and (channel is None or m.channel == channel) and not m.deleted]

    def reset(self) -> None:
        with self._changed:
            self.calls.clear()
            self.ephemeral.clear()
            self.errors.clear()
            self.hooks.clear()
            self.members.clear()
            self._fail_next.clear()
            self._buckets.clear()

    # ------------------------------------------------------------------ answering

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _limited(self, method: str, args: dict) -> float:
        if method == "chat.postMessage":
            key, per_minute, burst = f"{method}:{args.get('channel')}", POST_MESSAGE_PER_CHANNEL, POST_MESSAGE_BURST
        elif method in METHOD_TIERS:
            key, per_minute, burst = method, TIER[METHOD_TIERS[method]], None
        else:
            return 0.0
        bucket = self._buckets.setdefault(key, _Bucket(per_minute, burst))
        return bucket.take()

    def _answer(self, method: str, args: dict) -> tuple[int, dict, float | None]:
        """(HTTP status, body, Retry-After) of a call; called with the lock held."""
        if method.startswith("response_url/respond/"):
            return self._respond(method.removeprefix("response_url/respond/"), args)
        if method.startswith("response_url"):
            return 200, {"ok": True}, None
        if method == "apps.connections.open":  # Socket Mode: the app-level token asks where to connect
            if args.get("token") != APP_TOKEN or self.socket_mode is None:
                return 200, {"ok": False, "error": "invalid_auth"}, None
            return 200, {"ok": True, "url": self.socket_mode.url}, None
        if args.get("token") != BOT_TOKEN:
            return 200, {"ok": False, "error": "not_authed" if not args.get("token") else "invalid_auth"}, None
        if queued := self._fail_next.get(method):
            error, retry_after = queued.pop(0)
            if error == "ratelimited":
                return 429, {"ok": False, "error": "ratelimited"}, retry_after or 1
            return 200, {"ok": False, "error": error}, None
        if wait := self._limited(method, args):
            return 429, {"ok": False, "error": "ratelimited"}, wait
        if method in self.errors:
            return 200, {"ok": False, "error": self.errors[method]}, None
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, None
        result = handler(args)
        body = {"ok": False, "error": result} if isinstance(result, str) else {"ok": True, **result}
        return 200, body, None

    # Each method: an error (str) or the rest of an ok response.

    def _auth_test(self, args: dict):
        return {"url": "https://teambot-test.slack.com/", "team": "Teambot Test", "user": "teambot",
                "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": False}

    def _message_error(self, args: dict) -> str | None:
        text, blocks = args.get("text"), args.get("blocks")
        if not args.get("channel"):
            return "channel_not_found"
        if not text and not blocks:
            return "no_text"
        if text and len(text) > MESSAGE_TEXT:
            return "msg_too_long"
        return blocks_error(blocks) if blocks is not None else None

    def _post(self, channel: str, thread_ts: str | None, via: str, **state) -> Message:
        message = Message(channel, self._next_ts(), thread_ts, via=via, **state)
        self.messages[(channel, message.ts)] = message
        if thread_ts:  # Slack clears the thread's status when the app replies in it
            self.status.pop((channel, thread_ts), None)
            self.status_set.pop((channel, thread_ts), None)
        return message

    def _chat_postMessage(self, args: dict):
        if error := self._message_error(args):
            return error
        blocks = args.get("blocks") or []
        markdown = "\n".join(b["text"] for b in blocks if b.get("type") == "markdown")
        message = self._post(args["channel"], args.get("thread_ts"), "chat.postMessage",
                             text=markdown or args.get("text") or "", blocks=blocks)
        shown = {k: v for k, v in args.items() if k in ("text", "blocks", "thread_ts")}
        return {"channel": args["channel"], "ts": message.ts,
                "message": {**shown, "type": "message", "user": BOT_USER, "bot_id": BOT_ID, "ts": message.ts}}

    def _existing(self, args: dict) -> Message | str:
        message = self.messages.get((args.get("channel"), args.get("ts")))
        return message if message is not None and not message.deleted else "message_not_found"

    def _chat_update(self, args: dict):
        message = self._existing(args)
        if isinstance(message, str):
            return message
        if error := self._message_error(args):
            return error
        message.text, message.blocks = args.get("text") or "", args.get("blocks") or []
        return {"channel": args["channel"], "ts": args["ts"], "text": message.text}

    def _chat_delete(self, args: dict):
        message = self._existing(args)
        if isinstance(message, str):
            return message
        message.deleted = True
        return {"channel": args["channel"], "ts": args["ts"]}

    def _chat_postEphemeral(self, args: dict):
        if not args.get("user"):
            return "user_not_found"
        if args.get("channel") in self.members and args["user"] not in self.members[args["channel"]]:
            return "user_not_in_channel"
        if error := self._message_error(args):
            return error
        blocks = args.get("blocks") or []
        markdown = "\n".join(b["text"] for b in blocks if b.get("type") == "markdown")
        message = Message(args["channel"], self._next_ts(), args.get("thread_ts"), text=markdown or args.get("text") or "",
                          blocks=blocks, via="chat.postEphemeral", user=args["user"])
        self.ephemeral[(message.channel, message.ts)] = message
        return {"message_ts": message.ts}

    def _respond(self, target: str, args: dict) -> tuple[int, dict, float | None]:
        """A POST to the response_url of a click on an ephemeral message."""
        channel, _, ts = target.partition("/")
        message = self.ephemeral.get((channel, ts))
        if message is None or message.deleted:
            return 404, {"ok": False, "error": "expired_url"}, None
        if args.get("delete_original") in (True, "true"):
            message.deleted = True
        elif args.get("replace_original") in (True, "true"):
            if error := self._message_error({**args, "channel": channel}):
                return 400, {"ok": False, "error": error}, None
            message.text, message.blocks = args.get("text") or "", args.get("blocks") or []
        else:
            self._chat_postEphemeral({**args, "channel": channel, "user": message.user, "thread_ts": message.thread_ts})
        return 200, {"ok": True}, None

    def _usergroups_users_list(self, args: dict):
        if args.get("usergroup") not in self.usergroups:
            return "no_such_subteam"
        return {"users": list(self.usergroups[args["usergroup"]])}

    def _conversations_info(self, args: dict):
        channel = args.get("channel") or ""
        if not channel:
            return "channel_not_found"
        kind = channel[:1]
        info = {"id": channel, "is_channel": kind == "C", "is_group": kind == "G", "is_im": kind == "D",
                "is_mpim": False, "is_private": kind in "GD", "is_archived": False}
        return {"channel": {**info, **self.channels.get(channel, {})}}

    def _chat_startStream(self, args: dict):
        channel = args.get("channel")
        if not channel:
            return "channel_not_found"
        if channel[0] in "CG":  # a channel, not a DM: whom the stream is for
            if not args.get("recipient_user_id"):
                return "missing_recipient_user_id"
            if not args.get("recipient_team_id"):
                return "missing_recipient_team_id"
        error, text = _chunks_text(args)
        if error:
            return error
        message = self._post(channel, args.get("thread_ts"), "chat.startStream", text=text, streaming=True,
                             started=time.monotonic())
        return {"channel": channel, "ts": message.ts}

    def _streaming(self, args: dict) -> Message | str:
        message = self._existing(args)
        if isinstance(message, str):
            return message
        if not message.streaming or time.monotonic() - message.started > STREAM_LIFETIME:
            message.streaming = False
            return "message_not_in_streaming_state"
        return message

    def _chat_appendStream(self, args: dict):
        message = self._streaming(args)
        if isinstance(message, str):
            return message
        error, text = _chunks_text(args)
        if error or not text:
            return error or "no_text"
        if len(message.text) + len(text) > MARKDOWN_TEXT:
            return "msg_too_long"
        message.text += text
        return {"channel": message.channel, "ts": message.ts}

    def _chat_stopStream(self, args: dict):
        message = self._streaming(args)
        if isinstance(message, str):
            return message
        error, text = _chunks_text(args)
        if not error and args.get("blocks") is not None:
            error = blocks_error(args["blocks"])
        if not error and len(message.text) + len(text) > MARKDOWN_TEXT:
            error = "msg_too_long"
        if error:
            return error
        message.text += text
        message.blocks = args.get("blocks") or []
        message.streaming = False
        session = self.sessions.get((message.channel, message.thread_ts or ""))
        if session and session["status"] == "processing":  # a stream's stop ends the session's work
            session["status"] = "active"
        return {"channel": message.channel, "ts": message.ts}

    def _assistant_threads_setStatus(self, args: dict):
        if not args.get("channel_id") or not args.get("thread_ts") or "status" not in args:
            return "invalid_arguments"
        if len(args.get("loading_messages") or []) > 10:
            return "invalid_arguments"
        key = (args["channel_id"], args["thread_ts"])
        if args["status"]:
            self.status[key], self.status_set[key] = args["status"], time.monotonic()
        else:
            self.status.pop(key, None)
            self.status_set.pop(key, None)
        return {}

    def _agents_sessions_setStatus(self, args: dict):
        if args.get("status") not in SESSION_STATUSES or not args.get("channel_id") or not args.get("thread_ts"):
            return "invalid_arguments"
        if len(args.get("title") or "") > SESSION_TITLE:
            return "invalid_arguments"
        key = (args["channel_id"], args["thread_ts"])
        session = self.sessions.setdefault(key, {"title": args.get("title") or "", "status": args["status"]})
        session["status"] = args["status"]  # the title only on creation
        return {"status": session["status"], "title": session["title"]}

    def _agents_sessions_rename(self, args: dict):
        session = self.sessions.get((args.get("channel_id"), args.get("thread_ts")))
        if session is None:
            return "session_not_found"
        if not 0 < len(args.get("title") or "") <= SESSION_TITLE:
            return "invalid_arguments"
        session["title"] = args["title"]
        return {"title": session["title"]}

    def _assistant_threads_setTitle(self, args: dict):
        if not args.get("channel_id") or not args.get("thread_ts") or not args.get("title"):
            return "invalid_arguments"
        return {}

    def _assistant_threads_setSuggestedPrompts(self, args: dict):
        prompts = args.get("prompts")
        if not args.get("channel_id") or not isinstance(prompts, list) or not 0 < len(prompts) <= 4:
            return "invalid_arguments"
        if any(not p.get("title") or not p.get("message") for p in prompts):
            return "invalid_arguments"
        if not args.get("thread_ts"):  # an agent app: set on the conversation; with a thread_ts, silently dropped
            self.prompts[args["channel_id"]] = {"title": args.get("title"), "prompts": prompts}
        return {}

    def _views_open(self, args: dict):
        issued = _triggers.get(args.get("trigger_id") or "")
        if issued is None:
            return "invalid_trigger_id"
        if time.monotonic() - issued > TRIGGER_LIFETIME:
            return "expired_trigger_id"
        view = args.get("view") or {}
        if error := modal_error(view):
            return error
        return {"view": {**view, "id": "V0FEEDBACK"}}

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002
                pass

            def _args(self) -> dict:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                query = self.path.partition("?")[2]
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    args = json.loads(raw or "{}")
                else:
                    args = dict(parse_qsl(raw))
                    for key in ("blocks", "view", "prompts", "chunks", "loading_messages"):
                        if isinstance(args.get(key), str):  # form-encoded calls carry these as JSON text
                            args[key] = json.loads(args[key])
                args.update(parse_qsl(query))
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Bearer "):
                    args.setdefault("token", auth.removeprefix("Bearer "))
                return args

            def _serve(self) -> None:
                path = self.path.partition("?")[0]
                method = path.removeprefix("/api/") if path.startswith("/api/") else "response_url" + path
                args = self._args()
                if hook := standin.hooks.get(method):
                    hook(args)
                with standin._changed:
                    status, response, retry_after = standin._answer(method, args)
                    standin.calls.append(Call(method, args, response, status))
                    standin._changed.notify_all()
                body = json.dumps(response).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                if retry_after is not None:
                    self.send_header("Retry-After", str(max(1, math.ceil(retry_after))))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET = _serve

        return Handler


class SocketModeStandIn:
    """Slack's Socket Mode endpoint: a WebSocket server (plain ws:// on loopback, which
    slack_sdk's client allows for ports other than 443) that says hello to the app, sends it
    envelopes and records the acknowledgements it sends back."""

    def __init__(self) -> None:
        self.acks: list[dict] = []
        self._changed = threading.Condition()
        self._socket = None
        self._loop = asyncio.new_event_loop()
        self._runner = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.url = ""

    def start(self) -> "SocketModeStandIn":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/link/", self._connection)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/link/?ticket=standin"

    async def _connection(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({
            "type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0TEAMBOT"},
            "debug_info": {"host": "standin", "approximate_connection_time": 3600},
        }))
        with self._changed:
            self._socket = ws
            self._changed.notify_all()
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                with self._changed:
                    self.acks.append(json.loads(message.data))
                    self._changed.notify_all()
        return ws

    def wait_connected(self, timeout: float = 30.0) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self._socket is not None, timeout), "the app did not connect"

    def send_event(self, body: str, *, retry: int = 0) -> str:
        """Deliver an Events API body as Slack does over Socket Mode; returns its envelope id."""
        envelope_id = f"env-{next(_event_ids)}"
        envelope = {
            "envelope_id": envelope_id, "type": "events_api", "payload": json.loads(body),
            "accepts_response_payload": False, "retry_attempt": retry, "retry_reason": "timeout" if retry else "",
        }
        asyncio.run_coroutine_threadsafe(self._socket.send_str(json.dumps(envelope)), self._loop).result(10)
        return envelope_id

    def wait_ack(self, envelope_id: str, timeout: float = 30.0) -> dict:
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((a for a in self.acks if a.get("envelope_id") == envelope_id), None), timeout
            )
        assert found, f"no acknowledgement of {envelope_id}"
        return found


# ---------------------------------------------------------------------- requests from "Slack"


def signed(secret: str, body: str, content_type: str, *, timestamp: int | None = None, retry: int | None = None) -> dict:
    """Headers Slack sends with a request to the app, signed with `secret`."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": SignatureVerifier(secret).generate_signature(timestamp=ts, body=body),
    }
    if retry is not None:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    return headers


_event_ids = itertools.count(1)


def event_body(event: dict, *, event_id: str | None = None) -> str:
    """An Events API `event_callback` envelope around `event`, as JSON text."""
    return json.dumps({
        "token": "legacy-verification-token", "team_id": TEAM, "api_app_id": "A0TEAMBOT", "type": "event_callback",
        "event": event, "event_id": event_id or f"Ev{next(_event_ids):08d}", "event_time": int(time.time()),
        "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True, "is_enterprise_install": False}],
        "is_ext_shared_channel": False, "event_context": "4-standin",
    })


def mention(text: str, *, user: str = "U0ALICE", channel: str = "C0GENERAL", ts: str | None = None,
            thread_ts: str | None = None, **extra) -> dict:
    ts = ts or _message_ts()
    event = {
        "type": "app_mention", "user": user, "text": f"<@{BOT_USER}> {text}", "ts": ts,
        "channel": channel, "team": TEAM, "event_ts": ts, **extra,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def home_opened(*, user: str = "U0ALICE", channel: str = "D0ALICE", tab: str = "messages") -> dict:
    """`app_home_opened`: someone opened the app's messages (its agent view) or its Home tab."""
    return {"type": "app_home_opened", "user": user, "channel": channel, "tab": tab, "event_ts": _message_ts()}


def direct_message(text: str, *, user: str = "U0ALICE", channel: str = "D0ALICE", **extra) -> dict:
    ts = _message_ts()
    return {"type": "message", "channel_type": "im", "user": user, "text": text, "ts": ts, "event_ts": ts,
            "channel": channel, "team": TEAM, **extra}


def channel_message(text: str, *, user: str | None = "U0ALICE", channel: str = "C0GENERAL", bot_id: str | None = None,
                    **extra) -> dict:
    """A plain message in a channel (message.channels); with `bot_id`, one another app posted."""
    ts = _message_ts()
    event = {"type": "message", "channel_type": "channel", "text": text, "ts": ts, "event_ts": ts,
             "channel": channel, "team": TEAM, **extra}
    if user:
        event["user"] = user
    if bot_id:
        event |= {"bot_id": bot_id, "subtype": "bot_message"} if not user else {"bot_id": bot_id}
    return event


def message_changed(original: dict, text: str) -> dict:
    """Its author edited `original` (a message event): the `message_changed` event Slack sends,
    the message as it is now inside, hidden, with its own event ts."""
    ts = _message_ts()
    message = {k: v for k, v in original.items() if k in ("type", "user", "bot_id", "text", "ts", "thread_ts", "team")}
    return {"type": "message", "subtype": "message_changed", "hidden": True, "channel": original["channel"],
            "channel_type": original.get("channel_type", "channel"), "ts": ts, "event_ts": ts,
            "message": {**message, "text": text, "edited": {"user": original.get("user"), "ts": ts}},
            "previous_message": message}


def message_deleted(original: dict) -> dict:
    """Its author deleted `original`: `message_deleted`, naming it by `deleted_ts`."""
    ts = _message_ts()
    previous = {k: v for k, v in original.items() if k in ("type", "user", "text", "ts", "thread_ts")}
    return {"type": "message", "subtype": "message_deleted", "hidden": True, "channel": original["channel"],
            "channel_type": original.get("channel_type", "channel"), "ts": ts, "event_ts": ts,
            "deleted_ts": original["ts"], "previous_message": previous}


_message_counter = itertools.count(1)


def _message_ts() -> str:
    return f"{int(time.time())}.{900000 + next(_message_counter):06d}"


def interaction_body(payload: dict) -> str:
    """Interactivity requests (buttons, modal submissions) are form-encoded `payload=<json>`."""
    return urlencode({"payload": json.dumps(payload)})


def block_action(action_id: str, value: str, *, message_ts: str, channel: str = "C0GENERAL",
                 user: str = "U0ALICE", thread_ts: str | None = None, response_url: str = "") -> dict:
    message = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "ts": message_ts, "text": "answer"}
    if thread_ts:
        message["thread_ts"] = thread_ts
    return {
        "type": "block_actions", "team": {"id": TEAM, "domain": "teambot-test"},
        "user": {"id": user, "username": "alice", "team_id": TEAM}, "api_app_id": "A0TEAMBOT",
        "token": "legacy-verification-token", "trigger_id": issue_trigger(),
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "channel": {"id": channel, "name": "general"}, "message": message, "response_url": response_url,
        "actions": [{"type": "button", "action_id": action_id, "block_id": "teambot_vote", "value": value,
                     "action_ts": str(time.time())}],
    }


def feedback_click(message: Message, vote: str = "up", *, user: str = "U0ALICE") -> dict:
    """A click on the 👍 (`up`) or 👎 (`down`) feedback button of a message the bot posted."""
    block, element = next(
        (b, e) for b in message.blocks if b["type"] == "context_actions" for e in b["elements"]
        if e["type"] == "feedback_buttons"
    )
    button = element["positive_button" if vote == "up" else "negative_button"]
    payload = block_action(element["action_id"], button["value"], message_ts=message.ts, channel=message.channel,
                           user=user, thread_ts=message.thread_ts)
    payload["actions"] = [{"type": "feedback_buttons", "action_id": element["action_id"], "block_id": block["block_id"],
                           "value": button["value"], "text": button["text"], "action_ts": str(time.time())}]
    return payload


def button_click(standin: SlackStandIn, message: Message, action_id: str, *, user: str = "U0ALICE") -> dict:
    """A click on a button of a message the bot posted, as Slack sends it: for an ephemeral
    message no `message`, and a response_url that reaches only that message."""
    button = message.button(action_id)
    assert button is not None, f"no {action_id} button on {message.text[:80]!r}"
    payload = block_action(action_id, button["value"], message_ts=message.ts, channel=message.channel, user=user,
                           thread_ts=message.thread_ts)
    if message.user is not None:
        del payload["message"]
        payload["container"]["is_ephemeral"] = True
        payload["response_url"] = f"{standin.url}/respond/{message.channel}/{message.ts}"
    else:
        payload["message"]["blocks"] = message.blocks
    return payload


def view_submission(view: dict, values: dict, *, user: str = "U0ALICE") -> dict:
    """A modal submission: `values` maps block_id → typed text (None for an empty field)."""
    state = {block: {"text": {"type": "plain_text_input", "value": value}} for block, value in values.items()}
    return {
        "type": "view_submission", "team": {"id": TEAM, "domain": "teambot-test"},
        "user": {"id": user, "username": "alice", "team_id": TEAM}, "api_app_id": "A0TEAMBOT",
        "token": "legacy-verification-token", "trigger_id": issue_trigger(),
        "view": {**view, "id": "V0FEEDBACK", "team_id": TEAM, "state": {"values": state}},
    }


def slash_command(text: str, *, command: str = "/ask", user: str = "U0ALICE", channel: str = "C0GENERAL",
                  channel_name: str = "general", response_url: str = "") -> str:
    return urlencode({
        "token": "legacy-verification-token", "team_id": TEAM, "team_domain": "teambot-test",
        "channel_id": channel, "channel_name": channel_name, "user_id": user, "user_name": "alice",
        "command": command, "text": text, "api_app_id": "A0TEAMBOT", "response_url": response_url,
        "trigger_id": issue_trigger(),
    })
