"""Channel rules and the hand-off to people on Discord, end to end through discord.py.

One rules file gives three channels their own behaviour beside the default (mentions only):
#help answers plain questions and has experts (a user and a role) and a feedback reminder;
#finance is for the finance role and one controller, answers only with citations and only
privately (`/ask`, with "Share with the channel"); #alerts answers other bots too, from two
collections. Each scenario logs a real `TeambotDiscord` in against the Discord stand-in
(testing/discord_standin.py) and feeds it gateway events through discord.py's own parsers.
One scenario (#help answering a plain question, then the hand-off) uses the real pipeline;
the others use `ScriptedAnswers`, which says exactly what each check needs.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import discord
import pytest

from bots.answer_actions import (
    ALREADY_WAITING, HELP_REQUESTED, NO_EXPERTS, NOT_YOUR_ANSWER, NOT_YOURS, OFFER_HANDOFF, SHARED, THANKS_NOTE,
)
from bots.conversation import NO_SOURCE, NO_SOURCE_HELP, NOT_ALLOWED, REMINDER
from bots.discord.app import PRIVATE_HINT, TeambotDiscord
from bots.discord.handoff import WAITING
from feedback.reviews import ReviewStore
from feedback.store import FeedbackStore
from testing.discord_standin import EPHEMERAL, DiscordStandIn, custom_ids, logged_in, settle
from testing.doubles import EXPENSES, ScriptedAnswers

HELP, FINANCE, ALERTS = 1000000000000000101, 1000000000000000102, 1000000000000000103
SUPPORT, FINANCE_ROLE = 1000000000000000201, 1000000000000000202
EXPERT, SUPPORTER, CONTROLLER, ACCOUNTANT, STRANGER, ASKER = (
    1000000000000000301, 1000000000000000302, 1000000000000000303, 1000000000000000304,
    1000000000000000305, 1000000000000000306,
)
EXPENSES_QUESTION = "Which tool do I submit expense claims in?"
CITED = "Claims go in Ledgerly within 30 days [1]."
UNCITED = "Ask your manager, they will know."

RULES = f"""
[default]
respond_to = "mentions"

[channels."{HELP}"]
respond_to = "questions"
expert_users = ["{EXPERT}"]
expert_groups = ["{SUPPORT}"]
feedback_reminder_minutes = 0.04

[channels."{FINANCE}"]
allowed_groups = ["{FINANCE_ROLE}"]
allowed_users = [{CONTROLLER}]
citations_required = true
private = true
expert_users = ["{CONTROLLER}"]

[channels."{ALERTS}"]
answer_bots = true
respond_to = "questions"
collections = ["Runbooks", "Handbook"]
"""


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeedbackStore:
    return FeedbackStore(f"sqlite:///{tmp_path_factory.mktemp('discord-rules')}/feedback.db")


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "channel-rules.toml"
    path.write_text(RULES)
    return path


@pytest.fixture
def ruled(settings, rules_file):
    return settings.model_copy(update={"channel_rules": rules_file})


def run(scenario):
    return asyncio.run(scenario)


def team(standin: DiscordStandIn) -> SimpleNamespace:
    """The guild of these tests: three more channels, two roles, and the people who use them."""
    for name, channel in (("help", HELP), ("finance", FINANCE), ("alerts", ALERTS)):
        standin.add_channel(name, channel)
    standin.add_role("support", SUPPORT)
    standin.add_role("finance", FINANCE_ROLE)
    return SimpleNamespace(
        expert=standin.add_user(EXPERT, "maria"),
        supporter=standin.add_user(SUPPORTER, "sam", roles=[SUPPORT]),  # an expert by role only
        controller=standin.add_user(CONTROLLER, "carla"),  # allowed by user id
        accountant=standin.add_user(ACCOUNTANT, "ana", roles=[FINANCE_ROLE]),  # allowed by role
        stranger=standin.add_user(STRANGER, "stan"),
        asker=standin.add_user(ASKER, "ash"),
    )


def scripted(settings, **kwargs) -> ScriptedAnswers:
    """Cites its source unless the question asks for an uncited answer."""
    return ScriptedAnswers(settings, lambda q: UNCITED if "uncited" in q else CITED, sources=[EXPENSES], **kwargs)


def post(bot, standin, content: str, channel: int, **kwargs) -> dict:
    message = standin.message_create(content, channel_id=channel, **kwargs)
    bot._connection.parse_message_create(message)
    return message


def click(bot, standin, message: dict, custom_id: str, user: dict) -> dict:
    payload = standin.button_click(message, custom_id, user=user)
    bot._connection.parse_interaction_create(payload)
    return payload


def ask_command(bot, standin, question: str, channel: int, user: dict) -> dict:
    payload = standin.slash_command("ask", question=question, user=user, channel_id=channel)
    bot._connection.parse_interaction_create(payload)
    return payload


def said(standin: DiscordStandIn, interaction: dict) -> list[dict]:
    """The follow-ups the bot sent for an interaction."""
    return [r.body for r in standin.calls("POST", f"/webhooks/{standin.app_id}/{interaction['token']}")]


def public(standin: DiscordStandIn, channel: int) -> list[dict]:
    """The bot's messages in a channel that everyone sees (not the ephemeral ones)."""
    return [m for m in standin.bot_messages(channel) if not m["flags"] & EPHEMERAL]


