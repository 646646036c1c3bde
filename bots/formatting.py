"""Platform-neutral pieces of chat replies: splitting long answers within a platform's size
limits without breaking a link or a code block, truncating with a note, and throttling the
edits of a message that shows an answer while it streams.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

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


def truncate(text: str, limit: int, note: str = "…") -> str:
    """`text` if it fits in `limit` characters, else its head (cut at a boundary) plus `note`."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return split_text(text, limit - len(note))[0] + note


class Throttle:
    """Lets an action through at most once per `interval` seconds; the first interval counts
    from creation (the placeholder message was just posted)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last = clock()

    def ready(self) -> bool:
        now = self._clock()
        if now - self._last < self.interval:
            return False
        self._last = now
        return True
