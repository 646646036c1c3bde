"""One sync run of one source: what changed at the origin goes through the ingest path, what is gone
is removed, and every document's version is kept (pipeline.sources.state) once its chunks are in.

- Incremental: a connector asks the origin what changed (conditional requests, git object ids) and
  yields only documents to write; the indexer skips any whose content hash it already holds.
- Durable: a document's state is saved when its chunks are all written, so a run killed midway
  resumes with what it had not finished.
- Safe: a run whose listing was incomplete (the server went down, a rate limit held) deletes
  nothing; a run that would delete more than the source's share removes nothing either, says why,
  and goes on serving (`allow_mass_delete` overrides).
- One at a time: a lock in the database keeps two processes from syncing a source at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

from core import metrics
from core.errors import KnowledgeBaseUnavailable
from core.settings import Settings
from pipeline.indexing import Indexer, IngestReport, RemoteDocument
from pipeline.sources.config import AnySource

log = logging.getLogger("teambot.sync")
RENEW_EVERY = 60.0  # seconds between renewals of the source's lock during a run (it lasts LOCK_TTL, 5 min)


class SourceError(RuntimeError):
    """The origin could not be read as a whole (down, refused, rate limited): nothing is deleted."""


@dataclass(frozen=True)
class Fetched:
    """A document that changed at its origin, with the origin's change signal for the next run."""

    key: str
    document: RemoteDocument
    changed_at: datetime
    etag: str | None = None
    last_modified: str | None = None
    version: str | None = None


@dataclass
class Listing:
    """What a connector found in one run, besides the documents it yields."""

    present: set[str] = field(default_factory=set)  # every key the origin has now, changed or not
    complete: bool = True  # False: some part could not be listed, so absence proves nothing
    cursor: str | None = None  # saved when the run succeeds (a git commit)
    requests: int = 0
    not_modified: int = 0  # 304s
    errors: list[str] = field(default_factory=list)  # documents that could not be fetched (kept as they were)
    # Keys the origin now shows to fewer people (a view restriction, sharing narrowed): removed at
    # once, whatever else the run meets and whatever the mass-deletion guard would say.
    withdrawn: set[str] = field(default_factory=set)
    total: int = 0  # documents expected, for progress (0: unknown)


class Connector(Protocol):
    def documents(self, known: dict, listing: Listing) -> Iterator[Fetched]: ...

    def close(self) -> None: ...


class SyncStateStore(Protocol):
    """feedback.sync_state.SyncState, as the engine uses it."""

    def lock(self, name: str, kind: str, collection: str) -> bool: ...
    def renew(self, name: str) -> bool: ...
    def unlock(self, name: str) -> None: ...
    def started(self, name: str) -> None: ...
    def finished(self, name: str, *, counts: dict, error: str | None = None, cursor: str | None = None) -> None: ...
    def cursor(self, name: str) -> str | None: ...
    def items(self, name: str) -> dict: ...
    def save_item(self, name: str, key: str, **values) -> None: ...
    def drop_items(self, name: str, keys: list[str]) -> None: ...


@dataclass
class SyncReport:
    source: str
    seen: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    not_modified: int = 0
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    refused_deletions: int = 0
    withdrawn: int = 0  # removed because the origin no longer shows them to everyone it did
    error: str = ""  # the run failed: nothing was deleted
    busy: bool = False  # another process is syncing it
    seconds: float = 0.0

    @property
    def counts(self) -> dict:
        return {k: getattr(self, k) for k in ("seen", "changed", "unchanged", "deleted", "not_modified", "requests",
                                               "refused_deletions", "withdrawn")} | {"errors": len(self.errors)}

    def summary(self) -> str:
        if self.busy:
            return f"{self.source}: being synced by another process; skipped"
        line = (f"{self.source}: {self.seen} documents — {self.changed} changed, {self.unchanged} unchanged, "
                f"{self.deleted} deleted; {self.requests} requests ({self.not_modified} not modified) "
                f"in {self.seconds:.1f}s")
        if self.withdrawn:
            line += (f"\n{self.source}: {self.withdrawn} documents removed: the origin no longer shows them to "
                     "everyone this collection reaches")
        if self.refused_deletions:
            line += (f"\n{self.source}: {self.refused_deletions} documents are gone at the origin, more than the "
                     "mass-deletion guard allows: none removed (sync with --allow-mass-delete if that is right)")
        for problem in self.errors[:10]:
            line += f"\n{self.source}: kept as it was: {problem}"
        if len(self.errors) > 10:
            line += f"\n{self.source}: … and {len(self.errors) - 10} more kept as they were"
        if self.error:
            line += f"\n{self.source}: failed, nothing removed: {self.error}"
        return line


