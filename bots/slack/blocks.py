"""What teambot's Slack messages look like, within Slack's documented limits: the answer's
Markdown as Slack renders it (`markdown` blocks and streamed `markdown_text`; no conversion to
mrkdwn), the numbered sources and the native 👍/👎 `feedback_buttons` under it, "I need more
help" and "Share with the channel", the hand-off message that tags the experts, and the 👎 modal.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePath

from bots.formatting import split_text
from core.answer import Answer, Source

# Slack's limits: https://docs.slack.dev/reference/block-kit/blocks/markdown-block (12,000
# characters of markdown in one payload, all markdown blocks together; the same for a streaming
# call's markdown_text), section-block (3,000), and chat.postMessage (50 blocks).
MARKDOWN_LIMIT = 12_000
SECTION_TEXT_LIMIT = 3000
MAX_BLOCKS = 50
NOTIFICATION_CHARS = 150  # the plain `text` of a message with blocks: notifications and screen readers

FEEDBACK = "teambot_feedback"  # the feedback_buttons element; its values say which button and which answer
LEGACY_VOTE_UP, LEGACY_VOTE_DOWN = "teambot_vote_up", "teambot_vote_down"  # answers posted before feedback_buttons
FEEDBACK_MODAL = "teambot_feedback"
REASON_BLOCK, CORRECTION_BLOCK, INPUT_ACTION = "reason", "correction", "text"
_VOTE_VALUES = {"up": 1, "down": -1}
HANDOFF, RESOLVE, SHARE = "teambot_handoff", "teambot_resolve", "teambot_share"  # button action ids
WAITING = "⏳ Waiting for someone to help."


def escape(text: str) -> str:
    """Slack's three control characters in mrkdwn; also what stops text from pinging @channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_SPECIAL = re.compile(r"<([!@#^])")


def defuse_mentions(markdown: str) -> str:
    """The model's Markdown with Slack's mention syntax (<!channel>, <@U…>, <#C…>, <!subteam^…>)
    broken by a zero-width space: it reads the same and pings no one."""
    return _SPECIAL.sub("<\u200b\\1", markdown)


_MASS_MENTION = re.compile(r"<!(channel|here|everyone)(?:\|[^<>]*)?>", re.IGNORECASE)


