"""The Discord bot: answers mentions, DMs and `/ask` from the team's documents, with sources.

discord.py dispatches gateway events to `TeambotDiscord`'s `on_message`,
`on_raw_reaction_add` / `on_raw_reaction_remove` (a 👍/👎 reaction casts a vote, removing it
takes that vote back), the `/ask` and `/stop` commands (`/stop` ends the caller's answer in
progress: its generation stops at the next token) and the persistent buttons (votes, "Share with the
channel", "I need more help", "Mark resolved"); each hands off to a small function here or in
`bots.discord.feedback` / `bots.discord.handoff`.

Each channel's rule (bots.channel_rules, by channel, then parent channel for a thread, then
guild) says which messages are for the bot (mentions only, or plain questions too; other bots'
or not), who may ask (user ids, role ids), and whether answers are private: there `/ask`
answers only the asker, and a mention is told to use `/ask`.

Conversations: a thread is one conversation. Outside threads, a question starts a new
conversation keyed by its message id (which is also the id of the thread Discord creates
from it when `discord_reply_in_thread` is on), and replying to one of the bot's answers
continues that answer's conversation. The answering itself is the shared conversation core's
(`bots.conversation`): it runs on the core's own threads, never on the event loop or its default
executor, and reaches Discord back through `DiscordReply`.

Slash commands are synced with Discord only when their definition changed since the last sync
(or by `teambot discord sync`): syncing on every start runs into Discord's daily limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from pathlib import Path

import discord
from discord import app_commands

from bots.channel_rules import ChannelRule
from bots.conversation import Conversations, Question
from bots.answer_actions import NOTHING_TO_STOP, STOPPING, AnswerActions
from bots.discord.feedback import ShareButton, VoteButton, record_reaction, retract_reaction, vote_view
from bots.discord.handoff import HandoffButton, ResolveButton, can_tag, role_ids
from bots.discord.reply import (
    PLATFORM, ChannelReply, InteractionReply, ReplyTarget, StreamingEditor, answer_chunks, quote_question,
)
from core.answer import Answer
from core.settings import Settings, secret_value
from feedback.store import FeedbackStore

log = logging.getLogger(__name__)

THREAD_NAME_LIMIT = 100  # Discord's limit on thread names
REPLY_TIMEOUT = 120.0  # seconds a pool thread waits for a reply to be posted on the event loop
COMMANDS_STATE = "discord_commands.json"
PRIVATE_HINT = "Answers in this channel are private: use `/ask` and only you will see mine."


def bot_intents() -> discord.Intents:
    """Only what the bot uses. message_content is privileged: enable it in the developer portal."""
    intents = discord.Intents.none()
    intents.guilds = True  # channel and thread cache
    intents.guild_messages = intents.dm_messages = True
    intents.guild_reactions = intents.dm_reactions = True
    intents.message_content = True
    return intents


class TeambotDiscord(discord.Client):
    def __init__(
        self, settings: Settings, service, store: FeedbackStore, *, conversations: Conversations | None = None,
        **options,
    ) -> None:
        super().__init__(
            intents=bot_intents(),
            # An answer quoting "@everyone" or a role must never ping anyone; the asker may be.
            allowed_mentions=discord.AllowedMentions(everyone=False, users=False, roles=False, replied_user=True),
            **options,
        )
        self.settings = settings
        self.service = service  # pipeline.querying.AnswerService
        self.store = store
        self.conversations = conversations or Conversations(settings, service, store)
        self.actions = AnswerActions(store, self.conversations, PLATFORM, can_tag=can_tag)
        self.force_sync = False  # `teambot discord sync`: sync the slash commands even if unchanged
        self.tree = app_commands.CommandTree(self)
        self.tree.add_command(_ask_command())
        self.tree.add_command(_stop_command())

    async def setup_hook(self) -> None:
        # The buttons on answers and hand-offs posted before this process started.
        self.add_dynamic_items(VoteButton, ShareButton, HandoffButton, ResolveButton)
        await sync_commands(self, force=self.force_sync)

    async def close(self) -> None:
        # Answers in progress finish first: they post through this client's HTTP session.
        await asyncio.to_thread(self.conversations.close)
        await super().close()

    async def on_ready(self) -> None:
        log.info("connected to Discord as %s in %d guild(s)", self.user, len(self.guilds))

    async def on_message(self, message: discord.Message) -> None:
        await handle_message(self, message)

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        # Raw: an expert's reply edited long after it left discord.py's message cache is still followed.
        content, author = payload.data.get("content"), (payload.data.get("author") or {}).get("id")
        if content is not None and (self.user is None or author != str(self.user.id)):  # not its own streaming
            await asyncio.to_thread(self.actions.expert_reply_changed, str(payload.message_id), content)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await asyncio.to_thread(self.actions.expert_reply_changed, str(payload.message_id), None)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if self.user is not None:
            await record_reaction(self.actions, payload, bot_id=self.user.id)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        if self.user is not None:
            await retract_reaction(self.actions, payload, bot_id=self.user.id)


# ---------------------------------------------------------------- messages


def strip_mention(content: str, bot_id: int) -> str:
    return re.sub(rf"<@!?{bot_id}>", " ", content).strip()


async def _replied_answer_thread(client: TeambotDiscord, message: discord.Message) -> str | None:
    """The conversation of the bot answer this message replies to, if it replies to one."""
    ref = message.reference
    if ref is None or ref.message_id is None:
        return None
    try:
        answer_id = await asyncio.to_thread(client.store.answer_for_message, PLATFORM, str(ref.message_id))
        record = await asyncio.to_thread(client.store.get_answer, answer_id) if answer_id else None
    except Exception:  # noqa: BLE001 - the question is still answered, as a new conversation
        log.exception("could not look up the answer message %s replies to", message.id)
        return None
    return record.thread if record is not None else None


def _is_reply_to_bot(message: discord.Message, bot_id: int) -> bool:
    resolved = message.reference.resolved if message.reference else None
    return isinstance(resolved, discord.Message) and resolved.author.id == bot_id


def _speaks_to_others(message: discord.Message, bot_id: int) -> bool:
    """Mentions someone else, or replies to someone else's message: not a question for the bot."""
    if message.mention_everyone or message.role_mentions or any(u.id != bot_id for u in message.mentions):
        return True
    return message.reference is not None and not _is_reply_to_bot(message, bot_id)


