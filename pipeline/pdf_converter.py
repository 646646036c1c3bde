"""PDF files → text, page by page, within limits on pages, characters and seconds.

Haystack's PyPDFToDocument extracts every page whole, however long it takes: a 61 KB PDF whose
pages draw one Form XObject thousands of times expanded to 19 M characters in 16 s, and a bigger
one would hold up ingest for as long as it likes. This converter extracts the same text (pypdf's
plain mode, pages joined by form feeds, which the splitter counts as page breaks) and stops at the
first limit: it keeps the pages read before it and says what it left out in the `cut_short` meta,
so a long manual is still searchable up to the limit and a text bomb costs seconds. A file with no
page within the limits is refused with the reason (ValueError).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from haystack import Document, component
from haystack.components.converters.utils import get_bytestream_from_source
from haystack.dataclasses import ByteStream

CUT_SHORT = "cut_short"  # meta: why part of the file was left out; "" when it is whole


class _Stop(BaseException):
    """Raised from pypdf's callbacks at a limit. Not an Exception: pypdf catches those around each
    Form XObject and goes on with the next one, which would let a bomb run on."""


@component
class PDFTextConverter:
    """Converts PDF files to Documents of their pages' text, within the limits given."""

    def __init__(self, max_pages: int = 2000, max_chars: int = 2_000_000, timeout: float = 60.0) -> None:
        self.max_pages, self.max_chars, self.timeout = max_pages, max_chars, timeout

    @component.output_types(documents=list[Document])
    def run(self, sources: list[str | Path | ByteStream]) -> dict[str, list[Document]]:
        documents = []
        for source in sources:
            stream = get_bytestream_from_source(source)
            text, cut_short = self._extract(stream.data)
            documents.append(Document(content=text, meta={"file_path": stream.meta.get("file_path", ""),
                                                          CUT_SHORT: cut_short}))
        return {"documents": documents}

    def _extract(self, data: bytes) -> tuple[str, str]:
        from pypdf import PdfReader

        deadline = time.monotonic() + self.timeout
        too_long = f"its text passes {self.max_chars:,} characters (TEAMBOT_PDF_MAX_CHARS)"
        pages: list[str] = []
        kept = page_chars = 0

        # Called for every content operator and piece of text, Form XObjects included: the limits
        # hold within a page, where one page can be the whole bomb.
        def on_operator(*_) -> None:
            if time.monotonic() > deadline:
                raise _Stop(f"extraction stopped after {self.timeout:g} s (TEAMBOT_PDF_TIMEOUT)")

        def on_text(text: str, *_) -> None:
            nonlocal page_chars
            page_chars += len(text)
            if kept + page_chars > self.max_chars:
                raise _Stop(too_long)

        try:
            reader = PdfReader(io.BytesIO(data))
            total = len(reader.pages)
            stopped = f"the limit is {self.max_pages:,} pages (TEAMBOT_PDF_MAX_PAGES)" if total > self.max_pages else ""
            for page in reader.pages[: self.max_pages]:
                page_chars = 0
                pages.append(page.extract_text(visitor_operand_before=on_operator, visitor_text=on_text))
                kept += len(pages[-1])
        except _Stop as stop:
            stopped = str(stop)
        except Exception as exc:  # noqa: BLE001 - pypdf raises many kinds: encrypted, broken xref, bad streams
            raise ValueError(f"not readable as PDF: {exc}") from exc
        if stopped and not pages:
            raise ValueError(f"no page within the limits: {stopped}")
        text = "\f".join(pages)
        if len(text) > self.max_chars:  # the pieces pypdf reports can fall short of the text it returns
            text, stopped = text[: self.max_chars], too_long
        return text, f"indexed {len(pages):,} of {total:,} pages: {stopped}" if stopped else ""
