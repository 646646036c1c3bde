"""The Slack bot end to end: the real Bolt app serving HTTP on loopback, signed Events API,
slash command and interactivity requests sent to it, and a stand-in of the Slack Web API
(tests/slack_standin.py) recording what the bot posts.

The handbook tests answer with the real pipeline (Weaviate + Ollama). The others use
`ScriptedAnswers`: the real AnswerService's validation with a scripted answer, because what
they check (threads, retries, splitting, feedback) is the adapter's, and every real answer
costs the CPU-bound model many seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr
from slack_sdk import WebClient

from bots.conversation import BUSY
from bots.slack_app import CANNOT_POST, THANKS, THANKS_NOTE, SlackBot, serve_socket_mode
from bots.slack_blocks import (
    CORRECTION_BLOCK, MAX_BLOCKS, MESSAGE_TEXT_LIMIT, PLACEHOLDER, REASON_BLOCK, SECTION_TEXT_LIMIT,
    STREAMING_MARK, TRUNCATED_NOTE, VOTE_DOWN, VOTE_UP, to_mrkdwn,
)
from core.answer import Turn
from core.errors import InvalidQuestion, ModelUnavailable
from feedback.store import FeedbackStore
from pipeline.querying import AnswerService
from core import metrics
from tests import slack_standin as slack
from tests.doubles import LEDGERLY, ScriptedAnswers
from tests.slack_harness import SIGNING_SECRET, SlackHttpBot, slack_http_bot
from tests.slack_standin import APP_TOKEN, BOT_ID, BOT_TOKEN, BOT_USER, TEAM, SlackStandIn, SocketModeStandIn, signed

def _settings(settings, **changes):
    return settings.model_copy(update={
        "slack_signing_secret": SecretStr(SIGNING_SECRET), "slack_bot_token": SecretStr(BOT_TOKEN), **changes,
    })


def running(settings, service, store: FeedbackStore, standin: SlackStandIn, **options):
    # The answer streams at the bot's real pace here, unless a test asks otherwise.
    return slack_http_bot(settings, service, store, standin, **{"stream_interval": 1.5, **options})


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
    with running(config, ScriptedAnswers(config), store, standin) as bot:
        yield bot


@pytest.fixture
def bot(scripted_bot: SlackHttpBot) -> SlackHttpBot:
    scripted_bot.standin.reset()
    scripted_bot.service.reply = LEDGERLY
    scripted_bot.service.calls.clear()
    return scripted_bot


def _section_texts(blocks: list[dict]) -> list[str]:
    return [b["text"]["text"] for b in blocks if b["type"] == "section"]


def _vote_buttons(blocks: list[dict]) -> dict[str, str]:
    actions = [b for b in blocks if b["type"] == "actions"]
    assert len(actions) == 1
    return {e["action_id"]: e["value"] for e in actions[0]["elements"]}


def _wait_until(check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return result


# ---------------------------------------------------------------------- the real pipeline


def test_mention_is_answered_in_its_thread_from_the_handbook(settings, handbook, store, standin):
    config = _settings(settings, channel_collections={"C0HANDBOOK": handbook.collection})
    with running(config, handbook.service, store, standin) as bot:
        standin.reset()
        question = slack.mention("Which tool do expense claims go in?", channel="C0HANDBOOK")
        ts, final = bot.answered(question)

        # Placeholder first, in the question's thread; then the same message becomes the answer.
        posted = standin.find("chat.postMessage", channel="C0HANDBOOK")
        assert [p.args["text"] for p in posted] == [PLACEHOLDER]
        assert posted[0].args["thread_ts"] == question["ts"]
        blocks = final["blocks"]
        sections = _section_texts(blocks)
        sources = [s for s in sections if s.startswith("*Sources*")]
        assert len(sources) == 1 and "Expenses and Reimbursement" in sources[0], sections
        buttons = _vote_buttons(blocks)
        assert set(buttons) == {VOTE_UP, VOTE_DOWN} and len(set(buttons.values())) == 1

        record = store.get_answer(buttons[VOTE_UP])
        assert record.question == "Which tool do expense claims go in?"
        assert record.collection == handbook.collection and record.model == config.model
        assert (record.platform, record.workspace, record.channel) == ("slack", TEAM, "C0HANDBOOK")
        assert (record.thread, record.message_id) == (question["ts"], ts)
        assert record.user_hash == store.user_hash("slack", "U0ALICE")
        assert record.retrieved and record.prompt
        assert final["text"] == to_mrkdwn(record.answer_text)

        assert bot.interaction(slack.block_action(VOTE_UP, record.id, message_ts=ts, channel="C0HANDBOOK")).status_code == 200
        assert [r.value for r in _wait_until(lambda: store.ratings(record.id))] == [1]


def test_model_down_gets_a_short_reply_and_the_bot_keeps_answering(settings, handbook, store, standin):
    down = settings.model_copy(update={"ollama_url": "http://127.0.0.1:9"})  # nothing listens there
    config = _settings(settings, channel_collections={"C0HANDBOOK": handbook.collection})
    with running(config, AnswerService(down), store, standin) as bot:
        standin.reset()
        for _ in range(2):  # the process survives the failure and handles the next question
            _, final = bot.answered(slack.mention("Which tool do expense claims go in?", channel="C0HANDBOOK"))
            assert final["text"] == ModelUnavailable.user_message and "blocks" not in final


# ---------------------------------------------------------------------- answering


def test_answer_streams_into_the_placeholder(settings, store, standin):
    config = _settings(settings)
    with running(config, ScriptedAnswers(config), store, standin, stream_interval=0) as bot:
        standin.reset()
        ts, final = bot.answered(slack.mention("Which tool do expense claims go in?"))
        updates = [c.args for c in standin.find("chat.update", ts=ts)]
        interim = [u["text"] for u in updates if "blocks" not in u]
        assert interim and all(t.endswith(STREAMING_MARK) for t in interim)
        assert interim[0] != interim[-1]  # it grew as tokens arrived
        assert updates[-1] == final and final["text"] == LEDGERLY
        assert LEDGERLY in _section_texts(final["blocks"])[0]


def test_sources_are_numbered_links_and_buttons_carry_the_answer_id(bot):
    ts, final = bot.answered(slack.mention("Which tool do expense claims go in?"))
    sources = [s for s in _section_texts(final["blocks"]) if s.startswith("*Sources*")]
    assert sources == ["*Sources*\n1. <https://handbook.example.com/expenses|Expenses and Reimbursement> § Submitting a claim"]
    answer_id = _vote_buttons(final["blocks"])[VOTE_UP]
    assert bot.store.answer_for_message("slack", ts) == answer_id


def test_follow_up_in_the_thread_carries_its_history(bot):
    first = slack.mention("Which tool do expense claims go in?", channel="C0THREADS")
    bot.answered(first)
    follow_up = slack.mention("And how long do I have?", channel="C0THREADS", thread_ts=first["ts"])
    ts, _ = bot.answered(follow_up)

    assert bot.service.calls[0]["history"] == []
    assert bot.service.calls[1]["history"] == [Turn("Which tool do expense claims go in?", LEDGERLY)]
    assert bot.standin.find("chat.postMessage", channel="C0THREADS", thread_ts=first["ts"], text=PLACEHOLDER)
    assert bot.store.get_answer(bot.store.answer_for_message("slack", ts)).thread == first["ts"]


def test_replies_in_a_thread_the_bot_answers_in_are_follow_ups_without_a_mention(bot):
    first = slack.mention("Which tool do expense claims go in?", channel="C0FOLLOW")
    bot.answered(first)

    def reply(text: str, thread: str, channel: str = "C0FOLLOW") -> dict:
        ts = f"{first['ts']}1{len(bot.standin.calls)}"
        return {"type": "message", "channel_type": "channel", "user": "U0ALICE", "text": text, "ts": ts,
                "event_ts": ts, "thread_ts": thread, "channel": channel, "team": slack.TEAM}

    ts, final = bot.answered(reply("And how long do I have?", first["ts"]))
    assert final["text"] == LEDGERLY
    assert bot.service.calls[-1]["history"] == [Turn("Which tool do expense claims go in?", LEDGERLY)]
    assert bot.store.get_answer(bot.store.answer_for_message("slack", ts)).thread == first["ts"]

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
    bot.answered(message)
    assert bot.service.calls[0]["question"] == "which tool do expense claims go in?"

    edited = slack.direct_message("edited text", subtype="message_changed")
    assert bot.event(edited).status_code == 200
    bot.settle()
    assert [c["question"] for c in bot.service.calls] == ["which tool do expense claims go in?", "are you there?"]


def test_slash_command_is_answered_in_a_thread_of_its_own(bot):
    response = bot.command("which tool do expense claims go in?", channel="C0GENERAL")
    assert response.status_code == 200
    root = bot.standin.wait_call("chat.postMessage", channel="C0GENERAL", thread_ts=None)
    assert root.args["text"] == "<@U0ALICE> asked: which tool do expense claims go in?"
    ts = bot.placeholder("C0GENERAL", root.response["ts"])
    assert bot.final("C0GENERAL", ts)["text"] == LEDGERLY
    record = bot.store.get_answer(bot.store.answer_for_message("slack", ts))
    assert (record.thread, record.workspace) == (root.response["ts"], TEAM)


def test_slash_command_without_a_question_answers_with_usage(bot):
    response = bot.command("   ")
    assert response.status_code == 200
    assert InvalidQuestion.user_message in response.text and "/ask" in response.text  # shown to the user only
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
    assert bot.event(empty).status_code == 200
    assert bot.standin.wait_call("chat.postMessage", channel="C0EMPTY", thread_ts=empty["ts"]).args["text"] == InvalidQuestion.user_message

    long = slack.mention("why? " * 1000, channel="C0LONG")
    assert bot.event(long).status_code == 200
    reply = bot.standin.wait_call("chat.postMessage", channel="C0LONG", thread_ts=long["ts"]).args["text"]
    assert "too long" in reply and f"{bot.service.settings.max_question_chars:,}" in reply
    bot.settle()
    assert not bot.standin.find("chat.postMessage", text=PLACEHOLDER, where=lambda c: c.args["channel"] in ("C0EMPTY", "C0LONG"))
    assert [c["question"] for c in bot.service.calls] == ["are you there?"]


def test_a_huge_answer_is_split_into_sections_within_slack_limits(bot):
    paragraph = "Claims go in Ledgerly, see [the policy](https://handbook.example.com/expenses#claims) for details. " * 12
    bot.service.reply = "\n\n".join([paragraph] * 20)  # ~24,000 characters
    _, final = bot.answered(slack.mention("tell me everything about expenses"))
    sections = _section_texts(final["blocks"])
    assert len(sections) > 8 and all(len(s) <= SECTION_TEXT_LIMIT for s in sections)
    links = sum(s.count("<https://handbook.example.com/expenses#claims|the policy>") for s in sections)
    assert links == 12 * 20  # every link whole
    assert len(final["blocks"]) <= MAX_BLOCKS and len(final["text"]) <= MESSAGE_TEXT_LIMIT


def test_an_answer_beyond_fifty_sections_is_truncated_with_a_note(bot):
    bot.service.reply = ("All expense claims go in Ledgerly. " * 30 + "\n\n") * 200  # ~210,000 characters
    _, final = bot.answered(slack.mention("tell me everything, twice"))
    sections = _section_texts(final["blocks"])
    assert len(final["blocks"]) == MAX_BLOCKS and all(len(s) <= SECTION_TEXT_LIMIT for s in sections)
    assert sections[-2].endswith(TRUNCATED_NOTE)  # the last answer section, before the sources
    assert len(final["text"]) <= MESSAGE_TEXT_LIMIT and final["text"].endswith(TRUNCATED_NOTE)
    assert _vote_buttons(final["blocks"])


# ---------------------------------------------------------------------- deliveries


def test_a_retried_event_is_answered_once(bot):
    question = slack.mention("Which tool do expense claims go in?", channel="C0RETRY")
    body = slack.event_body(question, event_id="Ev0RETRIED")
    assert bot.post(body, "application/json").status_code == 200
    for attempt in (1, 2):  # Slack's redeliveries keep the event_id
        assert bot.post(body, "application/json", retry=attempt).status_code == 200
    bot.final("C0RETRY", bot.placeholder("C0RETRY", question["ts"]))
    bot.settle()
    assert len(bot.standin.find("chat.postMessage", channel="C0RETRY")) == 1
    assert [c["question"] for c in bot.service.calls] == ["Which tool do expense claims go in?", "are you there?"]


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
    bot.final("C0FORGED", bot.placeholder("C0FORGED", question["ts"]))


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


def test_socket_mode_acknowledges_events_and_answers_a_redelivery_once(settings, store, standin):
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
        first = socket.send_event(body)
        assert socket.wait_ack(first) == {"envelope_id": first}
        placeholder = standin.wait_call("chat.postMessage", channel="C0SOCKET", thread_ts=question["ts"]).response["ts"]
        assert socket.wait_ack(socket.send_event(body, retry=1))  # acknowledged, not answered again
        final = standin.wait_call("chat.update", channel="C0SOCKET", ts=placeholder, where=lambda c: "blocks" in c.args)
        assert final.args["text"] == LEDGERLY

        after = slack.direct_message("are you there?", channel="D0SOCKET")
        socket.send_event(slack.event_body(after))
        standin.wait_call("chat.update", channel="D0SOCKET", where=lambda c: "blocks" in c.args)
        assert len(standin.find("chat.postMessage", channel="C0SOCKET")) == 1
    finally:
        stop.set()
        serving.join(10)
        bot.close()
        socket.stop()
        standin.socket_mode = None


# ---------------------------------------------------------------------- feedback


def _answer(bot: SlackHttpBot, channel: str) -> tuple[str, str]:
    """(answer id, message ts) of a fresh answer in `channel`."""
    ts, final = bot.answered(slack.mention("Which tool do expense claims go in?", channel=channel))
    return _vote_buttons(final["blocks"])[VOTE_UP], ts


def test_thumbs_up_button_records_the_vote_and_thanks_the_user(bot):
    answer_id, ts = _answer(bot, "C0VOTES")
    click = slack.block_action(VOTE_UP, answer_id, message_ts=ts, channel="C0VOTES", thread_ts=ts)
    assert bot.interaction(click).status_code == 200
    thanks = bot.standin.wait_call("chat.postEphemeral", channel="C0VOTES", user="U0ALICE")
    assert thanks.args["text"] == THANKS and thanks.args["thread_ts"] == ts
    assert [(r.value, r.reason) for r in bot.store.ratings(answer_id)] == [(1, None)]


def test_thumbs_down_opens_the_form_first_and_stores_the_vote_whether_or_not_it_is_sent(bot):
    """The form opens before any database write (its trigger_id dies 3 s after the click, however
    slow the database); the 👎 is stored without waiting for the form; what the form says is added."""
    answer_id, ts = _answer(bot, "C0DOWN")
    votes_when_form_opened: list[list[int]] = []
    bot.standin.hooks["views.open"] = lambda _args: votes_when_form_opened.append(
        [r.value for r in bot.store.ratings(answer_id)]
    )
    assert bot.interaction(slack.block_action(VOTE_DOWN, answer_id, message_ts=ts, channel="C0DOWN")).status_code == 200
    opened = bot.standin.wait_call("views.open")
    assert votes_when_form_opened == [[]]
    assert opened.args["trigger_id"] == "1234.5678.trigger"
    _wait_until(lambda: [r.value for r in bot.store.ratings(answer_id)] == [-1])  # the form not sent yet

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


def test_an_empty_feedback_form_keeps_the_vote(bot):
    answer_id, ts = _answer(bot, "C0EMPTYFORM")
    bot.interaction(slack.block_action(VOTE_DOWN, answer_id, message_ts=ts, channel="C0EMPTYFORM"))
    opened = bot.standin.wait_call("views.open")
    assert bot.interaction(slack.view_submission(opened.args["view"], {REASON_BLOCK: None, CORRECTION_BLOCK: "  "})).status_code == 200
    bot.settle()
    assert [(r.value, r.reason, r.correction) for r in bot.store.ratings(answer_id)] == [(-1, None, None)]


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
    assert [r.value for r in _wait_until(lambda: bot.store.ratings(answer_id))] == [1]
    react("thumbsdown")
    _wait_until(lambda: [r.value for r in bot.store.ratings(answer_id)] == [-1])
    react("tada")  # not a vote
    react("+1", message_ts="1700000000.000001")  # not an answer of the bot
    react("-1", user="U0CAROL")
    _wait_until(lambda: len(bot.store.ratings(answer_id)) == 2)
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
    _wait_until(lambda: votes() == [1])
    assert _scripted_stats(bot.store) == (up_before + 1, down_before)
    react("reaction_removed", "+1::skin-tone-2")
    _wait_until(lambda: votes() == [])
    assert _scripted_stats(bot.store) == (up_before, down_before)
    _wait_until(lambda: _retracted("up") == retracted_before + 1)  # counted just after the delete

    # 👍 reaction, then the 👎 button: removing the 👍 leaves the 👎 and what the form said.
    react("reaction_added", "thumbsup")
    _wait_until(lambda: votes() == [1])
    bot.interaction(slack.block_action(VOTE_DOWN, answer_id, message_ts=ts, channel="C0UNREACT", user="U0BOB"))
    opened = bot.standin.wait_call("views.open")
    bot.interaction(slack.view_submission(opened.args["view"], {REASON_BLOCK: "Wrong tool.", CORRECTION_BLOCK: None},
                                          user="U0BOB"))
    bot.standin.wait_call("chat.postEphemeral", channel="C0UNREACT", text=THANKS_NOTE)
    react("reaction_removed", "thumbsup")
    # Removals that are no vote of Carol's on this answer: another emoji, another message.
    react("reaction_added", "-1", user="U0CAROL")
    _wait_until(lambda: votes() == [-1, -1])
    react("reaction_removed", "tada", user="U0CAROL")
    react("reaction_removed", "-1", "1700000000.000001", user="U0CAROL")
    bot.settle()
    assert [(r.value, r.reason) for r in bot.store.ratings(answer_id)
            if r.user_hash == bot.store.user_hash("slack", "U0BOB")] == [(-1, "Wrong tool.")]
    assert votes() == [-1, -1]
    assert _scripted_stats(bot.store) == (up_before, down_before + 2)
    assert _retracted("up") == retracted_before + 1


def test_a_vote_on_an_unknown_answer_says_so(bot):
    click = slack.block_action(VOTE_UP, "0" * 32, message_ts="1700000000.000002", channel="C0GONE")
    assert bot.interaction(click).status_code == 200
    assert "not recorded" in bot.standin.wait_call("chat.postEphemeral", channel="C0GONE").args["text"]


def test_past_the_pool_and_its_queue_a_question_is_told_busy_and_keeps_its_turn(settings, store, standin):
    """One generation at a time and one waiting: a third question at once is told the bot is busy,
    at once and in its thread; the other two are answered. Being turned away costs the asker
    nothing: with one question a minute allowed, the same person asking again afterwards is answered."""
    config = _settings(settings, answer_workers=1, answer_queue=1, user_questions_per_minute=1)
    slow = ScriptedAnswers(config, piece_chars=10, delay=0.3)  # about 1.5 s an answer
    with running(config, slow, store, standin, stream_interval=0) as bot:
        first, second, third = (slack.mention("Which tool do expense claims go in?", channel="C0BUSY", user=user)
                                for user in ("U0BUSY1", "U0BUSY2", "U0BUSY3"))
        for event in (first, second, third):
            assert bot.event(event).status_code == 200
        told = bot.reply_to(third, timeout=30)
        assert told["text"] == BUSY and "blocks" not in told
        assert LEDGERLY in _section_texts(bot.reply_to(first)["blocks"])[0]
        assert LEDGERLY in _section_texts(bot.reply_to(second)["blocks"])[0]
        again = slack.mention("Which tool do expense claims go in?", channel="C0BUSY", user="U0BUSY3")
        assert bot.event(again).status_code == 200
        assert LEDGERLY in _section_texts(bot.reply_to(again)["blocks"])[0]  # not "rate limited"