def _is_addressed(message: discord.Message, bot_id: int) -> bool:
    """A mention, a DM, a reply to one of the bot's answers, a message in a thread the bot started
    (unless it speaks to someone else)."""
    if message.guild is None or _is_reply_to_bot(message, bot_id) or any(u.id == bot_id for u in message.mentions):
        return True
    channel = message.channel
    return isinstance(channel, discord.Thread) and channel.owner_id == bot_id and not message.mentions


def _parent_id(channel) -> int | None:
    return channel.parent_id if isinstance(channel, discord.Thread) else None


async def handle_message(client: TeambotDiscord, message: discord.Message) -> None:
    me = client.user
    if me is None or message.author.id == me.id:
        return  # never answer itself (other bots only where the rule says so)
    if message.type not in (discord.MessageType.default, discord.MessageType.reply):
        return  # pins, joins, thread notices…
    if await _for_the_people(client, message, me.id):
        return
    channel = message.channel
    guild_id = message.guild.id if message.guild else None
    rule = client.conversations.rule_for(channel.id, _parent_id(channel), guild_id, direct=guild_id is None)
    addressed = _is_addressed(message, me.id)
    if not addressed and _speaks_to_others(message, me.id):
        return
    if not Conversations.wanted(rule, message.content, addressed=addressed, from_bot=message.author.bot):
        return
    if rule.private and message.guild is not None:  # nothing answered where the whole channel sees it
        await _say(ChannelReply(channel, reference=message), PRIVATE_HINT)
        return

    question = strip_mention(message.content, me.id)
    if isinstance(channel, discord.Thread):
        channel_id, thread_key = channel.parent_id, str(channel.id)
    else:
        channel_id = channel.id
        thread_key = await _replied_answer_thread(client, message) or str(message.id)
    conversation = _question(
        client, question, message.author, guild_id, channel.id, channel_id, thread_key, rule, _where(channel, guild_id)
    )
    target: ReplyTarget = ChannelReply(channel, reference=message)
    if question and client.settings.discord_reply_in_thread and isinstance(channel, discord.TextChannel):
        thread = await _start_thread(message, question)
        if thread is not None:  # else answer inline: lacking the permission is no reason to stay silent
            target = ChannelReply(thread, asker=message.author)
    await ask(client, conversation, target)


