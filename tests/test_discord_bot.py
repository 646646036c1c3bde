"""The Discord bot end to end, through discord.py's own code paths.

Each scenario logs a real `TeambotDiscord` client in against a local stand-in of Discord's
REST API (testing/discord_standin.py) and feeds it gateway events through discord.py's
`ConnectionState` parsers, so discord.py builds the Message/Interaction objects itself and
dispatches them to the bot's handlers. Answers come from the real pipeline (Weaviate +
Ollama, handbook fixture) except where a test needs something the real model cannot be made
to produce on demand (an answer longer than its token cap); there `ScriptedAnswers` stands
in for the pipeline, never for Weaviate or Ollama themselves.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from bots.discord.app import TeambotDiscord
from bots.answer_actions import THANKS, THANKS_NOTE
from bots.discord.reply import EDIT_INTERVAL, MESSAGE_LIMIT
from core.answer import Source
from core.errors import InvalidQuestion, ModelUnavailable
from feedback.store import FeedbackStore
from testing.discord_standin import DiscordStandIn, custom_ids, logged_in, settle, user_payload
from testing.doubles import ScriptedAnswers

EXPENSES_QUESTION = "Which tool do I submit expense claims in?"
EXPENSES_SOURCE = Source(1, "Expenses", "/srv/expenses.md", "…", "c1", 0.9)
FOLLOW_UP = "How long do I have to submit them?"
TIME_OFF_QUESTION = "How many days of paid vacation do full-time employees get?"
EPHEMERAL = 64


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeedbackStore:
    return FeedbackStore(f"sqlite:///{tmp_path_factory.mktemp('discord')}/feedback.db")


@pytest.fixture(scope="module")
def bot_settings(settings, handbook):
    return settings.model_copy(update={"collection": handbook.collection})


def run(scenario):
    return asyncio.run(scenario)


def answer_id_of(message: dict) -> str:
    ids = custom_ids(message)
    assert ids and ids[0].startswith("teambot:vote:up:"), f"no vote buttons on {message['content'][:80]!r}"
    return ids[0].rsplit(":", 1)[1]


def rating_of(store: FeedbackStore, answer_id: str, user_id: int):
    mine = [r for r in store.ratings(answer_id) if r.user_hash == store.user_hash("discord", str(user_id))]
    assert len(mine) <= 1  # one rating per user: the last vote replaces the earlier one
    return mine[0] if mine else None


# ---------------------------------------------------------------- a real conversation


@pytest.fixture(scope="module")
def conversation(handbook, bot_settings, store):
    """A mention answered by the real pipeline, then a reply to that answer (a follow-up)."""

    async def scenario():
        standin = DiscordStandIn()
        bot = TeambotDiscord(bot_settings, handbook.service, store)
        async with logged_in(bot, standin):
            question = standin.message_create(f"{standin.mention()} {EXPENSES_QUESTION}", mentions_bot=True)
            bot._connection.parse_message_create(question)
            await settle()
            first = standin.bot_messages()[-1]
            requests_for_first = list(standin.requests)
            # Replying to the answer (without pinging the bot) continues the conversation.
            follow_up = standin.message_create(FOLLOW_UP, reply_to=first)
            bot._connection.parse_message_create(follow_up)
            await settle()
            second = standin.bot_messages()[-1]
        return SimpleNamespace(
            standin=standin, question=question, first=first, follow_up=follow_up, second=second,
            requests_for_first=requests_for_first,
        )

    return run(scenario())


def test_mention_gets_a_reply_with_the_answer_sources_and_vote_buttons(conversation, store, handbook):
    c = conversation
    paths = [(r.method, r.path) for r in c.requests_for_first]
    channel = f"/channels/{c.standin.channel_id}"
    # Typing first, then the reply, then edits of that same reply.
    assert paths.index(("POST", f"{channel}/typing")) < paths.index(("POST", f"{channel}/messages"))
    assert c.first["message_reference"]["message_id"] == c.question["id"]

    answer_id = answer_id_of(c.first)
    assert custom_ids(c.first) == [f"teambot:vote:up:{answer_id}", f"teambot:vote:down:{answer_id}"]
    record = store.get_answer(answer_id)

    # The pipeline's answer, then its numbered sources, in one message without the stream cursor.
    content = c.first["content"]
    assert len(content) <= MESSAGE_LIMIT and "▌" not in content
    text, sources = content.split("\n\n**Sources**\n")
    assert text == record.answer_text
    retrieved_files = {Path(r["path"]).name for r in record.retrieved}
    assert "expenses.md" in retrieved_files
    assert re.match(r"\*\*\[\d\]\*\* .+\(`([^`]+)`\)", sources).group(1) in retrieved_files
    assert record.platform == "discord"
    assert record.workspace == str(c.standin.guild_id)
    assert record.channel == str(c.standin.channel_id)
    assert record.thread == c.question["id"]
    assert record.message_id == c.first["id"]
    assert record.user_hash == store.user_hash("discord", str(c.standin.user_id))
    assert record.collection == handbook.collection
    assert record.question == EXPENSES_QUESTION  # the mention itself is not part of the question


def test_reply_to_an_answer_is_a_follow_up_with_the_earlier_turn_as_context(conversation, store):
    c = conversation
    assert c.second["id"] != c.first["id"]
    assert c.second["message_reference"]["message_id"] == c.follow_up["id"]
    record = store.get_answer(answer_id_of(c.second))
    assert record.thread == c.question["id"]
    turns = store.thread_history("discord", str(c.standin.channel_id), c.question["id"], limit=5)
    assert [t.question for t in turns] == [EXPENSES_QUESTION, FOLLOW_UP]
    # The model saw the first exchange before the follow-up.
    earlier = [m["content"] for m in record.prompt[:-1] if m["role"] == "user"]
    assert EXPENSES_QUESTION in earlier


def test_vote_buttons_work_after_a_restart_and_thumbs_down_asks_why(conversation, bot_settings, handbook, store):
    message = conversation.first
    answer_id = answer_id_of(message)
    voter = user_payload(2000000000000000001, "sam")

    async def scenario():
        # A new client: the buttons were posted by another process.
        standin = DiscordStandIn()
        bot = TeambotDiscord(bot_settings, handbook.service, store)
        async with logged_in(bot, standin):
            bot._connection.parse_interaction_create(
                standin.button_click(message, f"teambot:vote:up:{answer_id}", user=voter)
            )
            await settle()
            thumbs_up = rating_of(store, answer_id, 2000000000000000001)
            acknowledgement = standin.calls("POST", "/interactions/")[-1].body
            said = standin.calls("POST", "/webhooks/")[-1].body

            bot._connection.parse_interaction_create(
                standin.button_click(message, f"teambot:vote:down:{answer_id}", user=voter)
            )
            await settle()
            # The 👎 is stored before the modal asks for details.
            thumbs_down = rating_of(store, answer_id, 2000000000000000001)
            modal = standin.calls("POST", "/interactions/")[-1].body

            bot._connection.parse_interaction_create(
                standin.modal_submit(
                    modal["data"], ["It named the wrong tool.", "Claims go in Ledgerly."], message=message, user=voter
                )
            )
            await settle()
            submitted = standin.calls("POST", "/interactions/")[-1].body
            thanks = standin.calls("POST", "/webhooks/")[-1].body
            late = [info["answered_after"] for info in standin.interactions.values()]
        return thumbs_up, acknowledgement, said, thumbs_down, modal, submitted, thanks, late, standin.refused

    thumbs_up, acknowledgement, said, thumbs_down, modal, submitted, thanks, late, refused = run(scenario())
    # Each click is answered before the vote is written (Discord drops one unanswered after 3 s):
    # a 👍 is deferred, and the thanks follows once the vote is stored.
    assert thumbs_up.value == 1 and refused == []
    assert acknowledgement["type"] == 5 and acknowledgement["data"]["flags"] == EPHEMERAL
    assert said["content"] == THANKS and said["flags"] == EPHEMERAL
    assert thumbs_down.value == -1 and thumbs_down.reason is None
    assert modal["type"] == 9 and len(modal["data"]["components"]) == 2  # the 👎 opens the form at once
    final = rating_of(store, answer_id, 2000000000000000001)
    assert (final.value, final.reason, final.correction) == (-1, "It named the wrong tool.", "Claims go in Ledgerly.")
    assert submitted["type"] == 5 and thanks["content"] == THANKS_NOTE and thanks["flags"] == EPHEMERAL
    assert all(after is not None and after < 3 for after in late)


def test_thumb_reactions_on_an_answer_are_votes(conversation, bot_settings, handbook, store):
    c = conversation
    answer_id = answer_id_of(c.first)
    reactor = user_payload(2000000000000000002, "kim")
    before = len(store.ratings(answer_id))

    async def scenario():
        standin = DiscordStandIn()
        standin.messages[int(c.first["id"])] = c.first
        bot = TeambotDiscord(bot_settings, handbook.service, store)
        async with logged_in(bot, standin):
            react = bot._connection.parse_message_reaction_add
            react(standin.reaction_add(c.first["id"], "👍🏽", user=reactor))
            await settle()
            up = rating_of(store, answer_id, 2000000000000000002)
            react(standin.reaction_add(c.first["id"], "👎", user=reactor))
            await settle()
            down = rating_of(store, answer_id, 2000000000000000002)
            react(standin.reaction_add(c.first["id"], "🎉", user=reactor))  # not a vote
            react(standin.reaction_add(c.first["id"], "👍", user=standin.bot_user))  # the bot's own
            react(standin.reaction_add(c.question["id"], "👍", user=reactor))  # not an answer
            await settle()
        return up.value, down.value

    assert run(scenario()) == (1, -1)
    ratings = store.ratings(answer_id)
    assert len(ratings) == before + 1  # one rating for the reactor, the last vote wins
    assert rating_of(store, answer_id, 2000000000000000002).value == -1
    assert store.ratings(answer_id_of(c.second)) == []


def test_removing_a_thumb_reaction_takes_back_its_vote_unless_it_was_changed_since(settings, store):
    service = ScriptedAnswers(settings, "Claims go in Ledgerly [1].", sources=[EXPENSES_SOURCE])
    lee, max_ = user_payload(2000000000000000003, "lee"), user_payload(2000000000000000004, "max")

    def scripted_votes() -> tuple[int, int]:
        [row] = [s for s in store.stats() if s.model == "scripted"]
        return row.up, row.down

    async def scenario():
        standin = DiscordStandIn()
        bot = TeambotDiscord(settings, service, store)
        seen = {}
        async with logged_in(bot, standin):
            question = standin.message_create(f"{standin.mention()} {EXPENSES_QUESTION}", mentions_bot=True)
            bot._connection.parse_message_create(question)
            await settle()
            answer = standin.bot_messages()[-1]
            answer_id = answer_id_of(answer)
            add, remove = bot._connection.parse_message_reaction_add, bot._connection.parse_message_reaction_remove
            seen["stats before"] = scripted_votes()

            # 👍 then un-👍: the vote is gone (a remove event carries no member).
            add(standin.reaction_add(answer["id"], "👍🏽", user=lee))
            await settle()
            seen["added"] = rating_of(store, answer_id, lee["id"]).value
            remove(standin.reaction_remove(answer["id"], "👍🏽", user=lee))
            await settle()
            seen["removed"] = rating_of(store, answer_id, lee["id"])
            seen["stats after removal"] = scripted_votes()

            # 👍 reaction, then the 👎 button: removing the 👍 leaves the 👎.
            add(standin.reaction_add(answer["id"], "👍", user=lee))
            await settle()
            bot._connection.parse_interaction_create(
                standin.button_click(answer, f"teambot:vote:down:{answer_id}", user=lee)
            )
            await settle()
            remove(standin.reaction_remove(answer["id"], "👍", user=lee))
            await settle()
            seen["changed since"] = rating_of(store, answer_id, lee["id"]).value

            # Removals that take back none of Max's 👎: another emoji, a message that is no answer,
            # and the bot's own reaction.
            add(standin.reaction_add(answer["id"], "👎", user=max_))
            await settle()
            remove(standin.reaction_remove(answer["id"], "🎉", user=max_))
            remove(standin.reaction_remove(question["id"], "👎", user=max_))
            remove(standin.reaction_remove(answer["id"], "👎", user=standin.bot_user))
            await settle()
            seen["other removals"] = rating_of(store, answer_id, max_["id"]).value
            seen["stats at the end"] = scripted_votes()
        return seen

    seen = run(scenario())
    up, down = seen["stats before"]
    assert seen["added"] == 1
    assert seen["removed"] is None and seen["stats after removal"] == (up, down)
    assert seen["changed since"] == -1
    assert seen["other removals"] == -1
    assert seen["stats at the end"] == (up, down + 2)


def test_ask_command_is_answered_in_its_interaction_response(handbook, bot_settings, store):
    async def scenario():
        standin = DiscordStandIn()
        bot = TeambotDiscord(bot_settings, handbook.service, store)
        async with logged_in(bot, standin):
            synced = standin.calls("PUT", f"/applications/{standin.app_id}/")
            command = standin.slash_command("ask", question=TIME_OFF_QUESTION)
            bot._connection.parse_interaction_create(command)
            await settle()
        return standin, synced, command

    standin, synced, command = run(scenario())
    # /ask was registered with Discord at start-up, with its required question option.
    assert synced[-1].path == f"/applications/{standin.app_id}/commands"
    assert [c["name"] for c in synced[-1].body] == ["ask", "stop"]
    ask = synced[-1].body[0]
    assert (ask["options"][0]["name"], ask["options"][0]["required"]) == ("question", True)
    callback = standin.calls("POST", f"/interactions/{command['id']}/")
    assert [c.body["type"] for c in callback] == [5]  # "teambot is thinking…" within Discord's 3 s
    original = standin.messages[standin.interactions[command["token"]]["original"]]
    record = store.get_answer(answer_id_of(original))
    # The question is quoted (others only see "used /ask"), then the answer and its sources.
    assert original["content"].startswith(f"> {TIME_OFF_QUESTION}\n{record.answer_text}\n\n**Sources**\n")
    assert "time-off.md" in {Path(r["path"]).name for r in record.retrieved}
    assert (record.channel, record.thread, record.message_id) == (
        str(standin.channel_id), command["id"], original["id"]
    )
    assert record.question == TIME_OFF_QUESTION


def test_stop_ends_the_callers_answer_and_frees_its_slot(settings, store):
    """/stop mid-answer: the generation ends at its next token, the question queued behind it
    starts at once, and the message shows what was written with a note that it stopped, without
    votes. Someone else's /stop stops nothing of it."""
    from bots.answer_actions import NOTHING_TO_STOP, STOPPING
    from bots.conversation import Conversations
    from core.answer import STOPPED_NOTE

    steps = "".join(f"Step {n} of filing a claim. " for n in range(1, 200))
    service = ScriptedAnswers(settings, lambda q: steps if "step by step" in q else "Claims go in Ledgerly.",
                              sources=(), delay=0.1)
    conversations = Conversations(settings, service, store, workers=1, queue=1)
    bob, carol = user_payload(7001, "bob"), user_payload(7002, "carol")

    async def stop_as(bot, standin, user) -> dict:
        command = standin.slash_command("stop", user=user)
        bot._connection.parse_interaction_create(command)
        while not standin.calls("POST", f"/interactions/{command['id']}/"):
            await asyncio.sleep(0.01)
        return standin.calls("POST", f"/interactions/{command['id']}/")[0].body

    async def scenario():
        standin = DiscordStandIn()
        bot = TeambotDiscord(settings, service, store, conversations=conversations)
        async with logged_in(bot, standin):
            long = standin.message_create(f"{standin.mention()} How do I file a claim, step by step?", mentions_bot=True)
            bot._connection.parse_message_create(long)
            while not any("Step 2" in m["content"] for m in standin.bot_messages()):  # mid-answer
                await asyncio.sleep(0.05)
            queued = standin.message_create(f"{standin.mention()} {EXPENSES_QUESTION}", author=bob, mentions_bot=True)
            bot._connection.parse_message_create(queued)
            not_hers = await stop_as(bot, standin, carol)
            mine = await stop_as(bot, standin, None)
            asked = asyncio.get_running_loop().time()
            while len(service.calls) < 2:
                await asyncio.sleep(0.01)
            started = asyncio.get_running_loop().time() - asked
            await settle()
            again = await stop_as(bot, standin, None)
        return standin, not_hers, mine, again, started

    standin, not_hers, mine, again, started = run(scenario())
    assert (not_hers["data"]["content"], not_hers["data"]["flags"]) == (NOTHING_TO_STOP, EPHEMERAL)
    assert (mine["data"]["content"], mine["data"]["flags"]) == (STOPPING, EPHEMERAL)
    assert again["data"]["content"] == NOTHING_TO_STOP
    assert started < 1.0, f"the queued question started {started:.2f}s after /stop"
    stopped, answered = [m for m in standin.bot_messages() if m["content"] not in (STOPPING, NOTHING_TO_STOP)]
    assert stopped["content"].startswith("Step 1 of filing a claim.") and stopped["content"].endswith(STOPPED_NOTE)
    assert "Step 199" not in stopped["content"] and not custom_ids(stopped)  # no votes on it
    assert store.get_answer(store.answer_for_message("discord", stopped["id"])).outcome == "stopped"
    assert answered["content"].startswith("Claims go in Ledgerly.") and custom_ids(answered)


