"""The Slack bot end to end: the real Bolt app serving HTTP on loopback (and Socket Mode), signed
Events API, slash command and interactivity requests sent to it, and the strict stand-in of the
Slack Web API (testing/slack_standin.py), which refuses what Slack refuses and keeps what the bot
posted as Slack would show it.

The handbook tests answer with the real pipeline (Weaviate + Ollama). The others use
`ScriptedAnswers`: the real AnswerService's validation with a scripted answer, because what
they check (streaming, limits, threads, retries, feedback) is the adapter's, and every real
answer costs the CPU-bound model many seconds.
"""

from __future__ import annotations

import hashlib
import json
import hmac
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr
from slack_sdk import WebClient

from bots.conversation import BUSY
from bots.answer_actions import THANKS, THANKS_NOTE, VOTE_LOST
from bots.slack.app import CANNOT_POST, SlackBot, http_server, serve_socket_mode
from bots.slack.blocks import CORRECTION_BLOCK, LEGACY_VOTE_UP, MARKDOWN_LIMIT, REASON_BLOCK
from bots.slack.reply import STATUS
from core import metrics
from core.answer import Turn
from core.errors import InvalidQuestion, ModelUnavailable
from feedback.store import FeedbackStore
from pipeline.querying import AnswerService
from testing import slack_standin as slack
from testing.doubles import LEDGERLY, ScriptedAnswers
from tests.slack_harness import SIGNING_SECRET, SlackHttpBot, slack_http_bot
from tests.waiting import wait_until
from testing.slack_standin import (
    APP_TOKEN, BOT_ID, BOT_TOKEN, BOT_USER, TEAM, SlackStandIn, SocketModeStandIn, blocks_error, signed,
)


def _settings(settings, **changes):
    return settings.model_copy(update={
        "slack_signing_secret": SecretStr(SIGNING_SECRET), "slack_bot_token": SecretStr(BOT_TOKEN), **changes,
    })


def running(settings, service, store: FeedbackStore, standin: SlackStandIn, **options):
    return slack_http_bot(settings, service, store, standin, **options)


@pytest.fixture(scope="module")
def standin() -> Iterator[SlackStandIn]:
    s = SlackStandIn().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeedbackStore:
    return FeedbackStore(f"sqlite:///{tmp_path_factory.mktemp('slack') / 'feedback.db'}", user_salt="test")


@pytest.fixture(scope="module")
def scripted_bot(settings, store, standin) -> Iterator[SlackHttpBot]:
    config = _settings(settings, channel_collections={"C0SALES": "SalesDocs", TEAM: "TeamDocs"})
    with running(config, ScriptedAnswers(config, delay=0.01), store, standin) as bot:
        yield bot


@pytest.fixture
def bot(scripted_bot: SlackHttpBot) -> SlackHttpBot:
    scripted_bot.standin.reset()
    scripted_bot.service.reply = LEDGERLY
    scripted_bot.service.calls.clear()
    return scripted_bot


def _click(bot: SlackHttpBot, channel: str, ts: str, vote: str, *, user: str = "U0ALICE") -> None:
    """Click 👍 (`up`) or 👎 (`down`) under the bot's message `ts`, as Slack sends it."""
    assert bot.interaction(slack.feedback_click(bot.standin.messages[(channel, ts)], vote, user=user)).status_code == 200


def _answer(bot: SlackHttpBot, channel: str) -> tuple[str, str]:
    """(answer id, message ts) of a fresh answer in `channel`."""
    reply = bot.answered(slack.mention("Which tool do expense claims go in?", channel=channel))
    return reply.answer_id, reply.last.ts


# ---------------------------------------------------------------------- the real pipeline


def test_mention_is_answered_from_the_handbook_with_status_stream_sources_and_feedback(settings, handbook, store, standin):
    config = _settings(settings, channel_collections={"C0HANDBOOK": handbook.collection})
    with running(config, handbook.service, store, standin) as bot:
        standin.reset()
        question = slack.mention("Which tool do expense claims go in?", channel="C0HANDBOOK")
        reply = bot.answered(question)

        # The session and the status first, in the question's thread (after asking Slack once who
        # sees the channel); then the answer streams into one message, whose stop ends the session's work.
        methods = [c.method for c in standin.calls if c.args.get("channel", c.args.get("channel_id")) == "C0HANDBOOK"]
        assert methods.pop(0) == "conversations.info"
        assert methods[:3] == ["agents.sessions.setStatus", "assistant.threads.setStatus", "chat.startStream"], methods
        assert standin.sessions[("C0HANDBOOK", question["ts"])] == {
            "title": "Which tool do expense claims go in?", "status": "active"}
        status = standin.find("assistant.threads.setStatus")[0].args
        assert (status["thread_ts"], status["status"]) == (question["ts"], STATUS) and status["loading_messages"]
        assert ("C0HANDBOOK", question["ts"]) not in standin.status  # cleared once the answer appeared
        assert "chat.update" not in methods and "chat.postMessage" not in methods
        assert reply.streamed and len(reply.messages) == 1
        sources = [s for s in reply.sections if s.startswith("*Sources*")]
        assert len(sources) == 1 and "Expenses and Reimbursement" in sources[0], reply.sections

        record = store.get_answer(reply.answer_id)
        assert record.question == "Which tool do expense claims go in?"
        assert record.collection == handbook.collection and record.model == config.model
        assert (record.platform, record.workspace, record.channel) == ("slack", TEAM, "C0HANDBOOK")
        assert (record.thread, record.message_id) == (question["ts"], reply.last.ts)
        assert record.user_hash == store.user_hash("slack", "U0ALICE")
        assert record.retrieved and record.prompt
        assert reply.text == record.answer_text  # the model's Markdown, as written

        _click(bot, "C0HANDBOOK", reply.last.ts, "up")
        assert [r.value for r in wait_until(lambda: store.ratings(record.id))] == [1]


