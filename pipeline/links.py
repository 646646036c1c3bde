"""Which links an answer may carry: a document must not be able to put a phishing link in the
bot's mouth ("log in at https://evil.example to see your payslip") or behind a source's title
(an HTML page's `<link rel=canonical href=https://evil.example/login>`).

A link is allowed when its host is the host of the `--url-base` a passage of the answer was
ingested under, or one the operator lists in TEAMBOT_LINK_HOSTS. Any other URL is shown as
inline code: readable, never rendered as a link by Slack, Discord or Teams.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from haystack import Document

# A URL with a scheme; trailing sentence punctuation is not part of it.
_URL = re.compile(r"(?:https?://|www\.)[^\s<>`|\"'\]\)\[(]+", re.IGNORECASE)
_TRAILING = ".,;:!?*_~"
# A Markdown link, whatever its target says: renderers unescape `https\://` and `&#58;` in it.
_MARKDOWN_LINK = re.compile(r"\[([^\]\n]*)\]\(\s*([^)\s]*)\s*\)")
# A target a renderer takes off-site: a scheme (any: `javascript:` too), `//host` or `www.`.
_LINK_TARGET = re.compile(r"\s*(?:[a-z][a-z0-9+.-]*:|//|www\.)", re.IGNORECASE)
# Code: fenced blocks (an open one runs to the end) and inline spans. URLs in code are not links.
_CODE = re.compile(r"(```[\s\S]*?(?:```|\Z)|`[^`\n]*`)")
# What may still grow into a link (or the link part of `[label](url)`) at the end of streamed text.
_OPEN_AT_END = re.compile(
    r"(?:\b(?:h|ht|htt|https?|https?:|https?:/|w|ww|www)$|(?:https?://|www\.)\S*$|\[[^\]\n]*$|\[[^\]\n]*\](?:\(\S*)?$)",
    re.IGNORECASE,
)
# Characters browsers and Python read differently in a URL (`https://evil\@good/` is evil's).
_AMBIGUOUS = re.compile(r"[\\@%&#;\s\x00-\x1f\x7f]|[^\x00-\x7f]")


def host(url: str) -> str:
    """The lower-case host of `url` ('' when it has none, or when it cannot be read the same way by
    every parser); `www.example.com/x` counts as a URL."""
    try:
        parts = urlsplit(url if "://" in url else f"https://{url}")
        if _AMBIGUOUS.search(parts.netloc):
            return ""
        return (parts.hostname or "").lower()
    except ValueError:
        return ""


class LinkPolicy:
    def __init__(self, hosts: Iterable[str] = ()) -> None:
        self.hosts = frozenset(h.strip().lower() for h in hosts if h and h.strip())

    @classmethod
    def for_documents(cls, documents: Iterable[Document], extra_hosts: Iterable[str] = ()) -> "LinkPolicy":
        """The hosts of the passages' `--url-base`s, and the operator's."""
        return cls([*(host(d.meta.get("url_base") or "") for d in documents), *extra_hosts])

    def allows(self, url: str) -> bool:
        return bool(url) and host(url) in self.hosts  # host() is '' for an authority parsers read differently

    def source_url(self, url: str) -> str:
        """A source's link if it may be shown as one; '' otherwise (the source keeps its title and path)."""
        return url if self.allows(url) else ""

    def render(self, text: str) -> str:
        """`text` with every link to a host not allowed shown as inline code instead. Code is left as
        it is (an open code block counts as code); a stray backtick becomes ' so that it cannot pair
        with the ones added here."""

        def markdown_link(match: re.Match) -> str:
            label, target = match.group(1), match.group(2)
            url = html.unescape(re.sub(r"\\(.)", r"\1", target))
            if not _LINK_TARGET.match(url):  # `[1](Annex)`, `[x](#part)`: nothing a renderer follows off-site
                return match.group(0)
            return match.group(0) if self.allows(url) else f"{label} (`{target}`)"

        def bare(match: re.Match) -> str:
            url = match.group(0).rstrip(_TRAILING)
            return match.group(0) if self.allows(url) else f"`{url}`{match.group(0)[len(url):]}"

        def outside_code(piece: str, replace) -> str:
            return "".join(p if _CODE.fullmatch(p) else replace(p) for p in _CODE.split(piece))

        def prose(piece: str) -> str:
            linked = _MARKDOWN_LINK.sub(markdown_link, piece.replace("`", "'"))
            return outside_code(linked, lambda rest: _URL.sub(bare, rest))

        return outside_code(text, prose)

    @staticmethod
    def settled_length(text: str) -> int:
        """How much of streamed `text` (as the model wrote it) can be rendered and shown now: a link
        (or `[label](`) still growing at its end, or an inline code span not closed yet, is held
        back until it is whole, since it may be shown differently then."""
        match = _OPEN_AT_END.search(text)
        end = match.start() if match else len(text)
        # An inline code span still open on the last line: what follows its backtick may yet become
        # code (a span never crosses a line, so a stray backtick on an earlier line holds nothing).
        prose = _CODE.sub(lambda m: "x" * len(m.group(0)), text)
        tick = prose.find("`", prose.rfind("\n") + 1)
        return min(end, tick) if tick >= 0 else end
