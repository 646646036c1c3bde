"""HTML pages → Markdown-like text whose headings keep their anchors, for section-aware chunking.

Haystack's HTMLToDocument (trafilatura) finds the main text of a web page well, but it drops the
headings of generated manuals (DocBook, AsciiDoc: PostgreSQL's and git's pages lose "Description",
"Options", "Examples"), so a 20,000-word page became one sectionless run of words and no chunk could
be linked to the part of the page it came from. This converter walks the page itself: headings
become `#` lines carrying their anchor (`## Options {#_options}`, the Pandoc attribute syntax),
navigation and scripts are left out, code keeps its line breaks, table rows stay on one line.
"""

from __future__ import annotations

import re
from pathlib import Path

from haystack import Document, component
from haystack.components.converters.utils import get_bytestream_from_source
from haystack.dataclasses import ByteStream
from lxml import etree
from lxml import html as lxml_html

HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
# Never content: scripts, forms, and the navigation that surrounds every page of a site.
SKIP_TAGS = {"script", "style", "noscript", "nav", "footer", "aside", "form", "button", "select", "svg",
             "template", "iframe", "head", "title", "meta", "link"}
_SKIP_MARK = re.compile(r"(?:^|[\s_-])(?:navheader|navfooter|navbar|navigation|breadcrumbs?|sidebar|footer|"
                        r"skip-?link|toc|menu|headerlink)(?:$|[\s_-])", re.I)
BLOCKS = {"p", "div", "section", "article", "main", "header", "blockquote", "ul", "ol", "dl", "dt", "dd", "li",
          "table", "thead", "tbody", "tr", "figure", "figcaption", "hr", "br", "address", "details", "summary",
          "center", "body", "html"}
ANCHOR_ATTR = re.compile(r"\s*\{#[^}\s]*\}\s*$")


def strip_anchor(heading: str) -> tuple[str, str]:
    """'Options {#_options}' → ('Options', '_options'); a heading without one → (heading, '')."""
    match = ANCHOR_ATTR.search(heading)
    if not match:
        return heading.strip(), ""
    return heading[: match.start()].strip(), match.group(0).strip()[2:-1]


def _text(el) -> str:
    return " ".join(_visible(el).split())


def _visible(el) -> str:
    """The element's text without the parts that are never content (a heading's "¶" permalink)."""
    # A stack, not recursion (as in _Writer.walk): text in 1,500 nested spans is still text.
    parts, stack = [], [el]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            parts.append(item)
            continue
        parts.append(item.text or "")
        for child in reversed(item):
            stack.append(child.tail or "")
            if not _skipped(child):
                stack.append(child)
    return "".join(parts)


def _skipped(el) -> bool:
    if not isinstance(el.tag, str) or el.tag in SKIP_TAGS:
        return True
    if el.get("role") == "navigation" or el.get("hidden") is not None or el.get("aria-hidden") == "true":
        return True
    marks = f"{el.get('class') or ''} {el.get('id') or ''}"
    return bool(marks.strip()) and bool(_SKIP_MARK.search(marks))


def _anchor(heading) -> str:
    """The fragment that scrolls to a heading: its own id, a named anchor or permalink in it, or the
    id of the section element it opens (DocBook puts the id on `<div class="refsect1">`)."""
    if heading.get("id"):
        return heading.get("id")
    for a in heading.iter("a"):
        if a.get("id") or a.get("name"):
            return a.get("id") or a.get("name")
        if (a.get("href") or "").startswith("#") and len(a.get("href")) > 1:
            return a.get("href")[1:]  # a Sphinx/MkDocs permalink ("¶")
    parent = heading.getparent()
    if parent is not None and parent.get("id"):
        first = next((c for c in parent if isinstance(c.tag, str)), None)
        if first is heading:
            return parent.get("id")
    return ""


class _Writer:
    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.line: list[str] = []

    def inline(self, text: str | None) -> None:
        if text:
            self.line.append(text)

    def flush(self) -> None:
        text = " ".join("".join(self.line).split())
        if text:
            self.blocks.append(text)
        self.line = []

    def block(self, text: str) -> None:
        self.flush()
        if text.strip():
            self.blocks.append(text)

    def walk(self, top) -> None:
        # An explicit stack, not recursion: pages nested deeper than Python's recursion limit
        # (libxml2 reads up to 2,048 levels) are read whole too. (el, False) closes an element.
        stack = [(top, True)]
        while stack:
            el, opening = stack.pop()
            if not opening:
                if el.tag in BLOCKS:
                    self.flush()
                self.inline(el.tail)
                continue
            if _skipped(el):
                self.inline(el.tail)
                continue
            tag = el.tag
            if tag in HEADINGS:
                title = _text(el)
                anchor = _anchor(el)
                if title:
                    self.block("#" * HEADINGS[tag] + " " + title + (f" {{#{anchor}}}" if anchor else ""))
            elif tag == "pre":
                code = "".join(el.itertext()).strip("\n")
                if code.strip():
                    self.block(f"```\n{code.replace('```', '` ` `')}\n```")
            elif tag == "tr":
                cells = [_text(c) for c in el if isinstance(c.tag, str) and c.tag in ("td", "th")]
                self.block(" | ".join(c for c in cells if c))
            else:
                if tag in BLOCKS:
                    self.flush()
                if tag == "li":
                    self.inline("- ")
                self.inline(el.text)
                stack.append((el, False))
                stack.extend((child, True) for child in reversed(el))
                continue
            self.inline(el.tail)


def convert_html(data: bytes) -> tuple[str, dict[str, str]]:
    """(text, {"title", "url"}) of one HTML page; `url` is its canonical link, when it has one."""
    # huge_tree: by default libxml2 stops reading at depth 256, and all the text from there to the
    # end of the page was lost without a word. Past its hard limit (2,048) the page is refused.
    parser = lxml_html.HTMLParser(huge_tree=True)
    root = lxml_html.document_fromstring(data, parser=parser)
    cut = [e.message for e in parser.error_log if e.type_name == "ERR_RESOURCE_LIMIT" or "_PARSE_HUGE" in e.message]
    if cut:
        raise ValueError(f"cannot be read whole: {cut[0].split(' use ')[0].rstrip(',')}")
    title_el = root.find(".//title")
    canonical = next(
        (link.get("href", "") for link in root.iter("link") if "canonical" in (link.get("rel") or "").lower().split()),
        "",
    )
    body = root.find("body")
    writer = _Writer()
    writer.walk(body if body is not None else root)
    writer.flush()
    title = _text(title_el) if title_el is not None else ""
    if not title:
        first = root.find(".//h1")
        title = _text(first) if first is not None else ""
    # Only a web address is a link a colleague can open (Debian's copy of the Python docs names file:// pages).
    url = canonical.strip() if canonical.strip().startswith(("http://", "https://")) else ""
    return "\n\n".join(writer.blocks), {"title": title, "url": url}


@component
class HTMLSectionConverter:
    """Converts HTML files to Documents with `#` headings (with anchors), `title` and canonical `url` meta."""

    @component.output_types(documents=list[Document])
    def run(self, sources: list[str | Path | ByteStream]) -> dict[str, list[Document]]:
        documents = []
        for source in sources:
            stream = get_bytestream_from_source(source)
            try:
                text, meta = convert_html(stream.data)
            except (etree.ParserError, ValueError) as exc:
                raise ValueError(f"not readable as HTML: {exc}") from exc
            documents.append(Document(content=text, meta={"file_path": stream.meta.get("file_path", ""), **meta}))
        return {"documents": documents}
