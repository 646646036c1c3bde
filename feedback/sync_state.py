"""What `teambot sync` keeps between runs, in the feedback database (migration 0008).

A source's lock lives here too, so two `teambot sync` processes (on one host or several sharing a
PostgreSQL database) never sync one source at once. A lock expires unless renewed; one held by a
process of this host that no longer exists (killed with `kill -9`) is taken over at once.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, delete, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from feedback.store import Base, FeedbackStore, _aware, _dialect_insert, _now

LOCK_TTL = timedelta(minutes=5)


class SyncSourceRecord(Base):
    __tablename__ = "sync_sources"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    collection: Mapped[str] = mapped_column(String(128))
    lock_owner: Mapped[str | None] = mapped_column(String(128))
    lock_expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cursor: Mapped[str | None] = mapped_column(String(128))
    last_started: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_finished: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_success: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    counts: Mapped[dict | None] = mapped_column(JSON)


class SyncItemRecord(Base):
    __tablename__ = "sync_items"

    source: Mapped[str] = mapped_column(ForeignKey("sync_sources.name"), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(Text)
    document: Mapped[str] = mapped_column(Text)  # the chunks' `source` in the collection
    etag: Mapped[str | None] = mapped_column(String(256))
    last_modified: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[str | None] = mapped_column(String(128))
    content_hash: Mapped[str] = mapped_column(String(64))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    synced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class SyncedItem:
    key: str
    document: str
    etag: str | None
    last_modified: str | None
    version: str | None
    content_hash: str
    changed_at: datetime


@dataclass(frozen=True)
class SourceStatus:
    name: str
    kind: str
    collection: str
    documents: int
    cursor: str | None
    last_started: datetime | None
    last_finished: datetime | None
    last_success: datetime | None
    last_error: str | None
    failures: int
    counts: dict
    running: bool


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _owner_alive(owner: str) -> bool:
    """False only for a lock taken by a process of this host that no longer runs."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SyncState:
    """Per-source state and per-document versions of synced sources."""

    def __init__(self, store: FeedbackStore) -> None:
        self.engine = store.engine
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    # ------------------------------------------------------------------ the lock

    def lock(self, name: str, kind: str, collection: str, *, ttl: timedelta = LOCK_TTL) -> bool:
        """Take the source's lock; False while another live process holds it."""
        now = _now()
        table = SyncSourceRecord.__table__
        with Session(self.engine) as session, session.begin():
            session.execute(_dialect_insert(self.engine)(SyncSourceRecord).values(
                name=name, kind=kind, collection=collection, failures=0,
            ).on_conflict_do_nothing(index_elements=["name"]))
            row = session.get(SyncSourceRecord, name, with_for_update=True)
            if row.lock_owner and row.lock_owner != self.owner and _aware(row.lock_expires) > now \
                    and _owner_alive(row.lock_owner):
                return False
            session.execute(update(table).where(table.c.name == name).values(
                lock_owner=self.owner, lock_expires=now + ttl, kind=kind, collection=collection,
            ))
        return True

    def renew(self, name: str, *, ttl: timedelta = LOCK_TTL) -> bool:
        """Extend the lock; False when this process no longer holds it (taken over)."""
        table = SyncSourceRecord.__table__
        with Session(self.engine) as session, session.begin():
            renewed = session.execute(update(table).where(
                table.c.name == name, table.c.lock_owner == self.owner,
            ).values(lock_expires=_now() + ttl).returning(table.c.name)).first()
        return renewed is not None

    def unlock(self, name: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(update(SyncSourceRecord).where(
                SyncSourceRecord.name == name, SyncSourceRecord.lock_owner == self.owner,
            ).values(lock_owner=None, lock_expires=None))

    # ------------------------------------------------------------------ runs

    def started(self, name: str) -> None:
        """A run begins: its cursor is cleared until the run ends well (a run killed midway must not
        leave the last good run's cursor claiming its work was done)."""
        with Session(self.engine) as session, session.begin():
            session.execute(update(SyncSourceRecord).where(SyncSourceRecord.name == name).values(
                last_started=_now(), cursor=None,
            ))

    def finished(self, name: str, *, counts: dict, error: str | None = None, cursor: str | None = None) -> None:
        """Record a run's end; a failed run keeps the cursor and counts one more failure."""
        now = _now()
        values: dict = {"last_finished": now, "counts": counts, "last_error": error}
        if error is None:
            values.update(last_success=now, failures=0)
            if cursor is not None:
                values["cursor"] = cursor
        else:
            values["failures"] = SyncSourceRecord.failures + 1
        with Session(self.engine) as session, session.begin():
            session.execute(update(SyncSourceRecord).where(SyncSourceRecord.name == name).values(**values))

    def cursor(self, name: str) -> str | None:
        with Session(self.engine) as session:
            return session.scalar(select(SyncSourceRecord.cursor).where(SyncSourceRecord.name == name))

    # ------------------------------------------------------------------ documents

    def items(self, name: str) -> dict[str, SyncedItem]:
        with Session(self.engine) as session:
            rows = session.scalars(select(SyncItemRecord).where(SyncItemRecord.source == name)).all()
            return {
                r.key: SyncedItem(r.key, r.document, r.etag, r.last_modified, r.version, r.content_hash,
                                  _aware(r.changed_at))
                for r in rows
            }

    def save_item(self, name: str, key: str, *, document: str, content_hash: str, changed_at: datetime,
                  etag: str | None = None, last_modified: str | None = None, version: str | None = None) -> None:
        values = dict(key=key, document=document, etag=etag, last_modified=last_modified, version=version,
                      content_hash=content_hash, changed_at=changed_at, synced_at=_now())
        insert = _dialect_insert(self.engine)(SyncItemRecord).values(source=name, key_hash=_key_hash(key), **values)
        with Session(self.engine) as session, session.begin():
            session.execute(insert.on_conflict_do_update(index_elements=["source", "key_hash"], set_=values))

    def drop_items(self, name: str, keys: list[str]) -> None:
        with Session(self.engine) as session, session.begin():
            for start in range(0, len(keys), 500):
                hashes = [_key_hash(k) for k in keys[start : start + 500]]
                session.execute(delete(SyncItemRecord).where(
                    SyncItemRecord.source == name, SyncItemRecord.key_hash.in_(hashes),
                ))

    # ------------------------------------------------------------------ `teambot sources status`

    def status(self) -> list[SourceStatus]:
        now = _now()
        with Session(self.engine) as session:
            counts = dict(session.execute(
                select(SyncItemRecord.source, func.count()).group_by(SyncItemRecord.source)
            ).all())
            rows = session.scalars(select(SyncSourceRecord).order_by(SyncSourceRecord.name)).all()
            return [
                SourceStatus(
                    r.name, r.kind, r.collection, counts.get(r.name, 0), r.cursor, _aware(r.last_started),
                    _aware(r.last_finished), _aware(r.last_success), r.last_error, r.failures, r.counts or {},
                    bool(r.lock_owner and _aware(r.lock_expires) > now and _owner_alive(r.lock_owner)),
                )
                for r in rows
            ]

