"""👍/👎 on Discord: persistent vote buttons, the "what went wrong?" modal, and reactions; and the
other buttons under an answer: "I need more help" (bots.discord.handoff) and, under a private
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

from bots.answer_actions import SHARE_FAILED, SHARED, STORE_DOWN, THANKS, AnswerActions
from bots.discord.buttons import persistent_button
from bots.discord.handoff import HandoffButton, actions_of, handoff_view
from bots.discord.reply import answer_chunks, quote_question

log = logging.getLogger(__name__)

VOTE_TEMPLATE = r"teambot:vote:(?P<value>up|down):(?P<answer>[0-9a-f]+)"
VOTES = {"up": 1, "down": -1}

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


async def share_answer(interaction: discord.Interaction, answer_id: str) -> None:
    """Post a private answer in the channel, with its votes, and say so where it was private."""
    await interaction.response.defer()  # an update of the private answer, within Discord's 3 s
    try:
        problem = await _share(interaction, actions_of(interaction), answer_id)
    except Exception:
        log.exception("could not share answer %s", answer_id)
        problem = SHARE_FAILED
    if problem:
        await interaction.followup.send(problem, ephemeral=True)
    else:
        await interaction.edit_original_response(content=SHARED, view=None)


async def _share(interaction: discord.Interaction, actions: AnswerActions, answer_id: str) -> str | None:
    shareable = await asyncio.to_thread(actions.shareable, answer_id, str(interaction.user.id), interaction.channel_id)
    if isinstance(shareable, str):
        return shareable
    answer = shareable.answer
    chunks = answer_chunks(answer, prefix=f"<@{interaction.user.id}> shared:\n{quote_question(answer.question)}")
    ids = []
    for i, chunk in enumerate(chunks):  # the buttons under the last part, as under any answer
        view = vote_view(answer_id, handoff=shareable.rule.has_experts) if i == len(chunks) - 1 else None
        ids.append(str((await interaction.channel.send(chunk, view=view)).id))  # type: ignore[union-attr]
    await asyncio.to_thread(actions.shared, answer_id, ids)
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

    def __init__(self, actions: AnswerActions, answer_id: str) -> None:
        # A modal left open is forgotten after 15 minutes; the 👎 itself is already stored.
        super().__init__(timeout=15 * 60)
        self.actions = actions
        self.answer_id = answer_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        reason = self.reason.component.value  # type: ignore[attr-defined]
        correction = self.correction.component.value  # type: ignore[attr-defined]
        # Answered before the database is touched: Discord drops an interaction unanswered after 3 s.
        await interaction.response.defer(ephemeral=True, thinking=True)
        text, offer = await asyncio.to_thread(self.actions.note, self.answer_id, str(interaction.user.id),
                                              reason, correction)
        if offer:
            await interaction.followup.send(text, view=handoff_view(self.answer_id), ephemeral=True)
        else:
            await interaction.followup.send(text, ephemeral=True)

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:
        log.exception("feedback modal failed", exc_info=error)
        if not interaction.response.is_done():
            await interaction.response.send_message(STORE_DOWN, ephemeral=True)
        else:
            await interaction.followup.send(STORE_DOWN, ephemeral=True)


async def record_vote(interaction: discord.Interaction, answer_id: str, value: int) -> None:
    """A button click. Discord drops an interaction not answered within 3 s, so the click is
    answered first (a 👎 opens "what went wrong?", a 👍 is deferred) and the vote stored after."""
    actions = actions_of(interaction)
    if value < 0:
        await interaction.response.send_modal(ReasonModal(actions, answer_id))  # a modal must be the first response
    else:
        await interaction.response.defer(ephemeral=True, thinking=True)
    problem = await asyncio.to_thread(actions.vote, answer_id, str(interaction.user.id), value)
    if problem is not None or value > 0:
        try:
            await interaction.followup.send(problem or THANKS, ephemeral=True)
        except discord.HTTPException as exc:  # the modal's own submit reports a store still down
            log.warning("could not tell %s about their vote: %s", interaction.user.id, exc)


def _reaction_vote(payload: discord.RawReactionActionEvent, bot_id: int) -> tuple[str, str, int] | None:
    """(message id, user, +1/-1) for a person's 👍/👎 reaction, else None. Remove events carry
    no member, so there only the bot's own id is known to skip; another bot's reaction never cast
    a vote, so there is nothing of it to take back."""
    if payload.user_id == bot_id or (payload.member is not None and payload.member.bot):
        return None
    value = vote_for_emoji(payload.emoji.name)
    return None if value is None else (str(payload.message_id), str(payload.user_id), value)


async def record_reaction(actions: AnswerActions, payload: discord.RawReactionActionEvent, *, bot_id: int) -> bool:
    """A 👍/👎 reaction on one of the bot's answers; True if it was stored as a vote."""
    vote = _reaction_vote(payload, bot_id)
    return vote is not None and await asyncio.to_thread(actions.react, *vote)


async def retract_reaction(actions: AnswerActions, payload: discord.RawReactionActionEvent, *, bot_id: int) -> bool:
    """A 👍/👎 reaction removed from one of the bot's answers; True if the vote it cast was taken back."""
    vote = _reaction_vote(payload, bot_id)
    try:
        return vote is not None and await asyncio.to_thread(actions.take_back, *vote)
    except Exception:
        log.exception("could not take back a vote on message %s", payload.message_id)
        return False


# Last: its clicks call share_answer above.
ShareButton = persistent_button("share", "[0-9a-f]+", emoji="📣", label="Share with the channel",
                                style=discord.ButtonStyle.primary, act=share_answer)
