"""Where a Discord answer is shown while it streams and once it is final.

Two destinations share one interface: a reply in a channel or thread (for mentions and DMs)
and the original response of an `/ask` interaction (ephemeral in a private channel). Each can
also remind the asker privately: an ephemeral follow-up of the interaction, else a direct
message. `StreamingEditor` feeds either one the text as it grows, never editing more often than
once per `EDIT_INTERVAL` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import PurePath
from typing import Protocol

import discord

from bots.formatting import split_text
from core.answer import Answer, Source

log = logging.getLogger(__name__)

PLATFORM = "discord"  # as answers and votes are recorded
MESSAGE_LIMIT = 2000  # Discord's limit on message content, in characters
EDIT_INTERVAL = 1.0  # seconds between edits of a streaming message (Discord rate-limits edits)
STREAM_CURSOR = " ▌"


# ---------------------------------------------------------------- rendering


def _link_text(text: str) -> str:
    # Square brackets would end the masked link's text early.
    return text.replace("[", "(").replace("]", ")").strip() or "source"


def source_line(source: Source) -> str:
    """`**[n]** [title](<url>) § section`; a document without a URL shows its file name."""
    name = PurePath(source.path).name
    title = _link_text(source.title or name or "document")
    section = f" § {discord.utils.escape_markdown(source.section)}" if source.section else ""
    if fresh := source.freshness():
        section += f" · *{fresh}*"
    if source.link.startswith(("http://", "https://")):
        # <…> keeps Discord from unfurling a preview of every source.
        url = source.link.replace(" ", "%20").replace(">", "%3E").replace(")", "%29")
        return f"**[{source.number}]** [{title}](<{url}>){section}"
    where = f" (`{name}`)" if name and name != source.title else ""  # never the server's full path
    return f"**[{source.number}]** {discord.utils.escape_markdown(title)}{section}{where}"


def quote_question(question: str, limit: int = 200) -> str:
    """The question as a one-line quote above an answer (others only see "used /ask")."""
    text = " ".join(question.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"> {discord.utils.escape_markdown(text)}\n"


def render_answer(answer: Answer) -> str:
    """The answer as Discord markdown: the text, then its numbered sources."""
    lines = [answer.text.strip() or "(no answer)"]
    if answer.reviewed_from:
        lines += ["", "✅ **Reviewed answer**: a person checked this answer to a question like yours."]
    if answer.sources:
        lines += ["", "**Sources**", *(source_line(s) for s in answer.sources)]
    return "\n".join(lines)


def answer_chunks(answer: Answer, *, prefix: str = "") -> list[str]:
    """The rendered answer in pieces that each fit one Discord message."""
    return split_text(prefix + render_answer(answer), MESSAGE_LIMIT)


def stream_preview(text: str) -> str | None:
    """What a message shows mid-stream, or None once the text no longer fits one message."""
    text = text.strip()
    if not text:
        return None
    if len(text) + len(STREAM_CURSOR) > MESSAGE_LIMIT:
        return None  # the final message will split it; stop growing this one
    return text + STREAM_CURSOR


# ---------------------------------------------------------------- destinations


class ReplyTarget(Protocol):
    first_message_id: int | None

    async def begin(self) -> None:
        """Show that the bot is working (typing / thinking)."""

    async def show(self, text: str) -> None:
        """Create or update the visible partial answer."""

    async def finish(self, chunks: list[str], view: discord.ui.View | None) -> list[int]:
        """Show the final answer; returns the ids of its messages, in order (the last one has `view`)."""

    async def fail(self, text: str) -> None:
        """Replace whatever was shown with a short error."""

    async def remind(self, text: str) -> None:
        """Tell the asker `text` where only they see it."""


class ChannelReply:
    """Replies in a channel, thread or DM; types until the first words arrive. Reminds `asker`
    by direct message."""

    def __init__(
        self, destination: discord.abc.Messageable, *, reference: discord.Message | None = None,
        asker: discord.abc.User | None = None,
    ) -> None:
        self.destination = destination
        self.reference = reference
        self.asker = asker if asker is not None else (reference.author if reference is not None else None)
        self.messages: list[discord.Message] = []
        self._typing = contextlib.AsyncExitStack()

    @property
    def first_message_id(self) -> int | None:
        return self.messages[0].id if self.messages else None

    async def begin(self) -> None:
        try:
            await self._typing.enter_async_context(self.destination.typing())
        except discord.HTTPException as exc:  # typing is cosmetic; never fail an answer over it
            log.warning("could not show typing: %s", exc)

    async def _stop_typing(self) -> None:
        await self._typing.aclose()

    async def _send(self, content: str, view: discord.ui.View | None = None) -> discord.Message:
        kwargs = {"view": view} if view is not None else {}
        # Only the first message replies to the question; later chunks simply follow it. A question
        # deleted meanwhile still gets its answer, just not as a reply.
        reference = self.reference.to_reference(fail_if_not_exists=False) if self.reference and not self.messages else None
        message = await self.destination.send(content, reference=reference, **kwargs)
        self.messages.append(message)
        await self._stop_typing()
        return message

    async def show(self, text: str) -> None:
        if self.messages:
            await self.messages[0].edit(content=text)
        else:
            await self._send(text)

    async def finish(self, chunks: list[str], view: discord.ui.View | None) -> list[int]:
        last = len(chunks) - 1
        if self.messages:
            first = self.messages[0]
            self.messages[0] = await first.edit(content=chunks[0], view=view if last == 0 else None)
        else:
            await self._send(chunks[0], view if last == 0 else None)
        for i, chunk in enumerate(chunks[1:], start=1):
            await self._send(chunk, view if i == last else None)
        return [m.id for m in self.messages]

    async def fail(self, text: str) -> None:
        if self.messages:
            await self.messages[0].edit(content=text, view=None)
        else:
            await self._send(text)
        await self._stop_typing()

    async def remind(self, text: str) -> None:
        if self.asker is not None and not self.asker.bot:  # a bot cannot be sent direct messages
            await self.asker.send(text)


class InteractionReply:
    """The original response of an application command, deferred with "thinking…"; `ephemeral`:
    only the asker sees it (and the follow-ups it continues in)."""

    def __init__(self, interaction: discord.Interaction, *, ephemeral: bool = False) -> None:
        self.interaction = interaction
        self.ephemeral = ephemeral
        self.first_message_id: int | None = None

    async def begin(self) -> None:
        if not self.interaction.response.is_done():
            await self.interaction.response.defer(thinking=True, ephemeral=self.ephemeral)

    async def show(self, text: str) -> None:
        message = await self.interaction.edit_original_response(content=text)
        self.first_message_id = message.id

    async def finish(self, chunks: list[str], view: discord.ui.View | None) -> list[int]:
        last = len(chunks) - 1
        message = await self.interaction.edit_original_response(content=chunks[0], view=view if last == 0 else None)
        self.first_message_id = message.id
        ids = [message.id]
        for i, chunk in enumerate(chunks[1:], start=1):
            kwargs = {"view": view} if i == last and view is not None else {}
            message = await self.interaction.followup.send(chunk, wait=True, ephemeral=self.ephemeral, **kwargs)
            ids.append(message.id)
        return ids

    async def fail(self, text: str) -> None:
        await self.interaction.edit_original_response(content=text, view=None)

    async def remind(self, text: str) -> None:
        # The interaction's token lasts 15 minutes: past that a follow-up is a certain 401, which
        # counts towards Discord's ban on invalid requests. A direct message does not expire.
        if not self.interaction.is_expired():
            try:
                await self.interaction.followup.send(text, ephemeral=True)
                return
            except discord.HTTPException as exc:
                log.info("reminding by direct message instead of a follow-up: %s", exc)
        await self.interaction.user.send(text)


# ---------------------------------------------------------------- streaming


class StreamingEditor:
    """Receives tokens from the answering thread and shows them, at most once per interval.

    `on_token` is called from a worker thread; everything else runs on the event loop.
    Edits are spaced from the *end* of the previous one, so Discord sees at least `interval`
    seconds between any two of them, the final edit included (see `close`).
    """

    def __init__(self, target: ReplyTarget, *, interval: float = EDIT_INTERVAL) -> None:
        self.target = target
        self.interval = interval
        self._loop = asyncio.get_running_loop()
        self._parts: list[str] = []
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._last_edit: float | None = None

    def on_token(self, delta: str) -> None:
        try:
            self._loop.call_soon_threadsafe(self._append, delta)
        except RuntimeError:
            pass  # the loop is gone: the bot is shutting down

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def _append(self, delta: str) -> None:
        if self._closing.is_set():
            return
        self._parts.append(delta)
        self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="teambot-stream-editor")

    async def _wait_interval(self) -> bool:
        """Sleep out the rest of the interval; False if closed meanwhile."""
        if self._last_edit is None:
            return not self._closing.is_set()
        remaining = self._last_edit + self.interval - time.monotonic()
        if remaining > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), remaining)
        return not self._closing.is_set()

    async def _run(self) -> None:
        while not self._closing.is_set():
            await self._changed.wait()
            if not await self._wait_interval():
                return
            self._changed.clear()
            preview = stream_preview(self.text)
            if preview is None:
                continue
            try:
                await self.target.show(preview)
            except discord.HTTPException as exc:
                log.warning("could not update the streaming answer: %s", exc)
            self._last_edit = time.monotonic()

    async def close(self) -> None:
        """Stop streaming (an edit in flight completes) and wait out the interval after it."""
        self._closing.set()
        self._changed.set()
        if self._task is not None:
            await self._task
        if self._last_edit is not None:
            remaining = self._last_edit + self.interval - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)