def test_model_down_gets_a_short_reply_and_the_bot_keeps_answering(settings, handbook, store, standin):
    down = settings.model_copy(update={"ollama_url": "http://127.0.0.1:9"})  # nothing listens there
    config = _settings(settings, channel_collections={"C0HANDBOOK": handbook.collection})
    with running(config, AnswerService(down), store, standin) as bot:
        standin.reset()
        for _ in range(2):  # the process survives the failure and handles the next question
            reply = bot.answered(slack.mention("Which tool do expense claims go in?", channel="C0HANDBOOK"))
            assert reply.text == ModelUnavailable.user_message and not reply.blocks


# ---------------------------------------------------------------------- answering


def test_the_answer_streams_natively_and_a_rate_limit_never_stalls_the_generation(settings, store, standin):
    """Tokens reach Slack through chat.startStream/appendStream/stopStream in several appends,
    with the recipient Slack needs in a channel, and no chat.update. When Slack answers an append
    with 429 and Retry-After, the sender waits, not the model: the generation ends on time."""
    config = _settings(settings)
    slow = ScriptedAnswers(config, piece_chars=4, delay=0.1)  # about 2.5 s of generation
    timings: list[float] = []
    ask = slow.ask

    def timed(*args, **kwargs):
        started = time.monotonic()
        try:
            return ask(*args, **kwargs)
        finally:
            timings.append(time.monotonic() - started)

    slow.ask = timed
    with running(config, slow, store, standin) as bot:
        standin.reset()
        standin.fail_next("chat.appendStream", "ratelimited", retry_after=3)
        reply = bot.answered(slack.mention("Which tool do expense claims go in?", channel="C0STREAM"))
    assert reply.text == LEDGERLY and reply.streamed
    [start] = standin.find("chat.startStream", channel="C0STREAM")
    assert (start.args["recipient_user_id"], start.args["recipient_team_id"]) == ("U0ALICE", TEAM)
    appends = standin.find("chat.appendStream", channel="C0STREAM")
    assert len([a for a in appends if a.status == 429]) == 1 and len([a for a in appends if a.status == 200]) >= 1
    [stop] = standin.find("chat.stopStream", channel="C0STREAM")
    assert {b["type"] for b in stop.args["blocks"]} >= {"context_actions", "section"}
    assert not standin.find("chat.update")
    assert timings[0] < 3.0 + 0.5, timings  # it did not wait out the Retry-After
    assert reply.last.answer_id == bot.store.answer_for_message("slack", reply.last.ts)


def test_an_answer_that_fails_midway_keeps_its_words_and_says_why(settings, store, standin):
    config = _settings(settings)

    class FailsMidway(ScriptedAnswers):
        def ask(self, question, *, collection=None, history=(), on_token=None, stop=None, place=None):
            on_token("Expense claims go in")
            # the first words reach Slack
            standin.wait_for(lambda calls: any(c.args.get("channel") == "C0MIDWAY" and "Expense claims go in"
                                               in json.dumps(c.args) for c in calls), timeout=60)
            raise ModelUnavailable("the model died")

    with running(config, FailsMidway(config), store, standin) as bot:
        standin.reset()
        reply = bot.answered(slack.mention("Which tool do expense claims go in?", channel="C0MIDWAY"))
    assert reply.streamed and len(reply.messages) == 1 and not reply.blocks
    assert reply.text == f"Expense claims go in\n\n_{ModelUnavailable.user_message}_"
    assert not standin.find("chat.postMessage", channel="C0MIDWAY")


def test_markdown_is_shown_as_written_and_mentions_in_it_ping_no_one(bot):
    markdown = ("**Claims** go in *Ledgerly* [1], not ~~Expensify~~.\n\n| tool | use |\n|---|---|\n| Ledgerly | claims |"
                "\n\n```\nledgerly submit --receipt r.pdf\n```\n\nAsk <!channel> or <@U0BOSS> if unsure.")
    bot.service.reply = markdown
    reply = bot.answered(slack.mention("how do I claim?", channel="C0MARKDOWN"))
    assert reply.text.replace("\u200b", "") == markdown  # lists, tables, code and emphasis untouched
    assert "<!channel>" not in reply.text and "<@U0BOSS>" not in reply.text


def test_sources_are_numbered_links_and_the_buttons_carry_the_answer(bot):
    reply = bot.answered(slack.mention("Which tool do expense claims go in?"))
    sources = [s for s in reply.sections if s.startswith("*Sources*")]
    assert sources == ["*Sources*\n1. <https://handbook.example.com/expenses|Expenses and Reimbursement> § Submitting a claim"]
    assert bot.store.answer_for_message("slack", reply.last.ts) == reply.answer_id