async def _conversation_of(client: TeambotDiscord, message: discord.Message) -> tuple[str, str] | None:
    """(channel, thread) of the answer conversation a message is in, as answers record them: a
    thread, or a reply to an answer given inline or to the message that tagged the experts."""
    channel = message.channel
    if isinstance(channel, discord.Thread):
        return str(channel.parent_id), str(channel.id)
    if message.reference is None or not message.reference.message_id or message.guild is None:
        return None
    thread_key = await _replied_answer_thread(client, message)
    if thread_key is None:
        handoff = await asyncio.to_thread(client.store.handoff_for_message, PLATFORM, str(message.reference.message_id))
        thread_key = handoff.thread if handoff else None
    return (str(channel.id), thread_key) if thread_key else None


async def _for_the_people(client: TeambotDiscord, message: discord.Message, bot_id: int) -> bool:
    """A message in a conversation whose hand-off waits: an expert's reply is kept for the draft
    answer (bots.answer_actions decides who counts), and nothing there is a question for the bot
    unless it is mentioned."""
    try:
        where = await _conversation_of(client, message)
        if where is None:
            return False
        user = message.author
        if not user.bot and await asyncio.to_thread(client.actions.expert_reply, *where, str(message.id), str(user.id),
                                                    message.content, lambda _rule: role_ids(user), message.channel.id,
                                                    posted_at=message.created_at):
            return True
        mentioned = any(u.id == bot_id for u in message.mentions)
        return not mentioned and await asyncio.to_thread(client.actions.people_answering, *where)
    except Exception:  # noqa: BLE001 - the message is then handled as any other
        log.exception("could not tell whether message %s is for the people helping", message.id)
        return False


def _question(
    client: TeambotDiscord, text: str, user: discord.abc.User, guild_id: int | None, channel_id: int,
    parent_id: int, thread_key: str, rule: ChannelRule, where: str,
) -> Question:
    named = {*rule.allowed_groups, *rule.expert_groups}  # the only roles the rule cares about
    return Question(
        platform=PLATFORM, text=text, user=str(user.id), workspace=str(guild_id) if guild_id else None,
        channel=str(parent_id), thread=thread_key,
        collection=client.settings.collection_for(channel_id, parent_id, guild_id),
        rule=rule, groups=role_ids(user) & named, where=where,
    )


def _where(channel, guild_id: int | None) -> str:
    """Who sees the conversation: a DM, a private thread or a channel @everyone cannot view, or public."""
    if guild_id is None:
        return "direct_message"
    if getattr(channel, "type", None) == discord.ChannelType.private_thread:
        return "private_channel"
    parent = getattr(channel, "parent", None) or channel
    guild = getattr(parent, "guild", None)
    try:
        hidden = guild is not None and not parent.permissions_for(guild.default_role).view_channel
    except (AttributeError, TypeError):  # a partial channel: its permissions are unknown
        hidden = False
    return "private_channel" if hidden else "public"


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
    rule = client.conversations.rule_for(interaction.channel_id, _parent_id(channel), interaction.guild_id,
                                         direct=interaction.guild_id is None)
    conversation = _question(
        client, question, interaction.user, interaction.guild_id, interaction.channel_id or 0, channel_id,
        thread_key, rule, _where(channel, interaction.guild_id),
    )
    # A private answer can be shared with the channel; in a DM there is nobody to share it with.
    private = rule.private and interaction.guild_id is not None
    await ask(client, conversation, InteractionReply(interaction, ephemeral=rule.private), quote=True, share=private)


def _stop_command() -> app_commands.Command:
    @app_commands.command(name="stop", description="Stop the answer you are waiting for here.")
    async def stop(interaction: discord.Interaction) -> None:
        await handle_stop(interaction.client, interaction)  # type: ignore[arg-type]

    return stop


async def handle_stop(client: TeambotDiscord, interaction: discord.Interaction) -> None:
    """Stop the caller's answers in progress or waiting here: in a thread, that thread's (a thread
    the bot started for a question shares the question's id); in a channel, all of theirs there."""
    channel = interaction.channel
    if isinstance(channel, discord.Thread):
        where, thread = str(channel.parent_id), str(channel.id)
    else:
        where, thread = str(interaction.channel_id or 0), None
    stopped = client.conversations.stop(PLATFORM, where, thread, user=str(interaction.user.id))
    await interaction.response.send_message(STOPPING if stopped else NOTHING_TO_STOP, ephemeral=True)


# ---------------------------------------------------------------- answering