def connector_for(source: AnySource, settings: Settings, cursor: str | None) -> Connector:
    if source.kind == "website":
        from pipeline.sources.website import WebsiteConnector

        return WebsiteConnector(source, cursor)
    if source.kind == "confluence":
        from pipeline.sources.confluence import ConfluenceConnector

        return ConfluenceConnector(source)
    if source.kind == "confluence-export":
        from pipeline.sources.confluence_export import ConfluenceExportConnector

        return ConfluenceExportConnector(source)
    if source.kind == "notion-export":
        from pipeline.sources.notion_export import NotionExportConnector

        return NotionExportConnector(source)
    if source.kind == "google-drive":
        from pipeline.sources.google_drive import DriveConnector

        return DriveConnector(source)
    from pipeline.sources.git import GitConnector

    return GitConnector(source, settings.data_dir / "sync" / "git" / source.name, cursor)


def mass_deletion(source: AnySource, gone: int, known: int) -> bool:
    """Would removing `gone` of `known` documents be more than the source allows? Emptying a source
    always is (a robots.txt, a login wall, a wrong path makes a site or a repository look empty)."""
    return (gone == known > 0) or (gone >= source.max_delete_min and gone > source.max_delete_share * known)


def sync(
    source: AnySource, state: SyncStateStore, settings: Settings, *,
    allow_mass_delete: bool = False, indexer: Indexer | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> SyncReport:
    """Run one sync of `source` (unless another process is syncing it). Never raises: a failure is
    the report's `error`, recorded with the source's state."""
    started = time.monotonic()
    report = SyncReport(source.name)
    if not state.lock(source.name, source.kind, source.collection):
        report.busy = True
        return report
    listing = Listing()
    heartbeat = _Heartbeat(state, source.name)
    try:
        cursor = state.cursor(source.name)
        state.started(source.name)
        indexer = indexer or Indexer(settings, source.collection)
        known = state.items(source.name)
        # What the collection does not hold whole (dropped, rebuilt elsewhere, written by a run that
        # died) is fetched again whatever its version says.
        held = indexer.complete_documents()
        current = {key: item for key, item in known.items() if item.document in held}
        connector = connector_for(source, settings, cursor)
        try:
            _write_changes(source, state, indexer, connector, current, known, listing, report, on_progress)
        finally:
            connector.close()
            _withdraw(source, state, indexer, known, listing, report)
        if not heartbeat.held():
            raise SourceError("the source's lock was lost (another process took it over): nothing deleted")
        _delete_gone(source, state, indexer, known, listing, report, allow_mass_delete)
    except (SourceError, KnowledgeBaseUnavailable) as exc:
        report.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - one source's surprise must not stop the others' syncs
        log.exception("%s: sync failed", source.name)
        report.error = f"{type(exc).__name__}: {exc}"
    finally:
        heartbeat.stop()
        report.requests, report.not_modified = listing.requests, listing.not_modified
        report.errors = listing.errors
        report.seconds = time.monotonic() - started
        try:
            state.finished(source.name, counts=report.counts, error=report.error or None,
                           cursor=listing.cursor if listing.complete and not report.error else None)
        except Exception:  # noqa: BLE001 - the database is down: the report still says what happened
            log.exception("%s: could not record the run", source.name)
        finally:
            try:
                state.unlock(source.name)
            except Exception:  # noqa: BLE001 - it expires by itself
                log.exception("%s: could not release the lock", source.name)
        _count(report)
    return report


class _Heartbeat:
    """Renews the source's lock every RENEW_EVERY seconds while a run lasts (a git fetch, a long
    rate-limit wait), and remembers whether it was ever found taken over."""

    def __init__(self, state: SyncStateStore, name: str) -> None:
        self.state, self.name = state, name
        self._stop = threading.Event()
        self._lost = False
        self._thread = threading.Thread(target=self._run, name=f"teambot-sync-lock-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(RENEW_EVERY):
            try:
                if not self.state.renew(self.name):
                    self._lost = True
            except Exception:  # noqa: BLE001 - the database blinked: try again next time
                log.warning("%s: could not renew the sync lock", self.name, exc_info=True)

    def held(self) -> bool:
        try:
            still = self.state.renew(self.name)
        except Exception:  # noqa: BLE001
            still = False
        return still and not self._lost

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _write_changes(source, state: SyncStateStore, indexer: Indexer, connector: Connector, current: dict,
                   known: dict, listing: Listing, report: SyncReport, on_progress) -> None:
    """Write what changed; `current` is what the collection holds whole (the connector skips it when
    unchanged), `known` every document of the source's state."""
    pending: dict[str, Fetched] = {}

    def fetched() -> Iterator[RemoteDocument]:
        for item in connector.documents(current, listing):
            if item.document.source in pending:  # yielded twice (two parents, two entries): once is enough
                continue
            pending[item.document.source] = item
            if on_progress:
                on_progress(len(listing.present), listing.total, item.key)
            yield item.document

    def done(document: str) -> None:
        item = pending.pop(document, None)
        if item is None:
            return
        before = known.get(item.key)
        if before is not None and before.document != document:  # renamed or moved: one page, not two
            indexer.remove_documents([before.document], root=f"sync:{source.name}")
        state.save_item(source.name, item.key, document=document, content_hash=_hash_of(document, ingest),
                        changed_at=item.changed_at, etag=item.etag, last_modified=item.last_modified,
                        version=item.version)

    ingest = IngestReport(collection=source.collection)
    indexer.index_documents(fetched(), ingest, done)
    report.changed, report.unchanged = len(ingest.indexed), len(listing.present) - len(ingest.indexed)
    report.seen = len(listing.present)
    listing.errors += [f"{s.path}: {s.reason}" for s in ingest.skipped]
    if on_progress:
        on_progress(len(listing.present), len(listing.present), "")


def _hash_of(document: str, ingest: IngestReport) -> str:
    return ingest.hashes.get(document, "")


def _withdraw(source, state: SyncStateStore, indexer: Indexer, known: dict, listing: Listing,
              report: SyncReport) -> None:
    gone = sorted(key for key in listing.withdrawn if key in known)
    if not gone:
        return
    try:
        indexer.remove_documents([known[key].document for key in gone], root=f"sync:{source.name}")
        state.drop_items(source.name, gone)
    except Exception as exc:  # noqa: BLE001 - said, and tried again next run (they are still withdrawn there)
        log.exception("%s: could not remove %d withdrawn documents", source.name, len(gone))
        listing.errors.append(f"{len(gone)} documents no longer shown to everyone could not be removed: {exc}")
        return
    for key in gone:
        known.pop(key)
    report.withdrawn = len(gone)


def _delete_gone(source, state: SyncStateStore, indexer: Indexer, known: dict, listing: Listing,
                 report: SyncReport, allow_mass_delete: bool) -> None:
    if not listing.complete:
        return
    gone = [key for key in known if key not in listing.present]
    if not gone:
        return
    if mass_deletion(source, len(gone), len(known)) and not allow_mass_delete:
        report.refused_deletions = len(gone)
        log.warning("%s: %d of %d documents are gone at the origin; the mass-deletion guard removed none",
                    source.name, len(gone), len(known))
        return
    indexer.remove_documents([known[key].document for key in gone], root=f"sync:{source.name}")
    state.drop_items(source.name, gone)
    report.deleted = len(gone)


def _count(report: SyncReport) -> None:
    for what in ("seen", "changed", "deleted", "withdrawn", "not_modified"):
        metrics.SYNC_DOCUMENTS.labels(report.source, what).inc(getattr(report, what))
    metrics.SYNC_ERRORS.labels(report.source).inc(len(report.errors) + bool(report.error))
    if not report.error and not report.busy:
        metrics.SYNC_LAST_SUCCESS.labels(report.source).set(datetime.now(timezone.utc).timestamp())
