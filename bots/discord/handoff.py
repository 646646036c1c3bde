""""I need more help" on Discord: hand a question on to the channel's experts, and mark it resolved.

The button under an answer opens a hand-off in the FeedbackStore (one per answer; a second click
while it waits is told so) and posts, where the answer is, a message that tags the experts of the
channel's rule (bots.channel_rules: `expert_users`, `expert_groups` as role ids), quotes the
question and lists the answer's sources. Only the people and roles tagged are pinged: the client
pings nobody by default. "Mark resolved" on that message may be used by the asker or an expert;
it then says who resolved it, and the button goes. Both buttons are `DynamicItem`s whose
custom_id carries the answer or hand-off id, so they work in any bot process, also after a restart.
"""

from __future__ import annotations

import asyncio
import logging

import discord

from bots.answer_actions import HANDOFF_FAILED, AnswerActions, HelpRequest
from bots.channel_rules import ChannelRule
from bots.discord.buttons import persistent_button
from bots.discord.reply import MESSAGE_LIMIT, quote_question, source_line

log = logging.getLogger(__name__)

WAITING = "⏳ Waiting for help."


def handoff_view(answer_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(HandoffButton(answer_id))
    return view


def resolve_view(handoff_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ResolveButton(handoff_id))
    return view


# ---------------------------------------------------------------- rules and people


def role_ids(user: discord.abc.User) -> frozenset[str]:
    """The user's Discord role ids as strings (none outside a guild)."""
    return frozenset(str(role.id) for role in getattr(user, "roles", ()))


def can_tag(rule: ChannelRule) -> bool:
    """Whether the rule names experts Discord can tag (a rules file may name Slack ids too)."""
    return bool(expert_mentions(rule)[0])


def expert_mentions(rule: ChannelRule) -> tuple[str, discord.AllowedMentions]:
    """The experts tagged (`<@user> <@&role>`) and mentions that ping exactly those."""
    users = [int(u) for u in rule.expert_users if u.isdigit()]  # Slack ids may share the file
    roles = [int(r) for r in rule.expert_groups if r.isdigit()]
    tags = " ".join([*(f"<@{u}>" for u in users), *(f"<@&{r}>" for r in roles)])
    allowed = discord.AllowedMentions(
        everyone=False, users=[discord.Object(u) for u in users] or False,
        roles=[discord.Object(r) for r in roles] or False, replied_user=False,
    )
    return tags, allowed


def handoff_text(tags: str, asker_id: int, answer) -> str:
    """The hand-off message: who is asked, the question, the answer's sources, its status (last line)."""
    head = f"🙋 {tags} <@{asker_id}> needs more help with:\n{quote_question(answer.question)}"
    sources = "\n".join(["**Sources of my answer**", *(source_line(s) for s in answer.sources)])
    if not answer.sources:
        sources = "My answer cited no sources."
    room = MESSAGE_LIMIT - len(head) - len(WAITING) - 2
    if len(sources) > room:
        sources = sources[: room - 1] + "…"
    return f"{head}{sources}\n{WAITING}"


def resolved_text(text: str, user_id: int) -> str:
    """The hand-off message once resolved: its status line replaced."""
    body = text[: text.rfind("\n")] if "\n" in text else text
    return f"{body}\n✅ Resolved by <@{user_id}>."


# ---------------------------------------------------------------- the buttons


def actions_of(interaction: discord.Interaction) -> AnswerActions:
    return interaction.client.actions  # type: ignore[attr-defined]


async def request_help(interaction: discord.Interaction, answer_id: str) -> None:
    """"I need more help": open a hand-off and tag the experts where the answer is."""
    await interaction.response.defer(ephemeral=True, thinking=True)  # Discord's 3 s, before the database
    actions = actions_of(interaction)
    try:
        request = await asyncio.to_thread(actions.ask_for_help, answer_id, str(interaction.user.id),
                                          interaction.channel_id)
        note = request if isinstance(request, str) else await _post_help(interaction, actions, request)
    except Exception:
        log.exception("could not hand off answer %s", answer_id)
        note = HANDOFF_FAILED
    await interaction.followup.send(note, ephemeral=True)


async def _post_help(interaction: discord.Interaction, actions: AnswerActions, request: HelpRequest) -> str:
    tags, allowed = expert_mentions(request.rule)
    source = interaction.message
    # Under the answer when it is a message everyone sees; an ephemeral one cannot be replied to.
    reference = source.to_reference(fail_if_not_exists=False) if source and not source.flags.ephemeral else None
    try:
        posted = await interaction.channel.send(  # type: ignore[union-attr]
            handoff_text(tags, interaction.user.id, request.answer), view=resolve_view(request.handoff.id),
            allowed_mentions=allowed, reference=reference,
        )
    except discord.HTTPException as exc:
        log.error("could not ask the experts in %s: %s", interaction.channel_id, exc)
        return await asyncio.to_thread(actions.help_not_posted, request)
    return await asyncio.to_thread(actions.help_posted, request, str(posted.id))


async def resolve(interaction: discord.Interaction, handoff_id: int) -> None:
    """"Mark resolved", by the asker or an expert: the hand-off message then says who resolved it."""
    await interaction.response.defer()  # an update of the hand-off message, within Discord's 3 s
    user = interaction.user
    resolved = await asyncio.to_thread(actions_of(interaction).resolve, handoff_id, str(user.id),
                                       lambda _rule: role_ids(user), interaction.channel_id)
    if isinstance(resolved, str):
        await interaction.followup.send(resolved, ephemeral=True)
        return
    text = interaction.message.content if interaction.message else WAITING
    await interaction.edit_original_response(content=resolved_text(text, user.id), view=None)


# Last: their clicks call the functions above.
HandoffButton = persistent_button("handoff", "[0-9a-f]+", emoji="🙋", label="I need more help",
                                  style=discord.ButtonStyle.secondary, act=request_help)
ResolveButton = persistent_button("resolve", "[0-9]+", emoji="✅", label="Mark resolved",
                                  style=discord.ButtonStyle.success, act=resolve, convert=int)
