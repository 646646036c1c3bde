"""What Slack says about people and channels, kept a few minutes so that a busy channel does not
ask on every question: the members of user groups (channel rules name them), and who sees a
channel (recorded with each answer, so that training leaves out what was not public)."""

from __future__ import annotations

import logging
import threading
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

log = logging.getLogger("teambot.slack")

MEMORY = 300.0  # seconds an answer from Slack is kept before asking again
# Who sees a Slack conversation, from an event's channel_type or a command's channel_name.
EVENT_AUDIENCE = {"im": "direct_message", "mpim": "private_channel", "group": "private_channel"}
COMMAND_AUDIENCE = {"directmessage": "direct_message", "privategroup": "private_channel"}


class SlackDirectory:
    def __init__(self, memory: float = MEMORY) -> None:
        self.memory = memory
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}  # group → (when asked, members)
        self._audiences: dict[str, tuple[float, str]] = {}  # channel → (when asked, who sees it)
        self._lock = threading.Lock()

    def _known(self, table: dict, key: str):
        with self._lock:
            found = table.get(key)
        return found[1] if found and time.monotonic() - found[0] < self.memory else None

    def _keep(self, table: dict, key: str, value) -> None:
        with self._lock:
            table[key] = (time.monotonic(), value)

    def groups_of(self, client: WebClient, user: str | None, groups: tuple[str, ...]) -> frozenset[str]:
        """Those of `groups` (user group ids) that `user` belongs to. A group Slack cannot list
        counts as one the user is not in: the rule stays closed."""
        if not user:
            return frozenset()
        found = set()
        for group in groups:
            members = self._known(self._groups, group)
            if members is None:
                try:
                    members = frozenset(client.usergroups_users_list(usergroup=group)["users"])
                except SlackApiError as exc:
                    log.warning("could not list the members of user group %s: %s", group, exc.response.get("error"))
                    continue
                self._keep(self._groups, group, members)
            if user in members:
                found.add(group)
        return frozenset(found)

    def audience(self, client: WebClient, channel: str, channel_type: str | None = None) -> str:
        """Who sees the conversation: a message event says (`channel_type`); an app_mention does
        not, so Slack is asked, and a channel it cannot describe counts as private."""
        if channel_type:
            return EVENT_AUDIENCE.get(channel_type, "public")
        if (known := self._known(self._audiences, channel)) is not None:
            return known
        try:
            info = client.conversations_info(channel=channel)["channel"]
        except SlackApiError as exc:
            log.warning("could not tell who sees channel %s (%s); its answers count as private",
                        channel, exc.response.get("error"))
            return "private_channel"
        audience = ("direct_message" if info.get("is_im") else
                    "private_channel" if info.get("is_private") or info.get("is_mpim") else "public")
        self._keep(self._audiences, channel, audience)
        return audience

    def command_audience(self, client: WebClient, channel: str, channel_name: str) -> str:
        # A command names DMs and group DMs by kind, but a channel by its name, private or not.
        if channel_name.startswith("mpdm-"):
            return "private_channel"
        return COMMAND_AUDIENCE.get(channel_name) or self.audience(client, channel)
