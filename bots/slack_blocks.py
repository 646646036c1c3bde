"""What teambot's Slack messages look like: Slack mrkdwn from the model's Markdown, the Block Kit
answer (text, numbered sources, 👍/👎 buttons) within Slack's size limits, and the 👎 modal.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePath

from bots.formatting import split_text, truncate
from core.answer import Answer, Source

# Slack's limits (https://docs.slack.dev/reference/block-kit/blocks/section-block and
# chat.postMessage): longer content is rejected with invalid_blocks / msg_too_long.
SECTION_TEXT_LIMIT = 3000
MAX_BLOCKS = 50
MESSAGE_TEXT_LIMIT = 40_000

PLACEHOLDER = "Looking that up…"
STREAMING_MARK = " …"
TRUNCATED_NOTE = "\n\n_(The answer was cut here: it is too long for one Slack message.)_"

VOTE_UP = "teambot_vote_up"
VOTE_DOWN = "teambot_vote_down"
FEEDBACK_MODAL = "teambot_feedback"
REASON_BLOCK, CORRECTION_BLOCK, INPUT_ACTION = "reason", "correction", "text"


def escape(text: str) -> str:
    """Slack's three control characters; also what stops model output from pinging @channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link_target(escaped_url: str) -> str:
    """An escaped URL made safe inside <url|title>."""
    return escaped_url.replace("|", "%7C").replace(" ", "%20")


_MD_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_MD_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
_MD_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.MULTILINE)
_MD_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.MULTILINE)


def _prose_to_mrkdwn(text: str) -> str:
    text = escape(text)
    text = _MD_LINK.sub(lambda m: f"<{_link_target(m.group(2))}|{m.group(1)}>", text)
    text = _MD_BOLD.sub(lambda m: f"*{m.group(1) or m.group(2)}*", text)
    text = _MD_HEADING.sub(r"*\1*", text)
    return _MD_BULLET.sub(r"\1• ", text)


def to_mrkdwn(markdown: str) -> str:
    """The model's Markdown as Slack mrkdwn; code blocks are only escaped."""
    parts = markdown.split("```")
    return "```".join(
        _prose_to_mrkdwn(part) if i % 2 == 0 else escape(part) for i, part in enumerate(parts)
    ).strip()


def source_line(source: Source) -> str:
    title = escape(source.title or PurePath(source.path).name or "document")
    section = f" § {escape(source.section)}" if source.section else ""
    if source.link.startswith(("http://", "https://")):
        return f"{source.number}. <{_link_target(escape(source.link))}|{title}>{section}"
    name = PurePath(source.path).name
    where = f" (`{escape(name)}`)" if name and name != source.title else ""
    return f"{source.number}. {title}{section}{where}"


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _button(label: str, action_id: str, answer_id: str) -> dict:
    return {
        "type": "button", "action_id": action_id, "value": answer_id,
        "text": {"type": "plain_text", "text": label, "emoji": True},
    }


def answer_message(answer: Answer, *, votes: bool = True) -> tuple[str, list[dict]]:
    """The final message: fallback text and blocks (answer sections, sources, vote buttons)."""
    body = to_mrkdwn(answer.text) or "_(no answer)_"
    sections = split_text(body, SECTION_TEXT_LIMIT)
    tail: list[dict] = []
    if answer.sources:
        sources = "*Sources*\n" + "\n".join(source_line(s) for s in answer.sources)
        tail += [{"type": "divider"}] + [_section(part) for part in split_text(sources, SECTION_TEXT_LIMIT)]
    if votes:
        tail.append({
            "type": "actions", "block_id": "teambot_vote",
            "elements": [_button("👍 Helpful", VOTE_UP, answer.id), _button("👎 Not helpful", VOTE_DOWN, answer.id)],
        })
    room = MAX_BLOCKS - len(tail)
    if len(sections) > room:
        sections = sections[:room]
        sections[-1] = truncate(sections[-1], SECTION_TEXT_LIMIT - len(TRUNCATED_NOTE), "") + TRUNCATED_NOTE
    return truncate(body, MESSAGE_TEXT_LIMIT, TRUNCATED_NOTE), [_section(s) for s in sections] + tail


def streaming_text(partial_answer: str) -> str:
    """The placeholder's text while the answer streams in."""
    return truncate(to_mrkdwn(partial_answer), MESSAGE_TEXT_LIMIT - len(STREAMING_MARK), "") + STREAMING_MARK


def _text_input(block_id: str, label: str, placeholder: str) -> dict:
    return {
        "type": "input", "block_id": block_id, "optional": True,
        "label": {"type": "plain_text", "text": label},
        "element": {
            "type": "plain_text_input", "action_id": INPUT_ACTION, "multiline": True, "max_length": 3000,
            "placeholder": {"type": "plain_text", "text": placeholder},
        },
    }


def feedback_modal(answer_id: str, channel: str, thread: str | None) -> dict:
    """The 👎 follow-up: both fields optional (the vote is already stored)."""
    return {
        "type": "modal", "callback_id": FEEDBACK_MODAL,
        "title": {"type": "plain_text", "text": "What went wrong?"},
        "submit": {"type": "plain_text", "text": "Send"},
        "close": {"type": "plain_text", "text": "Skip"},
        "private_metadata": json.dumps({"answer": answer_id, "channel": channel, "thread": thread}),
        "blocks": [
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": "Your 👎 is recorded. Telling us more helps improve the answers."}
            ]},
            _text_input(REASON_BLOCK, "What was wrong with the answer?", "Wrong, outdated, missing something…"),
            _text_input(CORRECTION_BLOCK, "What would a better answer be?", "The answer you expected"),
        ],
    }


def feedback_from_view(view: dict) -> tuple[dict, str | None, str | None]:
    """(private metadata, reason, correction) of a submitted feedback modal."""
    values = view.get("state", {}).get("values", {})

    def field(block: str) -> str | None:
        return (values.get(block, {}).get(INPUT_ACTION, {}).get("value") or "").strip() or None

    return json.loads(view.get("private_metadata") or "{}"), field(REASON_BLOCK), field(CORRECTION_BLOCK)