def test_ask_command_syncs_to_the_dev_guild_when_set(settings, store):
    settings = settings.model_copy(update={"discord_dev_guild": 1000000000000000003})

    async def scenario():
        standin = DiscordStandIn()
        async with logged_in(TeambotDiscord(settings, ScriptedAnswers(settings, "unused", sources=()), store), standin):
            return standin.calls("PUT", "/applications/")

    (sync,) = run(scenario())
    assert sync.path == "/applications/1000000000000000002/guilds/1000000000000000003/commands"
    assert [c["name"] for c in sync.body] == ["ask", "stop"]


def test_slash_commands_are_synced_only_when_their_definition_changed(settings, store, tmp_path):
    """Syncing on every start runs into Discord's daily limit: a restart with the same commands
    does not sync, a changed definition does, and `teambot discord sync` always does."""
    from discord import app_commands

    from bots.discord.app import sync_commands

    settings = settings.model_copy(update={"data_dir": tmp_path})

    async def start(bot, standin) -> list:
        async with logged_in(bot, standin, new_discord=False):
            return standin.calls("PUT", "/applications/")

    async def scenario():
        standin = DiscordStandIn()  # one Discord, remembering what was synced
        first = await start(TeambotDiscord(settings, None, store), standin)
        restarted = await start(TeambotDiscord(settings, None, store), standin)
        changed = TeambotDiscord(settings, None, store)

        @app_commands.command(name="sources", description="List the documents I answer from.")
        async def sources(interaction) -> None: ...

        changed.tree.add_command(sources)
        after_change = await start(changed, standin)
        forced = TeambotDiscord(settings, None, store)  # the same commands as last synced: only forced
        forced.tree.add_command(sources)
        async with logged_in(forced, standin, new_discord=False):
            synced = await sync_commands(forced, force=True)
        return first, restarted, after_change, synced, standin.calls("PUT", "/applications/")

    first, restarted, after_change, synced, puts = run(scenario())
    assert len(first) == 1 and [c["name"] for c in first[0].body] == ["ask", "stop"]
    assert len(restarted) == 1  # still the one from the first start: nothing new
    assert len(after_change) == 2 and sorted(c["name"] for c in after_change[-1].body) == ["ask", "sources", "stop"]
    assert synced is True and len(puts) == 3


