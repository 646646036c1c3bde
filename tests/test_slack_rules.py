"""Channel rules and the hand-off to people on Slack, end to end: the real Bolt app over signed HTTP,
the strict Slack stand-in, and a rules file with channels that behave differently.

- #help-desk answers plain questions (no mention), tags its experts on "I need more help" and
  reminds the asker once; its test runs the real pipeline (Weaviate + Ollama).
- #finance answers only a user group's members, privately, and only with citations.
- #alerts answers other bots too, from two collections.
- #legal requires citations in public: an uncited answer is never streamed.
- every other channel: mentions only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bots.answer_actions import ALREADY_WAITING, HANDOFF_FAILED, HELP_REQUESTED, NOT_YOURS, OFFER_HANDOFF
from bots.channel_rules import ChannelRules, RulesError
from bots.conversation import NO_SOURCE, NOT_ALLOWED, REMINDER
from bots.slack.app import SlackBot
from bots.slack.blocks import HANDOFF, REASON_BLOCK, RESOLVE, SHARE, WAITING
from bots.slack.reply import SlackPrivateReply
from feedback.reviews import InboxFilter, ReviewStore
from feedback.store import FeedbackStore
from testing import slack_standin as slack
from testing.doubles import LEDGERLY, ScriptedAnswers
from tests.slack_harness import SlackHttpBot, metric_value, slack_http_bot, with_slack_secrets
from testing.slack_standin import BOT_ID, BOT_TOKEN, SlackStandIn, button_click

RULES = """
[default]
respond_to = "mentions"

[channels.C0HELPDESK]
respond_to = "questions"
collections = ["{helpdesk}"]
expert_users = ["U0MARIA"]
expert_groups = ["S0ITSUPPORT"]
feedback_reminder_minutes = 0.05

[channels.C0FINANCE]
allowed_groups = ["S0FINANCE"]
citations_required = true
private = true
expert_users = ["U0CONTROLLER"]

[channels.C0ALERTS]
answer_bots = true
collections = ["Runbooks", "TeambotDocs"]

