"""`teambot ingest`: files → chunks with citations metadata → embeddings → Weaviate.

Incremental by content hash: unchanged files are not touched (their chunks keep their ids),
changed files are re-indexed, files that disappeared from an ingested folder lose their chunks.
New chunks are written before the old version's are deleted, so an interrupted run never
leaves a file without chunks, and the next run finishes the job (no duplicates, no orphans).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from haystack import Document, Pipeline, component
from haystack.components.converters import HTMLToDocument, PyPDFToDocument, TextFileToDocument
from haystack.components.preprocessors import DocumentCleaner, MarkdownHeaderSplitter
from haystack_integrations.components.embedders.sentence_transformers import SentenceTransformersDocumentEmbedder

from pipeline.errors import KnowledgeBaseUnavailable
from pipeline.stores import META_FIELDS, document_store, embedder_path
from teambot.settings import Settings

SUPPORTED = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html", ".pdf": "pdf"}
MAX_FILE_BYTES = 50 * 1024 * 1024


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
    chunks_written: int = 0
    chunks_deleted: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.collection}: {self.files_seen} files — {len(self.indexed)} indexed, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed, {len(self.skipped)} skipped; "
            f"{self.chunks_written} chunks written, {self.chunks_deleted} deleted in {self.seconds:.1f}s"
        )


class _CaptureWarnings(logging.Handler):
    """Haystack converters log and skip unreadable files; we want the reason per file."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _title(path: Path, doc: Document) -> str:
    for line in doc.content.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    if doc.meta.get("title"):
        return str(doc.meta["title"])
    first = next((line.strip() for line in doc.content.splitlines() if line.strip()), "")
    if 0 < len(first) <= 80 and not first.endswith("."):
        return first
    return path.stem.replace("-", " ").replace("_", " ").capitalize()