def test_discord_refusals_are_handled_the_way_discord_needs(settings, store):
    """What a strict Discord refuses, the bot gets right: an answer of 3,500 characters goes out
    in messages of at most 2,000; a question deleted while it is being answered still gets its
    answer (not as a reply); a 429 on posting is waited out by discord.py and the post goes through."""
    long_answer = "Claims go in Ledgerly within thirty days of the expense. " * 60
    service = ScriptedAnswers(settings, long_answer, sources=[EXPENSES_SOURCE], delay=0.0)

    async def scenario():
        standin = DiscordStandIn()
        bot = TeambotDiscord(settings, service, store)
        async with logged_in(bot, standin):
            standin.limit(f"/channels/{standin.channel_id}/messages", times=1, retry_after=0.3)
            question = standin.message_create(f"{standin.mention()} {EXPENSES_QUESTION}", mentions_bot=True)
            standin.delete_message(question["id"])  # gone before the bot replies to it
            bot._connection.parse_message_create(question)
            await settle()
            return standin.bot_messages(), standin.refused, standin.limited

    messages, refused, limited = run(scenario())
    assert refused == [] and len(limited) == 1  # the 429 was retried by discord.py, nothing else refused
    assert len(messages) >= 2 and all(len(m["content"]) <= 2000 for m in messages)
    assert "message_reference" not in messages[0]  # the question is gone: a plain message
    assert "".join(m["content"] for m in messages).count("Ledgerly") == 60
    assert custom_ids(messages[-1])  # votes under the last part


