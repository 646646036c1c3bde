"""Buttons that keep working after a restart: discord.py finds one again by its custom id
(`teambot:<kind>:<key>`, a `DynamicItem` registered in `setup_hook`), so a click is understood by
any running bot process, also one started after the button was posted."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import discord


def persistent_button(kind: str, key: str, *, emoji: str, label: str, style: discord.ButtonStyle,
                      act: Callable[[discord.Interaction, object], Awaitable[None]], convert: Callable = str) -> type:
    """A button class for `kind`, whose key matches the regex `key`; a click calls `act(interaction, key)`."""

    class Button(discord.ui.DynamicItem[discord.ui.Button], template=rf"teambot:{kind}:(?P<key>{key})"):
        def __init__(self, key) -> None:
            self.key = key
            super().__init__(discord.ui.Button(emoji=emoji, label=label, style=style, custom_id=f"teambot:{kind}:{key}"))

        @classmethod
        async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /):
            return cls(convert(match["key"]))

        async def callback(self, interaction: discord.Interaction) -> None:
            await act(interaction, self.key)

    Button.__name__ = Button.__qualname__ = f"{kind.title()}Button"
    return Button
