"""What the export routes share: a zip a tool exported (Confluence's HTML, Notion's Markdown) read in
place, never extracted (no member can write anywhere); a route that splits large exports into parts
(Notion) has its top-level `.zip` entries read as parts (a zip attached to a page is not one); each
entry versioned by its CRC-32 and size so a newer export re-embeds only what changed; an entry that
is oversized, encrypted or damaged is reported and left as it was.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from pipeline.indexing import MAX_FILE_BYTES, RemoteDocument
from pipeline.sources.engine import Fetched, Listing, SourceError

_MIB = 1024 * 1024
MAX_PART_BYTES = 16 * 1024 * _MIB  # a part is copied out of the export to be read: at most this much
_DAMAGED = (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError, OSError)


class ExportConnector:
    """A connector over an export's entries; a route says which entries it takes (`kind_of`), the
    key each is known by (`key_of`, so a renamed page is one page), its text (`content`) and link."""

    parts = False  # the export may come as zips of parts inside the zip

    def __init__(self, source) -> None:
        self.source = source

    def close(self) -> None:
        pass

    def kind_of(self, name: str) -> str | None:
        raise NotImplementedError

    def key_of(self, name: str) -> str:
        return f"file:{name}"

    def content(self, name: str, kind: str, data: bytes) -> bytes:
        return data

    def link(self, name: str) -> str:
        return ""

    def documents(self, known: dict, listing: Listing) -> Iterator[Fetched]:
        with contextlib.ExitStack() as stack:
            entries = list(_entries(self.source.path, stack, self.parts))
            listing.total = len(entries)
            for archive, member in entries:
                name = member.filename
                kind = self.kind_of(name)
                if kind is None or not self.source.wants(name):
                    continue
                key = self.key_of(name)
                if key in listing.present:
                    listing.errors.append(f"{name}: a second entry for {key}; the first is kept")
                    continue
                listing.present.add(key)
                version = f"{member.CRC:08x}:{member.file_size}"
                if (before := known.get(key)) is not None and before.version == version:
                    continue
                if member.flag_bits & 0x1:
                    listing.errors.append(f"{name}: encrypted")
                    continue
                if member.file_size > MAX_FILE_BYTES:
                    listing.errors.append(f"{name}: larger than {MAX_FILE_BYTES // _MIB} MiB")
                    continue
                try:
                    with archive.open(member) as stream:
                        data = stream.read(MAX_FILE_BYTES + 1)
                except _DAMAGED as exc:
                    listing.errors.append(f"{name}: cannot be read from the export ({exc})")
                    continue
                if len(data) > MAX_FILE_BYTES:  # the directory lied about the size
                    listing.errors.append(f"{name}: larger than {MAX_FILE_BYTES // _MIB} MiB")
                    continue
                when = _when(member)
                document = RemoteDocument(
                    source=f"{self.source.path}#{name}", data=self.content(name, kind, data), kind=kind,
                    url=self.link(name), root=f"sync:{self.source.name}", updated=when.isoformat(),
                    url_base=getattr(self.source, "base_url", ""), name=name,
                )
                yield Fetched(key, document, when, version=version)


def _entries(path: Path, stack: contextlib.ExitStack,
             parts: bool) -> Iterator[tuple[zipfile.ZipFile, zipfile.ZipInfo]]:
    archive = _open(path, stack, str(path))
    for member in archive.infolist():
        if member.is_dir():
            continue
        if parts and "/" not in member.filename and member.filename.lower().endswith(".zip"):
            inner = _part(archive, member, stack, path)
            yield from ((inner, m) for m in inner.infolist() if not m.is_dir())
        else:
            yield archive, member


def _part(archive: zipfile.ZipFile, member: zipfile.ZipInfo, stack: contextlib.ExitStack,
          path: Path) -> zipfile.ZipFile:
    """A part, copied to a temporary file: reading a zip inside a compressed entry in place would
    decompress it again for every one of its entries."""
    shown = f"{path}#{member.filename}"
    if member.file_size > MAX_PART_BYTES:
        raise SourceError(f"the export's part {shown} is larger than {MAX_PART_BYTES // _MIB} MiB")
    copy = stack.enter_context(tempfile.TemporaryFile(prefix="teambot-export-"))
    try:
        with archive.open(member) as stream:
            shutil.copyfileobj(stream, copy, 1024 * 1024)
    except _DAMAGED as exc:
        raise SourceError(f"cannot read the export's part {shown}: {exc}") from None
    copy.seek(0)
    return _open(copy, stack, shown)


def _open(file, stack: contextlib.ExitStack, shown: str) -> zipfile.ZipFile:
    try:
        return stack.enter_context(zipfile.ZipFile(file))
    except (OSError, zipfile.BadZipFile) as exc:
        raise SourceError(f"cannot read the export {shown}: {exc}") from None


def _when(member: zipfile.ZipInfo) -> datetime:
    try:
        return datetime(*member.date_time, tzinfo=timezone.utc)
    except ValueError:
        return datetime.now(timezone.utc)