def test_too_long_question_and_model_down_get_short_clear_replies(settings, handbook, store):
    from pipeline.querying import AnswerService

    down = settings.model_copy(
        update={"collection": handbook.collection, "ollama_url": "http://127.0.0.1:9", "max_question_chars": 100}
    )
    answers_before = sum(s.answers for s in store.stats())

    async def scenario():
        standin = DiscordStandIn()
        bot = TeambotDiscord(down, AnswerService(down), store)
        async with logged_in(bot, standin):
            for text in ("Please explain every rule about expenses. " * 5, EXPENSES_QUESTION):
                bot._connection.parse_message_create(
                    standin.message_create(f"{standin.mention()} {text}", mentions_bot=True)
                )
                await settle()
        return standin.bot_messages()

    too_long, model_down = run(scenario())
    assert too_long["content"].startswith("Your question is too long (209 characters; the limit is 100)")
    assert model_down["content"] == ModelUnavailable.user_message
    assert too_long["components"] == model_down["components"] == []
    assert sum(s.answers for s in store.stats()) == answers_before  # nothing recorded, nothing to vote on


# ---------------------------------------------------------------- routing, splitting, threads


def test_empty_mention_gets_a_short_clear_reply(settings, store):
    service = ScriptedAnswers(settings, "unused", sources=())

    async def scenario():
        standin = DiscordStandIn()
        bot = TeambotDiscord(settings, service, store)
        async with logged_in(bot, standin):
            bot._connection.parse_message_create(standin.message_create(standin.mention(), mentions_bot=True))
            await settle()
        return standin.bot_messages()

    (reply,) = run(scenario())
    assert reply["content"] == InvalidQuestion.user_message
    assert service.calls == []