[channels.C0LEGAL]
citations_required = true
"""
UNCITED = "Expense claims go in Ledgerly within 30 days."
EXPENSES = "Which tool do expense claims go in?"


def write_rules(path: Path, helpdesk: str = "TeambotDocs", text: str = RULES) -> Path:
    path.write_text(text.replace("{helpdesk}", helpdesk))
    return path


@pytest.fixture(scope="module")
def standin() -> Iterator[SlackStandIn]:
    s = SlackStandIn().start()
    s.usergroups = {"S0FINANCE": ["U0ALICE"], "S0ITSUPPORT": ["U0IGOR"]}
    yield s
    s.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeedbackStore:
    return FeedbackStore(f"sqlite:///{tmp_path_factory.mktemp('rules') / 'feedback.db'}", user_salt="test")


@pytest.fixture(scope="module")
def scripted(settings, store, standin, tmp_path_factory) -> Iterator[SlackHttpBot]:
    config = with_slack_secrets(settings, channel_rules=write_rules(tmp_path_factory.mktemp("rules") / "rules.toml"))
    with slack_http_bot(config, ScriptedAnswers(config, delay=0.01), store, standin) as bot:
        yield bot


@pytest.fixture
def bot(scripted: SlackHttpBot) -> SlackHttpBot:
    scripted.standin.reset()
    scripted.service.reply = LEDGERLY
    scripted.service.calls.clear()
    return scripted


def _click(bot: SlackHttpBot, message: slack.Message, action_id: str, user: str = "U0ALICE") -> None:
    assert bot.interaction(button_click(bot.standin, message, action_id, user=user)).status_code == 200


def _ephemeral(bot: SlackHttpBot, user: str, text: str, timeout: float = 30.0) -> slack.Message:
    """The ephemeral message to `user` that says `text`, waiting for it."""
    found = bot.standin.wait_for(
        lambda _calls: [m for m in bot.standin.ephemerals(user) if text in m.text + str(m.blocks)], timeout)
    return found[-1]


def _ignored(bot: SlackHttpBot, *events: dict) -> None:
    """Send `events`; the bot posts nothing about their channels from then on (not even a status)."""
    before = len(bot.standin.calls)
    for event in events:
        assert bot.event(event).status_code == 200
    bot.settle()
    later = bot.standin.calls[before:]
    for event in events:
        assert not [c for c in later if event["channel"] in (c.args.get("channel"), c.args.get("channel_id"))], \
            f"the bot reacted to {event['text']!r}"


# ---------------------------------------------------------------------- the real pipeline


def test_the_help_desk_answers_plain_questions_and_hands_off_to_its_experts(settings, handbook, store, standin,
                                                                            tmp_path):
    """#help-desk: no mention needed; "I need more help" tags the experts with the question and the
    sources, waits, and only the asker or an expert can mark it resolved; one reminder to vote."""
    rules = write_rules(tmp_path / "rules.toml", helpdesk=handbook.collection)
    config = with_slack_secrets(settings, channel_rules=rules)
    with slack_http_bot(config, handbook.service, store, standin) as bot:
        standin.reset()
        statement = slack.channel_message("Thanks, the new printer works now.", channel="C0HELPDESK")
        assert bot.event(statement).status_code == 200
        reply = bot.answered(slack.channel_message(EXPENSES, channel="C0HELPDESK"))

        assert reply.streamed and "Expenses and Reimbursement" in "\n".join(reply.sections)
        assert reply.last.button(HANDOFF) is not None and reply.answer_id  # next to 👍/👎
        assert not standin.thread("C0HELPDESK", statement["ts"])  # a statement is not a question
        record = store.get_answer(reply.answer_id)
        assert record.collection == handbook.collection and record.sources

        # Nobody voted: one gentle reminder, only to the asker, and never a second.
        reminder = _ephemeral(bot, "U0ALICE", REMINDER)
        assert reminder.channel == "C0HELPDESK" and reminder.thread_ts == reply.last.thread_ts
        time.sleep(4.5)  # past another reminder time (3 s)
        assert [m.text for m in standin.ephemerals("U0ALICE")].count(REMINDER) == 1

        _click(bot, reply.last, HANDOFF)
        _ephemeral(bot, "U0ALICE", HELP_REQUESTED)
        handoff = standin.wait_for(lambda _c: [m for m in standin.thread("C0HELPDESK", reply.last.thread_ts)
                                               if m.button(RESOLVE)])[0]
        assert "<@U0MARIA>" in handoff.text and "<!subteam^S0ITSUPPORT>" in handoff.text  # who gets notified
        body = handoff.blocks[0]["text"]["text"]
        assert "<@U0ALICE> needs more help" in body and EXPENSES in body and "Expenses and Reimbursement" in body
        assert WAITING in str(handoff.blocks)
        _click(bot, reply.last, HANDOFF)
        _ephemeral(bot, "U0ALICE", ALREADY_WAITING)
        assert len([m for m in standin.thread("C0HELPDESK", reply.last.thread_ts) if m.button(RESOLVE)]) == 1

        _click(bot, handoff, RESOLVE, user="U0BOB")  # a bystander
        _ephemeral(bot, "U0BOB", NOT_YOURS)
        assert handoff.button(RESOLVE) is not None and store.handoff_stats().waiting == 1
        _click(bot, handoff, RESOLVE, user="U0IGOR")  # an expert, through the S0ITSUPPORT user group
        standin.wait_call("chat.update", ts=handoff.ts)
        assert handoff.button(RESOLVE) is None and "Resolved by <@U0IGOR>" in str(handoff.blocks)
        stats = store.handoff_stats()
        assert (stats.requested, stats.resolved, stats.waiting) == (1, 1, 0)
        exposition = bot.get("/metrics").text
        assert metric_value(exposition, "teambot_handoffs_total", event="resolved") >= 1
        assert metric_value(exposition, "teambot_feedback_reminders_total") >= 1


# ---------------------------------------------------------------------- scripted answers


def test_plain_messages_and_other_bots_are_answered_only_where_the_rules_say(bot):
    _ignored(
        bot,
        slack.channel_message("How do I request time off?", channel="C0GENERAL"),  # mentions only here
        slack.mention(EXPENSES, channel="C0HELPDESK", user=None, bot_id="B0MONITOR"),  # no bots here
        slack.channel_message("Is the deploy pipeline down?", channel="C0HELPDESK", user=None, bot_id="B0MONITOR"),
        slack.channel_message("<@U0MARIA> can you look at the VPN?", channel="C0HELPDESK"),  # not a question for the bot
        slack.mention("What is my own answer?", channel="C0ALERTS", user=None, bot_id=BOT_ID),  # never itself
    )
    # In #alerts another bot's question is answered, from both of the channel's collections.
    reply = bot.answered(slack.mention("Which runbook covers a full disk?", channel="C0ALERTS", user=None,
                                       bot_id="B0MONITOR"))
    assert reply.text == LEDGERLY
    assert bot.service.calls[-1]["collection"] == ("Runbooks", "TeambotDocs")
    # A mention still works in a mentions-only channel.
    assert bot.answered(slack.mention(EXPENSES, channel="C0GENERAL")).text == LEDGERLY


def test_finance_answers_its_members_only_privately_with_a_share_button(bot, store):
    standin = bot.standin
    question = slack.mention(EXPENSES, channel="C0FINANCE", user="U0BOB")
    assert bot.event(question).status_code == 200
    assert "sorry" in _ephemeral(bot, "U0BOB", NOT_ALLOWED).text.lower()
    assert not standin.thread("C0FINANCE", question["ts"]) and not bot.service.calls

    question = slack.mention(EXPENSES, channel="C0FINANCE", user="U0ALICE")  # in the S0FINANCE user group
    assert bot.event(question).status_code == 200
    private = _ephemeral(bot, "U0ALICE", LEDGERLY)
    assert bot.bot.conversations.wait_idle(30)
    assert not standin.thread("C0FINANCE", question["ts"])  # nothing anyone else can see
    assert not standin.find("chat.startStream", channel="C0FINANCE")
    assert [m.text for m in standin.ephemerals("U0ALICE", "C0FINANCE")] == [SlackPrivateReply.WORKING, LEDGERLY]
    assert private.answer_id and private.button(SHARE) and private.button(HANDOFF)
    assert "Expenses and Reimbursement" in str(private.blocks)

    _click(bot, private, SHARE)
    shared = standin.wait_for(lambda _c: standin.thread("C0FINANCE", question["ts"]))[-1]
    assert shared.text == LEDGERLY and shared.answer_id == private.answer_id and shared.button(SHARE) is None
    assert "<@U0ALICE> shared an answer" in str(shared.blocks[0])
    standin.wait_for(lambda _c: private.deleted)  # through the click's response_url
    assert store.get_answer(private.answer_id).message_id == shared.ts  # reactions on it now vote

    # Asking for a person when Slack refuses the post: told so, and the next click tries again.
    standin.fail_next("chat.postMessage", "not_in_channel")
    _click(bot, shared, HANDOFF)
    _ephemeral(bot, "U0ALICE", HANDOFF_FAILED)
    _click(bot, shared, HANDOFF)
    handoff = standin.wait_for(lambda _c: [m for m in standin.thread("C0FINANCE", question["ts"]) if m.button(RESOLVE)])
    assert "<@U0CONTROLLER>" in handoff[0].text

    # An uncited answer is not shown; the asker is offered a person instead.
    bot.service.reply = UNCITED
    assert bot.event(slack.mention(EXPENSES, channel="C0FINANCE", user="U0ALICE")).status_code == 200
    refused = _ephemeral(bot, "U0ALICE", NO_SOURCE)
    assert UNCITED not in refused.text and refused.button(SHARE) is None and refused.button(HANDOFF)
    assert store.get_answer(refused.answer_id).outcome == "uncited"

    # /ask here answers privately too: the question is not posted for everyone.
    bot.service.reply = LEDGERLY
    before = len(standin.ephemerals("U0ALICE"))
    assert bot.command(EXPENSES, channel="C0FINANCE", user="U0ALICE").status_code == 200
    standin.wait_for(lambda _c: len(standin.ephemerals("U0ALICE")) >= before + 2)
    assert not standin.find("chat.postMessage", channel="C0FINANCE", thread_ts=None)


def test_ask_is_acknowledged_before_a_slow_user_group_lookup(settings, standin, tmp_path):
    """Slack gives a command 3 s: `/ask` is acknowledged at once, while Slack is still slow to list
    the channel's user group, and the refusal reaches the asker afterwards by the response_url."""
    rules = write_rules(tmp_path / "rules.toml", text='[channels.C0PAYROLL]\nallowed_groups = ["S0PAYROLL"]\n')
    config = with_slack_secrets(settings, channel_rules=rules)
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}", user_salt="test")
    standin.usergroups["S0PAYROLL"] = ["U0ALICE"]
    release = threading.Event()
    with slack_http_bot(config, ScriptedAnswers(config), store, standin) as bot:
        standin.reset()
        asked = threading.Event()
        standin.hooks["usergroups.users.list"] = lambda _args: (asked.set(), release.wait(60))
        try:
            response = bot.command(EXPENSES, channel="C0PAYROLL", user="U0BOB",
                                   response_url=standin.url + "/response/payroll")
            assert asked.wait(30)  # the lookup, still waiting on Slack
        finally:
            release.set()
        refused = standin.wait_call("response_url/response/payroll", timeout=60).args
    assert response.status_code == 200 and not response.text
    assert (refused["text"], refused["response_type"]) == (NOT_ALLOWED, "ephemeral")


