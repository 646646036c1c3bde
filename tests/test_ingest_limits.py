"""Ingest reads only what lies in the tree it was given, and only so much of it.

A symlink out of the tree (`passwd.txt → /etc/passwd`, `notes.md → data_dir/review_secret`, a
folder leading elsewhere), or a file swapped for one while ingest runs, is skipped with a reason,
never read. A PDF whose few KB expand to millions of characters stops at the limits on pages,
characters and seconds, keeping the text read before them; HTML nested past libxml2's depth limit
is read whole or skipped with a reason, never cut short in silence.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from haystack.dataclasses import ByteStream
from pypdf import PdfWriter
from pypdf.generic import ArrayObject, DecodedStreamObject, DictionaryObject, NameObject, NumberObject

from pipeline.html_converter import convert_html
from pipeline.indexing import IngestReport, SourceFile, _read, collect_files
from pipeline.pdf_converter import CUT_SHORT, PDFTextConverter
from tests.conftest import drop_collection, unique_collection
from tests.doc_trees import chunks_by_source

SECRET = "SECRETKEY-7f3a9c"


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """docs/ with a file, links that stay inside it, and links out of it to a secret and a folder."""
    secret = tmp_path / "data" / "review_secret"
    secret.parent.mkdir()
    secret.write_text(f"{SECRET} signs the review page's cookies.\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "leak.md").write_text("# Leak\n\nOUTSIDETEXT from a folder beside the docs.\n")
    docs = tmp_path / "docs"
    (docs / "guide").mkdir(parents=True)
    (docs / "guide" / "intro.md").write_text("# Intro\n\nWelcome to the team handbook, new colleague.\n")
    (docs / "index.md").symlink_to("guide/intro.md")  # stays inside: indexed
    (docs / "again").symlink_to("guide", target_is_directory=True)  # inside: its files are listed where they lie
    (docs / "passwd.txt").symlink_to("/etc/passwd")
    (docs / "notes.md").symlink_to(secret)
    (docs / "shared").symlink_to(elsewhere, target_is_directory=True)
    return docs, secret


def test_symlinks_leading_out_of_the_tree_are_skipped_with_a_reason(tmp_path):
    docs, _ = _tree(tmp_path)
    report = IngestReport("Docs")
    files, roots = collect_files([docs], report)
    assert [f.path.relative_to(docs).as_posix() for f in files] == ["guide/intro.md", "index.md"]
    skipped = {Path(s.path).name: s.reason for s in report.skipped}
    assert set(skipped) == {"passwd.txt", "notes.md", "shared"}, skipped
    assert all("outside" in reason for reason in skipped.values()), skipped
    assert report.files_seen == 2

    # A folder or file named through a symlink is the user's choice: it is resolved, then held to.
    (tmp_path / "docs-link").symlink_to(docs, target_is_directory=True)
    (tmp_path / "intro-link.md").symlink_to(docs / "guide" / "intro.md")
    files, roots = collect_files([tmp_path / "docs-link", tmp_path / "intro-link.md"], IngestReport("Docs"))
    assert roots == [docs] and [f.path for f in files] == [docs / "guide/intro.md", docs / "index.md"]


def test_a_file_swapped_for_a_symlink_after_listing_is_not_read(tmp_path):
    docs, secret = _tree(tmp_path)
    intro = SourceFile(docs / "guide" / "intro.md", docs)
    assert _read(intro).startswith(b"# Intro")
    intro.path.unlink()
    intro.path.symlink_to(secret)
    with pytest.raises(ValueError, match="outside"):
        _read(intro)
    # A file named on its own is its own root: swapped, it is not read either.
    alone = docs / "alone.md"
    alone.write_text("# Alone\n\nA page named on the command line.\n")
    assert _read(SourceFile(alone, alone)).startswith(b"# Alone")
    alone.unlink()
    alone.symlink_to(secret)
    with pytest.raises(ValueError, match="outside"):
        _read(SourceFile(alone, alone))


def test_ingest_indexes_no_text_from_outside_the_tree(weaviate, tmp_path):
    from pipeline.indexing import Indexer

    docs, secret = _tree(tmp_path)
    (docs / "swapped.md").write_text("# Swapped\n\nHARMLESSTEXT about the coffee machine.\n")
    (docs / "manual.pdf").write_bytes(_pdf([_page_text(n) for n in range(1, 6)]))

    def swap(step):  # between listing and reading, the file becomes a link to the secret
        if step.path.endswith("swapped.md") and not os.path.islink(step.path):
            os.unlink(step.path)
            os.symlink(secret, step.path)

    collection = unique_collection("Limits")
    try:
        report = Indexer(weaviate.model_copy(update={"pdf_max_pages": 3}), collection).ingest([docs], on_progress=swap)
        text = " ".join(c["content"] for chunks in chunks_by_source(weaviate, collection).values() for c in chunks)
        assert "Welcome to the team handbook" in text
        for leaked in (SECRET, "root:x:0", "OUTSIDETEXT", "HARMLESSTEXT"):
            assert leaked not in text
        skipped = {Path(s.path).name: s.reason for s in report.skipped}
        assert set(skipped) == {"passwd.txt", "notes.md", "shared", "swapped.md"}, skipped
        assert all("outside" in reason for reason in skipped.values()), skipped
        # A long PDF is indexed up to the page limit, and the report says it was cut short.
        assert "pagemark3" in text and "pagemark4" not in text
        assert [(Path(c.path).name, "3 of 5 pages" in c.reason) for c in report.cut_short] == [("manual.pdf", True)]
        assert "manual.pdf" in report.summary()
    finally:
        drop_collection(weaviate, collection)


# ---------------------------------------------------------------------- PDF


def _pdf(pages: list[bytes], form: bytes = b"") -> bytes:
    """A PDF of these page content streams, with Helvetica as /F1 and `form` as Form XObject /X."""
    writer = PdfWriter()
    font = writer._add_object(DictionaryObject({
        NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
        NameObject("/BaseFont"): NameObject("/Helvetica"),
    }))
    fonts = DictionaryObject({NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})
    xform = DecodedStreamObject()
    xform.set_data(form)
    xform.update({
        NameObject("/Type"): NameObject("/XObject"), NameObject("/Subtype"): NameObject("/Form"),
        NameObject("/BBox"): ArrayObject([NumberObject(0), NumberObject(0), NumberObject(600), NumberObject(600)]),
        NameObject("/Resources"): fonts,
    })
    xform_ref = writer._add_object(xform.flate_encode())
    for content in pages:
        page = writer.add_blank_page(600, 600)
        page[NameObject("/Resources")] = DictionaryObject({
            **fonts, NameObject("/XObject"): DictionaryObject({NameObject("/X"): xform_ref}),
        })
        stream = DecodedStreamObject()
        stream.set_data(content)
        page[NameObject("/Contents")] = writer._add_object(stream.flate_encode())
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _page_text(n: int) -> bytes:
    return b"BT /F1 12 Tf 72 700 Td (Page %d of the manual explains step %d: pagemark%d) Tj ET" % (n, n, n)


# Under 1 KB: one page draws a form of ten lines 5,000 times, 1.9 M characters (20 s for pypdf).
BOMB = _pdf([b"/X Do\n" * 5000], form=b"BT /F1 10 Tf " + b"(All work and no play makes a dull bomb) Tj T* " * 10 + b"ET")


def test_a_pdf_bomb_is_stopped_by_the_limits_on_seconds_and_characters():
    assert len(BOMB) < 2000
    for limits, says in [({"timeout": 1.0}, "TEAMBOT_PDF_TIMEOUT"), ({"max_chars": 50_000}, "TEAMBOT_PDF_MAX_CHARS")]:
        started = time.monotonic()
        with pytest.raises(ValueError, match=says):  # no page within the limits: nothing to keep
            PDFTextConverter(**limits).run(sources=[ByteStream(BOMB)])
        assert time.monotonic() - started < 4, limits


def test_a_long_pdf_keeps_its_text_up_to_the_limits_and_says_so():
    from haystack.components.converters import PyPDFToDocument

    data = _pdf([_page_text(n) for n in range(1, 7)])
    whole = PDFTextConverter().run(sources=[ByteStream(data)])["documents"][0]
    # Within the limits: the text Haystack's PyPDFToDocument extracts, pages apart by form feeds.
    assert whole.content == PyPDFToDocument().run(sources=[ByteStream(data)])["documents"][0].content
    assert whole.content.count("\f") == 5 and not whole.meta.get(CUT_SHORT)

    doc = PDFTextConverter(max_pages=4).run(sources=[ByteStream(data)])["documents"][0]
    assert "pagemark4" in doc.content and "pagemark5" not in doc.content
    assert "4 of 6 pages" in doc.meta[CUT_SHORT] and "TEAMBOT_PDF_MAX_PAGES" in doc.meta[CUT_SHORT]

    page = len(whole.content.split("\f")[0])
    doc = PDFTextConverter(max_chars=int(page * 2.5)).run(sources=[ByteStream(data)])["documents"][0]
    assert "pagemark2" in doc.content and "pagemark3" not in doc.content
    assert "2 of 6 pages" in doc.meta[CUT_SHORT] and "TEAMBOT_PDF_MAX_CHARS" in doc.meta[CUT_SHORT]


# ---------------------------------------------------------------------- HTML


def _nested(depth: int, inner: str = "DEEPTEXT") -> bytes:
    return (f"<html><body><p>BEFORETEXT</p>{'<div>' * depth}{inner}{'</div>' * depth}<p>AFTERTEXT</p>"
            "</body></html>").encode()


def test_html_nested_past_the_parsers_depth_limit_is_read_whole_or_skipped():
    for depth in (255, 400, 1500):  # libxml2 stopped reading at 256 and the text after was lost too
        text, _ = convert_html(_nested(depth))
        assert ["BEFORETEXT", "DEEPTEXT", "AFTERTEXT"] == [w for w in text.split() if w.endswith("TEXT")], depth
    heading = f"<h2 id='deep'>{'<span>' * 1500}Deep heading{'</span>' * 1500}</h2>"
    assert "## Deep heading {#deep}" in convert_html(_nested(10, heading))[0]
    with pytest.raises(ValueError, match="depth"):  # past libxml2's hard limit (2,048): skipped, with the reason
        convert_html(_nested(3000))
