"""How the bot behaves in each channel: the rules file named by TEAMBOT_CHANNEL_RULES.

A TOML file with a `[default]` table and one `[channels."<id>"]` table per Slack channel, Slack
workspace (team id), Discord channel or Discord guild; a channel's table overrides the default
key by key. The most specific id that has a table wins (channel, then its parent channel for a
Discord thread, then the workspace or guild). Direct messages belong to no channel, workspace or
guild rule: a `[dm]` table says how they are answered, and without one they are answered by the
default rule only where no table restricts who may ask or answers privately; otherwise not at all,
so a DM never reaches knowledge a channel keeps from its asker. The file is read again when it changes (checked
at most once every RELOAD_SECONDS); a file that does not parse or validate is reported in the
log and the last good rules stay in force. At start a bad file is an error: nothing to keep yet.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

log = logging.getLogger("teambot.rules")

RELOAD_SECONDS = 1.0

_COLLECTION = re.compile(r"^[A-Z][_0-9A-Za-z]{0,127}$")  # a Weaviate collection name
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # Slack's U…/S…/C… ids, Discord's snowflakes


def _ids(value: object) -> object:
    # Discord ids are numbers, and TOML lets them be written unquoted.
    if isinstance(value, (list, tuple)):
        return tuple(str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value)
    return value


Ids = Annotated[tuple[str, ...], BeforeValidator(_ids)]


class ChannelRule(BaseModel):
    """How the bot behaves in one channel (or the default for all of them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    collections: tuple[str, ...] = Field(
        (), description="Collections searched for answers here; empty: TEAMBOT_CHANNEL_COLLECTIONS or the default one.",
    )
    respond_to: Literal["mentions", "questions"] = Field(
        "mentions", description="`mentions`: only when mentioned (and DMs, thread follow-ups); `questions`: also "
        "plain messages in the channel that are questions.",
    )
    answer_bots: bool = Field(False, description="Answer messages from other bots (never its own).")
    allowed_users: Ids = Field((), description="Who may ask here (user ids); with allowed_groups empty too: anyone.")
    allowed_groups: Ids = Field((), description="Groups whose members may ask: Slack user group ids (S…), Discord role ids.")
    citations_required: bool = Field(
        False, description="Show only answers that cite the documents; otherwise say no source was found.",
    )
    private: bool = Field(
        False, description="Answers only the asker sees (Slack ephemeral; Discord `/ask` ephemeral), with a "
        "\"Share with the channel\" button.",
    )
    expert_users: Ids = Field((), description="People tagged when someone asks for more help (user ids).")
    expert_groups: Ids = Field((), description="Groups tagged likewise: Slack user group ids (S…), Discord role ids.")
    closed: bool = Field(False, description="Answer nobody here (e.g. `closed = true` in `[dm]`).")
    feedback_reminder_minutes: float = Field(
        0, ge=0, le=7 * 24 * 60, description="Remind the asker once if the answer got no vote after this long; 0: never.",
    )

    @field_validator("collections")
    @classmethod
    def _collection_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if bad := [c for c in value if not isinstance(c, str) or not _COLLECTION.match(c)]:
            raise ValueError(f"{bad[0]!r} is not a collection name (a capital letter, then letters, digits, _)")
        return tuple(dict.fromkeys(value))

    @field_validator("allowed_users", "allowed_groups", "expert_users", "expert_groups")
    @classmethod
    def _id_list(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if bad := [v for v in value if not _ID.match(v)]:
            raise ValueError(f"{bad[0]!r} is not a user or group id (letters, digits, - and _)")
        return value

    @property
    def restricted(self) -> bool:
        return bool(self.allowed_users or self.allowed_groups)

    @property
    def guarded(self) -> bool:
        """Keeps something from someone: who may ask, answers only the asker sees, nobody answered."""
        return self.restricted or self.private or self.closed

    @property
    def has_experts(self) -> bool:
        return bool(self.expert_users or self.expert_groups)

    def allows(self, user: str | None, groups: set[str] | frozenset[str] = frozenset()) -> bool:
        """May this user (a member of `groups`) ask here?"""
        if not self.restricted:
            return True
        return (user is not None and user in self.allowed_users) or bool(set(self.allowed_groups) & set(groups))

    def is_expert(self, user: str | None, groups: set[str] | frozenset[str] = frozenset()) -> bool:
        return (user is not None and user in self.expert_users) or bool(set(self.expert_groups) & set(groups))


DEFAULT_RULE = ChannelRule()


class RulesError(ValueError):
    """The rules file cannot be used; the message says where and why."""


CLOSED_RULE = ChannelRule(closed=True)


@dataclass(frozen=True)
class RuleSet:
    default: ChannelRule = DEFAULT_RULE
    channels: dict[str, ChannelRule] = field(default_factory=dict)
    dm: ChannelRule | None = None  # the `[dm]` table

    def for_channel(self, *keys: str | int | None) -> ChannelRule:
        for key in keys:
            if key is not None and (rule := self.channels.get(str(key))) is not None:
                return rule
        return self.default

    def for_dm(self) -> ChannelRule:
        """Direct messages: the `[dm]` table; without one, never wider than any channel's rule."""
        if self.dm is not None:
            return self.dm
        if self.default.guarded or any(rule.guarded for rule in self.channels.values()):
            return CLOSED_RULE
        return self.default


def parse_rules(text: str, source: str = "rules") -> RuleSet:
    """The rules in a TOML document; RulesError with the table and key at fault."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: not valid TOML: {exc}") from None
    if unknown := sorted(set(data) - {"default", "channels", "dm"}):
        raise RulesError(
            f"{source}: unknown table [{unknown[0]}] (expected [default], [dm] and [channels.\"<id>\"])")
    base = data.get("default", {})
    channels = data.get("channels", {})
    dm = data.get("dm")
    if not isinstance(base, dict) or not isinstance(channels, dict) or not isinstance(dm, dict | None):
        raise RulesError(f"{source}: [default], [dm] and [channels] must be tables")
    default = _rule(base, source, "default")
    rules: dict[str, ChannelRule] = {}
    for key, table in channels.items():
        where = f'channels."{key}"'
        if not _ID.match(key):
            raise RulesError(f"{source}: [{where}] is not a channel, workspace or guild id")
        if not isinstance(table, dict):
            raise RulesError(f"{source}: [{where}] must be a table")
        rules[key] = _rule({**base, **table}, source, where)
    return RuleSet(default, rules, None if dm is None else _rule({**base, **dm}, source, "dm"))


def _rule(table: dict, source: str, where: str) -> ChannelRule:
    try:
        return ChannelRule(**table)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'table'}: {err['msg']}" for err in exc.errors()
        )
        raise RulesError(f"{source}: [{where}] {problems}") from None


def load_rules(path: Path) -> RuleSet:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"cannot read the channel rules file {path}: {exc}") from None
    return parse_rules(text, str(path))


class ChannelRules:
    """The rules in force, re-read when the file changes; the last good ones when it turns bad."""

    def __init__(self, path: Path | None = None, *, reload_seconds: float = RELOAD_SECONDS) -> None:
        self.path = Path(path) if path else None
        self.reload_seconds = reload_seconds
        self.error: str | None = None  # why the file in place now is not in force
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._stamp = self._file_stamp()
        self._rules = load_rules(self.path) if self.path else RuleSet()

    @classmethod
    def from_settings(cls, settings) -> "ChannelRules":
        return cls(settings.channel_rules)

    def for_channel(self, *keys: str | int | None) -> ChannelRule:
        self._reload_if_changed()
        return self._rules.for_channel(*keys)

    def for_dm(self) -> ChannelRule:
        self._reload_if_changed()
        return self._rules.for_dm()

    def _file_stamp(self) -> tuple | None:
        try:
            st = os.stat(self.path) if self.path else None
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino) if st else None

    def _reload_if_changed(self) -> None:
        if self.path is None or time.monotonic() - self._checked < self.reload_seconds:
            return
        with self._lock:
            if time.monotonic() - self._checked < self.reload_seconds:
                return
            self._checked = time.monotonic()
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                self._rules = load_rules(self.path)
            except RulesError as exc:
                self.error = str(exc)
                log.error("channel rules not reloaded, the last good ones stay in force: %s", exc)
                return
            self.error = None
            log.info("channel rules reloaded from %s (%d channel(s))", self.path, len(self._rules.channels))


_QUESTION_WORDS = frozenset(
    "who whom whose what when where why how which is are was were am do does did can could should would will "
    "shall may might must has have had isn't aren't doesn't don't can't won't anyone anybody".split()
)


def looks_like_question(text: str) -> bool:
    """A plain message that asks something: it ends with "?" or opens like a question
    ("how do I …", "is there …"), and has a few words; "thanks!" and "ok?" do not count."""
    words = re.findall(r"[\w'’]+", text.lower())
    if len(words) < 3:
        return False
    return text.rstrip().endswith("?") or words[0].replace("’", "'") in _QUESTION_WORDS