def test_a_citations_only_channel_never_streams_an_uncited_answer(bot, store):
    bot.service.reply = UNCITED
    reply = bot.answered(slack.mention(EXPENSES, channel="C0LEGAL"))
    assert reply.text.startswith(NO_SOURCE) and reply.answer_id
    sent = " ".join(str(c.args) for c in bot.standin.find_all("C0LEGAL"))
    assert "Ledgerly" not in sent  # not even for a moment
    assert store.get_answer(reply.answer_id).outcome == "uncited"
    bot.service.reply = LEDGERLY
    assert bot.answered(slack.mention(EXPENSES, channel="C0LEGAL")).text == LEDGERLY


def test_a_vote_cancels_the_reminder_and_a_thumbs_down_reason_offers_a_person(bot):
    reply = bot.answered(slack.channel_message("How do I request time off?", channel="C0HELPDESK", user="U0CARL"))
    assert bot.interaction(slack.feedback_click(reply.last, "down", user="U0CARL")).status_code == 200
    modal = bot.standin.wait_call("views.open").args["view"]
    submitted = slack.view_submission(modal, {REASON_BLOCK: "It is about expenses, not time off."}, user="U0CARL")
    assert bot.interaction(submitted).status_code == 200
    offer = _ephemeral(bot, "U0CARL", OFFER_HANDOFF)
    assert offer.button(HANDOFF)["value"] == reply.answer_id
    # Past the channel's reminder time (3 s: a loaded machine still votes well before it): the
    # asker voted, so no reminder.
    time.sleep(4.5)
    assert not [m for m in bot.standin.ephemerals("U0CARL") if m.text == REMINDER]