def test_follow_up_in_the_thread_carries_its_history(bot):
    first = slack.mention("Which tool do expense claims go in?", channel="C0THREADS")
    bot.answered(first)
    follow_up = slack.mention("And how long do I have?", channel="C0THREADS", thread_ts=first["ts"])
    reply = bot.answered(follow_up)

    assert bot.service.calls[0]["history"] == []
    assert bot.service.calls[1]["history"] == [Turn("Which tool do expense claims go in?", LEDGERLY)]
    assert len(bot.standin.find("chat.startStream", channel="C0THREADS", thread_ts=first["ts"])) == 2
    assert bot.store.get_answer(reply.answer_id).thread == first["ts"]


def test_replies_in_a_thread_the_bot_answers_in_are_follow_ups_without_a_mention(bot):
    first = slack.mention("Which tool do expense claims go in?", channel="C0FOLLOW")
    bot.answered(first)

    def reply(text: str, thread: str, channel: str = "C0FOLLOW") -> dict:
        ts = f"{first['ts']}1{len(bot.standin.calls)}"
        return {"type": "message", "channel_type": "channel", "user": "U0ALICE", "text": text, "ts": ts,
                "event_ts": ts, "thread_ts": thread, "channel": channel, "team": slack.TEAM}

    answer = bot.answered(reply("And how long do I have?", first["ts"]))
    assert answer.text == LEDGERLY
    assert bot.service.calls[-1]["history"] == [Turn("Which tool do expense claims go in?", LEDGERLY)]
    assert bot.store.get_answer(answer.answer_id).thread == first["ts"]

    # Not for the bot: a reply to someone else, a thread it never answered in, the channel itself.
    for event in (reply("<@U0BOB> can you check the receipts?", first["ts"]),
                  reply("Which tool do expense claims go in?", "1700000000.000001"),
                  {**reply("Which tool do expense claims go in?", first["ts"]), "thread_ts": None},
                  {**reply("edited", first["ts"]), "subtype": "message_changed"}):
        assert bot.event(event).status_code == 200
    bot.settle()
    assert [c["question"] for c in bot.service.calls] == [
        "Which tool do expense claims go in?", "And how long do I have?", "are you there?",
    ]


def test_direct_messages_are_answered_and_edits_are_not(bot):
    message = slack.direct_message(f"<@{BOT_USER}> which tool do   expense claims go in?")
    assert bot.answered(message).streamed
    assert bot.service.calls[0]["question"] == "which tool do expense claims go in?"

    edited = slack.direct_message("edited text", subtype="message_changed")
    assert bot.event(edited).status_code == 200
    bot.settle()
    assert [c["question"] for c in bot.service.calls] == ["which tool do expense claims go in?", "are you there?"]


def test_agent_view_offers_prompts_and_titles_the_session_with_the_first_question(bot):
    """Slack's agent view: opening teambot's messages shows the suggested prompts (set on the
    conversation: with a thread_ts an agent app's prompts are silently dropped); each question
    is an agent session of its thread, titled with the question, processing while it is answered
    and active once the answer is shown."""
    prompts = bot.bot.settings.slack_suggested_prompts
    assert bot.event(slack.home_opened(channel="D0AGENT", tab="home")).status_code == 200
    assert bot.event(slack.home_opened(channel="D0AGENT")).status_code == 200
    offered = bot.standin.wait_call("assistant.threads.setSuggestedPrompts", channel_id="D0AGENT").args
    assert "thread_ts" not in offered
    assert [p["message"] for p in bot.standin.prompts["D0AGENT"]["prompts"]] == prompts  # shown
    assert len(bot.standin.find("assistant.threads.setSuggestedPrompts")) == 1  # not for the Home tab

    first = slack.direct_message("Which tool do expense claims go in?", channel="D0AGENT")  # no thread_ts
    assert bot.answered(first).text == LEDGERLY
    follow_up = slack.direct_message("And how long do I have?", channel="D0AGENT", thread_ts=first["ts"])
    assert bot.answered(follow_up).text == LEDGERLY
    session = bot.standin.sessions[("D0AGENT", first["ts"])]
    assert session == {"title": "Which tool do expense claims go in?", "status": "active"}
    statuses = [c.args["status"] for c in bot.standin.find("agents.sessions.setStatus", channel_id="D0AGENT")]
    assert statuses == ["processing", "processing"]  # each answer's stream stop made it active again
    assert bot.service.calls[-1]["history"] == [Turn("Which tool do expense claims go in?", LEDGERLY)]


