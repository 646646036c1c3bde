"""👍/👎 on Discord: persistent vote buttons, the "what went wrong?" modal, and reactions; and the
other buttons under an answer: "I need more help" (bots.discord_handoff) and, under a private
answer, "Share with the channel", which posts it for everyone, with its votes.

The buttons' custom_ids carry the answer id, so a click is understood by any running bot
process, also one started after the answer was posted (they are `DynamicItem`s registered in
`setup_hook`). Every vote goes straight to the FeedbackStore; the last one per user wins.
Removing a 👍/👎 reaction takes back the vote it cast, unless the user has voted differently
since (e.g. 👍 reaction, then the 👎 button: the 👎 stays).
"""

from __future__ import annotations

import asyncio
import logging
import re

import discord

from bots.discord_handoff import HandoffButton, handoff_view, rule_of_answer
from bots.discord_reply import PLATFORM, answer_chunks, quote_question
from core import metrics
from feedback.store import FeedbackStore, UnknownAnswer

log = logging.getLogger(__name__)

VOTE_TEMPLATE = r"teambot:vote:(?P<value>up|down):(?P<answer>[0-9a-f]+)"
VOTES = {"up": 1, "down": -1}

THANKS = "Thanks for the feedback!"
THANKS_DETAIL = "Thanks, your feedback was saved. It helps improve the answers."
UNKNOWN_ANSWER = "I no longer have that answer on record, so the vote could not be saved."
STORE_DOWN = "Sorry, your vote could not be saved right now. Please try again shortly."
MORE_HELP = " If you'd like a person to look at it, use *I need more help*."
SHARE_TEMPLATE = r"teambot:share:(?P<answer>[0-9a-f]+)"
SHARED = "Shared with the channel. ✅"
NOT_YOUR_ANSWER = "Only the person who asked can share this answer."
SHARE_FAILED = "Sorry, I couldn't share that answer right now. Please try again shortly."

# Skin-tone modifiers and the emoji variation selector: 👍🏽 counts as 👍.
_EMOJI_MODIFIERS = re.compile("[\U0001f3fb-\U0001f3ff\ufe0f]")
REACTION_VOTES = {"👍": 1, "👎": -1}


def vote_for_emoji(name: str | None) -> int | None:
    """+1 / -1 for a 👍 / 👎 reaction (any skin tone), None for any other emoji."""
    return REACTION_VOTES.get(_EMOJI_MODIFIERS.sub("", name or ""))


