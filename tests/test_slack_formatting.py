"""Splitting whole and streaming text (bots/formatting.py) and the Slack message pieces
(bots/slack/blocks.py, question parsing in bots/slack/app.py), checked against the strict
stand-in's Block Kit rules (testing/slack_standin.py)."""

from __future__ import annotations

import pytest

from hypothesis import example, given, settings, strategies as st

from bots.formatting import FENCE, fill, split_text
from bots.slack.app import question_text
from bots.slack.blocks import (
    MARKDOWN_LIMIT, answer_tail, defuse_mentions, feedback_from_view, feedback_modal, markdown_messages, source_line,
    vote_of,
)
from core.answer import Answer, Source
from testing.slack_standin import blocks_error

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


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["Ledgerly holds claims. ", "see " + MD_LINK + " ", "\n\n", "\n", FENCE, "x" * 40,
                                 "ledgerly submit --receipt r.pdf\n"]), max_size=80),
       st.integers(min_value=0, max_value=300))
@example(pieces=["```", "ledgerly submit --receipt r.pdf\n", "\n\n", "\n\n"], room=38)  # only line breaks left over
def test_fill_cuts_streaming_text_within_the_room_and_keeps_code_blocks_closed(pieces, room):
    """What `fill` leaves in a filling message fits its room (plus a closing fence), a code block
    open at the cut is closed there and reopened after, and nothing is lost but whitespace."""
    sent, text = "Intro ```\n", "".join(pieces)
    head, rest = fill(sent, text, room)
    assert len(head) <= room + len("\n" + FENCE)
    if not rest:
        assert head == text
        return
    assert (sent + head).count(FENCE) % 2 == 0
    assert "".join((head + rest).split()).replace(FENCE, "") == "".join(text.split()).replace(FENCE, "")


def test_mentions_in_the_answer_are_defused_but_read_the_same():
    text = defuse_mentions("Ask <!channel>, <!here>, <@U123>, <#C0FIN> or <!subteam^S1> & see <https://x.example.com>")
    for mention in ("<!channel>", "<!here>", "<@U123>", "<#C0FIN>", "<!subteam^S1>"):
        assert mention not in text and mention.replace("<", "<\u200b") in text
    assert "<https://x.example.com>" in text


def test_source_lines_link_urls_and_name_local_files():
    web = Source(1, "On-call", "https://h.example.com/on-call?team=a&b|c", "", "c1", 0.5, section="Escalation")
    local = Source(2, "Expenses <2026>", "/srv/handbook/expenses.md", "", "c2", 0.5)
    assert source_line(web) == "1. <https://h.example.com/on-call?team=a&amp;b%7Cc|On-call> § Escalation"
    assert source_line(local) == "2. Expenses &lt;2026&gt; (`expenses.md`)"


def _answer(text: str, sources: list[Source] | None = None) -> Answer:
    return Answer(question="q", text=text, sources=sources or [], model="m", collection="c")


def test_the_answer_tail_has_sources_and_native_feedback_buttons_slack_accepts():
    sources = [Source(i, f"Doc {i}", f"https://h.example.com/{i}", "", f"c{i}", 0.5) for i in range(1, 6)]
    answer = _answer("Ledgerly [1].", sources)
    tail = answer_tail(answer, votes=True)
    assert blocks_error(tail) is None
    assert [b["type"] for b in tail] == ["divider", "section", "context_actions"]
    buttons = tail[-1]["elements"][0]
    assert buttons["type"] == "feedback_buttons"
    assert vote_of(buttons["positive_button"]["value"]) == (answer.id, 1)
    assert vote_of(buttons["negative_button"]["value"]) == (answer.id, -1)
    assert vote_of("sideways:" + answer.id) is None and vote_of("") is None
    assert answer_tail(_answer("I don't know."), votes=False) == []


def test_posted_answers_are_split_into_messages_slack_accepts():
    sources = [Source(i, f"Doc {i}", f"https://h.example.com/{i}", "", f"c{i}", 0.5) for i in range(1, 6)]
    answer = _answer(_long_text() * 20, sources)  # ~190,000 characters
    messages = markdown_messages(answer.text, answer_tail(answer, votes=True))
    assert len(messages) >= 16 and all(blocks_error(blocks) is None for _, blocks in messages)
    assert all(len(text) <= 150 for text, _ in messages)
    assert [b["type"] for b in messages[-1][1]][-1] == "context_actions"
    shown = "".join(b["text"] for _, blocks in messages for b in blocks if b["type"] == "markdown")
    assert "".join(shown.split()) == "".join(answer.text.split())


def test_a_full_length_answer_and_its_sources_fit_slack_s_limit_on_all_text():
    """Slack counts the text of all blocks together: 12,000 characters of answer and five sources
    with their buttons do not fit one message, and the end of the answer moves to the next."""
    sources = [Source(i, f"Expense policy part {i}", f"https://h.example.com/policies/expenses/{i}", "", f"c{i}", 0.5,
                      section="Claims and approvals") for i in range(1, 6)]
    answer = _answer(_long_text() * 20, sources)
    answer = _answer(answer.text[: MARKDOWN_LIMIT - 1].rstrip() + ".", sources)  # one message of markdown
    messages = markdown_messages(answer.text, answer_tail(answer, votes=True, handoff=True))
    assert len(messages) == 2 and all(blocks_error(blocks) is None for _, blocks in messages)
    shown = "".join(b["text"] for _, blocks in messages for b in blocks if b["type"] == "markdown")
    assert "".join(shown.split()) == "".join(answer.text.split())


def test_the_stand_in_refuses_what_slack_refuses():
    """The guard the tests rely on, fed what a careless bot would send."""
    ok = {"type": "markdown", "text": "fine"}
    assert blocks_error([ok]) is None
    assert blocks_error([ok] * 51) == "invalid_blocks"
    assert blocks_error([{"type": "markdown", "text": "x" * (MARKDOWN_LIMIT + 1)}]) == "invalid_blocks"
    assert blocks_error([{"type": "markdown", "text": "x" * 7000}] * 2) == "msg_blocks_too_long"
    assert blocks_error([{"type": "markdown", "text": "x" * 11_000},  # all text counts, not only markdown
                         {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 1500}}]) == "msg_blocks_too_long"
    assert blocks_error([{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]) == "invalid_blocks"
    assert blocks_error([{"type": "rich_text_section", "elements": []}]) == "invalid_blocks"
    assert blocks_error([{"type": "actions", "elements": [{"type": "feedback_buttons"}]}]) == "invalid_blocks"
    assert blocks_error([{"type": "divider", "block_id": "a"}, {"type": "divider", "block_id": "a"}]) == "invalid_blocks"


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
