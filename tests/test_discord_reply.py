"""How answers look on Discord: sources, splitting within 2,000 characters, reactions as votes."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from bots.discord.feedback import VoteButton, vote_for_emoji, vote_view
from bots.discord.reply import MESSAGE_LIMIT, answer_chunks, render_answer, stream_preview
from bots.formatting import split_text
from core.answer import Answer, Source
from teambot.cli import app

MASKED_LINK = re.compile(r"\[[^\]\n]+\]\(<https?://[^>\s]+>\)")


def _source(n: int, **kw) -> Source:
    defaults = dict(
        title=f"Doc {n}", path=f"/srv/docs/doc{n}.md", snippet="…", chunk_id=f"c{n}", score=0.8,
    )
    return Source(number=n, **(defaults | kw))


def _answer(text: str, sources: list[Source]) -> Answer:
    return Answer(question="q?", text=text, sources=sources, model="teambot-dev", collection="Docs")


def test_sources_are_numbered_markdown_links_or_file_names():
    answer = _answer(
        "Claims go in Ledgerly [1], deploys follow the checklist [2].",
        [
            _source(1, title="Expenses [policy]", url="https://wiki.example.com/expenses policy", section="Claims"),
            _source(2, title="Deploys", path="/srv/handbook/deploys.html"),
        ],
    )
    text = render_answer(answer)
    lines = text.splitlines()
    assert lines[0] == "Claims go in Ledgerly [1], deploys follow the checklist [2]."
    assert "**Sources**" in lines
    # The brackets in the title cannot end the link text; the space in the URL is encoded;
    # <…> keeps Discord from unfurling a preview.
    assert "**[1]** [Expenses (policy)](<https://wiki.example.com/expenses%20policy>) § Claims" in lines
    # No URL: the title and the file name, never the server's full path.
    assert "**[2]** Deploys (`deploys.html`)" in lines
    assert "/srv/handbook" not in text


def test_split_keeps_every_piece_within_discords_limit_and_never_cuts_a_link():
    link = "[Expense policy](<https://wiki.example.com/finance/expenses/claims-and-receipts>)"
    paragraph = ("Claims go in Ledgerly within 30 days, with receipts attached. " * 6 + link + " ") * 3
    text = "\n\n".join([paragraph] * 8)  # about 12,000 characters
    pieces = split_text(text, MESSAGE_LIMIT)

    assert len(pieces) > 5
    assert all(len(p) <= MESSAGE_LIMIT for p in pieces)
    # Every link survives whole, in exactly one piece.
    assert sum(len(MASKED_LINK.findall(p)) for p in pieces) == len(MASKED_LINK.findall(text)) == 24
    assert all(p.count("[Expense policy]") == len(MASKED_LINK.findall(p)) for p in pieces)
    # Nothing lost but the whitespace at the cuts.
    assert "".join(pieces).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")


def test_long_answer_is_split_into_messages_with_every_source_link_intact():
    sources = [_source(n, url=f"https://wiki.example.com/page-{n}") for n in range(1, 9)]
    answer = _answer("A long explanation. " * 180, sources)  # 3,600 characters of text
    chunks = answer_chunks(answer, prefix="> q?\n")

    assert len(chunks) >= 2
    assert all(len(c) <= MESSAGE_LIMIT for c in chunks)
    assert chunks[0].startswith("> q?")
    assert "**Sources**" in chunks[-1]
    assert sum(len(MASKED_LINK.findall(c)) for c in chunks) == 8


def test_stream_preview_shows_a_cursor_and_stops_growing_past_the_limit():
    assert stream_preview("  ") is None
    assert stream_preview("Claims go in") == "Claims go in ▌"
    assert stream_preview("x" * (MESSAGE_LIMIT - 2)) is not None
    assert stream_preview("x" * MESSAGE_LIMIT) is None


def test_vote_buttons_carry_the_answer_id_and_persist():
    view = vote_view("3f2a9c")
    assert view.timeout is None and view.is_persistent()
    ids = [item.custom_id for item in view.children]
    assert ids == ["teambot:vote:up:3f2a9c", "teambot:vote:down:3f2a9c"]
    assert all(VoteButton.__discord_ui_compiled_template__.fullmatch(i) for i in ids)


def test_thumb_reactions_of_any_skin_tone_are_votes_and_nothing_else_is():
    assert vote_for_emoji("👍") == 1
    assert vote_for_emoji("👍🏽") == 1
    assert vote_for_emoji("👎🏿") == -1
    assert vote_for_emoji("🎉") is None
    assert vote_for_emoji(None) is None


def test_discord_verb_without_a_token_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("TEAMBOT_DISCORD_TOKEN", raising=False)
    monkeypatch.setenv("TEAMBOT_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["discord"])
    assert result.exit_code == 2
    assert "TEAMBOT_DISCORD_TOKEN" in result.output
