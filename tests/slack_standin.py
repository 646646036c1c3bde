"""A local stand-in of the Slack Web API: records every call and answers the way Slack does.

Point `slack_sdk.WebClient(base_url=standin.api_url)` at it. It also plays the other side of
the conversation: `signed` builds Events API, slash command and interactivity requests signed
like Slack signs them, for the bot's HTTP endpoint, and `SocketModeStandIn` delivers events
over Socket Mode.
"""

from __future__ import annotations

import asyncio
import itertools
import json
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


@dataclass
class Call:
    method: str
    args: dict
    response: dict = field(default_factory=dict)


class SlackStandIn:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.errors: dict[str, str] = {}  # method → error to answer with (e.g. not_in_channel)
        self.hooks: dict[str, object] = {}  # method → fn(args), run before the call is answered
        self.socket_mode: SocketModeStandIn | None = None  # set to accept Socket Mode connections
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

    def reset(self) -> None:
        with self._changed:
            self.calls.clear()
            self.errors.clear()
            self.hooks.clear()

    # ------------------------------------------------------------------ answering

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _answer(self, method: str, args: dict) -> dict:
        if method.startswith("response_url"):
            return {"ok": True}
        if method == "apps.connections.open":  # Socket Mode: the app-level token asks where to connect
            if args.get("token") != APP_TOKEN or self.socket_mode is None:
                return {"ok": False, "error": "invalid_auth"}
            return {"ok": True, "url": self.socket_mode.url}
        if args.get("token") != BOT_TOKEN:
            return {"ok": False, "error": "not_authed" if not args.get("token") else "invalid_auth"}
        if method in self.errors:
            return {"ok": False, "error": self.errors[method]}
        if method == "auth.test":
            return {
                "ok": True, "url": "https://teambot-test.slack.com/", "team": "Teambot Test", "user": "teambot",
                "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": False,
            }
        if method == "chat.postMessage":
            ts = self._next_ts()
            message = {k: v for k, v in args.items() if k in ("text", "blocks", "thread_ts")}
            return {
                "ok": True, "channel": args["channel"], "ts": ts,
                "message": {**message, "type": "message", "user": BOT_USER, "bot_id": BOT_ID, "ts": ts},
            }
        if method == "chat.update":
            return {"ok": True, "channel": args["channel"], "ts": args["ts"], "text": args.get("text", "")}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": self._next_ts()}
        if method == "views.open":
            return {"ok": True, "view": {**args.get("view", {}), "id": "V0FEEDBACK"}}
        return {"ok": False, "error": "unknown_method"}

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
                    for key in ("blocks", "view"):  # form-encoded calls carry these as JSON text
                        if isinstance(args.get(key), str):
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
                response = standin._answer(method, args)
                body = json.dumps(response).encode()
                with standin._changed:
                    standin.calls.append(Call(method, args, response))
                    standin._changed.notify_all()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
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


def direct_message(text: str, *, user: str = "U0ALICE", channel: str = "D0ALICE", **extra) -> dict:
    ts = _message_ts()
    return {"type": "message", "channel_type": "im", "user": user, "text": text, "ts": ts, "event_ts": ts,
            "channel": channel, "team": TEAM, **extra}


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
        "token": "legacy-verification-token", "trigger_id": "1234.5678.trigger",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "channel": {"id": channel, "name": "general"}, "message": message, "response_url": response_url,
        "actions": [{"type": "button", "action_id": action_id, "block_id": "teambot_vote", "value": value,
                     "action_ts": str(time.time())}],
    }


def view_submission(view: dict, values: dict, *, user: str = "U0ALICE") -> dict:
    """A modal submission: `values` maps block_id → typed text (None for an empty field)."""
    state = {block: {"text": {"type": "plain_text_input", "value": value}} for block, value in values.items()}
    return {
        "type": "view_submission", "team": {"id": TEAM, "domain": "teambot-test"},
        "user": {"id": user, "username": "alice", "team_id": TEAM}, "api_app_id": "A0TEAMBOT",
        "token": "legacy-verification-token", "trigger_id": "1234.5679.trigger",
        "view": {**view, "id": "V0FEEDBACK", "team_id": TEAM, "state": {"values": state}},
    }


def slash_command(text: str, *, command: str = "/ask", user: str = "U0ALICE", channel: str = "C0GENERAL",
                  response_url: str = "") -> str:
    return urlencode({
        "token": "legacy-verification-token", "team_id": TEAM, "team_domain": "teambot-test",
        "channel_id": channel, "channel_name": "general", "user_id": user, "user_name": "alice",
        "command": command, "text": text, "api_app_id": "A0TEAMBOT", "response_url": response_url,
        "trigger_id": "1234.5680.trigger",
    })
