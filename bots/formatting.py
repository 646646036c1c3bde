"""Platform-neutral pieces of chat replies: splitting long answers within a platform's size
limits without breaking a link or a code block, whether the whole text is known (`split_text`)
or it is still streaming into a message that is filling up (`fill`).
"""

from __future__ import annotations

import re

# Runs of text a split must not fall inside: markdown links, <…> links (Slack's <url|title>,
# Discord's <url>), bare URLs and the code fence marker itself.
_ATOM = re.compile(r"\[[^\]\n]*\]\([^)\s]*\)|<[^<>\n]*>|https?://[^\s<>]+|```")
# Preferred boundaries, best first, with how many of their characters stay with the first piece.
_BOUNDARIES = (("\n\n", 0), ("\n", 0), (". ", 1), (" ", 0))
FENCE = "```"
_CLOSE_FENCE = "\n" + FENCE
MIN_LIMIT = 16


def _atoms(text: str, stop: int) -> list[tuple[int, int]]:
    spans = []
    for match in _ATOM.finditer(text):
        if match.start() > stop:
            break
        spans.append(match.span())
    return spans


def _inside(pos: int, spans: list[tuple[int, int]]) -> bool:
    return any(start < pos < end for start, end in spans)


def _cut(text: str, limit: int) -> tuple[int, int]:
    """Where the first piece ends and the rest starts, for a piece of at most `limit` chars."""
    spans = _atoms(text, limit)
    # A boundary in the last two thirds of the window is preferred to a better kind of boundary
    # that would leave a tiny piece; only then is any boundary taken.
    for floor in (limit // 3, 1):
        for sep, kept in _BOUNDARIES:
            end = limit - kept + len(sep)
            while (i := text.rfind(sep, 0, end)) >= floor:
                if not _inside(i, spans) and not _inside(i + kept, spans):
                    return i + kept, i + len(sep)
                end = i + len(sep) - 1
    for start, end in spans:  # no boundary at all: cut before the link the limit falls inside
        if start < limit < end and start > 0:
            return start, start
    return limit, limit


def split_text(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, split at paragraph, then line, then sentence, then
    word boundaries. A link is only cut when it alone is longer than `limit`; a code block cut
    in two is closed at the end of one piece and reopened in the next."""
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT}, got {limit}")
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        end, start = _cut(rest, limit)
        reopen = rest[:end].count(FENCE) % 2 == 1
        if reopen:  # leave room to close the open code block
            end, start = _cut(rest, limit - len(_CLOSE_FENCE))
            reopen = rest[:end].count(FENCE) % 2 == 1
        piece, rest = rest[:end].rstrip(), rest[start:].lstrip("\n")
        if reopen:
            piece, rest = piece + _CLOSE_FENCE, FENCE + "\n" + rest
        if piece.strip():
            pieces.append(piece)
    if rest.strip():
        pieces.append(rest)
    return pieces


def fill(sent: str, text: str, room: int) -> tuple[str, str]:
    """(head, rest): the head of `text` that still fits in a message that already holds `sent`
    and has `room` characters left, cut at the best boundary; the rest starts the next message.
    A code block open at the cut is closed at the end of the head and reopened in the rest."""
    if len(text) <= room:
        return text, ""
    if room - len(_CLOSE_FENCE) < MIN_LIMIT:
        head, rest = "", text
    else:
        end, start = _cut(text, room - len(_CLOSE_FENCE))
        head, rest = text[:end].rstrip(), text[start:].lstrip("\n")
        if not rest:  # only line breaks were left over: they begin the next message, so that the
            rest = text[len(head):]  # words streamed after them are not run into this one's last line
    if (sent + head).count(FENCE) % 2 == 1:
        head, rest = head + _CLOSE_FENCE, FENCE + "\n" + rest
    return head, rest