def test_rules_reload_without_a_restart_and_a_bad_file_keeps_the_last_good_ones(settings, store, standin, tmp_path):
    first = RULES.replace("feedback_reminder_minutes = 0.05", "")  # no reminders among the calls checked
    rules = write_rules(tmp_path / "rules.toml", text=first)
    config = with_slack_secrets(settings, channel_rules=rules)
    with slack_http_bot(config, ScriptedAnswers(config), store, standin) as bot:
        standin.reset()
        assert bot.answered(slack.channel_message(EXPENSES, channel="C0HELPDESK")).text == LEDGERLY

        write_rules(rules, text=first.replace('respond_to = "questions"', 'respond_to = "mentions"'))
        time.sleep(1.2)
        _ignored(bot, slack.channel_message(EXPENSES, channel="C0HELPDESK"))
        assert bot.bot.conversations.rules.error is None

        write_rules(rules, text=first.replace('respond_to = "mentions"', 'respond_to = "always"'))  # not a choice
        time.sleep(1.2)
        standin.reset()
        _ignored(bot, slack.channel_message(EXPENSES, channel="C0HELPDESK"))  # still mentions only
        assert bot.answered(slack.mention(EXPENSES, channel="C0HELPDESK")).text == LEDGERLY
        error = bot.bot.conversations.rules.error
        assert str(rules) in error and "[default]" in error and "respond_to" in error

    # At start there are no good rules to keep: the bot refuses to start, saying why.
    rules.write_text("[channels.C0X]\nprivate = yes\n")
    with pytest.raises(RulesError, match="not valid TOML"):
        SlackBot(config, ScriptedAnswers(config), store, slack_client(standin))


def slack_client(standin: SlackStandIn):
    from slack_sdk import WebClient

    return WebClient(token=BOT_TOKEN, base_url=standin.api_url)


