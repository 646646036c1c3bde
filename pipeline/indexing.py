"""`teambot ingest`: files → chunks with citation metadata → embeddings → Weaviate.

Incremental by content hash: unchanged files are not touched (their chunks keep their ids),
changed files are re-indexed, files that disappeared from an ingested folder lose their chunks.
Files are chunked one at a time but embedded and written in batches that span files (a folder of
short pages would otherwise be embedded a few chunks at a time). A file's old version is deleted
only after all of its new chunks are written, so an interrupted run never leaves a file without
chunks, and the next run finishes the job (no duplicates, no orphans).

A collection whose schema cannot keep files apart (see `pipeline.stores.EXACT`), or one asked to
`rebuild`, is rebuilt blue/green behind its alias (`pipeline.collection_aliases`): the bots keep
answering from the old index until the new one is complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit

from haystack import Document, Pipeline, component
from haystack.components.converters import TextFileToDocument
from haystack.components.preprocessors import DocumentCleaner, MarkdownHeaderSplitter
from haystack.dataclasses import ByteStream

from pipeline import collection_aliases
from core.errors import KnowledgeBaseUnavailable
from pipeline.embedders import document_embedder, embedder_spec
from pipeline.html_converter import HTMLSectionConverter, strip_anchor
from pipeline.pdf_converter import CUT_SHORT, PDFTextConverter
from pipeline.resilience import is_unavailable
from pipeline.stores import (
    META_FIELDS, admin_client, document_store, embedding_space, exact_filter, forget_store, forget_stores,
)
from core.settings import Settings

log = logging.getLogger("teambot.ingest")
SUPPORTED = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html", ".pdf": "pdf"}
MAX_FILE_BYTES = 50 * 1024 * 1024
EMBED_BATCH = 64  # chunks per embedding call: the unit progress is reported in
FLUSH_CHUNKS = 256  # chunks gathered (from one file or several) before they are embedded and written
NODE_FAILOVERS = 2  # times an ingest goes on from another node of a Weaviate cluster


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class IngestReport:
    collection: str
    files_seen: int = 0
    indexed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    cut_short: list[Skipped] = field(default_factory=list)  # indexed only up to a limit, and which
    chunks_written: int = 0
    chunks_deleted: int = 0
    seconds: float = 0.0
    rebuilt: str = ""  # why the collection was rebuilt into a new one, if it was
    copied: int = 0  # chunks a rebuild carried over as they were (files not on this machine)
    hashes: dict[str, str] = field(default_factory=dict)  # source → content hash of the version now indexed

    def summary(self) -> str:
        line = (
            f"{self.collection}: {self.files_seen} files — {len(self.indexed)} indexed, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed, {len(self.skipped)} skipped; "
            f"{self.chunks_written} chunks written, {self.chunks_deleted} deleted in {self.seconds:.1f}s"
        )
        for cut in self.cut_short:
            line += f"\ncut short {cut.path}: {cut.reason}"
        if self.rebuilt:
            line += f"\nrebuilt into a new index ({self.rebuilt}); {self.copied} chunks of files not found here carried over"
        return line


@dataclass(frozen=True)
class Progress:
    files_done: int
    files_total: int
    chunks_done: int  # embedded and written
    chunks_total: int  # of the files chunked so far
    path: str


@dataclass(frozen=True)
class SourceFile:
    """A file to index, the folder (or file) it was given as, and the web address of that folder."""

    path: Path
    root: Path
    url_base: str = ""

    @property
    def file_url(self) -> str:
        if not self.url_base:
            return ""
        relative = self.path.name if self.root == self.path else self.path.relative_to(self.root).as_posix()
        return f"{self.url_base.rstrip('/')}/{quote(relative)}"


@dataclass(frozen=True)
class RemoteDocument:
    """A document a synced source fetched (pipeline.sources): its bytes, their kind, its key in the
    collection (`source`: a URL, or a file of a repository), the link shown for it, and when it last
    changed at its origin."""

    source: str
    data: bytes
    kind: str  # a value of SUPPORTED
    url: str
    root: str  # "sync:<source name>": whose it is
    updated: str = ""  # ISO 8601
    url_base: str = ""  # the site or forge its links point into: answers may link there (pipeline.links)
    name: str = ""  # its path within the source, when its key does not end with it

    @property
    def path(self) -> PurePosixPath:  # its name, for a title when the page has none
        return PurePosixPath(self.name or urlsplit(self.source).path or self.source)

    @property
    def file_url(self) -> str:
        return self.url


Item = SourceFile | RemoteDocument


@dataclass
class FileState:
    """What the collection holds of one file: chunks per version, and how it was ingested."""

    chunks: Counter = field(default_factory=Counter)  # content_hash → chunks present
    expected: dict[str, int] = field(default_factory=dict)  # content_hash → chunk_count they carry
    root: str = ""
    url_base: str = ""

    def complete(self, content_hash: str) -> bool:
        return set(self.chunks) == {content_hash} and self.chunks[content_hash] == self.expected.get(content_hash)


class _CaptureWarnings(logging.Handler):
    """Haystack converters log and skip unreadable files; we want the reason per file."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _sha256(file: Path | bytes, url: str = "") -> str:
    """The file's version: its bytes and the address it is linked at (a new --url-base re-links it)."""
    digest = hashlib.sha256()
    if isinstance(file, bytes):
        digest.update(file)
    else:
        with open(file, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    if url:
        digest.update(b"\0url:" + url.encode())
    return digest.hexdigest()


def _read(file: SourceFile) -> bytes:
    """The bytes of a regular file that lies inside the root it was named under. Raises ValueError
    with the reason otherwise.

    A symlink may lead elsewhere in the tree, but one leading out (`passwd.txt → /etc/passwd`) would
    have whoever can add files to the docs get any file this process can read indexed and quoted.
    Where the file lies is checked on the file opened, so one swapped for a symlink after it was
    listed is not read either. A root is resolved (the user named it), a file named on its own is
    its own root: it must still be the file it was when listed.
    """
    root = os.path.abspath(file.root) if file.root == file.path else os.path.realpath(file.root)
    # O_NONBLOCK: opening a FIFO named notes.md would otherwise wait for a writer, forever.
    with open(os.open(file.path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
        if not _inside(where := _opened_path(f.fileno(), file.path), root):
            raise ValueError(_outside(where, root))
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size == 0:
            raise ValueError("empty file")
        if info.st_size > MAX_FILE_BYTES:
            raise ValueError(f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        return f.read(MAX_FILE_BYTES)  # no more, should it grow meanwhile


def _opened_path(fd: int, path: Path) -> str:
    """Where the open file really lies (not where `path` leads now: it may have been swapped)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")  # Linux
    except OSError:  # no /proc: `path` resolved again must still be the file opened
        real = os.path.realpath(path)
        return real if os.path.samestat(os.fstat(fd), os.stat(real)) else f"{real} (not the file opened)"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(os.path.join(root, ""))


def _outside(target: str, root: str | Path, what: str = "symlink") -> str:
    return f"{what} leading outside {root} (to {target}): not followed"


def _title(path: Path, doc: Document, kind: str) -> str:
    if kind == "html" and doc.meta.get("title"):
        return str(doc.meta["title"])
    for line in doc.content.splitlines():
        if line.startswith("# "):
            return strip_anchor(line[2:])[0]
    if doc.meta.get("title"):
        return str(doc.meta["title"])
    first = next((line.strip() for line in doc.content.splitlines() if line.strip()), "")
    if 0 < len(first) <= 80 and not first.endswith("."):
        return first
    return path.stem.replace("-", " ").replace("_", " ").capitalize()


@component
class ChunkNumberer:
    """Gives each chunk its section, link, position and the file's chunk count; keeps only known metadata.

    The link is the file's URL with the chunk's place in it: the heading's anchor for HTML (carried
    as `{#id}` on the heading line by HTMLSectionConverter), GitHub's heading slug for Markdown, the
    page for PDF. Chunk ids are derived from content + metadata, so the same file version yields
    the same ids.
    """

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, list[Document]]:
        by_source: dict[str, list[Document]] = defaultdict(list)
        for doc in documents:
            if doc.content and doc.content.strip():
                by_source[doc.meta.get("source", "")].append(doc)
        out = []
        for chunks in by_source.values():
            for position, chunk in enumerate(chunks):
                section, anchor = strip_anchor(chunk.meta.get("header") or "")
                page = int(chunk.meta.get("page_number") or 1)
                meta = {k: chunk.meta[k] for k in META_FIELDS if k in chunk.meta}
                meta.update(
                    section=section, position=position, page_number=page, chunk_count=len(chunks),
                    url=_chunk_url(meta.get("url") or "", meta.get("file_type"), section, anchor, page),
                )
                content = _ANCHORED_HEADING.sub(r"\1", chunk.content).strip()
                out.append(Document(content=content, meta=meta))
        return {"documents": out}


_ANCHORED_HEADING = re.compile(r"^(#{1,6} .*?)\s*\{#[^}\s]*\}[ \t]*$", re.M)


def _chunk_url(file_url: str, kind: str | None, section: str, anchor: str, page: int) -> str:
    if not file_url or "#" in file_url:
        return file_url
    if kind == "html" and anchor:
        return f"{file_url}#{anchor}"
    if kind == "markdown" and section:
        return f"{file_url}#{github_slug(section)}"
    if kind == "pdf":
        return f"{file_url}#page={page}"
    return file_url


def github_slug(heading: str) -> str:
    """The anchor GitHub/GitLab give a Markdown heading: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


WRITE_BATCH = 500  # chunks per insert request; keeps one gRPC message well under Weaviate's limit


@component
class ChunkWriter:
    """Writes chunks (overwriting same ids) with synchronous batch requests, the store's layout.

    Haystack's DocumentWriter goes through weaviate-client's background batcher, which waits up
    to a second for a batch to fill before sending: with one pipeline run per file that was ~1 s
    of idle time per file, 60 of the 96 s of a 60-file ingest (bench/ingest_throughput.py).
    """

    def __init__(self, store) -> None:
        self.store = store

    @component.output_types(documents_written=int)
    def run(self, documents: list[Document]) -> dict[str, int]:
        from weaviate.classes.data import DataObject
        from weaviate.util import generate_uuid5

        objects = [
            # The properties WeaviateDocumentStore writes and reads back: id as _original_id, meta flat.
            DataObject(properties={"_original_id": d.id, "content": d.content, **d.meta},
                       uuid=generate_uuid5(d.id), vector=d.embedding)
            for d in documents
        ]
        for start in range(0, len(objects), WRITE_BATCH):
            _insert(self.store.collection, objects[start : start + WRITE_BATCH])
        return {"documents_written": len(documents)}


class Indexer:
    """Holds the converters, the chunker and the embedder; reuse it across runs."""

    def __init__(self, settings: Settings, collection: str | None = None) -> None:
        self.settings = settings
        self.collection = collection or settings.collection
        self.store = document_store(settings, self.collection)
        self._converters = {
            "markdown": TextFileToDocument(),  # keep `#` headings for the header splitter
            "text": TextFileToDocument(),
            "html": HTMLSectionConverter(),
            "pdf": PDFTextConverter(settings.pdf_max_pages, settings.pdf_max_chars, settings.pdf_timeout),
        }
        self.chunker = Pipeline()
        self.chunker.add_component("cleaner", DocumentCleaner(remove_empty_lines=False, remove_extra_whitespaces=False))
        self.chunker.add_component(
            "splitter",
            MarkdownHeaderSplitter(
                secondary_split="word", split_length=settings.chunk_words,
                split_overlap=settings.chunk_overlap, split_threshold=max(5, settings.chunk_words // 6),
            ),
        )
        self.chunker.add_component("numberer", ChunkNumberer())
        self.chunker.connect("cleaner", "splitter")
        self.chunker.connect("splitter", "numberer")
        self.embedder = document_embedder(settings, meta_fields_to_embed=["title", "section"], batch_size=EMBED_BATCH)

    def _embed_again(self, chunks: list[dict]) -> list[list[float]]:
        """Vectors for stored chunks (their properties), embedded as ingest embeds them."""
        self.embedder.warm_up()
        documents = [Document(content=c.get("content") or "", meta={k: c.get(k) for k in ("title", "section")})
                     for c in chunks]
        return [d.embedding for d in self.embedder.run(documents=documents)["documents"]]

    # --------------------------------------------------------------- state in Weaviate

    def indexed_state(self, store) -> dict[str, FileState]:
        """source → what the collection holds of it, read from the collection itself."""
        state: dict[str, FileState] = defaultdict(FileState)
        try:
            collection = store.collection
            have = {p.name for p in collection.config.get().properties}
            wanted = [p for p in ("source", "content_hash", "chunk_count", "root", "url_base") if p in have]
            for obj in collection.iterator(return_properties=wanted):
                props = obj.properties
                entry = state[props.get("source") or ""]
                version = props.get("content_hash") or ""
                entry.chunks[version] += 1
                entry.expected[version] = int(props.get("chunk_count") or 0)
                entry.root, entry.url_base = props.get("root") or entry.root, props.get("url_base") or entry.url_base
        except Exception as exc:  # noqa: BLE001 - any client error means the store is unreachable
            raise KnowledgeBaseUnavailable(f"cannot read collection {self.collection}: {exc}") from exc
        return state

    def _delete(self, store, source: str, keep_hash: str | None = None) -> int:
        conditions = [exact_filter("source", source)]
        if keep_hash is not None:
            conditions.append(exact_filter("content_hash", keep_hash, "!="))
        return store.delete_by_filter({"operator": "AND", "conditions": conditions})

    # --------------------------------------------------------------- files → chunks

    def convert(self, file: SourceFile | Path, content_hash: str, data: bytes | None = None) -> list[Document]:
        """One file → one Document with its citation metadata. Raises ValueError with a reason.

        `data`: the file's bytes as `_read` gave them (and as hashed); read here when not given. The
        converters get those bytes, never the path, which may lead elsewhere by now.
        """
        if isinstance(file, Path):
            file = SourceFile(file, file)
        path = file.path
        remote = isinstance(file, RemoteDocument)
        kind = file.kind if remote else SUPPORTED[path.suffix.lower()]
        if data is None:
            data = file.data if remote else _read(file)
        head = data[:8192]
        if kind == "pdf":
            if not head.lstrip().startswith(b"%PDF"):
                raise ValueError("not a PDF file (no %PDF header)")
        elif b"\x00" in head:
            # An image or archive named .md/.html: the HTML extractor would index its byte soup.
            raise ValueError(f"looks like a binary file, not {kind}")
        capture = _CaptureWarnings()
        haystack_logger = logging.getLogger("haystack")
        haystack_logger.addHandler(capture)
        stream = ByteStream(data, meta={"file_path": str(path)})
        try:
            docs = self._converters[kind].run(sources=[stream])["documents"]
        finally:
            haystack_logger.removeHandler(capture)
        docs = [d for d in docs if d.content and d.content.strip()]
        if not docs:
            reason = "no text could be extracted"
            if capture.messages:  # Haystack's warning names the stream by its repr (its first bytes): name the file
                reason = capture.messages[-1].replace(repr(stream), str(path))
            raise ValueError(reason[:300])
        doc = docs[0]
        if "\x00" in doc.content:
            raise ValueError("looks like a binary file, not text")
        meta = {
            "source": _source(file), "root": str(file.root), "title": _title(path, doc, kind), "file_type": kind,
            "content_hash": content_hash, "url_base": file.url_base,
            # A page's own canonical link wins over the address made from --url-base; a synced page's
            # link is the one its source checked (a canonical link to another site is not followed).
            "url": file.url if remote else doc.meta.get("url") or file.file_url,
            "updated": file.updated if remote else "",
        }
        if doc.meta.get(CUT_SHORT):  # not stored (not in META_FIELDS): for the report
            meta[CUT_SHORT] = doc.meta[CUT_SHORT]
        return [Document(content=doc.content, meta=meta)]

    def chunk(self, docs: list[Document]) -> list[Document]:
        """Clean → split by headings, then words → number, link and trim the metadata."""
        return self.chunker.run({"cleaner": {"documents": docs}})["numberer"]["documents"]

    # --------------------------------------------------------------- the run

    def ingest(
        self, paths: Iterable[Path], on_progress: Callable[[Progress], None] | None = None, *,
        url_base: str | None = None, rebuild: bool = False,
    ) -> IngestReport:
        """Index `paths` (files and folders). `url_base`: the web address of the one folder given,
        kept for later runs; `rebuild`: re-index everything into a new collection, then switch."""
        started = time.monotonic()
        report = IngestReport(collection=self.collection)
        files, roots = collect_files(paths, report)
        if url_base is not None and len(roots) + sum(f.root == f.path for f in files) != 1:
            raise ValueError("--url-base names the address of one folder or file: ingest each with its own")
        # In a cluster a node may die mid-run: the run goes on from another node. Files written
        # whole before are unchanged by then (content hashes), so only the rest is done again.
        attempts = 1 + NODE_FAILOVERS * bool(self.settings.weaviate_peers)
        for attempt in range(1, attempts + 1):
            try:
                self._ingest_once(files, roots, url_base, rebuild, on_progress, report)
                break
            except Exception as exc:
                if attempt == attempts or not (isinstance(exc, KnowledgeBaseUnavailable) or is_unavailable(exc)):
                    raise
                log.warning("ingest into %s interrupted (%s); going on with a live Weaviate node", self.collection, exc)
                forget_stores(self.settings)
                time.sleep(1.0)
        done = set(report.indexed)
        report.unchanged = [u for u in report.unchanged if u not in done]
        report.seconds = time.monotonic() - started
        return report

    @contextmanager
    def _layout(self):
        """An admin connection and the collection's layout (made if it does not exist yet)."""
        try:
            client = admin_client(self.settings)
        except Exception as exc:  # noqa: BLE001 - refused, unauthorised: Weaviate cannot be used
            raise KnowledgeBaseUnavailable(f"cannot connect to Weaviate at {self.settings.weaviate_url}: {exc}") from exc
        try:
            layout = collection_aliases.inspect(client, self.collection, self.settings)
            if layout.target is None:
                layout = collection_aliases.create(client, self.collection, self.settings)
            yield client, layout
        finally:
            client.close()

    def _ingest_once(
        self, files: list[SourceFile], roots: list[Path], url_base: str | None, rebuild: bool,
        on_progress: Callable[[Progress], None] | None, report: IngestReport,
    ) -> None:
        with self._layout() as (client, layout):
            if rebuild or layout.needs_rebuild:
                reason = "; ".join(layout.problems) if layout.needs_rebuild else "asked for"
                self._rebuild(client, layout, files, roots, url_base, report, on_progress, reason)
            else:
                collection_aliases.add_missing_properties(client, layout.target)
                store = document_store(self.settings, layout.target)
                state = self.indexed_state(store)
                files = _with_url_bases(files, state, url_base)
                self._index_files(store, files, state, report, on_progress)
                self._remove_gone(store, files, roots, state, report)

    def _index_files(
        self, store, files: Iterable[Item], state: dict[str, FileState], report: IngestReport,
        on_progress: Callable[[Progress], None] | None, on_done: Callable[[str], None] | None = None,
    ) -> None:
        """Index what changed of `files`; `on_done(source)` once a file's chunks are all in the
        collection (written now, or unchanged)."""
        writer = ChunkWriter(store)
        pending: list[Document] = []
        waiting: dict[str, int] = {}  # source → its new chunks not written yet
        versions: dict[str, str] = {}
        done = total = 0
        files_done = 0

        files_total = len(files) if isinstance(files, list) else 0  # a synced source's are fetched as they come

        def tell(path: str) -> None:
            if on_progress:
                on_progress(Progress(files_done, files_total, done, total, path))

        def flush() -> None:
            nonlocal done
            self.embedder.warm_up()  # loads the model on the first batch, not for a run with nothing to embed
            embedded = []
            # Chunks of like length together: a batch is padded to its longest chunk. In file order
            # (short sections next to long ones) the PostgreSQL pages took 373 s to ingest, sorted
            # 264 s (bench/ingest_throughput.py).
            by_length = sorted(pending, key=_embedded_length)
            for start in range(0, len(by_length), EMBED_BATCH):
                embedded += self.embedder.run(documents=by_length[start : start + EMBED_BATCH])["documents"]
                done += min(EMBED_BATCH, len(by_length) - start)
                tell(by_length[min(start + EMBED_BATCH, len(by_length)) - 1].meta["source"])
            try:
                report.chunks_written += writer.run(documents=embedded)["documents_written"]
                for doc in pending:
                    source = doc.meta["source"]
                    waiting[source] -= 1
                    if waiting[source] == 0:  # all of it is in: now its old version can go
                        if source in state:
                            report.chunks_deleted += self._delete(store, source, keep_hash=versions[source])
                        report.indexed.append(source)
                        if on_done:
                            on_done(source)
            except Exception as exc:  # noqa: BLE001 - the writer's client errors mean Weaviate is unreachable
                raise KnowledgeBaseUnavailable(f"writing to {self.collection} failed: {exc}") from exc
            pending.clear()

        for file in files:
            source = _source(file)
            tell(source)
            files_done += 1
            try:
                # read once: what is hashed is what is converted
                data = file.data if isinstance(file, RemoteDocument) else _read(file)
            except OSError as exc:
                report.skipped.append(Skipped(source, f"cannot read: {exc.strerror or exc}"))
                continue
            except ValueError as exc:
                report.skipped.append(Skipped(source, str(exc)))
                continue
            content_hash = report.hashes[source] = _sha256(data, file.file_url)
            if source in state and state[source].complete(content_hash):
                report.unchanged.append(source)
                if on_done:
                    on_done(source)
                continue
            try:
                docs = self.convert(file, content_hash, data)
                chunks = self.chunk(docs)
            except (ValueError, OSError, UnicodeDecodeError) as exc:
                report.skipped.append(Skipped(source, str(exc) or type(exc).__name__))
                continue
            if cut_short := docs[0].meta.get(CUT_SHORT):
                report.cut_short.append(Skipped(source, cut_short))
            pending += chunks
            waiting[source], versions[source] = len(chunks), content_hash
            total += len(chunks)
            if len(pending) >= FLUSH_CHUNKS:
                flush()
        if pending:
            flush()
        tell("")

    def index_documents(
        self, documents: Iterable[RemoteDocument], report: IngestReport, on_done: Callable[[str], None] | None = None,
    ) -> None:
        """Index a synced source's fetched documents, like files (by content hash, old versions
        deleted once the new chunks are in); `on_done(source)` as each is complete."""
        with self._target_store() as store:
            self._index_files(store, documents, self.indexed_state(store), report, None, on_done)

    def remove_documents(self, sources: list[str], *, root: str) -> int:
        """Delete the chunks of these documents that `root` wrote (never another source's, were
        their keys the same); the number of chunks deleted."""
        with self._target_store() as store:
            return sum(store.delete_by_filter({"operator": "AND", "conditions": [
                exact_filter("source", source), exact_filter("root", root),
            ]}) for source in sources)

    def complete_documents(self) -> set[str]:
        """The documents the collection holds whole (every chunk of one version)."""
        with self._target_store() as store:
            return {source for source, entry in self.indexed_state(store).items()
                    if len(entry.chunks) == 1 and entry.complete(next(iter(entry.chunks)))}

    @contextmanager
    def _target_store(self):
        """The store of the collection's current physical collection, for synced documents."""
        with self._layout() as (client, layout):
            if layout.needs_rebuild:
                raise KnowledgeBaseUnavailable(
                    f"{self.collection} must be rebuilt first ({'; '.join(layout.problems)}): "
                    f"teambot ingest --rebuild --collection {self.collection}"
                )
            collection_aliases.add_missing_properties(client, layout.target)
            yield document_store(self.settings, layout.target)

    def _remove_gone(self, store, files: list[SourceFile], roots: list[Path], state, report: IngestReport) -> None:
        """Files gone from an ingested folder lose their chunks."""
        listed = {str(f.path) for f in files}
        for source in state:
            if source not in listed and _under(source, roots) and not Path(source).exists():
                report.chunks_deleted += self._delete(store, source)
                report.removed.append(source)

    def _rebuild(
        self, client, layout: collection_aliases.Layout, files: list[SourceFile], roots: list[Path],
        url_base: str | None, report: IngestReport, on_progress, reason: str,
    ) -> None:
        """Index everything into a new physical collection, then move the alias to it.

        Files the old collection knows of and that were not given now are re-indexed too when they
        are on this machine, and carried over as they are (vectors and all) when they are not.
        """
        log.warning("rebuilding %s into a new index (%s); it keeps answering from the old one meanwhile",
                    self.collection, reason)
        collection_aliases.drop_abandoned(client, layout)
        previous = document_store(self.settings, layout.target)
        old = self.indexed_state(previous)
        files = _with_url_bases(files, old, url_base)
        given = {str(f.path) for f in files}
        elsewhere = []
        for source, entry in old.items():
            if source in given or not source or _under(source, roots):
                continue
            if Path(source).is_file():
                root = Path(entry.root) if entry.root else Path(source)
                files.append(SourceFile(Path(source), root, entry.url_base))
            else:
                elsewhere.append(source)
        target = collection_aliases.new_target(client, self.collection, self.settings)
        store = document_store(self.settings, target)
        # Chunks of another vector space are embedded again from their text, not copied with their vectors.
        same_space = embedding_space(previous.collection.config.get()) == embedder_spec(self.settings).space
        try:
            self._index_files(store, files, {}, report, on_progress)
            report.copied = _copy_chunks(previous.collection, store.collection, set(elsewhere),
                                         embed=None if same_space else self._embed_again)
            collection_aliases.switch(client, layout, target)
        finally:
            forget_store(self.settings, target)
            if layout.target != self.collection:  # a legacy plain collection's name now names the alias
                forget_store(self.settings, layout.target)
        report.removed = [s for s in old if s and s not in given and _under(s, roots) and not Path(s).exists()]
        report.rebuilt = reason


def collect_files(paths: Iterable[Path], report: IngestReport) -> tuple[list[SourceFile], list[Path]]:
    """The supported files under `paths` (folders and files), each with the root it was named under."""
    files: list[SourceFile] = []
    roots: list[Path] = []
    for raw in paths:
        # Resolved: a folder or file named through a symlink is the user's choice; what lies in it is held to it.
        path = Path(raw).expanduser().resolve()
        if path.is_dir():
            roots.append(path)
            files += [SourceFile(child, path) for child in _tree(path, report)]
        elif path.is_file():
            if path.suffix.lower() in SUPPORTED:
                files.append(SourceFile(path, path))
            else:
                report.skipped.append(Skipped(str(path), f"unsupported file type {path.suffix or '(none)'}"))
        else:
            report.skipped.append(Skipped(str(path), "no such file or folder"))
    # A file named twice, or through a symlink next to it (git-doc's index.html → git.html), once.
    seen: set[Path] = set()
    files = [f for f in files if not (f.path in seen or seen.add(f.path))]
    report.files_seen = len(files)
    return files, roots


def _tree(root: Path, report: IngestReport) -> list[Path]:
    """The supported, not hidden files under `root`, sorted. A symlink is followed where it stays
    inside `root`; one leading out is skipped, with the reason. A symlinked folder is not entered:
    one inside holds files listed where they lie, one outside is not ours to read."""
    found: list[Path] = []
    for folder, dirs, names in os.walk(root):  # followlinks=False
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in dirs:
            link = os.path.join(folder, name)
            if os.path.islink(link) and not _inside(target := os.path.realpath(link), str(root)):
                report.skipped.append(Skipped(link, _outside(target, root, "symlinked folder")))
        for name in names:
            child = Path(folder, name)
            if name.startswith(".") or child.suffix.lower() not in SUPPORTED or not child.is_file():
                continue
            if not _inside(target := os.path.realpath(child), str(root)):
                report.skipped.append(Skipped(str(child), _outside(target, root)))
            else:
                found.append(child)
    return sorted(found)


def _source(item: Item) -> str:
    return item.source if isinstance(item, RemoteDocument) else str(item.path)


def _embedded_length(doc: Document) -> int:
    # What the embedder reads: title and section (meta_fields_to_embed), then the text.
    return sum(len(str(doc.meta.get(k) or "")) for k in ("title", "section")) + len(doc.content or "")


def _under(source: str, roots: list[Path]) -> bool:
    return any(source.startswith(str(root) + "/") for root in roots)


def _with_url_bases(files: list[SourceFile], state: dict[str, FileState], url_base: str | None) -> list[SourceFile]:
    """Each file with the --url-base given now, or else the one its root was last ingested with."""
    if url_base is not None:
        return [SourceFile(f.path, f.root, url_base) for f in files]
    known = {entry.root: entry.url_base for entry in state.values() if entry.root and entry.url_base}
    return [SourceFile(f.path, f.root, known.get(str(f.root), "")) for f in files]


def _copy_chunks(source_collection, target_collection, sources: set[str], embed=None) -> int:
    """Copy the chunks of `sources` from one collection to another: vectors included, or with
    vectors from `embed` (properties → vectors) when given."""
    from weaviate.classes.data import DataObject

    if not sources:
        return 0
    batch, copied = [], 0

    def write(batch) -> int:
        if embed is not None:
            vectors = embed([props for props, _, _ in batch])
            batch = [(props, uuid, vector) for (props, uuid, _), vector in zip(batch, vectors)]
        return _insert(target_collection, [DataObject(properties=p, uuid=u, vector=v) for p, u, v in batch])

    for obj in source_collection.iterator(include_vector=embed is None):
        if obj.properties.get("source") not in sources:
            continue
        vector = obj.vector.get("default") if isinstance(obj.vector, dict) else obj.vector
        batch.append(({k: v for k, v in obj.properties.items() if v is not None}, obj.uuid, vector))
        if len(batch) == WRITE_BATCH:
            copied += write(batch)
            batch = []
    return copied + (write(batch) if batch else 0)


def _insert(collection, objects) -> int:
    from haystack.document_stores.errors import DocumentStoreError

    result = collection.data.insert_many(objects)
    if result.has_errors:
        first = next(iter(result.errors.values()))
        raise DocumentStoreError(f"{len(result.errors)} chunks were not written: {first.message}")
    return len(objects)