def test_messages_from_itself_other_bots_or_not_addressed_to_it_are_ignored(settings, store):
    service = ScriptedAnswers(settings, "An answer [1].", sources=())

    async def scenario():
        standin = DiscordStandIn()
        bot = TeambotDiscord(settings, service, store)
        async with logged_in(bot, standin):
            logged_in_requests = len(standin.requests)
            parse = bot._connection.parse_message_create
            parse(standin.message_create(f"{standin.mention()} {EXPENSES_QUESTION}", author=standin.bot_user, mentions_bot=True))
            parse(standin.message_create(f"{standin.mention()} {EXPENSES_QUESTION}", author=standin.other_bot, mentions_bot=True))
            parse(standin.message_create(f"{standin.other_bot['username']} can you help?", author=standin.other_bot, dm=True))
            parse(standin.message_create(EXPENSES_QUESTION))  # a channel message that does not mention it
            await settle()
            return standin.requests[logged_in_requests:]

    assert run(scenario()) == []
    assert service.calls == []


def test_direct_message_is_answered_without_a_mention(settings, store):
    service = ScriptedAnswers(settings, "Claims go in Ledgerly [1].", sources=[EXPENSES_SOURCE])

    async def scenario():
        standin = DiscordStandIn()
        bot = TeambotDiscord(settings, service, store)
        async with logged_in(bot, standin):
            question = standin.message_create(EXPENSES_QUESTION, dm=True)
            bot._connection.parse_message_create(question)
            await settle()
        return standin, question

    standin, question = run(scenario())
    (reply,) = standin.bot_messages(standin.dm_channel_id)
    assert reply["content"].startswith("Claims go in Ledgerly [1].")
    assert reply["message_reference"]["message_id"] == question["id"]
    record = store.get_answer(answer_id_of(reply))
    assert (record.workspace, record.channel, record.thread) == (None, str(standin.dm_channel_id), question["id"])
    assert service.calls[0]["question"] == EXPENSES_QUESTION