def test_stop_ends_the_answer_frees_its_slot_and_says_it_stopped(settings, store, standin):
    """Slack's Stop button on an answer in progress: the generation ends at its next token, the
    question queued behind it starts at once, the thread says the answer stopped, and the answer
    is recorded as stopped, without vote buttons."""
    from bots.conversation import Conversations
    from core.answer import STOPPED_NOTE

    config = _settings(settings)
    steps = "".join(f"Step {n} of filing a claim. " for n in range(1, 200))
    service = ScriptedAnswers(config, lambda q: steps if "step by step" in q else LEDGERLY, delay=0.1)
    conversations = Conversations(config, service, store, workers=1, queue=1)
    with running(config, service, store, standin, conversations=conversations) as bot:
        standin.reset()
        first = slack.mention("How do I file a claim, step by step?", channel="C0STOP")
        queued = slack.mention("Which tool do expense claims go in?", channel="C0STOP", user="U0BOB")
        assert bot.event(first).status_code == 200
        standin.wait_call("chat.appendStream", channel="C0STOP")  # mid-answer
        assert bot.event(queued).status_code == 200
        standin.wait_call("agents.sessions.setStatus", channel_id="C0STOP", thread_ts=queued["ts"])

        stop = standin.stop_session("C0STOP", first["ts"], "U0ALICE")
        assert stop and stop["streaming_message_ts"]
        asked = time.perf_counter()
        assert bot.event(stop).status_code == 200
        began = standin.wait_call("chat.startStream", channel="C0STOP", thread_ts=queued["ts"], timeout=60)
        assert began.at - asked < 1.0, f"the queued question started {began.at - asked:.2f}s after Stop"
        assert conversations.wait_idle(300)

    stopped = standin.thread("C0STOP", first["ts"])
    assert stopped[0].text.startswith("Step 1 of filing a claim.") and "Step 199" not in stopped[0].text
    assert stopped[-1].text.strip().endswith(STOPPED_NOTE)
    assert not any(m.answer_id for m in stopped)  # no votes on a stopped answer
    assert standin.sessions[("C0STOP", first["ts"])]["status"] == "active"  # Slack leaves that to the app
    record = store.get_answer(store.answer_for_message("slack", stopped[0].ts))
    assert record.outcome == "stopped" and record.answer_text.startswith("Step 1")
    assert standin.thread("C0STOP", queued["ts"])[-1].answer_id  # the queued one answered whole
    assert len(service.calls) == 2


def test_a_stop_before_the_first_word_says_so_once_and_only_the_askers_stop_counts(settings, store, standin):
    """Stop pressed while the answer has shown nothing yet: the thread says it stopped, once. A Stop
    from someone else in the thread ends nothing of this asker's answer."""
    from core.answer import STOPPED_NOTE

    config = _settings(settings)
    service = ScriptedAnswers(config, ["", *[f"Step {n}. " for n in range(1, 200)]], delay=0.1)
    with running(config, service, store, standin) as bot:
        standin.reset()
        question = slack.mention("How do I file a claim, step by step?", channel="C0EARLY")
        assert bot.event(question).status_code == 200
        standin.wait_call("agents.sessions.setStatus", channel_id="C0EARLY", status="processing")
        assert standin.sessions[("C0EARLY", question["ts"])]["status"] == "processing"
        others = {"type": "agent_session_stopped", "channel": "C0EARLY", "thread_ts": question["ts"], "user": "U0BOB",
                  "streaming_message_ts": [], "event_ts": "1.0"}
        assert bot.event(others).status_code == 200
        mine = {**others, "user": "U0ALICE", "event_ts": "2.0"}
        assert bot.event(mine).status_code == 200
        assert bot.bot.conversations.wait_idle(300)
    said = standin.thread("C0EARLY", question["ts"])
    assert "".join(m.text for m in said).count(STOPPED_NOTE) == 1, [m.text for m in said]
    assert "Step 150" not in "".join(m.text for m in said)  # Bob's Stop did not let it run on: Alice's ended it
    assert standin.sessions[("C0EARLY", question["ts"])]["status"] == "active"


def test_the_status_is_shown_again_while_an_answer_is_held_back(settings, store, standin, monkeypatch, tmp_path):
    """Slack clears a thread's loading status after two minutes without a message: in a channel
    whose answers must cite a source, nothing is shown until the answer is known, so the status
    is set again before it lapses."""
    from bots.slack import reply as slack_reply

    monkeypatch.setattr(slack_reply, "STATUS_REFRESH", 0.5)
    rules = tmp_path / "rules.toml"
    rules.write_text("[channels.C0CITED]\ncitations_required = true\n")
    config = _settings(settings, channel_rules=rules)
    service = ScriptedAnswers(config, ["Claims go in Ledgerly [1]. "] * 50, delay=0.1)
    with running(config, service, store, standin) as bot:
        standin.reset()
        standin.status_lifetime = 2.0
        question = slack.mention("Which tool do expense claims go in?", channel="C0CITED")
        assert bot.event(question).status_code == 200
        standin.wait_call("assistant.threads.setStatus", channel_id="C0CITED")
        seen = []
        while not standin.find("chat.startStream", channel="C0CITED"):
            seen.append(standin.status_shown("C0CITED", question["ts"]))
            time.sleep(0.1)
        reply = bot.reply_to(question)
    standin.status_lifetime = slack.STATUS_LIFETIME
    assert len(seen) > 30 and all(seen), seen  # five seconds held back, never without a status
    assert len(standin.find("assistant.threads.setStatus", channel_id="C0CITED")) >= 6
    assert reply.text.startswith("Claims go in Ledgerly")


def test_slash_command_is_answered_in_a_thread_of_its_own(bot):
    response = bot.command("which tool do expense claims go in?", channel="C0GENERAL")
    assert response.status_code == 200
    root = bot.standin.wait_call("chat.postMessage", channel="C0GENERAL", thread_ts=None)
    assert root.args["text"] == "<@U0ALICE> asked: which tool do expense claims go in?"
    reply = bot.reply_in("C0GENERAL", root.response["ts"])
    assert reply.text == LEDGERLY and reply.streamed
    start = bot.standin.find("chat.startStream", channel="C0GENERAL")[0].args
    assert (start["thread_ts"], start["recipient_user_id"]) == (root.response["ts"], "U0ALICE")
    record = bot.store.get_answer(reply.answer_id)
    assert (record.thread, record.workspace) == (root.response["ts"], TEAM)


