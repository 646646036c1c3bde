"""Splitting, truncating and throttling (bots/formatting.py) and the Slack message pieces
(bots/slack_blocks.py, question parsing and dedupe in bots/slack_app.py)."""

from __future__ import annotations

import pytest

from bots.formatting import Throttle, split_text, truncate
from bots.slack_app import RecentKeys, question_text
from bots.slack_blocks import (
    MAX_BLOCKS, SECTION_TEXT_LIMIT, STREAMING_MARK, TRUNCATED_NOTE, VOTE_DOWN, VOTE_UP, answer_message,
    feedback_from_view, feedback_modal, source_line, streaming_text, to_mrkdwn,
)
from core.answer import Answer, Source

MD_LINK = "[the expenses policy](https://handbook.example.com/expenses#submitting-a-claim)"
SLACK_LINK = "<https://handbook.example.com/on-call|On-call rota and escalation>"
BARE_URL = "https://handbook.example.com/time-off?tool=HeyHR&year=2026"
LINKS = (MD_LINK, SLACK_LINK, BARE_URL)


def _long_text() -> str:
    sentences = [
        f"Claims go in Ledgerly, see {MD_LINK} for details.",
        f"Escalations follow {SLACK_LINK} without exception.",
        f"Book leave at {BARE_URL} two weeks ahead.",
        "Receipts are kept for seven years.",
    ]
    paragraphs = [" ".join(sentences[(i + j) % 4] for j in range(i % 5 + 2)) for i in range(60)]
    return "\n\n".join(paragraphs)


@pytest.mark.parametrize("limit", [80, 200, 2000, 3000])
def test_split_text_keeps_every_piece_within_the_limit_and_every_link_whole(limit):
    text = _long_text()
    pieces = split_text(text, limit)
    assert all(0 < len(p) <= limit for p in pieces)
    for link in LINKS:
        assert sum(p.count(link) for p in pieces) == text.count(link)
    assert " ".join(pieces).split() == text.split()  # nothing lost, nothing added


def test_split_text_prefers_paragraph_then_line_boundaries():
    first, second = "A" * 50 + " first paragraph.", "Second paragraph\nwith two lines."
    assert split_text(f"{first}\n\n{second}", 80) == [first, second]
    assert split_text("line one is here\nline two is here\nline three", 40) == [
        "line one is here\nline two is here", "line three",
    ]


def test_split_text_cuts_between_sentences_and_words_when_it_must():
    text = "One sentence here. Another sentence follows it. " * 3
    pieces = split_text(text, 40)
    assert pieces[0] == "One sentence here."
    assert all(p.endswith((".", "it")) or p == pieces[-1] for p in pieces)


def test_split_text_leaves_short_text_alone():
    assert split_text("  Short answer [1].  ", 3000) == ["Short answer [1]."]
    assert split_text("", 3000) == []


def test_split_text_closes_and_reopens_a_code_block():
    code = "```\n" + "\n".join(f"ledgerly submit --receipt r{i}.pdf" for i in range(30)) + "\n```"
    pieces = split_text("Run these:\n\n" + code + "\n\nThen wait.", 300)
    assert len(pieces) > 2 and all(len(p) <= 300 for p in pieces)
    assert all(p.count("```") % 2 == 0 for p in pieces)
    assert sum(p.count("ledgerly submit") for p in pieces) == 30


def test_split_text_cuts_a_link_only_when_it_alone_exceeds_the_limit():
    url = "https://handbook.example.com/" + "x" * 100
    assert split_text(f"see {url}", 50) == ["see", url[:50], url[50:100], url[100:]]
    with pytest.raises(ValueError):
        split_text("anything", 5)


def test_truncate_cuts_at_a_boundary_and_appends_the_note():
    text = "Ledgerly holds all claims. " * 20
    short = truncate(text, 100, " (cut)")
    assert len(short) <= 100 and short.endswith("claims. (cut)")
    assert truncate("fits", 100, " (cut)") == "fits"