@component
class ChunkNumberer:
    """Gives each chunk its section, position and the file's chunk count; keeps only known metadata.

    Chunk ids are derived from content + metadata, so the same file version yields the same ids.
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
                meta = {k: chunk.meta[k] for k in META_FIELDS if k in chunk.meta}
                meta.update(
                    section=chunk.meta.get("header") or "", position=position,
                    page_number=int(chunk.meta.get("page_number") or 1), chunk_count=len(chunks),
                )
                out.append(Document(content=chunk.content.strip(), meta=meta))
        return {"documents": out}


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
        from haystack.document_stores.errors import DocumentStoreError
        from weaviate.classes.data import DataObject
        from weaviate.util import generate_uuid5

        objects = [
            # The properties WeaviateDocumentStore writes and reads back: id as _original_id, meta flat.
            DataObject(properties={"_original_id": d.id, "content": d.content, **d.meta},
                       uuid=generate_uuid5(d.id), vector=d.embedding)
            for d in documents
        ]
        collection = self.store.collection
        for start in range(0, len(objects), WRITE_BATCH):
            result = collection.data.insert_many(objects[start : start + WRITE_BATCH])
            if result.has_errors:
                first = next(iter(result.errors.values()))
                raise DocumentStoreError(f"{len(result.errors)} chunks were not written: {first.message}")
        return {"documents_written": len(documents)}


class Indexer:
    """Holds the converters and the chunk → embed → write pipeline; reuse it across runs."""

    def __init__(self, settings: Settings, collection: str | None = None) -> None:
        self.settings = settings
        self.collection = collection or settings.collection
        self.store = document_store(settings, self.collection)
        self._converters = {
            "markdown": TextFileToDocument(),  # keep `#` headings for the header splitter
            "text": TextFileToDocument(),
            "html": HTMLToDocument(extraction_kwargs={"output_format": "markdown", "include_formatting": True}),
            "pdf": PyPDFToDocument(),
        }
        self.pipeline = Pipeline()
        self.pipeline.add_component("cleaner", DocumentCleaner(remove_empty_lines=False, remove_extra_whitespaces=False))
        self.pipeline.add_component(
            "splitter",
            MarkdownHeaderSplitter(
                secondary_split="word", split_length=settings.chunk_words,
                split_overlap=settings.chunk_overlap, split_threshold=max(5, settings.chunk_words // 6),
            ),
        )
        self.pipeline.add_component("numberer", ChunkNumberer())
        self.pipeline.add_component(
            "embedder",
            SentenceTransformersDocumentEmbedder(
                model=embedder_path(settings), local_files_only=True, progress_bar=False,
                normalize_embeddings=True, meta_fields_to_embed=["title", "section"], batch_size=64,
            ),
        )
        self.pipeline.add_component("writer", ChunkWriter(self.store))
        self.pipeline.connect("cleaner", "splitter")
        self.pipeline.connect("splitter", "numberer")
        self.pipeline.connect("numberer", "embedder")
        self.pipeline.connect("embedder", "writer")

    # --------------------------------------------------------------- state in Weaviate

    def indexed_state(self) -> dict[str, dict[str, int]]:
        """source → {content_hash: chunks present}, read from the collection itself."""
        state: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        try:
            for obj in self.store.collection.iterator(return_properties=["source", "content_hash"]):
                props = obj.properties
                state[props.get("source") or ""][props.get("content_hash") or ""] += 1
        except Exception as exc:  # noqa: BLE001 - any client error means the store is unreachable
            raise KnowledgeBaseUnavailable(f"cannot read collection {self.collection}: {exc}") from exc
        return state

    def _expected_counts(self, source: str) -> dict[str, int]:
        docs = self.store.filter_documents({"field": "meta.source", "operator": "==", "value": source})
        return {d.meta.get("content_hash", ""): int(d.meta.get("chunk_count") or 0) for d in docs}

    def _delete(self, source: str, keep_hash: str | None = None) -> int:
        conditions = [{"field": "meta.source", "operator": "==", "value": source}]
        if keep_hash is not None:
            conditions.append({"field": "meta.content_hash", "operator": "!=", "value": keep_hash})
        return self.store.delete_by_filter({"operator": "AND", "conditions": conditions})

    # --------------------------------------------------------------- files → chunks

    def convert(self, path: Path, content_hash: str) -> list[Document]:
        """One file → one Document with its citation metadata. Raises ValueError with a reason."""
        kind = SUPPORTED[path.suffix.lower()]
        size = path.stat().st_size
        if size == 0:
            raise ValueError("empty file")
        if size > MAX_FILE_BYTES:
            raise ValueError(f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        with open(path, "rb") as f:
            head = f.read(8192)
        if kind == "pdf":
            if not head.lstrip().startswith(b"%PDF"):
                raise ValueError("not a PDF file (no %PDF header)")
        elif b"\x00" in head:
            # An image or archive named .md/.html: the HTML extractor would index its byte soup.
            raise ValueError(f"looks like a binary file, not {kind}")
        capture = _CaptureWarnings()
        haystack_logger = logging.getLogger("haystack")
        haystack_logger.addHandler(capture)
        try:
            docs = self._converters[kind].run(sources=[path])["documents"]
        finally:
            haystack_logger.removeHandler(capture)
        docs = [d for d in docs if d.content and d.content.strip()]
        if not docs:
            reason = capture.messages[-1] if capture.messages else "no text could be extracted"
            raise ValueError(reason[:300])
        doc = docs[0]
        if "\x00" in doc.content:
            raise ValueError("looks like a binary file, not text")
        meta = {
            "source": str(path), "title": _title(path, doc), "file_type": kind,
            "content_hash": content_hash, "url": doc.meta.get("url", ""),
        }
        return [Document(content=doc.content, meta=meta)]

    def index(self, docs: list[Document]) -> int:
        """Run clean → split → number chunks → embed → write; returns chunks written."""
        try:
            result = self.pipeline.run({"cleaner": {"documents": docs}})
        except Exception as exc:  # noqa: BLE001 - the writer's client errors mean Weaviate is unreachable
            raise KnowledgeBaseUnavailable(f"writing to {self.collection} failed: {exc}") from exc
        return result["writer"]["documents_written"]

    # --------------------------------------------------------------- the run

    def ingest(
        self, paths: Iterable[Path], on_progress: Callable[[int, int, str], None] | None = None
    ) -> IngestReport:
        started = time.monotonic()
        report = IngestReport(collection=self.collection)
        files, roots = self._collect(paths, report)
        state = self.indexed_state()
        for n, path in enumerate(files, 1):
            if on_progress:
                on_progress(n, len(files), str(path))
            source = str(path)
            try:
                content_hash = _sha256(path)
            except OSError as exc:
                report.skipped.append(Skipped(source, f"cannot read: {exc.strerror or exc}"))
                continue
            present = state.get(source, {})
            if present and self._is_complete(source, content_hash, present):
                report.unchanged.append(source)
                continue
            try:
                docs = self.convert(path, content_hash)
            except (ValueError, OSError, UnicodeDecodeError) as exc:
                report.skipped.append(Skipped(source, str(exc) or type(exc).__name__))
                continue
            report.chunks_written += self.index(docs)
            report.chunks_deleted += self._delete(source, keep_hash=content_hash)
            report.indexed.append(source)
        # Files gone from an ingested folder lose their chunks.
        listed = {str(p) for p in files}
        for source in state:
            if source not in listed and any(source.startswith(str(root) + "/") for root in roots):
                if not Path(source).exists():
                    report.chunks_deleted += self._delete(source)
                    report.removed.append(source)
        report.seconds = time.monotonic() - started
        return report

    def _is_complete(self, source: str, content_hash: str, present: dict[str, int]) -> bool:
        if set(present) != {content_hash}:
            return False
        return self._expected_counts(source).get(content_hash) == present[content_hash]

    def _collect(self, paths: Iterable[Path], report: IngestReport) -> tuple[list[Path], list[Path]]:
        files: list[Path] = []
        roots: list[Path] = []
        for raw in paths:
            path = Path(raw).expanduser().resolve()
            if path.is_dir():
                roots.append(path)
                for child in sorted(path.rglob("*")):
                    if child.is_file() and not any(part.startswith(".") for part in child.relative_to(path).parts):
                        if child.suffix.lower() in SUPPORTED:
                            files.append(child)
            elif path.is_file():
                if path.suffix.lower() in SUPPORTED:
                    files.append(path)
                else:
                    report.skipped.append(Skipped(str(path), f"unsupported file type {path.suffix or '(none)'}"))
            else:
                report.skipped.append(Skipped(str(path), "no such file or folder"))
        report.files_seen = len(files)
        return files, roots