def test_slash_command_without_a_question_answers_with_usage(bot):
    response = bot.command("   ", response_url=bot.standin.url + "/response/usage")
    assert response.status_code == 200 and not response.text  # acknowledged first
    said = bot.standin.wait_call("response_url/response/usage").args
    assert InvalidQuestion.user_message in said["text"] and "/ask" in said["text"]
    assert said["response_type"] == "ephemeral"  # shown to the user only
    assert not bot.service.calls


def test_slash_command_where_the_bot_cannot_post_explains_why(bot):
    bot.standin.errors["chat.postMessage"] = "not_in_channel"
    assert bot.command("which tool?", channel="C0PRIVATE", response_url=bot.standin.url + "/response/1").status_code == 200
    reply = bot.standin.wait_call("response_url/response/1")
    assert reply.args["text"] == CANNOT_POST and reply.args["response_type"] == "ephemeral"
    assert not bot.service.calls


def test_channel_and_workspace_choose_the_collection(bot):
    bot.answered(slack.mention("sales question?", channel="C0SALES"))
    bot.answered(slack.mention("general question?", channel="C0GENERAL"))
    assert [c["collection"] for c in bot.service.calls] == ["SalesDocs", "TeamDocs"]


def test_empty_and_too_long_questions_get_a_short_reply_in_the_thread(bot):
    empty = slack.mention("   ", channel="C0EMPTY")
    assert bot.answered(empty).text == InvalidQuestion.user_message

    long = slack.mention("why? " * 1000, channel="C0LONG")
    reply = bot.answered(long).text
    assert "too long" in reply and f"{bot.service.settings.max_question_chars:,}" in reply
    bot.settle()
    assert not bot.standin.find("chat.startStream", where=lambda c: c.args["channel"] in ("C0EMPTY", "C0LONG"))
    assert [c["question"] for c in bot.service.calls] == ["are you there?"]


# ---------------------------------------------------------------------- Slack's limits


def _long_answer() -> str:
    paragraph = "Claims go in Ledgerly, see [the policy](https://handbook.example.com/expenses#claims) for details. " * 12
    code = "```\n" + "\n".join(f"ledgerly submit --receipt r{n}.pdf" for n in range(120)) + "\n```"
    return "\n\n".join([paragraph] * 12 + [code] + [paragraph] * 12)  # about 30,000 characters


def test_a_30000_character_answer_is_delivered_whole_in_messages_slack_accepts(bot):
    """Every message stays within 12,000 characters of markdown (the strict stand-in refuses more),
    the answer continues in the next message of the thread, a code block cut between two is
    closed and reopened, every link stays whole, and the votes are on the last message; a
    reaction on any part counts for the answer."""
    text = _long_answer()
    assert len(text) > 29_000
    bot.service.reply = text
    reply = bot.answered(slack.mention("tell me everything about expenses", channel="C0LONGANSWER"))
    assert len(reply.messages) >= 3 and reply.streamed
    assert all(len(m.text) <= MARKDOWN_LIMIT and not m.streaming for m in reply.messages)
    assert not [c for c in bot.standin.calls if c.status != 200 or not c.response.get("ok")]  # nothing refused
    assert "".join(reply.text.split()).replace("```", "") == "".join(text.split()).replace("```", "")
    assert reply.text.count("[the policy](https://handbook.example.com/expenses#claims)") == 24 * 12
    assert all(m.text.count("```") % 2 == 0 for m in reply.messages)
    assert [m.answer_id for m in reply.messages[:-1]] == [None] * (len(reply.messages) - 1)
    answer_id = reply.answer_id
    assert bot.store.answer_for_message("slack", reply.messages[0].ts) == answer_id
    assert bot.store.answer_for_message("slack", reply.last.ts) == answer_id


def test_a_refused_stream_is_posted_as_new_messages_and_the_stuck_one_removed(bot):
    """Slack refuses the end of the stream three ways; each time the whole answer still arrives,
    with its buttons, as markdown messages posted in the thread."""
    text = _long_answer()
    bot.service.reply = text
    for n, (method, error, times) in enumerate((
        ("chat.stopStream", "ratelimited", 3),  # past the client's two retries
        ("chat.appendStream", "message_not_found", 1),
        ("chat.stopStream", "msg_too_long", 1),
    )):
        bot.standin.fail_next(method, error, times=times, retry_after=1)
        channel = f"C0REFUSED{n}"
        reply = bot.answered(slack.mention("tell me everything about expenses", channel=channel))
        shown = [m for m in reply.messages]
        assert "".join(reply.text.split()).replace("```", "") == "".join(text.split()).replace("```", ""), error
        assert any(m.via == "chat.postMessage" for m in shown), error
        assert all(not m.streaming for m in shown), error  # nothing left half-finished
        assert reply.answer_id and bot.store.answer_for_message("slack", reply.last.ts) == reply.answer_id
        for message in shown:
            if message.via == "chat.postMessage":
                assert blocks_error(message.blocks) is None and message.blocks[0]["type"] == "markdown"


# ---------------------------------------------------------------------- deliveries