def test_throttle_lets_one_action_through_per_interval():
    now = [100.0]
    throttle = Throttle(1.0, clock=lambda: now[0])
    assert not throttle.ready()  # the first interval counts from creation
    now[0] = 101.0
    assert throttle.ready() and not throttle.ready()
    now[0] = 101.9
    assert not throttle.ready()
    now[0] = 102.0
    assert throttle.ready()


# ---------------------------------------------------------------------- Slack text


def test_mrkdwn_escapes_control_characters_so_answers_cannot_ping_everyone():
    assert to_mrkdwn("Ask <!channel> & <@U123>") == "Ask &lt;!channel&gt; &amp; &lt;@U123&gt;"


def test_mrkdwn_converts_markdown_but_not_inside_code():
    md = "## Claims\n**Ledgerly** holds them, see [policy](https://x.example.com/p).\n- one\n* two\n```\n**raw** <b>\n```"
    assert to_mrkdwn(md) == (
        "*Claims*\n*Ledgerly* holds them, see <https://x.example.com/p|policy>.\n• one\n• two\n```\n**raw** &lt;b&gt;\n```"
    )


def test_source_lines_link_urls_and_name_local_files():
    web = Source(1, "On-call", "https://h.example.com/on-call?team=a&b|c", "", "c1", 0.5, section="Escalation")
    local = Source(2, "Expenses <2026>", "/srv/handbook/expenses.md", "", "c2", 0.5)
    assert source_line(web) == "1. <https://h.example.com/on-call?team=a&amp;b%7Cc|On-call> § Escalation"
    assert source_line(local) == "2. Expenses &lt;2026&gt; (`expenses.md`)"


def _answer(text: str, sources: list[Source] | None = None) -> Answer:
    return Answer(question="q", text=text, sources=sources or [], model="m", collection="c")


def test_answer_message_without_sources_has_the_answer_and_buttons():
    answer = _answer("I don't know from the documents I have.")
    text, blocks = answer_message(answer)
    assert text == answer.text
    assert [b["type"] for b in blocks] == ["section", "actions"]
    assert {e["action_id"]: e["value"] for e in blocks[1]["elements"]} == {VOTE_UP: answer.id, VOTE_DOWN: answer.id}


def test_answer_message_stays_within_block_limits():
    sources = [Source(i, f"Doc {i}", f"https://h.example.com/{i}", "", f"c{i}", 0.5) for i in range(1, 6)]
    text, blocks = answer_message(_answer(_long_text() * 20, sources))  # ~190,000 characters
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert len(blocks) == MAX_BLOCKS and all(len(s) <= SECTION_TEXT_LIMIT for s in sections)
    assert sections[-2].endswith(TRUNCATED_NOTE) and sections[-1].startswith("*Sources*\n1. ")
    assert text.endswith(TRUNCATED_NOTE)


def test_streaming_text_marks_the_answer_as_unfinished():
    assert streaming_text("Claims go in **Ledgerly**") == "Claims go in *Ledgerly*" + STREAMING_MARK


def test_feedback_modal_round_trip():
    view = feedback_modal("a1b2", "C0GENERAL", "1700000000.000100")
    values = {
        block["block_id"]: {"text": {"type": "plain_text_input", "value": value}}
        for block, value in zip(view["blocks"][1:], ["  wrong tool ", None])
    }
    meta, reason, correction = feedback_from_view({**view, "state": {"values": values}})
    assert meta == {"answer": "a1b2", "channel": "C0GENERAL", "thread": "1700000000.000100"}
    assert (reason, correction) == ("wrong tool", None)


# ---------------------------------------------------------------------- questions


def test_question_text_drops_the_bots_mention_and_unwraps_slack_markup():
    text = "<@U0BOT> where do I file <https://x.example.com/a|this> from <#C0FIN|finance> &amp; <@U0BOB>?"
    assert question_text(text, "U0BOT") == "where do I file https://x.example.com/a from #finance & <@U0BOB>?"
    assert question_text("<@U0BOT>", "U0BOT") == ""


def test_recent_keys_remember_a_bounded_number():
    keys = RecentKeys(size=3)
    assert [keys.add(k) for k in "abca"] == [True, True, True, False]
    assert keys.add("d") and keys.add("a")  # "a" was the oldest and was forgotten