async def ask(
    client: TeambotDiscord, question: Question, target: ReplyTarget, *, quote: bool = False, share: bool = False,
) -> None:
    """Hand a question to the conversation core, which answers it into `target` (with a "Share
    with the channel" button if `share`)."""
    try:
        # At once, on the loop: an interaction not answered within 3 s is dead, however busy the pool.
        await target.begin()
    except discord.HTTPException as exc:
        log.error("could not acknowledge a question: %s", exc)
        return
    prefix = quote_question(question.text) if quote else ""
    reply = DiscordReply(target, StreamingEditor(target), prefix, asyncio.get_running_loop(), share=share)
    if refusal := client.conversations.submit(question, reply):
        await _fail(target, refusal.text)


class DiscordReply:
    """The conversation core's `Reply` for Discord: called on a pool thread, it runs each step on
    the bot's event loop and waits for it."""

    def __init__(
        self, target: ReplyTarget, editor: StreamingEditor, prefix: str, loop: asyncio.AbstractEventLoop, *,
        share: bool = False,
    ):
        self.target, self.editor, self.prefix, self.loop, self.share = target, editor, prefix, loop, share

    @property
    def message_id(self) -> str | None:
        first = self.target.first_message_id
        return str(first) if first else None

    def start(self, question: str) -> None:
        return None  # begun on the loop already, before the question waited for a thread

    def token(self, delta: str) -> None:
        self.editor.on_token(delta)

    def finish(self, answer: Answer, *, votes: bool, handoff: bool) -> list[str]:
        return self._on_loop(self._finish(answer, votes, handoff))

    def fail(self, text: str) -> None:
        self._on_loop(self._fail(text))

    def remind(self, text: str) -> None:
        self._on_loop(self.target.remind(text))

    async def _finish(self, answer: Answer, votes: bool, handoff: bool) -> list[str]:
        await self.editor.close()
        chunks = answer_chunks(answer, prefix=self.prefix)
        view = vote_view(answer.id, handoff=handoff, share=self.share and not answer.abstained) if votes else None
        return [str(i) for i in await self.target.finish(chunks, view)]

    async def _fail(self, text: str) -> None:
        await self.editor.close()
        await self.target.fail(text)

    def _on_loop(self, coro):
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout=REPLY_TIMEOUT)
        except TimeoutError:
            future.cancel()  # so that an error reply cannot overwrite an answer still being posted
            raise


async def _fail(target: ReplyTarget, text: str) -> None:
    try:
        await target.fail(text)
    except discord.HTTPException as exc:
        log.error("could not post an error reply: %s", exc)


async def _say(target: ChannelReply, text: str) -> None:
    try:
        await target.finish([text], None)
    except discord.HTTPException as exc:
        log.error("could not post a reply: %s", exc)


# ---------------------------------------------------------------- running


class DiscordSetupError(RuntimeError):
    """The bot cannot start; the message says what to fix."""


def commands_signature(tree: app_commands.CommandTree, guild: discord.abc.Snowflake | None) -> str:
    """A hash of the slash commands as Discord would be told them."""
    payload = [command.to_dict(tree) for command in tree.get_commands(guild=guild)]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


async def sync_commands(client: TeambotDiscord, *, force: bool = False) -> bool:
    """Sync the slash commands (to the dev guild, instantly, when one is set) if their definition
    changed since the last sync from this data dir, or if `force`; True if it synced."""
    guild = discord.Object(id=client.settings.discord_dev_guild) if client.settings.discord_dev_guild else None
    if guild is not None:
        client.tree.copy_global_to(guild=guild)
    scope = str(guild.id) if guild else "global"
    state_path = Path(client.settings.data_dir) / COMMANDS_STATE
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        state = {}
    signature = commands_signature(client.tree, guild)
    if not force and state.get(scope) == signature:
        log.info("slash commands unchanged since the last sync (%s): not synced", scope)
        return False
    await client.tree.sync(guild=guild)  # global ones may take a while to show everywhere
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state_path.write_text(json.dumps({**state, scope: signature}, indent=2))
    log.info("slash commands synced (%s)", scope)
    return True


def sync_now(settings: Settings) -> None:
    """Log in, sync the slash commands whether or not they changed, and log out."""
    if not secret_value(settings.discord_token):
        raise DiscordSetupError("TEAMBOT_DISCORD_TOKEN is not set: create a bot at https://discord.com/developers.")

    async def sync() -> None:
        client = TeambotDiscord(settings, None, None)
        client.force_sync = True
        try:
            await client.login(secret_value(settings.discord_token))  # runs setup_hook, which syncs
        except discord.LoginFailure:
            raise DiscordSetupError("Discord rejected TEAMBOT_DISCORD_TOKEN: check the bot token.") from None
        finally:
            await client.close()

    asyncio.run(sync())