def test_a_retried_event_is_answered_once(bot):
    question = slack.mention("Which tool do expense claims go in?", channel="C0RETRY")
    body = slack.event_body(question, event_id="Ev0RETRIED")
    assert bot.post(body, "application/json").status_code == 200
    for attempt in (1, 2):  # Slack's redeliveries keep the event_id
        assert bot.post(body, "application/json", retry=attempt).status_code == 200
    bot.reply_to(question)
    bot.settle()
    assert len(bot.standin.find("chat.startStream", channel="C0RETRY")) == 1
    assert [c["question"] for c in bot.service.calls] == ["Which tool do expense claims go in?", "are you there?"]


def test_a_retried_event_reaching_two_replicas_and_a_restart_is_answered_once(settings, store, standin, tmp_path):
    """Two bot replicas (each its own Bolt app, HTTP server and database connection) share one
    store; Slack's first delivery reaches one, its retries the other and a restarted one."""
    config = _settings(settings)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    standin.reset()
    answered: list[str] = []
    servers = []
    try:
        for _ in range(3):
            service = ScriptedAnswers(config)
            bot = SlackBot(config, service, FeedbackStore(url, user_salt="test"),
                           WebClient(token=BOT_TOKEN, base_url=standin.api_url))
            server = http_server(bot.app, "127.0.0.1", 0)
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            servers.append((bot, server, service))
        question = slack.mention("Which tool do expense claims go in?", channel="C0REPLICAS")
        body = slack.event_body(question, event_id="Ev0REPLICAS")
        for attempt, (_, server, _) in enumerate(servers):
            headers = signed(SIGNING_SECRET, body, "application/json", retry=attempt or None)
            url_ = f"http://127.0.0.1:{server.server_port}/slack/events"
            assert httpx.post(url_, content=body, headers=headers, timeout=30).status_code == 200
        for bot, _, service in servers:
            assert bot.conversations.wait_idle(60)
            answered += [c["question"] for c in service.calls]
    finally:
        for bot, server, _ in servers:
            server.shutdown()
            server.server_close()
            bot.close()
    assert answered == ["Which tool do expense claims go in?"]
    assert len(standin.find("chat.startStream", channel="C0REPLICAS")) == 1
    taken = metrics.REGISTRY.get_sample_value("teambot_event_redeliveries_total",
                                              {"platform": "slack", "reason": "http_timeout", "taken": "no"})
    assert taken and taken >= 2


def test_unsigned_forged_and_stale_requests_are_rejected(bot):
    question = slack.mention("Which tool do expense claims go in?", channel="C0FORGED")
    body = slack.event_body(question, event_id="Ev0FORGED")
    assert httpx.post(bot.url, content=body, headers={"Content-Type": "application/json"}).status_code == 401
    assert bot.post(body, "application/json", secret="not-the-signing-secret").status_code == 401
    assert bot.post(body, "application/json", timestamp=int(time.time()) - 10 * 60).status_code == 401
    tampered = body.replace("Which tool", "Which secret")
    headers = signed(SIGNING_SECRET, body, "application/json")
    assert httpx.post(bot.url, content=tampered, headers=headers).status_code == 401
    bot.settle()
    assert not bot.standin.find("chat.postMessage", channel="C0FORGED")

    # Rejected requests leave no trace: the genuine delivery of that event is still answered.
    assert bot.post(body, "application/json").status_code == 200
    assert bot.reply_to(question).text == LEDGERLY


def test_without_a_signing_secret_no_request_is_accepted(settings, store, standin):
    config = _settings(settings, slack_signing_secret=SecretStr(" "))  # set, but blank
    with running(config, ScriptedAnswers(config), store, standin) as bot:
        body, ts = slack.event_body(slack.mention("Which tool?")), str(int(time.time()))
        for key in (b"", b" "):  # slack_sdk refuses to sign with these, so sign by hand
            signature = "v0=" + hmac.new(key, f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
            headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}
            assert httpx.post(bot.url, content=body, headers=headers).status_code == 401


def test_its_own_and_other_bots_messages_are_ignored(bot):
    own = slack.direct_message("Looking that up…", user=BOT_USER, bot_id=BOT_ID, channel="D0BOTS")
    other = slack.direct_message("deploy finished", bot_id="B0CI", subtype="bot_message", channel="D0BOTS")
    del other["user"]
    other_mention = slack.mention("what is the deploy policy?", user="U0CIBOT", bot_id="B0CI", channel="C0BOTS")
    for event in (own, other, other_mention):
        assert bot.event(event).status_code == 200
    bot.settle()
    assert not bot.standin.find("chat.postMessage", where=lambda c: c.args["channel"] in ("D0BOTS", "C0BOTS"))
    assert [c["question"] for c in bot.service.calls] == ["are you there?"]


def _redeliveries() -> float:
    """Slack events counted as redelivered, whatever the reason."""
    return sum(sample.value for family in metrics.REGISTRY.collect() if family.name == "teambot_event_redeliveries"
               for sample in family.samples
               if sample.name.endswith("_total") and sample.labels.get("platform") == "slack")