def defuse_mass_mentions(value):
    """`value` (a payload: strings, lists, dicts) with every <!channel>, <!here> and <!everyone>
    shown as text: the bot never means to notify a whole channel, whatever it quotes."""
    if isinstance(value, str):
        return _MASS_MENTION.sub(lambda m: f"@\u200b{m.group(1)}", value)
    if isinstance(value, dict):
        return {k: defuse_mass_mentions(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [defuse_mass_mentions(v) for v in value]
    return value


def _link_target(escaped_url: str) -> str:
    """An escaped URL made safe inside <url|title>."""
    return escaped_url.replace("|", "%7C").replace(" ", "%20")


def source_line(source: Source) -> str:
    title = escape(source.title or PurePath(source.path).name or "document")
    section = f" § {escape(source.section)}" if source.section else ""
    if fresh := source.freshness():
        section += f" · _{fresh}_"
    if source.link.startswith(("http://", "https://")):
        return f"{source.number}. <{_link_target(escape(source.link))}|{title}>{section}"
    name = PurePath(source.path).name
    where = f" (`{escape(name)}`)" if name and name != source.title else ""
    return f"{source.number}. {title}{section}{where}"


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _feedback_button(label: str, vote: str, answer_id: str, accessible: str) -> dict:
    return {"text": {"type": "plain_text", "text": label}, "value": f"{vote}:{answer_id}",
            "accessibility_label": accessible}


def feedback_block(answer_id: str) -> dict:
    return {
        "type": "context_actions", "block_id": f"teambot_feedback_{answer_id}",
        "elements": [{
            "type": "feedback_buttons", "action_id": FEEDBACK,
            "positive_button": _feedback_button("👍", "up", answer_id, "Helpful answer"),
            "negative_button": _feedback_button("👎", "down", answer_id, "Not helpful"),
        }],
    }


def vote_of(value: str) -> tuple[str, int] | None:
    """(answer id, +1/-1) from a feedback button's value; None for a value teambot did not make."""
    vote, _, answer_id = (value or "").partition(":")
    return (answer_id, _VOTE_VALUES[vote]) if vote in _VOTE_VALUES and answer_id else None


def _button(action_id: str, label: str, value: str, *, style: str | None = None) -> dict:
    button = {"type": "button", "action_id": action_id, "text": {"type": "plain_text", "text": label}, "value": value}
    return {**button, "style": style} if style else button


def handoff_block(answer_id: str) -> dict:
    """ "I need more help": tags the channel's experts in the thread."""
    return {"type": "actions", "block_id": f"teambot_handoff_{answer_id}",
            "elements": [_button(HANDOFF, "🙋 I need more help", answer_id)]}


def share_block(answer_id: str) -> dict:
    return {"type": "actions", "block_id": f"teambot_share_{answer_id}",
            "elements": [_button(SHARE, "Share with the channel", answer_id, style="primary")]}


REVIEWED_MARK = "✅ *Reviewed answer*: a person checked this answer to a question like yours."


def answer_tail(answer: Answer, *, votes: bool, handoff: bool = False, share: bool = False) -> list[dict]:
    """The blocks under the answer's text: its sources, then 👍/👎 (when `votes`), "I need more
    help" (when `handoff`) and "Share with the channel" (when `share`, for a private answer)."""
    blocks: list[dict] = []
    if answer.reviewed_from:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": REVIEWED_MARK}]})
    if answer.sources:
        blocks += [{"type": "divider"}] + [_section(part) for part in split_text(sources_text(answer), SECTION_TEXT_LIMIT)]
    blocks = blocks[: MAX_BLOCKS - 4]  # room for the buttons and the markdown block when posted as a message
    if votes:
        blocks.append(feedback_block(answer.id))
    if handoff:
        blocks.append(handoff_block(answer.id))
    if share:
        blocks.append(share_block(answer.id))
    return blocks


def sources_text(answer: Answer) -> str:
    return "*Sources*\n" + "\n".join(source_line(s) for s in answer.sources) if answer.sources else ""


def handoff_message(answer: Answer, *, asker: str, users: tuple[str, ...], groups: tuple[str, ...],
                    handoff_id: int) -> tuple[str, list[dict]]:
    """(text, blocks) of the message that asks the experts in: it tags them (the `text` is what
    notifies them), quotes the question and lists the answer's sources."""
    tags = " ".join([f"<@{u}>" for u in users] + [f"<!subteam^{g}>" for g in groups])
    question = escape(" ".join(answer.question.split()))
    if len(question) > 500:
        question = question[:499] + "…"
    text = f"{tags} <@{asker}> needs more help with this question."
    body = f"{text}\n>{question}"
    if answer.sources:
        body += "\n" + sources_text(answer)
    body = body[: SECTION_TEXT_LIMIT - len(WAITING) - 2]
    return text, [
        _section(body),
        {"type": "context", "elements": [{"type": "mrkdwn", "text": WAITING}]},
        {"type": "actions", "block_id": f"teambot_resolve_{handoff_id}",
         "elements": [_button(RESOLVE, "✅ Mark resolved", str(handoff_id))]},
    ]


def resolved_blocks(blocks: list[dict], resolver: str) -> list[dict]:
    """The hand-off message's blocks once resolved: the waiting line says who resolved it, no button."""
    done = {"type": "context", "elements": [{"type": "mrkdwn", "text": f"✅ Resolved by <@{resolver}>."}]}
    return [done if b.get("type") == "context" else b for b in blocks if b.get("type") != "actions"]


def notification_text(markdown: str) -> str:
    """A message's plain `text`: the start of the answer on one line."""
    line = escape(" ".join(markdown.split()))
    if len(line) > NOTIFICATION_CHARS:
        line = re.sub(r"&[a-z]*$", "", line[: NOTIFICATION_CHARS - 1]) + "…"  # not in the middle of an &amp;
    return line or "(answer)"


def blocks_text(blocks) -> int:
    """Characters of text in blocks, all of it (markdown, sections, context, button labels):
    Slack refuses a message whose blocks hold more than MARKDOWN_LIMIT together."""
    if isinstance(blocks, list):
        return sum(blocks_text(b) for b in blocks)
    if not isinstance(blocks, dict):
        return 0
    return sum(len(v) if k == "text" and isinstance(v, str) else blocks_text(v) for k, v in blocks.items())


def markdown_messages(markdown: str, tail: list[dict]) -> list[tuple[str, list[dict]]]:
    """`markdown` as messages to post, each (text, blocks) within Slack's limits: the text in
    `markdown` blocks, one a message, `tail` on the last, each message's blocks holding at most
    MARKDOWN_LIMIT characters of text together."""
    # Whatever path the text took here (streamed, replaced, shared), no mention in it pings.
    pieces = split_text(defuse_mentions(markdown), MARKDOWN_LIMIT) or ["_(no answer)_"]
    room = MARKDOWN_LIMIT - blocks_text(tail)  # the last piece shares its message with the sources
    if len(pieces[-1]) > room:
        pieces[-1:] = split_text(pieces[-1], room)
    messages = [(notification_text(piece), [{"type": "markdown", "text": piece}]) for piece in pieces]
    text, blocks = messages[-1]
    messages[-1] = (text, blocks + tail)
    return messages


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
