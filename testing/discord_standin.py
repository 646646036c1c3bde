"""A local stand-in of Discord for tests: its REST API, and the gateway events Discord would send.

The REST side is an aiohttp server that answers the routes the bot uses the way Discord
does (message, thread and interaction-callback payloads), records every request, and keeps
the messages it created so edits and follow-ups behave. It refuses what Discord refuses:
message content over 2,000 characters (50035), a reply to a deleted message unless the
reference says `fail_if_not_exists: false` (50035), an interaction answered after 3 s (10062)
or twice (40060), a follow-up before the interaction was answered or 15 minutes after it
(10015 / 50027), a bot token it does not know (401), a message to a channel it does not know
(10003), a DM opened with a user it does not know (10013) or sent to a bot (50007), a reply to or
channel edit of an ephemeral message (which only exist for their interaction); and `limit()`
makes a route answer 429 with `retry_after` and its bucket headers, so discord.py's own
rate-limit handling runs. A message the bot posts pings (`mentions`, `mention_roles`) only whom
its `allowed_mentions` let it, as Discord computes them. Guild channels, roles and members' roles
are added with `add_channel`, `add_role` and `add_user`. The gateway side builds event
payloads (MESSAGE_CREATE, INTERACTION_CREATE, MESSAGE_REACTION_ADD, GUILD_CREATE, …) that
tests hand to discord.py's own `ConnectionState` parsers, so discord.py builds its models and
dispatches to the bot exactly as it does for a live gateway.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import discord
from aiohttp import web


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


# Discord's API answers through Google's front end, which adds `Via` to every response; discord.py
# takes a 429 without it for a Cloudflare ban and raises instead of waiting out `retry_after`.
VIA = {"Via": "1.1 google"}


def _json(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    # Exactly "application/json", no charset, as Discord sends it (discord.py compares the header).
    return web.Response(body=json.dumps(data).encode(), status=status,
                        headers={"Content-Type": "application/json", **VIA, **(headers or {})})


CONTENT_LIMIT = 2000  # characters of message content
INTERACTION_DEADLINE = 3.0  # seconds to answer an interaction
FOLLOWUP_LIFETIME = 15 * 60  # seconds an interaction token takes follow-ups
EPHEMERAL = 1 << 6  # message flag: only the interaction's user sees it


class DiscordError(Exception):
    """A refusal, as Discord sends it: HTTP status, JSON error code and message."""

    def __init__(self, status: int, code: int, message: str, errors: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


def _invalid_form(field_name: str, code: str, message: str) -> DiscordError:
    return DiscordError(400, 50035, "Invalid Form Body",
                        {field_name: {"_errors": [{"code": code, "message": message}]}})


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict:
    return {
        "id": str(user_id), "username": name, "global_name": name, "discriminator": "0",
        "avatar": None, "bot": bot, "public_flags": 0,
    }


def member_payload(user: dict | None = None, roles: list[int] = ()) -> dict:
    data = {
        "roles": [str(r) for r in roles], "joined_at": _now(), "deaf": False, "mute": False, "flags": 0, "nick": None,
    }
    if user is not None:
        data["user"] = user
    return data


@dataclass
class Recorded:
    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    body: Any
    at: float  # loop time when received


@dataclass
class DiscordStandIn:
    bot_id: int = 1000000000000000001
    app_id: int = 1000000000000000002
    guild_id: int = 1000000000000000003
    channel_id: int = 1000000000000000004
    user_id: int = 1000000000000000005
    other_bot_id: int = 1000000000000000006
    dm_channel_id: int = 1000000000000000007
    requests: list[Recorded] = field(default_factory=list)
    messages: dict[int, dict] = field(default_factory=dict)
    commands: list[dict] = field(default_factory=list)
    # interaction token → {"channel_id", "original": message id}
    interactions: dict[str, dict] = field(default_factory=dict)
    url: str = ""
    token: str = "test-token"  # the only bot token this Discord accepts
    refused: list[tuple[str, int]] = field(default_factory=list)  # (path, Discord error code) of each refusal
    limited: list[str] = field(default_factory=list)  # paths answered 429

    def __post_init__(self) -> None:
        base = discord.utils.time_snowflake(datetime.now(timezone.utc))
        self._ids = itertools.count(base)
        self.users: dict[int, dict] = {}  # every user Discord knows: those that wrote, clicked or were added
        self.member_roles: dict[int, list[int]] = {}  # user → role ids in the guild
        self.roles: dict[int, str] = {}  # the guild's roles beside @everyone
        self.channels: dict[int, dict] = {self.channel_id: {"name": "general", "type": 0}}
        self.dm_channels: dict[int, int] = {}  # DM channel → its recipient
        for user in (self.bot_user, self.human, self.other_bot):
            self._know(user)
        self.dm_channels[self.dm_channel_id] = self.user_id
        self._runner: web.AppRunner | None = None
        self._limits: dict[str, list] = {}  # route prefix → [requests left to refuse, retry_after]
        self.clock_offset = 0.0  # seconds added to the real clock (to age interaction tokens)

    def now(self) -> float:
        return time.monotonic() + self.clock_offset

    def limit(self, route_prefix: str, times: int = 1, retry_after: float = 0.3) -> None:
        """Answer the next `times` requests whose path starts with `route_prefix` with 429."""
        self._limits[route_prefix] = [times, retry_after]

    def snowflake(self) -> int:
        """A new id: the time in its high bits as Discord's are (discord.py reads `created_at`
        from them), and always above the last one."""
        self._last_id = max(next(self._ids), discord.utils.time_snowflake(datetime.now(timezone.utc)),
                            getattr(self, "_last_id", 0) + 1)
        return self._last_id

    # ------------------------------------------------------------------ identities

    @property
    def bot_user(self) -> dict:
        return user_payload(self.bot_id, "teambot", bot=True)

    @property
    def human(self) -> dict:
        return user_payload(self.user_id, "alex")

    @property
    def other_bot(self) -> dict:
        return user_payload(self.other_bot_id, "otherbot", bot=True)

    def mention(self) -> str:
        return f"<@{self.bot_id}>"

    def _know(self, user: dict) -> dict:
        self.users.setdefault(int(user["id"]), user)
        return user

    def add_user(self, user_id: int, name: str, *, roles: list[int] = (), bot: bool = False) -> dict:
        """A guild member (with roles); returns the user payload to write or click as."""
        self.member_roles[user_id] = list(roles)
        return self._know(user_payload(user_id, name, bot=bot))

    def add_role(self, name: str, role_id: int | None = None) -> int:
        role_id = role_id or self.snowflake()
        self.roles[role_id] = name
        return role_id

    def add_channel(self, name: str, channel_id: int | None = None) -> int:
        """A text channel of the guild (add them before logging in: they arrive with GUILD_CREATE)."""
        channel_id = channel_id or self.snowflake()
        self.channels[channel_id] = {"name": name, "type": 0}
        return channel_id

    def _member(self, user: dict) -> dict:
        return member_payload(None, self.member_roles.get(int(user["id"]), []))

    def dm_channel_of(self, user_id: int) -> int | None:
        return next((c for c, u in self.dm_channels.items() if u == int(user_id)), None)

    # ------------------------------------------------------------------ server

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/api/v10/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/api/v10"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _body(self, request: web.Request) -> Any:
        if request.content_type == "application/json":
            return await request.json()
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            return json.loads(form["payload_json"]) if "payload_json" in form else dict(form)
        text = await request.text()
        return json.loads(text) if text else None

    async def _handle(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        body = await self._body(request)
        self.requests.append(
            Recorded(request.method, path, dict(request.query), body, asyncio.get_running_loop().time())
        )
        parts = path.strip("/").split("/")
        # Interaction callbacks and their webhooks are authorised by the token in the path.
        needs_auth = parts[0] not in ("interactions", "webhooks")
        if needs_auth and request.headers.get("Authorization") != f"Bot {self.token}":
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        for prefix, left in self._limits.items():
            if path.startswith(prefix) and left[0] > 0:
                left[0] -= 1
                self.limited.append(path)
                return _json(
                    {"message": "You are being rate limited.", "retry_after": left[1], "global": False}, status=429,
                    headers={"Retry-After": str(left[1]), "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                             "X-RateLimit-Reset-After": str(left[1]), "X-RateLimit-Bucket": f"bucket:{prefix}",
                             "X-RateLimit-Scope": "user"},
                )
        try:
            result = self._route(request.method, parts, body or {}, dict(request.query))
        except DiscordError as exc:
            self.refused.append((path, exc.code))
            error = {"message": exc.message, "code": exc.code, **({"errors": exc.errors} if exc.errors else {})}
            return _json(error, status=exc.status)
        except KeyError:
            self.refused.append((path, 10008))
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        if result is None:
            return web.Response(status=204, headers=VIA)
        if result == "unknown route":
            return _json({"message": "404: Not Found", "code": 0}, status=404)
        return _json(result)

    def _route(self, method: str, p: list[str], body: dict, query: dict) -> Any:
        match method, p:
            case "GET", ["users", "@me"]:
                return {**self.bot_user, "verified": True, "mfa_enabled": False, "flags": 0}
            case "GET", ["oauth2", "applications", "@me"]:
                return {
                    "id": str(self.app_id), "name": "teambot", "description": "", "icon": None,
                    "bot_public": False, "bot_require_code_grant": False, "verify_key": "0" * 64,
                    "owner": self.human, "flags": 1 << 19, "team": None,
                }
            case "PUT", ["applications", _, "commands"] | ["applications", _, "guilds", _, "commands"]:
                guild = p[3] if len(p) == 5 else None
                self.commands = [
                    {
                        **c, "id": str(self.snowflake()), "application_id": str(self.app_id), "version": "1",
                        "default_member_permissions": None, "type": c.get("type", 1),
                        **({"guild_id": guild} if guild else {}),
                    }
                    for c in body
                ]
                return self.commands
            case "POST", ["users", "@me", "channels"]:
                return self._open_dm(int(body.get("recipient_id") or 0))
            case "POST", ["channels", channel, "typing"]:
                self._channel(int(channel))
                return None
            case "POST", ["channels", channel, "messages"]:
                return self._create_message(self._channel(int(channel)), body)
            case "PATCH", ["channels", channel, "messages", message]:
                if self.messages[int(message)]["flags"] & EPHEMERAL:
                    raise KeyError(message)  # only its interaction's webhook can edit it
                return self._edit_message(int(message), body)
            case "POST", ["channels", channel, "messages", message, "threads"]:
                return self._start_thread(int(channel), int(message), body.get("name") or "")
            case "POST", ["interactions", interaction, token, "callback"]:
                return self._interaction_callback(int(interaction), token, body)
            case "GET" | "PATCH", ["webhooks", _, token, "messages", "@original"]:
                message = self._followup_token(token)["original"]
                return self._edit_message(message, body) if method == "PATCH" else self.messages[message]
            case "POST", ["webhooks", _, token]:
                return self._create_message(self._followup_token(token)["channel_id"], body)
        return "unknown route"

    # ------------------------------------------------------------------ REST state

    def message_payload(self, message_id: int, channel_id: int, author: dict, content: str, **extra: Any) -> dict:
        return {
            "id": str(message_id), "channel_id": str(channel_id), "author": author, "content": content,
            "timestamp": _now(), "edited_timestamp": None, "tts": False, "mention_everyone": False,
            "mentions": [], "mention_roles": [], "attachments": [], "embeds": [], "components": [],
            "pinned": False, "type": 0, "flags": 0, **extra,
        }

    def _start_thread(self, channel_id: int, message_id: int, name: str) -> dict:
        """Discord's checks on starting a thread from a message: a text or announcement channel,
        a message in it, a name of 1-100 characters, one thread per message."""
        kind = self.channels.get(channel_id, {}).get("type", 0) if channel_id in self.channels else 1
        self._channel(channel_id)
        if kind not in (0, 5):
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        message = self.messages.get(message_id)
        if message is None or message["channel_id"] != str(channel_id):
            raise DiscordError(404, 10008, "Unknown Message")
        if not 1 <= len(name) <= 100:
            raise _invalid_form("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        if message_id in self.channels:
            raise DiscordError(400, 160004, "A thread has already been created for this message")
        return self.thread_payload(message_id, channel_id, name)

    @staticmethod
    def _check_modal(data: dict) -> None:
        """A modal's limits: title 1-45, custom_id 1-100, 1-5 components, each text input's label
        1-45 and max_length at most 4,000."""
        if not 1 <= len(data.get("title") or "") <= 45:
            raise _invalid_form("data.title", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
        if not 1 <= len(data.get("custom_id") or "") <= 100:
            raise _invalid_form("data.custom_id", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        rows = data.get("components") or []
        if not 1 <= len(rows) <= 5:
            raise _invalid_form("data.components", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
        for row in rows:
            label = row.get("label") if row.get("type") == 18 else (row.get("components") or [{}])[0].get("label")
            component = row.get("component") if row.get("type") == 18 else (row.get("components") or [{}])[0]
            if not 1 <= len(label or "") <= 45 or (component or {}).get("max_length", 4000) > 4000:
                raise _invalid_form("data.components", "BASE_TYPE_BAD_LENGTH", "A text input's label or length is out of bounds.")

    @staticmethod
    def _check_content(body: dict) -> None:
        if len(body.get("content") or "") > CONTENT_LIMIT:
            raise _invalid_form("content", "BASE_TYPE_MAX_LENGTH", f"Must be {CONTENT_LIMIT} or fewer in length.")

    def _channel(self, channel_id: int) -> int:
        if channel_id not in self.channels and channel_id not in self.dm_channels:
            raise DiscordError(404, 10003, "Unknown Channel")
        recipient = self.dm_channels.get(channel_id)
        if recipient is not None and self.users[recipient].get("bot"):
            raise DiscordError(403, 50007, "Cannot send messages to this user")
        return channel_id

    def _open_dm(self, recipient: int) -> dict:
        if recipient not in self.users:
            raise DiscordError(404, 10013, "Unknown User")
        channel_id = self.dm_channel_of(recipient)
        if channel_id is None:
            channel_id = self.snowflake()
            self.dm_channels[channel_id] = recipient
        return {"id": str(channel_id), "type": 1, "last_message_id": None, "flags": 0,
                "recipients": [self.users[recipient]]}

    def _pinged(self, content: str, allowed: dict | None) -> dict:
        """Whom a message the bot posts pings, as Discord decides from its allowed_mentions."""
        allowed = {"parse": ["users", "roles", "everyone"]} if allowed is None else allowed
        parse = allowed.get("parse", [])
        users = [int(u) for u in re.findall(r"<@!?(\d+)>", content)]
        roles = [int(r) for r in re.findall(r"<@&(\d+)>", content)]
        users = [u for u in users if "users" in parse or str(u) in map(str, allowed.get("users", []))]
        roles = [r for r in roles if "roles" in parse or str(r) in map(str, allowed.get("roles", []))]
        return {
            "mentions": [self.users[u] for u in dict.fromkeys(users) if u in self.users],
            "mention_roles": [str(r) for r in dict.fromkeys(roles) if r in self.roles],
            "mention_everyone": "everyone" in parse and "@everyone" in content,
        }

    def delete_message(self, message_id: int | str) -> None:
        """Someone deleted a message (a question the bot is still answering, say)."""
        self.messages.pop(int(message_id), None)

    def _followup_token(self, token: str) -> dict:
        info = self.interactions.get(token)
        if info is None or not info["responded"]:
            raise DiscordError(404, 10015, "Unknown Webhook")
        if self.now() - info["created"] > FOLLOWUP_LIFETIME:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        return info

    def _create_message(self, channel_id: int, body: dict) -> dict:
        self._check_content(body)
        extra: dict[str, Any] = {"components": body.get("components") or [], "flags": body.get("flags") or 0}
        extra |= self._pinged(body.get("content") or "", body.get("allowed_mentions"))
        if body.get("message_reference"):
            # Discord accepts snowflakes as numbers but always answers with strings.
            ref = {k: str(v) if k.endswith("_id") else v for k, v in body["message_reference"].items()}
            referenced = self.messages.get(int(ref["message_id"]))
            if referenced is None or referenced["flags"] & EPHEMERAL:
                if ref.get("fail_if_not_exists", True) is not False:
                    raise _invalid_form("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
                ref = None  # posted, just not as a reply
            if ref is not None:
                extra |= {"type": 19, "message_reference": ref, "referenced_message": self.messages[int(ref["message_id"])]}
        message = self.message_payload(self.snowflake(), channel_id, self.bot_user, body.get("content") or "", **extra)
        self.messages[int(message["id"])] = message
        return message

    def _edit_message(self, message_id: int, body: dict) -> dict:
        self._check_content(body)
        message = dict(self.messages[message_id])  # KeyError → 404 Unknown Message
        if "content" in body:
            message["content"] = body["content"] or ""
        if "components" in body:
            message["components"] = body["components"] or []
        message["edited_timestamp"] = _now()
        self.messages[message_id] = message
        return message

    def _interaction_callback(self, interaction_id: int, token: str, body: dict) -> dict:
        kind, data = body["type"], body.get("data") or {}
        info = self.interactions[token]
        if self.now() - info["created"] > INTERACTION_DEADLINE:
            raise DiscordError(404, 10062, "Unknown interaction")
        if info["responded"]:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        self._check_content(data)
        if kind == 9:
            self._check_modal(data)
        info["responded"] = True
        info["answered_after"] = self.now() - info["created"]
        response: dict[str, Any] = {
            "interaction": {
                "id": str(interaction_id), "type": info["type"],
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool((data.get("flags") or 0) & 64),
            },
            "resource": {"type": kind},
        }
        if kind in (4, 5):  # a message (or the "thinking…" placeholder) becomes the original response
            message = self._create_message(info["channel_id"], {**data, "content": data.get("content", "")})
            info["original"] = int(message["id"])
            response["interaction"]["response_message_id"] = message["id"]
            response["resource"]["message"] = message
        elif kind in (6, 7):  # a component's message, updated now (7) or later through @original (6)
            if info["message"] is None:
                raise DiscordError(400, 40004, "Interaction response type not valid for this interaction")
            info["original"] = info["message"]
            if kind == 7:
                response["resource"]["message"] = self._edit_message(info["message"], data)
        return response

    def thread_payload(self, thread_id: int, parent_id: int, name: str) -> dict:
        self.channels.setdefault(thread_id, {"name": name, "type": 11, "parent_id": parent_id})
        return {
            "id": str(thread_id), "guild_id": str(self.guild_id), "parent_id": str(parent_id),
            "owner_id": str(self.bot_id), "name": name, "type": 11, "last_message_id": None,
            "message_count": 0, "member_count": 1, "rate_limit_per_user": 0, "flags": 0,
            "thread_metadata": {
                "archived": False, "auto_archive_duration": 1440, "archive_timestamp": _now(),
                "locked": False, "create_timestamp": _now(),
            },
        }

    # ------------------------------------------------------------------ recorded traffic

    def calls(self, method: str, prefix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    def bot_messages(self, channel_id: int | None = None) -> list[dict]:
        """Messages the bot created, in order, as they look now (after edits)."""
        found = [m for m in self.messages.values() if m["author"]["id"] == str(self.bot_id)]
        if channel_id is not None:
            found = [m for m in found if m["channel_id"] == str(channel_id)]
        return sorted(found, key=lambda m: int(m["id"]))

    # ------------------------------------------------------------------ gateway events

    def guild_create(self) -> dict:
        everyone = {
            "id": str(self.guild_id), "name": "@everyone", "permissions": str(discord.Permissions.text().value),
            "position": 0, "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0,
        }
        channels = [
            {
                "id": str(channel_id), "type": 0, "name": info["name"], "position": 0, "guild_id": str(self.guild_id),
                "permission_overwrites": [], "nsfw": False, "topic": None, "last_message_id": None,
                "rate_limit_per_user": 0, "parent_id": None,
            }
            for channel_id, info in self.channels.items() if info["type"] == 0
        ]
        roles = [
            {**everyone, "id": str(role_id), "name": name, "position": i, "permissions": "0"}
            for i, (role_id, name) in enumerate(self.roles.items(), start=1)
        ]
        return {
            "id": str(self.guild_id), "name": "Teambot Test", "owner_id": str(self.user_id), "member_count": 3,
            "unavailable": False, "large": False, "features": [], "emojis": [], "stickers": [],
            "roles": [everyone, *roles], "channels": channels, "threads": [], "members": [], "voice_states": [],
            "presences": [], "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
            "joined_at": _now(), "preferred_locale": "en-US",
        }

    def message_create(
        self, content: str, *, author: dict | None = None, channel_id: int | None = None, dm: bool = False,
        mentions_bot: bool = False, reply_to: dict | None = None, mentions: list[dict] = (),
    ) -> dict:
        """A message someone wrote; `mentions`: other users it mentions (write their `<@id>` in it)."""
        author = self._know(author or self.human)
        channel_id = channel_id or (self.dm_channel_id if dm else self.channel_id)
        extra: dict[str, Any] = {}
        if not dm:
            extra |= {"guild_id": str(self.guild_id), "member": self._member(author)}
        mentioned = [*([self.bot_user] if mentions_bot else []), *mentions]
        if mentioned:
            extra["mentions"] = [u if dm else {**u, "member": self._member(u)} for u in mentioned]
        if reply_to is not None:
            extra |= {
                "type": 19, "referenced_message": reply_to,
                "message_reference": {
                    "type": 0, "message_id": reply_to["id"], "channel_id": reply_to["channel_id"],
                    **({} if dm else {"guild_id": str(self.guild_id)}),
                },
            }
        message = self.message_payload(self.snowflake(), channel_id, author, content, **extra)
        self.messages[int(message["id"])] = message
        return message

    def message_update(self, message: dict, content: str) -> dict:
        """MESSAGE_UPDATE: its author edited `message` (a whole message object, as Discord sends it)."""
        edited = {**message, "content": content, "edited_timestamp": _now()}
        self.messages[int(message["id"])] = edited
        return edited

    def message_delete(self, message: dict) -> dict:
        """MESSAGE_DELETE: only the ids, as Discord sends them."""
        self.messages.pop(int(message["id"]), None)
        return {"id": message["id"], "channel_id": message["channel_id"],
                **({"guild_id": message["guild_id"]} if "guild_id" in message else {})}

    def thread_create(self, thread_id: int, name: str = "question") -> dict:
        return {**self.thread_payload(thread_id, self.channel_id, name), "newly_created": True}

    def reaction_add(self, message_id: int | str, emoji: str, *, user: dict | None = None, dm: bool = False) -> dict:
        user = user or self.human
        message = self.messages.get(int(message_id))
        data = {
            "user_id": user["id"], "channel_id": message["channel_id"] if message else str(self.channel_id),
            "message_id": str(message_id), "emoji": {"id": None, "name": emoji}, "burst": False, "type": 0,
        }
        if not dm:
            data |= {"guild_id": str(self.guild_id), "member": member_payload(user)}
        return data

    def reaction_remove(self, message_id: int | str, emoji: str, *, user: dict | None = None, dm: bool = False) -> dict:
        """MESSAGE_REACTION_REMOVE: like an add, but Discord sends no member (nor message author)."""
        data = self.reaction_add(message_id, emoji, user=user, dm=dm)
        data.pop("member", None)
        return data

    def _interaction(self, kind: int, data: dict, *, user: dict | None, channel_id: int | None, dm: bool, **extra: Any) -> dict:
        user = user or self.human
        token = secrets.token_urlsafe(24)
        interaction_id = self.snowflake()
        channel_id = channel_id or (self.dm_channel_id if dm else self.channel_id)
        self._know(user)
        component_message = extra.get("message")
        self.interactions[token] = {"channel_id": channel_id, "type": kind, "original": None, "created": self.now(),
                                    "responded": False, "answered_after": None,
                                    "message": int(component_message["id"]) if component_message else None}
        payload = {
            "id": str(interaction_id), "application_id": str(self.app_id), "type": kind, "data": data,
            "token": token, "version": 1, "locale": "en-US", "app_permissions": str(discord.Permissions.text().value),
            "entitlements": [], "attachment_size_limit": 10 * 1024 * 1024, **extra,
        }
        if dm:
            payload |= {
                "user": user, "context": 1, "authorizing_integration_owners": {"0": str(self.guild_id)},
                "channel": {"id": str(channel_id), "type": 1, "recipients": [user]},
            }
        else:
            payload |= {
                "guild_id": str(self.guild_id), "guild_locale": "en-US",
                "member": {**self._member(user), "user": user, "permissions": "0"},
                "context": 0, "authorizing_integration_owners": {"0": str(self.guild_id)},
                "guild": {"id": str(self.guild_id), "locale": "en-US", "features": []},
                "channel": {
                    "id": str(channel_id), "type": 0, "name": self.channels.get(channel_id, {}).get("name", "general"),
                    "guild_id": str(self.guild_id), "position": 0, "permission_overwrites": [], "nsfw": False,
                    "parent_id": None,
                },
            }
        return payload

    def slash_command(
        self, name: str, *, user: dict | None = None, channel_id: int | None = None, **options: str
    ) -> dict:
        command = next(c for c in self.commands if c["name"] == name)
        data = {
            "id": command["id"], "name": name, "type": 1,
            "options": [{"name": k, "type": 3, "value": v} for k, v in options.items()],
            **({"guild_id": command["guild_id"]} if "guild_id" in command else {}),
        }
        return self._interaction(2, data, user=user, channel_id=channel_id, dm=False)

    def button_click(self, message: dict, custom_id: str, *, user: dict | None = None) -> dict:
        dm = "guild_id" not in message and int(message["channel_id"]) == self.dm_channel_id
        return self._interaction(
            3, {"custom_id": custom_id, "component_type": 2}, user=user,
            channel_id=int(message["channel_id"]), dm=dm, message=message,
        )

    def modal_submit(self, modal: dict, values: list[str], *, message: dict, user: dict | None = None) -> dict:
        """Fill the text inputs of a modal the bot opened (its callback body's `data`), in order."""
        inputs = []
        for label, value in zip(modal["components"], values):
            component = label["component"] if label["type"] == 18 else label["components"][0]
            inputs.append({"type": 18, "id": label.get("id", 0), "component": {
                "type": 4, "id": component.get("id", 0), "custom_id": component["custom_id"], "value": value,
            }})
        return self._interaction(
            5, {"custom_id": modal["custom_id"], "components": inputs}, user=user,
            channel_id=int(message["channel_id"]), dm=False, message=message,
        )


def custom_ids(message: dict) -> list[str]:
    """Every component custom_id on a message payload (buttons sit inside action rows)."""
    found = []
    for row in message.get("components", []):
        for item in row.get("components", [row]):
            if "custom_id" in item:
                found.append(item["custom_id"])
    return found


@asynccontextmanager
async def logged_in(client: discord.Client, standin: DiscordStandIn, *, new_discord: bool = True):
    """Serve the stand-in, point discord.py's REST routes at it and log the client in.

    Logging in runs discord.py's real start-up: GET /users/@me, the application info,
    then `setup_hook` (dynamic items, command sync). The guild arrives as GUILD_CREATE.
    `new_discord`: this stand-in has never seen the commands, so the bot must sync them even
    if its data dir says it synced them before (to another stand-in).
    """
    global _client
    previous = discord.http.Route.BASE
    discord.http.Route.BASE = await standin.start()
    if new_discord and hasattr(client, "force_sync"):
        client.force_sync = True
    try:
        await client.login(standin.token)
        client._connection.parse_guild_create(standin.guild_create())
        _client = client
        yield client
    finally:
        _client = None
        await client.close()
        await standin.stop()
        discord.http.Route.BASE = previous


_client: discord.Client | None = None  # the one logged in: settle() also waits for its answers


async def settle(timeout: float = 300.0) -> None:
    """Wait until discord.py's event handlers, view/modal callbacks and commands, and the answers
    the bot's conversation core is working on, have finished.

    The timeout only turns a hang into a failure; nothing is asserted about timing.
    """
    current = asyncio.current_task()

    def pending() -> list[asyncio.Task]:
        return [
            t for t in asyncio.all_tasks()
            if t is not current and not t.done()
            and t.get_name().startswith(("discord.py:", "discord-ui-", "CommandTree-", "teambot-"))
        ]

    async def drain() -> None:
        await asyncio.sleep(0)
        while tasks := pending():
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0)

    async def quiet() -> None:
        await drain()
        conversations = getattr(_client, "conversations", None)
        # Answers run on the conversation core's threads, reaching the loop for each reply.
        while conversations is not None and not await asyncio.to_thread(conversations.wait_idle, 0.05):
            await drain()
        await drain()

    await asyncio.wait_for(quiet(), timeout)
