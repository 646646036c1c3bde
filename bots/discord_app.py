"""The Discord bot: answers mentions, DMs and `/ask` from the team's documents, with sources.

discord.py dispatches gateway events to `TeambotDiscord`'s `on_message`,
`on_raw_reaction_add` / `on_raw_reaction_remove` (a 👍/👎 reaction casts a vote, removing it
takes that vote back), the `/ask` command and the persistent vote buttons; each hands off to
a small function here or in `bots.discord_feedback`.

Conversations: a thread is one conversation. Outside threads, a question starts a new
conversation keyed by its message id (which is also the id of the thread Discord creates
from it when `discord_reply_in_thread` is on), and replying to one of the bot's answers
continues that answer's conversation. Earlier turns come from `FeedbackStore.thread_history`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

import discord
from discord import app_commands

from bots.discord_feedback import PLATFORM, VoteButton, record_reaction, retract_reaction, vote_view
from bots.discord_reply import ChannelReply, InteractionReply, ReplyTarget, StreamingEditor, answer_chunks
from bots.ratelimit import RateLimiter
from pipeline.errors import InvalidQuestion, TeambotError
from pipeline.feedback_store import FeedbackStore
from teambot.settings import Settings, secret_value

log = logging.getLogger(__name__)

THREAD_NAME_LIMIT = 100  # Discord's limit on thread names


def bot_intents() -> discord.Intents:
    """Only what the bot uses. message_content is privileged: enable it in the developer portal."""
    intents = discord.Intents.none()
    intents.guilds = True  # channel and thread cache
    intents.guild_messages = intents.dm_messages = True
    intents.guild_reactions = intents.dm_reactions = True
    intents.message_content = True
    return intents


@dataclass(frozen=True)
class Conversation:
    """Where a question was asked, as the feedback store and collection mapping see it."""

    question: str
    user_id: int
    guild_id: int | None
    channel_id: int  # the parent channel for threads
    thread_key: str  # thread id, or the message/interaction id that started the conversation
    collection: str


class TeambotDiscord(discord.Client):
    def __init__(self, settings: Settings, service, store: FeedbackStore, **options) -> None:
        super().__init__(
            intents=bot_intents(),
            # An answer quoting "@everyone" or a role must never ping anyone; the asker may be.
            allowed_mentions=discord.AllowedMentions(everyone=False, users=False, roles=False, replied_user=True),
            **options,
        )
        self.settings = settings
        self.service = service  # pipeline.querying.AnswerService
        self.store = store
        self.limiter = RateLimiter.from_settings(settings)
        self.tree = app_commands.CommandTree(self)
        self.tree.add_command(_ask_command())

    async def setup_hook(self) -> None:
        self.add_dynamic_items(VoteButton)  # 👍/👎 on answers posted before this process started
        guild_id = self.settings.discord_dev_guild
        if guild_id:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)  # instant, for development
        else:
            await self.tree.sync()  # global; Discord may take a while to show it everywhere

    async def on_ready(self) -> None:
        log.info("connected to Discord as %s in %d guild(s)", self.user, len(self.guilds))

    async def on_message(self, message: discord.Message) -> None:
        await handle_message(self, message)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if self.user is not None:
            await record_reaction(self.store, payload, bot_id=self.user.id)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        if self.user is not None:
            await retract_reaction(self.store, payload, bot_id=self.user.id)


# ---------------------------------------------------------------- messages


def strip_mention(content: str, bot_id: int) -> str:
    return re.sub(rf"<@!?{bot_id}>", " ", content).strip()


async def _replied_answer_thread(client: TeambotDiscord, message: discord.Message) -> str | None:
    """The conversation of the bot answer this message replies to, if it replies to one."""
    ref = message.reference
    if ref is None or ref.message_id is None:
        return None
    answer_id = await asyncio.to_thread(client.store.answer_for_message, PLATFORM, str(ref.message_id))
    if answer_id is None:
        return None
    record = await asyncio.to_thread(client.store.get_answer, answer_id)
    return record.thread if record is not None else None


def _is_reply_to_bot(message: discord.Message, bot_id: int) -> bool:
    resolved = message.reference.resolved if message.reference else None
    return isinstance(resolved, discord.Message) and resolved.author.id == bot_id


async def handle_message(client: TeambotDiscord, message: discord.Message) -> None:
    me = client.user
    if me is None or message.author.id == me.id or message.author.bot:
        return  # never answer itself or another bot (no loops)
    if message.type not in (discord.MessageType.default, discord.MessageType.reply):
        return  # pins, joins, thread notices…
    channel = message.channel
    mentioned = any(user.id == me.id for user in message.mentions)
    addressed = mentioned or _is_reply_to_bot(message, me.id) or message.guild is None
    # In a thread the bot started, every message is for it, unless it speaks to someone else.
    if isinstance(channel, discord.Thread) and channel.owner_id == me.id and not message.mentions:
        addressed = True
    if not addressed:
        return

    question = strip_mention(message.content, me.id)
    if isinstance(channel, discord.Thread):
        channel_id, thread_key = channel.parent_id, str(channel.id)
    else:
        channel_id = channel.id
        thread_key = await _replied_answer_thread(client, message) or str(message.id)
    guild_id = message.guild.id if message.guild else None
    conversation = Conversation(
        question=question, user_id=message.author.id, guild_id=guild_id, channel_id=channel_id,
        thread_key=thread_key,
        collection=client.settings.collection_for(channel.id, channel_id, guild_id),
    )

    target: ReplyTarget = ChannelReply(channel, reference=message)
    if question and client.settings.discord_reply_in_thread and isinstance(channel, discord.TextChannel):
        thread = await _start_thread(message, question)
        if thread is not None:  # else answer inline: lacking the permission is no reason to stay silent
            target = ChannelReply(thread)
    await answer_question(client, conversation, target)


async def _start_thread(message: discord.Message, question: str) -> discord.Thread | None:
    name = " ".join(question.split())[:THREAD_NAME_LIMIT] or "Question"
    try:
        return await message.create_thread(name=name)
    except discord.HTTPException as exc:
        log.warning("could not start a thread for message %s: %s", message.id, exc)
        return None


# ---------------------------------------------------------------- /ask


def _ask_command() -> app_commands.Command:
    @app_commands.command(name="ask", description="Ask a question about the team's documents.")
    @app_commands.describe(question="What do you want to know?")
    async def ask(interaction: discord.Interaction, question: str) -> None:
        await handle_ask(interaction.client, interaction, question)  # type: ignore[arg-type]

    return ask


async def handle_ask(client: TeambotDiscord, interaction: discord.Interaction, question: str) -> None:
    channel = interaction.channel
    channel_id = interaction.channel_id or 0
    if isinstance(channel, discord.Thread):
        channel_id, thread_key = channel.parent_id, str(channel.id)
    else:
        thread_key = str(interaction.id)
    conversation = Conversation(
        question=question.strip(), user_id=interaction.user.id, guild_id=interaction.guild_id,
        channel_id=channel_id, thread_key=thread_key,
        collection=client.settings.collection_for(interaction.channel_id, channel_id, interaction.guild_id),
    )
    await answer_question(client, conversation, InteractionReply(interaction), quote_question=True)


# ---------------------------------------------------------------- answering


def _quote(question: str, limit: int = 200) -> str:
    text = " ".join(question.split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"> {discord.utils.escape_markdown(text)}\n"


async def answer_question(
    client: TeambotDiscord, conversation: Conversation, target: ReplyTarget, *, quote_question: bool = False
) -> None:
    """Answer one question into `target`: stream it, post it with sources and votes, record it."""
    try:
        await target.begin()
    except discord.HTTPException as exc:
        log.error("could not acknowledge a question: %s", exc)
        return
    if not conversation.question:
        await _fail(target, InvalidQuestion().user_message)
        return
    if limited := client.limiter.check(conversation.user_id, conversation.channel_id):
        await _fail(target, limited)
        return

    editor = StreamingEditor(target)
    store, settings = client.store, client.settings
    try:
        history = await asyncio.to_thread(
            store.thread_history, PLATFORM, str(conversation.channel_id), conversation.thread_key,
            settings.history_turns,
        )
        result = await asyncio.to_thread(
            client.service.ask, conversation.question, collection=conversation.collection,
            history=history, on_token=editor.on_token,
        )
    except TeambotError as exc:
        await editor.close()
        await _fail(target, exc.user_message)
        return
    except Exception:
        log.exception("answering failed")
        await editor.close()
        await _fail(target, TeambotError.user_message)
        return
    await editor.close()

    # Record before the buttons appear, so that even an instant click finds the answer.
    try:
        await asyncio.to_thread(
            store.record_answer, result, platform=PLATFORM, user_id=str(conversation.user_id),
            workspace=str(conversation.guild_id) if conversation.guild_id else None,
            channel=str(conversation.channel_id), thread=conversation.thread_key,
            message_id=str(target.first_message_id) if target.first_message_id else None,
        )
        recorded = True
    except Exception:  # the answer is still worth showing, only without votes
        log.exception("could not record answer %s", result.id)
        recorded = False
    chunks = answer_chunks(result, prefix=_quote(conversation.question) if quote_question else "")
    try:
        message_ids = await target.finish(chunks, vote_view(result.id) if recorded else None)
    except discord.HTTPException as exc:
        log.error("could not post answer %s: %s", result.id, exc)
        await _fail(target, TeambotError.user_message)
        return
    if recorded:
        # A reaction or a reply on any part of a split answer is about that answer.
        *parts, buttons = (str(i) for i in message_ids)
        await asyncio.to_thread(store.set_message_id, result.id, buttons, parts=parts)
    log.info(
        "answered %s in %.1fs with %d source(s)", result.id, result.timings.get("total", 0.0), len(result.sources)
    )


async def _fail(target: ReplyTarget, text: str) -> None:
    try:
        await target.fail(text)
    except discord.HTTPException as exc:
        log.error("could not post an error reply: %s", exc)


# ---------------------------------------------------------------- running


class DiscordSetupError(RuntimeError):
    """The bot cannot start; the message says what to fix."""


def run_bot(settings: Settings) -> None:
    """Connect to Discord and answer until interrupted."""
    if not secret_value(settings.discord_token):
        raise DiscordSetupError("TEAMBOT_DISCORD_TOKEN is not set: create a bot at https://discord.com/developers.")
    from pipeline.querying import AnswerService

    client = TeambotDiscord(settings, AnswerService(settings), FeedbackStore.from_settings(settings))
    try:
        # Logging is set up by the caller (teambot.logging_setup: format, level, secret redaction).
        client.run(settings.discord_token.get_secret_value(), log_handler=None)
    except discord.LoginFailure:
        raise DiscordSetupError("Discord rejected TEAMBOT_DISCORD_TOKEN: check the bot token.") from None
    except discord.PrivilegedIntentsRequired:
        raise DiscordSetupError(
            "Enable the Message Content intent in the Discord developer portal "
            "(your application → Bot → Privileged Gateway Intents)."
        ) from None