def test_channel_mapping_picks_the_collection(settings, store):
    settings = settings.model_copy(update={"channel_collections": {"1000000000000000003": "SalesDocs"}})
    service = ScriptedAnswers(settings, "From the sales docs.", sources=())

    async def scenario():
        standin = DiscordStandIn()
        bot = TeambotDiscord(settings, service, store)
        async with logged_in(bot, standin):
            bot._connection.parse_message_create(
                standin.message_create(f"{standin.mention()} What is our discount policy?", mentions_bot=True)
            )
            await settle()

    run(scenario())
    assert service.calls[0]["collection"] == "SalesDocs"  # mapped by guild id


def test_long_answer_streams_with_spaced_edits_then_splits_cleanly(settings, store):
    link = "[Expense policy](<https://wiki.example.com/finance/expenses>)"
    steps = [f"Step {n}: file the claim in Ledgerly, see {link} for details. " for n in range(1, 61)]
    text = "".join(steps).strip()
    sources = [Source(n, f"Page {n}", "", "…", f"c{n}", 0.8, url=f"https://wiki.example.com/p{n}") for n in range(1, 6)]
    # Three seconds of steps arriving one by one, then the rest at once.
    service = ScriptedAnswers(settings, [*steps[:12], "".join(steps[12:]).strip()], sources=sources, delay=0.25)

    async def scenario():
        standin = DiscordStandIn()
        bot = TeambotDiscord(settings, service, store)
        async with logged_in(bot, standin):
            bot._connection.parse_message_create(
                standin.message_create(f"{standin.mention()} How do I file a claim?", mentions_bot=True)
            )
            await settle()
            messages = standin.bot_messages()
            # 👍 on the first part, the one people read first, not the one with the buttons.
            bot._connection.parse_message_reaction_add(standin.reaction_add(messages[0]["id"], "👍"))
            await settle()
        return standin, messages

    standin, messages = run(scenario())
    assert len(text) > 2 * MESSAGE_LIMIT and len(messages) >= 3
    assert all(len(m["content"]) <= MESSAGE_LIMIT for m in messages)
    # Every link arrives whole; the buttons sit under the last part, with the sources.
    masked = re.compile(r"\[[^\]\n]+\]\(<https://[^>\s]+>\)")
    assert sum(len(masked.findall(m["content"])) for m in messages) == 60 + 5
    assert [bool(m["components"]) for m in messages] == [False] * (len(messages) - 1) + [True]
    assert "**Sources**" in messages[-1]["content"]

    # While streaming, the first message grew through edits spaced by at least EDIT_INTERVAL.
    first = messages[0]["id"]
    touches = [
        r for r in standin.requests
        if (r.method == "POST" and r.path.endswith("/messages") and r.body.get("content", "").endswith("▌"))
        or (r.method == "PATCH" and r.path.endswith(f"/messages/{first}"))
    ]
    assert len(touches) >= 3
    gaps = [b.at - a.at for a, b in zip(touches, touches[1:])]
    assert min(gaps) >= EDIT_INTERVAL * 0.99

    record = store.get_answer(answer_id_of(messages[-1]))
    assert record.message_id == messages[-1]["id"]
    assert rating_of(store, record.id, standin.user_id).value == 1  # a reaction on any part is a vote
    assert {store.answer_for_message("discord", m["id"]) for m in messages} == {record.id}