class VoteButton(discord.ui.DynamicItem[discord.ui.Button], template=VOTE_TEMPLATE):
    def __init__(self, value: str, answer_id: str) -> None:
        self.value = value
        self.answer_id = answer_id
        up = value == "up"
        super().__init__(
            discord.ui.Button(
                emoji="👍" if up else "👎",
                label="Helpful" if up else "Not helpful",
                style=discord.ButtonStyle.secondary,
                custom_id=f"teambot:vote:{value}:{answer_id}",
            )
        )

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /):
        return cls(match["value"], match["answer"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await record_vote(interaction, self.answer_id, VOTES[self.value])


def vote_view(answer_id: str, *, handoff: bool = False, share: bool = False) -> discord.ui.View:
    """The row under an answer: 👍/👎, "I need more help" if `handoff`, "Share with the channel"
    if `share`; persistent (no timeout)."""
    view = discord.ui.View(timeout=None)
    view.add_item(VoteButton("up", answer_id))
    view.add_item(VoteButton("down", answer_id))
    if handoff:
        view.add_item(HandoffButton(answer_id))
    if share:
        view.add_item(ShareButton(answer_id))
    return view


class ShareButton(discord.ui.DynamicItem[discord.ui.Button], template=SHARE_TEMPLATE):
    """Under a private (ephemeral) answer: post it in the channel for everyone."""

    def __init__(self, answer_id: str) -> None:
        self.answer_id = answer_id
        super().__init__(discord.ui.Button(
            emoji="📣", label="Share with the channel", style=discord.ButtonStyle.primary,
            custom_id=f"teambot:share:{answer_id}",
        ))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /):
        return cls(match["answer"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await share_answer(interaction, self.answer_id)


async def share_answer(interaction: discord.Interaction, answer_id: str) -> None:
    """Post a private answer in the channel, with its votes, and say so where it was private."""
    await interaction.response.defer()  # an update of the private answer, within Discord's 3 s
    store: FeedbackStore = interaction.client.store  # type: ignore[attr-defined]
    try:
        problem = await _share(interaction, store, answer_id)
    except Exception:
        log.exception("could not share answer %s", answer_id)
        problem = SHARE_FAILED
    if problem:
        await interaction.followup.send(problem, ephemeral=True)
    else:
        await interaction.edit_original_response(content=SHARED, view=None)


async def _share(interaction: discord.Interaction, store: FeedbackStore, answer_id: str) -> str | None:
    record = await asyncio.to_thread(store.get_answer, answer_id)
    answer = await asyncio.to_thread(store.shown_answer, answer_id)
    if record is None or answer is None:
        return UNKNOWN_ANSWER
    if record.user_hash != store.user_hash(PLATFORM, str(interaction.user.id)):
        return NOT_YOUR_ANSWER
    rule = rule_of_answer(interaction.client, record, interaction.channel_id)
    chunks = answer_chunks(answer, prefix=f"<@{interaction.user.id}> shared:\n{quote_question(answer.question)}")
    ids = []
    for i, chunk in enumerate(chunks):  # the buttons under the last part, as under any answer
        view = vote_view(answer_id, handoff=rule.has_experts) if i == len(chunks) - 1 else None
        ids.append(str((await interaction.channel.send(chunk, view=view)).id))  # type: ignore[union-attr]
    await asyncio.to_thread(store.set_message_id, answer_id, ids[-1], parts=ids[:-1])
    return None


class ReasonModal(discord.ui.Modal, title="What was wrong with this answer?"):
    reason = discord.ui.Label(
        text="What went wrong? (optional)",
        component=discord.ui.TextInput(style=discord.TextStyle.paragraph, required=False, max_length=1000),
    )
    correction = discord.ui.Label(
        text="A better answer (optional)",
        component=discord.ui.TextInput(style=discord.TextStyle.paragraph, required=False, max_length=2000),
    )

    def __init__(self, store: FeedbackStore, answer_id: str) -> None:
        # A modal left open is forgotten after 15 minutes; the 👎 itself is already stored.
        super().__init__(timeout=15 * 60)
        self.store = store
        self.answer_id = answer_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        reason = self.reason.component.value  # type: ignore[attr-defined]
        correction = self.correction.component.value  # type: ignore[attr-defined]
        # Answered before the database is touched: Discord drops an interaction unanswered after 3 s.
        await interaction.response.defer(ephemeral=True, thinking=True)
        message = await _rate(
            self.store, self.answer_id, interaction.user.id, -1, reason=reason, correction=correction
        )
        if message is None and await self._experts_here(interaction):
            offer = handoff_view(self.answer_id)
            await interaction.followup.send(THANKS_DETAIL + MORE_HELP, view=offer, ephemeral=True)
        else:
            await interaction.followup.send(message or THANKS_DETAIL, ephemeral=True)

    async def _experts_here(self, interaction: discord.Interaction) -> bool:
        record = await asyncio.to_thread(self.store.get_answer, self.answer_id)
        return record is not None and rule_of_answer(interaction.client, record, interaction.channel_id).has_experts

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:
        log.exception("feedback modal failed", exc_info=error)
        if not interaction.response.is_done():
            await interaction.response.send_message(STORE_DOWN, ephemeral=True)
        else:
            await interaction.followup.send(STORE_DOWN, ephemeral=True)


async def _rate(
    store: FeedbackStore, answer_id: str, user_id: int, value: int, *,
    reason: str | None = None, correction: str | None = None,
) -> str | None:
    """Store the vote; returns a message for the user if it could not be stored."""
    try:
        await asyncio.to_thread(
            store.rate, answer_id, platform=PLATFORM, user_id=str(user_id), value=value,
            reason=reason, correction=correction,
        )
    except UnknownAnswer:
        return UNKNOWN_ANSWER
    except Exception:
        log.exception("could not store a vote on answer %s", answer_id)
        return STORE_DOWN
    return None


async def record_vote(interaction: discord.Interaction, answer_id: str, value: int) -> None:
    """A button click. Discord drops an interaction not answered within 3 s, so the click is
    answered first (a 👎 opens "what went wrong?", a 👍 is deferred) and the vote stored after."""
    store: FeedbackStore = interaction.client.store  # type: ignore[attr-defined]
    if value < 0:
        await interaction.response.send_modal(ReasonModal(store, answer_id))  # a modal must be the first response
    else:
        await interaction.response.defer(ephemeral=True, thinking=True)
    problem = await _rate(store, answer_id, interaction.user.id, value)
    if problem is None:
        metrics.observe_vote(PLATFORM, value)
    if problem is not None or value > 0:
        try:
            await interaction.followup.send(problem or THANKS, ephemeral=True)
        except discord.HTTPException as exc:  # the modal's own submit reports a store still down
            log.warning("could not tell %s about their vote: %s", interaction.user.id, exc)


async def _reaction_vote(
    store: FeedbackStore, payload: discord.RawReactionActionEvent, bot_id: int
) -> tuple[str, int] | None:
    """(answer id, +1/-1) for a person's 👍/👎 reaction on one of the bot's answers, else None.
    Remove events carry no member, so there only the bot's own id is known to skip; another
    bot's reaction never cast a vote, so there is nothing of it to take back."""
    if payload.user_id == bot_id or (payload.member is not None and payload.member.bot):
        return None
    value = vote_for_emoji(payload.emoji.name)
    if value is None:
        return None
    answer_id = await asyncio.to_thread(store.answer_for_message, PLATFORM, str(payload.message_id))
    return (answer_id, value) if answer_id is not None else None  # None: a reaction on some other message


async def record_reaction(store: FeedbackStore, payload: discord.RawReactionActionEvent, *, bot_id: int) -> bool:
    """A 👍/👎 reaction on one of the bot's answers; True if it was stored as a vote."""
    vote = await _reaction_vote(store, payload, bot_id)
    if vote is None or await _rate(store, vote[0], payload.user_id, vote[1]) is not None:
        return False
    metrics.observe_vote(PLATFORM, vote[1])
    return True


async def retract_reaction(store: FeedbackStore, payload: discord.RawReactionActionEvent, *, bot_id: int) -> bool:
    """A 👍/👎 reaction removed from one of the bot's answers; True if the vote it cast was taken back."""
    try:
        vote = await _reaction_vote(store, payload, bot_id)
        if vote is None:
            return False
        retracted = await asyncio.to_thread(
            store.retract, vote[0], platform=PLATFORM, user_id=str(payload.user_id), value=vote[1]
        )
    except Exception:
        log.exception("could not take back a vote on message %s", payload.message_id)
        return False
    if retracted:
        metrics.observe_retraction(PLATFORM, vote[1])
    return retracted