def test_the_rules_file_is_validated_with_errors_that_say_where(tmp_path):
    from bots.channel_rules import looks_like_question, parse_rules

    rules = parse_rules(RULES.replace("{helpdesk}", "Handbook"))
    assert rules.for_channel("C0HELPDESK").respond_to == "questions"
    assert rules.for_channel("C0NOPE", "T0TEAM").respond_to == "mentions"
    # A channel table overrides the default key by key; the most specific id wins.
    layered = parse_rules('[default]\nprivate = true\n[channels.T0TEAM]\nanswer_bots = true\n[channels.C0A]\n'
                          'private = false\n')
    assert layered.for_channel("C0A", "T0TEAM").private is False
    assert layered.for_channel("C0B", "T0TEAM").answer_bots and layered.for_channel("C0B", "T0TEAM").private
    for text, words in [
        ('[channels.C0A]\nrespnd_to = "questions"\n', ["channels.\"C0A\"", "respnd_to"]),
        ('[channels.C0A]\ncollections = ["lower-case"]\n', ["collections", "lower-case"]),
        ('[channels.C0A]\nfeedback_reminder_minutes = -1\n', ["feedback_reminder_minutes"]),
        ('[channels."C0 A"]\nprivate = true\n', ["C0 A", "not a channel"]),
        ('[defaults]\nprivate = true\n', ["unknown table [defaults]"]),
    ]:
        with pytest.raises(RulesError) as caught:
            parse_rules(text, "rules.toml")
        assert all(w in str(caught.value) for w in words), str(caught.value)
    # Discord ids may be written as numbers.
    assert parse_rules("[channels.1234]\nexpert_groups = [987654321]\n").for_channel(1234).expert_groups == ("987654321",)
    assert ChannelRules(None).for_channel("C0A").respond_to == "mentions"

    assert looks_like_question("How do I request time off")
    assert looks_like_question("the VPN keeps dropping, any idea why?")
    assert not looks_like_question("Thanks, the new printer works now.")
    assert not looks_like_question("ok?") and not looks_like_question("lunch at 12")


def test_the_experts_replies_in_a_hand_off_thread_become_a_draft_answer(bot, store):
    """After "I need more help", what the channel's experts write in the thread is kept, in order,
    with their edits and deletions, and the bot does not answer it (even when it reads like a
    question, or tags the asker); the asker, a bystander and another app are left out; resolving
    makes the draft, and nothing written after that joins it."""
    reply = bot.answered(slack.channel_message(EXPENSES, channel="C0HELPDESK"))
    thread = reply.last.thread_ts
    _click(bot, reply.last, HANDOFF)
    handoff = bot.standin.wait_for(lambda _c: [m for m in bot.standin.thread("C0HELPDESK", thread) if m.button(RESOLVE)])[0]
    asked_before = len(bot.service.calls)

    def say(text: str, user: str | None = "U0MARIA", **extra) -> dict:
        event = slack.channel_message(text, channel="C0HELPDESK", user=user, thread_ts=thread, **extra)
        assert bot.event(event).status_code == 200
        return event

    first = say("<@U0ALICE> Expense claims go in Ledgerly, not by email.")
    say("Same problem here.", user="U0BOB")  # a bystander
    say("Thanks, I'll wait.", user="U0ALICE")  # the asker
    say("Build 1234 passed.", user=None, bot_id="B0CI")  # another app
    say("Where do the receipts go? Attach them to the claim itself.", user="U0IGOR")  # an expert by user group
    wrong = say("Ignore me, wrong thread.", user="U0IGOR")
    assert bot.event(slack.message_changed(first, "<@U0ALICE> Expense claims go in Ledgerly within 30 days, "
                                                  "not by email.")).status_code == 200
    assert bot.event(slack.message_deleted(wrong)).status_code == 200
    bot.settle()
    assert [c["question"] for c in bot.service.calls[asked_before:] if c["question"] != "are you there?"] == []
    reviews = ReviewStore(store)
    assert reviews.expert_draft(reply.answer_id) is None  # not before it is resolved

    _click(bot, handoff, RESOLVE, user="U0MARIA")
    bot.standin.wait_call("chat.update", ts=handoff.ts)
    say("PS: your manager approves it next.")
    bot.settle()
    draft = reviews.expert_draft(reply.answer_id)
    assert draft.text == ("Expense claims go in Ledgerly within 30 days, not by email.\n\n"
                          "Where do the receipts go? Attach them to the claim itself.")
    assert (draft.replies, draft.experts) == (2, 2)
    rows, _ = reviews.inbox(InboxFilter(vote="expert"))
    assert [(r.id, r.expert) for r in rows] == [(reply.answer_id, True)]