def test_socket_mode_streams_the_answer_and_answers_a_redelivery_once(settings, store, standin):
    socket = SocketModeStandIn().start()
    standin.reset()
    standin.socket_mode = socket
    config = _settings(settings, slack_signing_secret=None)  # Socket Mode needs no signing secret
    bot = SlackBot(config, ScriptedAnswers(config), store, WebClient(token=BOT_TOKEN, base_url=standin.api_url))
    stop = threading.Event()
    serving = threading.Thread(target=serve_socket_mode, args=(bot.app, APP_TOKEN, stop), daemon=True)
    serving.start()
    try:
        socket.wait_connected()
        question = slack.mention("Which tool do expense claims go in?", channel="C0SOCKET")
        body = slack.event_body(question)
        before = _redeliveries()
        first = socket.send_event(body)  # retry_attempt 0: a first delivery, not a redelivery
        assert socket.wait_ack(first) == {"envelope_id": first}
        assert socket.wait_ack(socket.send_event(body, retry=1))  # acknowledged, not answered again
        assert _redeliveries() - before == 1
        standin.wait_call("chat.stopStream", channel="C0SOCKET")
        assert bot.conversations.wait_idle(60)
        [answer] = standin.thread("C0SOCKET", question["ts"])
        assert answer.text == LEDGERLY and answer.answer_id and answer.via == "chat.startStream"
        assert standin.find("assistant.threads.setStatus", channel_id="C0SOCKET")

        after = slack.direct_message("are you there?", channel="D0SOCKET")
        socket.send_event(slack.event_body(after))
        standin.wait_call("chat.stopStream", channel="D0SOCKET")
        assert len(standin.find("chat.startStream", channel="C0SOCKET")) == 1
    finally:
        stop.set()
        serving.join(10)
        bot.close()
        socket.stop()
        standin.socket_mode = None


# ---------------------------------------------------------------------- feedback


def test_thumbs_up_button_records_the_vote_and_thanks_the_user(bot):
    answer_id, ts = _answer(bot, "C0VOTES")
    _click(bot, "C0VOTES", ts, "up")
    thanks = bot.standin.wait_call("chat.postEphemeral", channel="C0VOTES", user="U0ALICE")
    assert thanks.args["text"] == THANKS
    assert [(r.value, r.reason) for r in bot.store.ratings(answer_id)] == [(1, None)]


def test_thumbs_down_opens_the_form_first_and_stores_the_vote_whether_or_not_it_is_sent(bot):
    """The form opens before any database write (its trigger_id dies 3 s after the click, however
    slow the database); the 👎 is stored without waiting for the form; what the form says is added."""
    answer_id, ts = _answer(bot, "C0DOWN")
    votes_when_form_opened: list[list[int]] = []
    bot.standin.hooks["views.open"] = lambda _args: votes_when_form_opened.append(
        [r.value for r in bot.store.ratings(answer_id)]
    )
    _click(bot, "C0DOWN", ts, "down")
    opened = bot.standin.wait_call("views.open")
    assert opened.response["ok"] and votes_when_form_opened == [[]]
    wait_until(lambda: [r.value for r in bot.store.ratings(answer_id)] == [-1])  # the form not sent yet

    submit = slack.view_submission(opened.args["view"], {
        REASON_BLOCK: "It missed the 30-day deadline.", CORRECTION_BLOCK: "Ledgerly, within 30 days of purchase.",
    })
    response = bot.interaction(submit)
    assert response.status_code == 200 and not response.text  # an empty ack closes the modal
    bot.standin.wait_call("chat.postEphemeral", channel="C0DOWN", text=THANKS_NOTE)
    [rating] = bot.store.ratings(answer_id)
    assert (rating.value, rating.reason, rating.correction) == (
        -1, "It missed the 30-day deadline.", "Ledgerly, within 30 days of purchase."
    )


def test_a_thumbs_down_whose_form_can_no_longer_open_is_still_stored_and_thanked(bot):
    answer_id, ts = _answer(bot, "C0LATE")
    click = slack.feedback_click(bot.standin.messages[("C0LATE", ts)], "down")
    slack._triggers[click["trigger_id"]] -= 4  # the click was more than 3 s ago
    assert bot.interaction(click).status_code == 200
    assert bot.standin.wait_call("views.open").response["error"] == "expired_trigger_id"
    assert bot.standin.wait_call("chat.postEphemeral", channel="C0LATE").args["text"] == THANKS
    assert [r.value for r in bot.store.ratings(answer_id)] == [-1]


def test_an_empty_feedback_form_keeps_the_vote_and_old_buttons_still_vote(bot):
    answer_id, ts = _answer(bot, "C0EMPTYFORM")
    _click(bot, "C0EMPTYFORM", ts, "down")
    opened = bot.standin.wait_call("views.open")
    assert bot.interaction(slack.view_submission(opened.args["view"], {REASON_BLOCK: None, CORRECTION_BLOCK: "  "})).status_code == 200
    bot.settle()
    assert [(r.value, r.reason, r.correction) for r in bot.store.ratings(answer_id)] == [(-1, None, None)]

    # The 👍 button of an answer posted before feedback_buttons: last vote wins.
    old = slack.block_action(LEGACY_VOTE_UP, answer_id, message_ts=ts, channel="C0EMPTYFORM")
    assert bot.interaction(old).status_code == 200
    wait_until(lambda: [r.value for r in bot.store.ratings(answer_id)] == [1])


def _reaction(bot: SlackHttpBot, kind: str, reaction: str, *, channel: str, ts: str, user: str = "U0BOB") -> None:
    """Send a `reaction_added` / `reaction_removed` event for a reaction on message `ts`."""
    event = {"type": kind, "user": user, "reaction": reaction, "item_user": BOT_USER,
             "item": {"type": "message", "channel": channel, "ts": ts}, "event_ts": str(time.time())}
    assert bot.event(event).status_code == 200