def dms(standin: DiscordStandIn, user_id: int) -> list[dict]:
    """What the bot sent someone by direct message."""
    channel = standin.dm_channel_of(user_id)
    return standin.bot_messages(channel) if channel is not None else []


def original(standin: DiscordStandIn, interaction: dict) -> dict:
    return standin.messages[standin.interactions[interaction["token"]]["original"]]


def answer_id_of(message: dict) -> str:
    ids = custom_ids(message)
    assert ids and ids[0].startswith("teambot:vote:up:"), f"no vote buttons on {message['content'][:80]!r}"
    return ids[0].rsplit(":", 1)[1]


def kinds(message: dict) -> list[str]:
    """The buttons on a message, by kind: vote, handoff, share, resolve."""
    return [c.split(":")[1] for c in custom_ids(message)]


async def until(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- when the bot answers


def test_each_channel_answers_what_its_rule_says(ruled, store):
    service = scripted(ruled)

    async def scenario():
        standin = DiscordStandIn()
        people = team(standin)
        bot = TeambotDiscord(ruled, service, store)
        async with logged_in(bot, standin):
            seen = {}
            # #general, the default rule: mentions only.
            post(bot, standin, EXPENSES_QUESTION, standin.channel_id)
            await settle()
            seen["general plain"] = public(standin, standin.channel_id)
            mention = post(bot, standin, f"{standin.mention()} {EXPENSES_QUESTION}", standin.channel_id,
                           mentions_bot=True)
            await settle()
            seen["general mention"] = public(standin, standin.channel_id)

            # #help: plain questions too, but not statements, nor questions put to someone else.
            question = post(bot, standin, EXPENSES_QUESTION, HELP)
            post(bot, standin, "The expense report went out today.", HELP)
            post(bot, standin, f"<@{EXPERT}> how do I submit my claims?", HELP, mentions=[people.expert])
            post(bot, standin, "Is the db-1 disk alert critical?", HELP, author=standin.other_bot)
            await settle()
            seen["help"] = standin.bot_messages(HELP)

            # #alerts: other bots' questions are answered (never the bot's own), from two collections.
            calls_before = len(service.calls)
            alert = post(bot, standin, "Is the db-1 disk alert critical?", ALERTS, author=standin.other_bot)
            own = post(bot, standin, "Is the db-1 disk alert still critical?", ALERTS, author=standin.bot_user)
            await settle()
            seen["alerts"] = [m for m in standin.bot_messages(ALERTS) if m["id"] != own["id"]]
            seen["alert calls"] = service.calls[calls_before:]
        return standin, seen, mention, question, alert

    standin, seen, mention, question, alert = run(scenario())
    assert seen["general plain"] == []
    [answer] = seen["general mention"]
    assert answer["message_reference"]["message_id"] == mention["id"] and kinds(answer) == ["vote", "vote"]

    [answer] = seen["help"]  # the question only: not the statement, the one to Maria, nor the bot's
    assert answer["message_reference"]["message_id"] == question["id"]
    assert CITED in answer["content"]
    answer_id = answer_id_of(answer)
    assert custom_ids(answer) == [f"teambot:vote:up:{answer_id}", f"teambot:vote:down:{answer_id}",
                                  f"teambot:handoff:{answer_id}"]  # #help has experts
    assert store.get_answer(answer_id).question == EXPENSES_QUESTION

    [answer] = seen["alerts"]
    assert answer["message_reference"]["message_id"] == alert["id"]
    assert [c["collection"] for c in seen["alert calls"]] == [("Runbooks", "Handbook")]
    assert store.get_answer(answer_id_of(answer)).user_hash == store.user_hash("discord", str(standin.other_bot_id))
    assert standin.refused == []


def test_finance_is_for_its_people_cited_answers_only_and_private(ruled, store):
    service = scripted(ruled)

    async def scenario():
        standin = DiscordStandIn()
        people = team(standin)
        bot = TeambotDiscord(ruled, service, store)
        async with logged_in(bot, standin):
            s = SimpleNamespace()
            s.stranger = ask_command(bot, standin, EXPENSES_QUESTION, FINANCE, people.stranger)
            await settle()
            s.calls_after_stranger = len(service.calls)
            s.uncited = ask_command(bot, standin, "An uncited question about claims?", FINANCE, people.controller)
            s.cited = ask_command(bot, standin, EXPENSES_QUESTION, FINANCE, people.accountant)
            await settle()
            s.private_answer = dict(original(standin, s.cited))

            # A mention here is not answered for the whole channel to see.
            calls = len(service.calls)
            s.mention = post(bot, standin, f"{standin.mention()} {EXPENSES_QUESTION}", FINANCE,
                             mentions_bot=True, author=people.accountant)
            await settle()
            s.mention_calls = len(service.calls) - calls
            s.public_before_share = public(standin, FINANCE)

            # Only the asker may share; then the answer is posted for everyone, with its buttons.
            answer_id = answer_id_of(s.private_answer)
            s.foreign_share = click(bot, standin, s.private_answer, f"teambot:share:{answer_id}", people.stranger)
            await settle()
            s.share = click(bot, standin, s.private_answer, f"teambot:share:{answer_id}", people.accountant)
            await settle()
            s.public = public(standin, FINANCE)
            s.private_after = original(standin, s.cited)

            # The asker (no expert) asks for more help on the shared answer, and resolves it.
            shared = s.public[-1]
            s.handoffs_before = store.handoff_stats()
            s.help = click(bot, standin, shared, f"teambot:handoff:{answer_id}", people.accountant)
            await settle()
            s.handoff_request = standin.calls("POST", f"/channels/{FINANCE}/messages")[-1].body
            handoff = public(standin, FINANCE)[-1]
            s.resolve = click(bot, standin, handoff, custom_ids(handoff)[0], people.accountant)
            await settle()
            s.resolved = standin.messages[int(handoff["id"])]
            s.handoffs_after = store.handoff_stats()
            s.refused = standin.refused
        return standin, s

    standin, s = run(scenario())
    # Not allowed: told so politely, only the asker sees it, and the pipeline was never asked.
    callback = standin.calls("POST", f"/interactions/{s.stranger['id']}/")[0].body
    assert callback["type"] == 5 and callback["data"]["flags"] == EPHEMERAL
    refusal = original(standin, s.stranger)
    assert refusal["content"] == NOT_ALLOWED and refusal["flags"] == EPHEMERAL and refusal["components"] == []
    assert s.calls_after_stranger == 0

    # The controller (allowed by user id) got an answer that cites nothing: not shown.
    uncited = original(standin, s.uncited)
    assert uncited["flags"] == EPHEMERAL
    assert NO_SOURCE + NO_SOURCE_HELP in uncited["content"] and UNCITED not in uncited["content"]
    assert store.get_answer(answer_id_of(uncited)).outcome == "uncited"

    # The accountant (allowed by role) got the cited answer, privately, with a way to share it.
    answer = s.private_answer
    answer_id = answer_id_of(answer)
    assert answer["flags"] == EPHEMERAL and CITED in answer["content"] and "**Sources**" in answer["content"]
    assert kinds(answer) == ["vote", "vote", "handoff", "share"]
    assert sorted(c["question"] for c in service.calls) == ["An uncited question about claims?", EXPENSES_QUESTION]

    # The mention was pointed to /ask, and nothing was answered in the open.
    assert s.mention_calls == 0
    [hint] = s.public_before_share
    assert hint["content"] == PRIVATE_HINT and hint["message_reference"]["message_id"] == s.mention["id"]

    # A stranger's click on "Share" shares nothing.
    assert [b["content"] for b in said(standin, s.foreign_share)] == [NOT_YOUR_ANSWER]
    # The asker's does: posted for everyone with votes and hand-off, votes find it, the private copy says so.
    hint_, shared, *_ = s.public
    assert shared["flags"] == 0 and shared["content"].startswith(f"<@{ACCOUNTANT}> shared:\n> {EXPENSES_QUESTION}\n")
    assert CITED in shared["content"] and shared["mentions"] == []  # naming the asker pings nobody
    assert custom_ids(shared) == [f"teambot:vote:up:{answer_id}", f"teambot:vote:down:{answer_id}",
                                  f"teambot:handoff:{answer_id}"]
    assert store.get_answer(answer_id).message_id == shared["id"]
    assert standin.calls("POST", f"/interactions/{s.share['id']}/")[0].body["type"] == 6
    assert s.private_after["content"] == SHARED and s.private_after["components"] == []

    # The hand-off tags the controller alone, replying to the shared answer; the asker resolves it.
    assert [b["content"] for b in said(standin, s.help)] == [HELP_REQUESTED]
    assert s.handoff_request["allowed_mentions"] == {"parse": [], "users": [CONTROLLER]}
    assert s.handoff_request["content"].startswith(f"🙋 <@{CONTROLLER}> <@{ACCOUNTANT}> needs more help")
    assert str(s.handoff_request["message_reference"]["message_id"]) == shared["id"]
    assert said(standin, s.resolve) == []
    assert s.resolved["content"].endswith(f"\n✅ Resolved by <@{ACCOUNTANT}>.")
    assert WAITING not in s.resolved["content"]
    assert s.resolved["components"] == []
    assert (s.handoffs_after.requested, s.handoffs_after.resolved) == (
        s.handoffs_before.requested + 1, s.handoffs_before.resolved + 1
    )
    assert s.refused == []


# ---------------------------------------------------------------- the real pipeline, and people


def test_help_channel_answers_from_the_handbook_and_hands_off_to_its_experts(ruled, handbook, store):
    settings = ruled.model_copy(update={"collection": handbook.collection})

    async def scenario():
        standin = DiscordStandIn()
        people = team(standin)
        bot = TeambotDiscord(settings, handbook.service, store)
        async with logged_in(bot, standin):
            s = SimpleNamespace(before=store.handoff_stats())
            s.question = post(bot, standin, EXPENSES_QUESTION, HELP, author=people.asker)
            await settle()
            [s.answer] = standin.bot_messages(HELP)
            answer_id = answer_id_of(s.answer)

            s.help = click(bot, standin, s.answer, f"teambot:handoff:{answer_id}", people.asker)
            await settle()
            s.request = standin.calls("POST", f"/channels/{HELP}/messages")[-1].body
            s.handoff = dict(public(standin, HELP)[-1])
            s.again = click(bot, standin, s.answer, f"teambot:handoff:{answer_id}", people.asker)
            await settle()
            s.count_after_again = len(public(standin, HELP))

            resolve_id = custom_ids(s.handoff)[0]
            s.stranger = click(bot, standin, s.handoff, resolve_id, people.stranger)
            await settle()
            s.after_stranger = dict(standin.messages[int(s.handoff["id"])])
            s.supporter = click(bot, standin, s.handoff, resolve_id, people.supporter)
            await settle()
            s.resolved = standin.messages[int(s.handoff["id"])]
            s.after = store.handoff_stats()
            # Nobody voted: the asker is reminded once, by direct message.
            await until(lambda: dms(standin, ASKER))
            s.refused = standin.refused
        return standin, s

    standin, s = run(scenario())
    answer_id = answer_id_of(s.answer)
    record = store.get_answer(answer_id)
    assert record.collection == handbook.collection and record.question == EXPENSES_QUESTION
    assert s.answer["message_reference"]["message_id"] == s.question["id"]
    assert s.answer["content"].startswith(record.answer_text)
    assert kinds(s.answer) == ["vote", "vote", "handoff"]

    # The experts are tagged, and only they are pinged; the question and the answer's sources are shown.
    assert [b["content"] for b in said(standin, s.help)] == [HELP_REQUESTED]
    assert s.request["allowed_mentions"] == {"parse": [], "users": [EXPERT], "roles": [SUPPORT]}
    assert [u["id"] for u in s.handoff["mentions"]] == [str(EXPERT)] and s.handoff["mention_roles"] == [str(SUPPORT)]
    content = s.handoff["content"]
    assert content.startswith(
        f"🙋 <@{EXPERT}> <@&{SUPPORT}> <@{ASKER}> needs more help with:\n> {EXPENSES_QUESTION}\n"
    )
    shown = store.shown_answer(answer_id)
    for source in shown.sources:
        assert f"**[{source.number}]** " in content
    assert content.endswith(f"\n{WAITING}") and len(content) <= 2000
    assert s.handoff["message_reference"]["message_id"] == s.answer["id"]
    assert kinds(s.handoff) == ["resolve"]
    handoff_id = int(custom_ids(s.handoff)[0].rsplit(":", 1)[1])
    assert store.get_handoff(handoff_id).message_id == s.handoff["id"]

    # Asking again while it waits posts nothing new.
    assert [b["content"] for b in said(standin, s.again)] == [ALREADY_WAITING]
    assert s.count_after_again == 2

    # A stranger cannot resolve it; an expert by role can, and the message says who.
    assert [(b["content"], b["flags"]) for b in said(standin, s.stranger)] == [(NOT_YOURS, EPHEMERAL)]
    assert s.after_stranger["content"] == content and kinds(s.after_stranger) == ["resolve"]
    assert s.resolved["content"] == content.removesuffix(WAITING) + f"✅ Resolved by <@{SUPPORTER}>."
    assert s.resolved["components"] == []
    assert store.get_handoff(handoff_id).resolved_by == store.user_hash("discord", str(SUPPORTER))
    assert (s.after.requested, s.after.resolved) == (s.before.requested + 1, s.before.resolved + 1)

    [reminder] = dms(standin, ASKER)
    assert reminder["content"] == REMINDER
    assert s.refused == []


# ---------------------------------------------------------------- reminders


def test_reminder_reaches_once_only_the_askers_who_did_not_vote(ruled, store):
    service = scripted(ruled)

    async def scenario():
        standin = DiscordStandIn()
        people = team(standin)
        bot = TeambotDiscord(ruled, service, store)
        async with logged_in(bot, standin):
            s = SimpleNamespace()
            post(bot, standin, EXPENSES_QUESTION, HELP, author=people.asker)  # never votes
            post(bot, standin, "How long do I have to submit claims?", HELP, author=people.stranger)  # votes 👎
            s.command = ask_command(bot, standin, "Where do I file my claims?", HELP, people.controller)  # never votes
            await settle()
            questions = {int(m["id"]): m for m in standin.messages.values() if m["author"]["id"] == str(STRANGER)}
            voted = next(m for m in public(standin, HELP)
                         if int(m.get("message_reference", {}).get("message_id", 0)) in questions)
            click(bot, standin, voted, f"teambot:vote:down:{answer_id_of(voted)}", people.stranger)
            await settle()
            modal = standin.calls("POST", "/interactions/")[-1].body
            s.submit = standin.modal_submit(modal["data"], ["Too vague.", ""], message=voted, user=people.stranger)
            bot._connection.parse_interaction_create(s.submit)
            await settle()
            s.sent_at = time.monotonic()
            await until(lambda: dms(standin, ASKER) and REMINDER in [b["content"] for b in said(standin, s.command)])
            await asyncio.sleep(1.0)  # the voter's was due as early: none came, nor a second one
            s.refused = standin.refused
        return standin, s

    standin, s = run(scenario())
    # The 👎 form's thanks offers a person's help, since #help has experts.
    [thanks] = said(standin, s.submit)
    assert thanks["content"] == f"{THANKS_NOTE} {OFFER_HANDOFF}" and thanks["flags"] == EPHEMERAL
    assert custom_ids(thanks)[0].startswith("teambot:handoff:")

    [dm] = dms(standin, ASKER)
    assert dm["content"] == REMINDER
    assert standin.dm_channel_of(STRANGER) is None  # voted: not reminded
    # The /ask asker is reminded in an ephemeral follow-up, not by DM.
    reminders = [b for b in said(standin, s.command) if b["content"] == REMINDER]
    assert len(reminders) == 1 and reminders[0]["flags"] == EPHEMERAL
    assert standin.dm_channel_of(CONTROLLER) is None
    assert s.refused == []


def test_a_reminder_due_after_the_interaction_expired_comes_by_direct_message(ruled, store, monkeypatch):
    """An /ask token takes follow-ups for 15 minutes only; a reminder later than that is a DM, and
    the dead token is not tried (a certain 401 counts towards Discord's ban on invalid requests)."""
    service = scripted(ruled)
    real_now = discord.utils.utcnow

    async def scenario():
        standin = DiscordStandIn()
        people = team(standin)
        bot = TeambotDiscord(ruled, service, store)
        async with logged_in(bot, standin):
            command = ask_command(bot, standin, EXPENSES_QUESTION, HELP, people.asker)
            await settle()
            # By the time the reminder is due, the token is dead, for Discord and for the bot.
            standin.clock_offset = 16 * 60
            monkeypatch.setattr(discord.utils, "utcnow", lambda: real_now() + timedelta(minutes=16))
            await until(lambda: dms(standin, ASKER))
        return standin, command

    standin, command = run(scenario())
    assert [m["content"] for m in dms(standin, ASKER)] == [REMINDER]
    assert REMINDER not in [b["content"] for b in said(standin, command)]  # the follow-up was not tried
    assert standin.refused == []


# ---------------------------------------------------------------- the file changes


def test_rules_file_changes_take_effect_without_a_restart(settings, store, tmp_path):
    path = tmp_path / "rules.toml"
    general = f'[channels."{DiscordStandIn.channel_id}"]\n'
    path.write_text(f'{general}expert_users = ["{EXPERT}"]\n')
    settings = settings.model_copy(update={"channel_rules": path})
    service = scripted(settings)

    async def rewrite(text: str) -> None:
        path.write_text(text)
        await asyncio.sleep(1.1)  # the file is looked at once a second at most

    async def scenario():
        standin = DiscordStandIn()
        people = team(standin)
        bot = TeambotDiscord(settings, service, store)
        async with logged_in(bot, standin):
            s = SimpleNamespace()
            mention = post(bot, standin, f"{standin.mention()} {EXPENSES_QUESTION}", standin.channel_id,
                           mentions_bot=True)
            post(bot, standin, EXPENSES_QUESTION, standin.channel_id)
            await settle()
            s.first = public(standin, standin.channel_id)

            await rewrite(f'{general}respond_to = "questions"\n')
            post(bot, standin, EXPENSES_QUESTION, standin.channel_id)
            await settle()
            s.second = public(standin, standin.channel_id)
            # The experts were taken out of the file: the old button says nobody is set up to help.
            s.help = click(bot, standin, s.first[0], f"teambot:handoff:{answer_id_of(s.first[0])}", people.asker)
            await settle()

            await rewrite(f'{general}respond_to = "questions\n')  # broken: the last good rules stay
            post(bot, standin, EXPENSES_QUESTION, standin.channel_id)
            await settle()
            s.third = public(standin, standin.channel_id)
            s.error = bot.conversations.rules.error

            await rewrite(f'{general}respond_to = "questions"\nallowed_users = ["{EXPERT}"]\n')
            post(bot, standin, EXPENSES_QUESTION, standin.channel_id)
            await settle()
            s.fourth = public(standin, standin.channel_id)
        return standin, s, mention

    standin, s, mention = run(scenario())
    [first] = s.first  # the mention only
    assert first["message_reference"]["message_id"] == mention["id"] and kinds(first) == ["vote", "vote", "handoff"]
    assert len(s.second) == 2 and kinds(s.second[1]) == ["vote", "vote"]  # a plain question now; no experts
    assert [b["content"] for b in said(standin, s.help)] == [NO_EXPERTS]
    assert len(s.third) == 3 and s.error and "not valid TOML" in s.error
    assert s.fourth[-1]["content"] == NOT_ALLOWED and len(s.fourth) == 4


# ---------------------------------------------------------------- what the experts answer


def test_the_experts_replies_to_a_hand_off_become_a_draft_answer(ruled, store):
    """Replies to the hand-off by the channel's experts (a user, a role) are kept in order with
    their edits and deletions, and not answered by the bot; the asker's, a stranger's and another
    bot's are not kept; resolving makes the draft, and later replies do not join it."""
    service = scripted(ruled)

    async def scenario():
        standin = DiscordStandIn()
        people = team(standin)
        bot = TeambotDiscord(ruled, service, store)
        async with logged_in(bot, standin):
            s = SimpleNamespace()
            post(bot, standin, EXPENSES_QUESTION, HELP, author=people.asker)
            await settle()
            [answer] = standin.bot_messages(HELP)
            s.answer_id = answer_id_of(answer)
            click(bot, standin, answer, f"teambot:handoff:{s.answer_id}", people.asker)
            await settle()
            handoff = dict(public(standin, HELP)[-1])
            s.asked_before, s.said_before = len(service.calls), len(standin.bot_messages(HELP))

            def reply(text: str, author: dict) -> dict:
                return post(bot, standin, text, HELP, author=author, reply_to=handoff)

            first = reply(f"<@{ASKER}> Claims go in Ledgerly.", people.expert)
            reply("Is there any news on this?", people.stranger)
            reply("Thanks, waiting for it.", people.asker)
            reply("Is the db-1 disk alert critical?", standin.other_bot)
            reply("Which receipts? Attach every receipt to the claim.", people.supporter)  # an expert by role
            wrong = reply("Sorry, wrong thread.", people.supporter)
            await settle()  # edited and deleted a moment later, as people do
            bot._connection.parse_message_update(standin.message_update(first, f"<@{ASKER}> Claims go in Ledgerly "
                                                                               "within 30 days."))
            bot._connection.parse_message_delete(standin.message_delete(wrong))
            await settle()
            s.draft_before = ReviewStore(store).expert_draft(s.answer_id)
            s.asked = [c["question"] for c in service.calls[s.asked_before:]]
            s.said = standin.bot_messages(HELP)[s.said_before:]

            click(bot, standin, handoff, custom_ids(handoff)[0], people.expert)
            await settle()
            reply("PS: your manager approves it next.", people.expert)
            await settle()
            s.refused = standin.refused
        return s

    s = run(scenario())
    assert s.asked == [] and s.said == []  # none of it was taken for a question to the bot
    assert s.draft_before is None  # not before the hand-off is resolved
    draft = ReviewStore(store).expert_draft(s.answer_id)
    assert draft.text == "Claims go in Ledgerly within 30 days.\n\nWhich receipts? Attach every receipt to the claim."
    assert (draft.replies, draft.experts) == (2, 2)
    assert s.refused == []