def test_long_ask_answer_continues_in_follow_up_messages(settings, store):
    service = ScriptedAnswers(settings, "Claims go in Ledgerly within thirty days of the expense. " * 70, sources=())

    async def scenario():
        standin = DiscordStandIn()
        bot = TeambotDiscord(settings, service, store)
        async with logged_in(bot, standin):
            command = standin.slash_command("ask", question="How do claims work?")
            bot._connection.parse_interaction_create(command)
            await settle()
        return standin, command

    standin, command = run(scenario())
    original, *follow_ups = standin.bot_messages()
    assert original["id"] == str(standin.interactions[command["token"]]["original"])
    assert len(follow_ups) >= 1 and all(len(m["content"]) <= MESSAGE_LIMIT for m in [original, *follow_ups])
    assert [bool(m["components"]) for m in [original, *follow_ups]] == [False] * len(follow_ups) + [True]
    assert len(standin.calls("POST", f"/webhooks/{standin.app_id}/{command['token']}")) == len(follow_ups)
    record = store.get_answer(answer_id_of(follow_ups[-1]))
    assert record.message_id == follow_ups[-1]["id"]
    assert {store.answer_for_message("discord", m["id"]) for m in [original, *follow_ups]} == {record.id}


def test_reply_in_thread_answers_in_a_new_thread_and_follows_up_there(settings, store):
    settings = settings.model_copy(update={"discord_reply_in_thread": True})
    service = ScriptedAnswers(settings, "Claims go in Ledgerly.", sources=())

    async def scenario():
        standin = DiscordStandIn()
        bot = TeambotDiscord(settings, service, store)
        async with logged_in(bot, standin):
            question = standin.message_create(f"{standin.mention()} {EXPENSES_QUESTION}", mentions_bot=True)
            bot._connection.parse_message_create(question)
            await settle()
            thread_id = int(question["id"])  # a thread started from a message shares its id
            bot._connection.parse_thread_create(standin.thread_create(thread_id, EXPENSES_QUESTION))
            # In its own thread the bot answers without being mentioned.
            bot._connection.parse_message_create(standin.message_create(FOLLOW_UP, channel_id=thread_id))
            await settle()
        return standin, question

    standin, question = run(scenario())
    (start,) = standin.calls("POST", f"/channels/{standin.channel_id}/messages/{question['id']}/threads")
    assert start.body["name"] == EXPENSES_QUESTION
    first, second = standin.bot_messages(int(question["id"]))
    assert standin.bot_messages(standin.channel_id) == []  # nothing in the channel itself
    for message in (first, second):
        record = store.get_answer(answer_id_of(message))
        assert (record.channel, record.thread) == (str(standin.channel_id), question["id"])
    assert [c["question"] for c in service.calls] == [EXPENSES_QUESTION, FOLLOW_UP]
    assert [(t.question, t.answer) for t in service.calls[1]["history"]] == [(EXPENSES_QUESTION, "Claims go in Ledgerly.")]


def test_cli_with_a_token_discord_rejects_says_so(settings, monkeypatch, tmp_path):
    import logging
    import threading

    import discord
    from typer.testing import CliRunner

    from teambot.cli import app

    standin = DiscordStandIn()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    # `client.run` installs a log handler on the root logger, bound to the runner's captured stream.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        url = asyncio.run_coroutine_threadsafe(standin.start(), loop).result(30)
        monkeypatch.setattr(discord.http.Route, "BASE", url)
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("TEAMBOT_DATA_DIR", str(settings.data_dir))
        monkeypatch.setenv("TEAMBOT_DISCORD_TOKEN", "not-the-bot-token")
        result = CliRunner().invoke(app, ["discord"])
    finally:
        root.handlers[:], root.level = handlers, level
        asyncio.run_coroutine_threadsafe(standin.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
    assert result.exit_code == 2
    assert "Discord rejected TEAMBOT_DISCORD_TOKEN" in result.output
    assert "not-the-bot-token" not in result.output  # a secret is never echoed
    assert [(r.method, r.path) for r in standin.requests] == [("GET", "/users/@me")]