def test_reactions_on_an_answer_are_votes_and_the_last_one_wins(bot):
    answer_id, ts = _answer(bot, "C0REACT")

    def react(reaction: str, message_ts: str = ts, user: str = "U0BOB") -> None:
        _reaction(bot, "reaction_added", reaction, channel="C0REACT", ts=message_ts, user=user)

    react("+1::skin-tone-3")
    assert [r.value for r in wait_until(lambda: bot.store.ratings(answer_id))] == [1]
    react("thumbsdown")
    wait_until(lambda: [r.value for r in bot.store.ratings(answer_id)] == [-1])
    react("tada")  # not a vote
    react("+1", message_ts="1700000000.000001")  # not an answer of the bot
    react("-1", user="U0CAROL")
    wait_until(lambda: len(bot.store.ratings(answer_id)) == 2)
    bot.settle()
    assert sorted(r.value for r in bot.store.ratings(answer_id)) == [-1, -1]


def _scripted_stats(store: FeedbackStore) -> tuple[int, int]:
    """(👍, 👎) counted for the scripted model, as `teambot feedback stats` shows them."""
    [row] = [s for s in store.stats() if s.model == "scripted"]
    return row.up, row.down


def _retracted(value: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "teambot_feedback_retracted_total", {"platform": "slack", "value": value}
    ) or 0.0


def test_removing_a_reaction_takes_back_its_vote_unless_it_was_changed_since(bot):
    answer_id, ts = _answer(bot, "C0UNREACT")

    def votes() -> list[int]:
        return sorted(r.value for r in bot.store.ratings(answer_id))

    def react(kind: str, reaction: str, message_ts: str = ts, user: str = "U0BOB") -> None:
        _reaction(bot, kind, reaction, channel="C0UNREACT", ts=message_ts, user=user)

    up_before, down_before = _scripted_stats(bot.store)
    retracted_before = _retracted("up")

    # 👍 then un-👍 (with the skin tone Slack reports on both events): the vote is gone.
    react("reaction_added", "+1::skin-tone-2")
    wait_until(lambda: votes() == [1])
    assert _scripted_stats(bot.store) == (up_before + 1, down_before)
    react("reaction_removed", "+1::skin-tone-2")
    wait_until(lambda: votes() == [])
    assert _scripted_stats(bot.store) == (up_before, down_before)
    wait_until(lambda: _retracted("up") == retracted_before + 1)  # counted just after the delete

    # 👍 reaction, then the 👎 button: removing the 👍 leaves the 👎 and what the form said.
    react("reaction_added", "thumbsup")
    wait_until(lambda: votes() == [1])
    _click(bot, "C0UNREACT", ts, "down", user="U0BOB")
    opened = bot.standin.wait_call("views.open")
    bot.interaction(slack.view_submission(opened.args["view"], {REASON_BLOCK: "Wrong tool.", CORRECTION_BLOCK: None},
                                          user="U0BOB"))
    bot.standin.wait_call("chat.postEphemeral", channel="C0UNREACT", text=THANKS_NOTE)
    react("reaction_removed", "thumbsup")
    # Removals that are no vote of Carol's on this answer: another emoji, another message.
    react("reaction_added", "-1", user="U0CAROL")
    wait_until(lambda: votes() == [-1, -1])
    react("reaction_removed", "tada", user="U0CAROL")
    react("reaction_removed", "-1", "1700000000.000001", user="U0CAROL")
    bot.settle()
    assert [(r.value, r.reason) for r in bot.store.ratings(answer_id)
            if r.user_hash == bot.store.user_hash("slack", "U0BOB")] == [(-1, "Wrong tool.")]
    assert votes() == [-1, -1]
    assert _scripted_stats(bot.store) == (up_before, down_before + 2)
    assert _retracted("up") == retracted_before + 1


def test_a_vote_on_an_unknown_answer_says_so(bot):
    click = slack.block_action("teambot_feedback", "up:" + "0" * 32, message_ts="1700000000.000002", channel="C0GONE")
    click["actions"][0]["type"] = "feedback_buttons"
    assert bot.interaction(click).status_code == 200
    assert bot.standin.wait_call("chat.postEphemeral", channel="C0GONE").args["text"] == VOTE_LOST


def test_past_the_pool_and_its_queue_a_question_is_told_busy_and_keeps_its_turn(settings, store, standin):
    """One generation at a time and one waiting: a third question at once is told the bot is busy,
    at once and in its thread; the other two are answered. Being turned away costs the asker
    nothing: with one question a minute allowed, the same person asking again afterwards is answered."""
    config = _settings(settings, answer_workers=1, answer_queue=1, user_questions_per_minute=1)
    slow = ScriptedAnswers(config, piece_chars=10, delay=0.3)  # about 1.5 s an answer
    with running(config, slow, store, standin) as bot:
        first, second, third = (slack.mention("Which tool do expense claims go in?", channel="C0BUSY", user=user)
                                for user in ("U0BUSY1", "U0BUSY2", "U0BUSY3"))
        for event in (first, second, third):
            assert bot.event(event).status_code == 200
        told = bot.reply_to(third, timeout=30)
        assert told.text == BUSY and not told.blocks
        assert bot.reply_to(first).text == LEDGERLY
        assert bot.reply_to(second).text == LEDGERLY
        again = slack.mention("Which tool do expense claims go in?", channel="C0BUSY", user="U0BUSY3")
        assert bot.answered(again).text == LEDGERLY  # not "rate limited"
