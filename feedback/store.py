"""Durable store of answers and their 👍/👎 ratings, shared by the bots and `training/`.

SQLite (WAL) by default; PostgreSQL (`postgresql+psycopg://…`) at scale. User ids are stored
only as salted hashes. One rating per (answer, user): the last vote wins, also when two arrive at
once (an INSERT … ON CONFLICT upsert), and a later reason or correction is added to that same
rating. Removing a 👍/👎 reaction retracts the vote it cast, unless the user has voted
differently since (`retract`). The schema is kept by Alembic migrations (feedback/migrations):
opening a store brings an older database up to date (`teambot db upgrade` does it on its own).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import (
    JSON, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, case, column, create_engine, delete,
    event, func, select, table, text, update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from core.answer import Answer, Outcome, Source, Turn
from core.secret_files import private_dir, private_opener, read_or_create

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def hash_user(platform: str, user_id: str, salt: str = "") -> str:
    return hashlib.sha256(f"{salt}:{platform}:{user_id}".encode()).hexdigest()[:32]


class Base(DeclarativeBase):
    pass


class AnswerRecord(Base):
    __tablename__ = "answers"
    # Thread memory, and the Slack bot's "is this reply in one of my threads?" on every thread reply.
    __table_args__ = (
        Index("ix_answers_conversation", "platform", "channel", "thread"),
        # The review page's inbox filters and sorts by these.
        Index("ix_answers_created_at", "created_at"),
        Index("ix_answers_collection_created", "collection", "created_at"),
        Index("ix_answers_model_created", "model", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    platform: Mapped[str] = mapped_column(String(16))
    workspace: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(64))
    thread: Mapped[str | None] = mapped_column(String(64))
    message_id: Mapped[str | None] = mapped_column(String(64), index=True)
    user_hash: Mapped[str | None] = mapped_column(String(64))
    question: Mapped[str] = mapped_column(Text)
    collection: Mapped[str] = mapped_column(String(128), default="")
    retrieved: Mapped[list] = mapped_column(JSON, default=list)  # [{chunk_id, title, path, text, score}]
    context: Mapped[str] = mapped_column(Text, default="")
    prompt: Mapped[list] = mapped_column(JSON, default=list)  # chat messages sent to the model
    answer_text: Mapped[str] = mapped_column(Text)
    abstained: Mapped[bool] = mapped_column(default=False)
    outcome: Mapped[str] = mapped_column(String(16), default="answered", server_default="answered")
    model: Mapped[str] = mapped_column(String(128))
    timings: Mapped[dict] = mapped_column(JSON, default=dict)
    sources: Mapped[list | None] = mapped_column(JSON, default=list)  # the cited sources, as shown
    reminded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Who could see it when it was given (bots.conversation.Question.audience); None before 0007.
    audience: Mapped[str | None] = mapped_column(String(16))
    # A follow-up searched as a standalone question (pipeline.followups); None when searched as asked.
    searched: Mapped[str | None] = mapped_column(Text)
    # The model's text when the asker was shown something else (an ungrounded answer); None otherwise.
    draft: Mapped[str | None] = mapped_column(Text)

    ratings: Mapped[list["RatingRecord"]] = relationship(back_populates="answer", order_by="RatingRecord.updated_at")


class AnswerPartRecord(Base):
    """The other messages of an answer split over several (AnswerRecord.message_id is the one with
    the vote buttons): a reaction or a reply on any of them belongs to the answer."""

    __tablename__ = "answer_parts"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    answer_id: Mapped[str] = mapped_column(ForeignKey("answers.id"), index=True)


class RatingRecord(Base):
    __tablename__ = "ratings"
    __table_args__ = (UniqueConstraint("answer_id", "user_hash", name="one_rating_per_user"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    answer_id: Mapped[str] = mapped_column(ForeignKey("answers.id"), index=True)
    user_hash: Mapped[str] = mapped_column(String(64))
    value: Mapped[int] = mapped_column(Integer)  # +1 or -1
    reason: Mapped[str | None] = mapped_column(Text)
    correction: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)

    answer: Mapped[AnswerRecord] = relationship(back_populates="ratings")


class DeliveredEventRecord(Base):
    """Platform events already taken (Slack's event_id): a redelivery, to this process or to
    another replica on the same database, is recognised and dropped. Rows expire (`claim_event`)."""

    __tablename__ = "delivered_events"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class HandoffRecord(Base):
    """Someone asked for a person's help with an answer: one per answer, reopened if asked again."""

    __tablename__ = "handoffs"
    __table_args__ = (Index("ix_handoffs_conversation", "platform", "channel", "thread"),)  # every thread reply asks

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    answer_id: Mapped[str] = mapped_column(ForeignKey("answers.id"), unique=True)
    platform: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str | None] = mapped_column(String(64))
    thread: Mapped[str | None] = mapped_column(String(64))
    message_id: Mapped[str | None] = mapped_column(String(64))  # the message that tagged the experts
    requested_by: Mapped[str] = mapped_column(String(64))  # user hash
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ExpertReplyRecord(Base):
    """A message an expert wrote in a hand-off's thread while it was open: resolving the hand-off
    makes the replies, joined in order, a draft answer for the review page. Edits and deletions
    are followed (`edit_expert_reply`); a deleted reply keeps its row, without its text."""

    __tablename__ = "expert_replies"
    __table_args__ = (UniqueConstraint("platform", "message_id", name="one_row_per_reply"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    handoff_id: Mapped[int] = mapped_column(ForeignKey("handoffs.id"), index=True)
    platform: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(64))  # user hash
    text: Mapped[str] = mapped_column(Text)
    posted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    edited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted: Mapped[bool] = mapped_column(default=False)


class UnknownAnswer(LookupError):
    pass


@dataclass(frozen=True)
class HandoffStats:
    requested: int
    resolved: int
    median_minutes_to_resolve: float | None

    @property
    def waiting(self) -> int:
        return self.requested - self.resolved


@dataclass(frozen=True)
class ModelStats:
    model: str
    answers: int
    up: int
    down: int


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # an acknowledged vote survives a crash
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def engine_for(url: str) -> Engine:
    """An engine on the feedback database; a SQLite file's folder is made (0700) if missing."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url.removeprefix("sqlite:///"))
        private_dir(path.parent)
        # SQLite would create the database 0644, and its -wal/-shm with the database's mode: made
        # here first, empty (an empty database to SQLite) and 0600, all three are the owner's only.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        _to_wal(path)
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class FeedbackStore:
    def __init__(self, url: str, *, user_salt: str = "") -> None:
        self.engine: Engine = engine_for(url)
        upgrade(self.engine)
        self._salt = user_salt

    @classmethod
    def from_settings(cls, settings) -> "FeedbackStore":
        return cls(settings.feedback_url, user_salt=user_salt(settings))

    def user_hash(self, platform: str, user_id: str) -> str:
        return hash_user(platform, user_id, self._salt)

    # ------------------------------------------------------------------ answers

    def record_answer(
        self, answer: Answer, *, platform: str, user_id: str | None = None, workspace: str | None = None,
        channel: str | None = None, thread: str | None = None, message_id: str | None = None,
        audience: str | None = None,
    ) -> None:
        record = AnswerRecord(
            id=answer.id, platform=platform, workspace=workspace, channel=channel, thread=thread,
            message_id=message_id, user_hash=self.user_hash(platform, user_id) if user_id else None,
            question=answer.question, collection=answer.collection,
            retrieved=[
                {"chunk_id": s.chunk_id, "title": s.title, "path": s.path, "text": s.snippet, "score": s.score,
                 "number": s.number, "url": s.url}
                for s in answer.retrieved
            ],
            context=answer.context, prompt=answer.prompt, answer_text=answer.text,
            abstained=answer.abstained, outcome=answer.outcome.value, model=answer.model, timings=answer.timings,
            sources=[asdict(s) for s in answer.sources], audience=audience, searched=answer.searched or None,
            draft=answer.draft or None,
        )
        with Session(self.engine) as session, session.begin():
            session.merge(record)

    def set_message_id(self, answer_id: str, message_id: str, *, parts: Sequence[str] = ()) -> None:
        """The message that shows the answer (with the vote buttons), and any other `parts` it was split over."""
        with Session(self.engine) as session, session.begin():
            record = session.get(AnswerRecord, answer_id)
            if record is None:
                raise UnknownAnswer(answer_id)
            record.message_id = message_id
            for part in parts:
                session.merge(AnswerPartRecord(platform=record.platform, message_id=part, answer_id=answer_id))

    def answer_for_message(self, platform: str, message_id: str) -> str | None:
        with Session(self.engine) as session:
            return session.scalar(
                select(AnswerRecord.id).where(AnswerRecord.platform == platform, AnswerRecord.message_id == message_id)
            ) or session.scalar(
                select(AnswerPartRecord.answer_id)
                .where(AnswerPartRecord.platform == platform, AnswerPartRecord.message_id == message_id)
            )

    def thread_history(self, platform: str, channel: str | None, thread: str | None, limit: int,
                       *, asker: str | None = None) -> list[Turn]:
        """The last `limit` question/answer turns of a thread, oldest first (thread memory); only
        those `asker` asked, when given (a private answer's thread is private to each asker)."""
        if not thread or limit <= 0:
            return []
        query = select(AnswerRecord.question, AnswerRecord.answer_text).where(
            AnswerRecord.platform == platform, AnswerRecord.channel == channel, AnswerRecord.thread == thread)
        if asker is not None:
            query = query.where(AnswerRecord.user_hash == self.user_hash(platform, asker))
        with Session(self.engine) as session:
            rows = session.execute(query.order_by(AnswerRecord.created_at.desc()).limit(limit)).all()
        return [Turn(question=q, answer=a) for q, a in reversed(rows)]

    def get_answer(self, answer_id: str) -> AnswerRecord | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(AnswerRecord, answer_id)

    def shown_answer(self, answer_id: str) -> Answer | None:
        """The answer as its asker was shown it (text, cited sources), to show it again."""
        record = self.get_answer(answer_id)
        if record is None:
            return None
        return Answer(
            question=record.question, text=record.answer_text, model=record.model, collection=record.collection,
            sources=[Source(**s) for s in record.sources or []], outcome=Outcome(record.outcome), id=record.id,
        )

    def claim_reminder(self, answer_id: str) -> bool:
        """True once for an answer nobody has voted on: the caller reminds its asker. Never again
        after that, in any process on this database."""
        voted = select(RatingRecord.id).where(RatingRecord.answer_id == answer_id).exists()
        with Session(self.engine) as session, session.begin():
            return session.execute(
                update(AnswerRecord)
                .where(AnswerRecord.id == answer_id, AnswerRecord.reminded_at.is_(None), ~voted)
                .values(reminded_at=_now())
            ).rowcount > 0

    # ------------------------------------------------------------------ hand-offs

    def request_handoff(self, answer_id: str, *, platform: str, user_id: str) -> tuple[HandoffRecord, bool]:
        """Open a hand-off on an answer; (it, True) if this opened it, (it, False) if it was already
        waiting. A resolved one is opened again."""
        now, user = _now(), self.user_hash(platform, user_id)
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            record = session.get(AnswerRecord, answer_id)
            if record is None:
                raise UnknownAnswer(answer_id)
            insert = _dialect_insert(self.engine)
            table = HandoffRecord.__table__
            stmt = insert(HandoffRecord).values(
                answer_id=answer_id, platform=platform, channel=record.channel, thread=record.thread,
                requested_by=user, requested_at=now,
            )
            # One row per answer whoever clicks at once; only a resolved one is taken over.
            opened = session.execute(stmt.on_conflict_do_update(
                index_elements=["answer_id"],
                set_={"requested_by": user, "requested_at": now, "resolved_by": None, "resolved_at": None,
                      "message_id": None},
                where=table.c.resolved_at.is_not(None),
            ).returning(table.c.id)).first() is not None
            handoff = session.scalars(select(HandoffRecord).where(HandoffRecord.answer_id == answer_id)).one()
            return handoff, opened

    def cancel_handoff(self, handoff_id: int) -> None:
        """Forget a hand-off whose message could not be posted, so that the next click tries again."""
        with Session(self.engine) as session, session.begin():
            session.execute(delete(HandoffRecord).where(HandoffRecord.id == handoff_id,
                                                        HandoffRecord.message_id.is_(None)))

    def set_handoff_message(self, handoff_id: int, message_id: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.execute(update(HandoffRecord).where(HandoffRecord.id == handoff_id).values(message_id=message_id))

    def get_handoff(self, handoff_id: int) -> HandoffRecord | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(HandoffRecord, handoff_id)

    def resolve_handoff(self, handoff_id: int, *, platform: str, user_id: str) -> bool:
        """Mark a waiting hand-off resolved; False if it was resolved already (or is unknown)."""
        with Session(self.engine) as session, session.begin():
            return session.execute(
                update(HandoffRecord)
                .where(HandoffRecord.id == handoff_id, HandoffRecord.resolved_at.is_(None))
                .values(resolved_at=_now(), resolved_by=self.user_hash(platform, user_id))
            ).rowcount > 0

    def handoff_in_thread(self, platform: str, channel: str | None, thread: str | None) -> HandoffRecord | None:
        """The newest hand-off of an answer given in this thread, waiting or resolved."""
        if not channel or not thread:
            return None
        with Session(self.engine, expire_on_commit=False) as session:
            return session.scalars(
                select(HandoffRecord).where(HandoffRecord.platform == platform, HandoffRecord.channel == channel,
                                            HandoffRecord.thread == thread)
                .order_by(HandoffRecord.requested_at.desc(), HandoffRecord.id.desc()).limit(1)
            ).first()

    def handoff_for_message(self, platform: str, message_id: str) -> HandoffRecord | None:
        """The hand-off that `message_id` (the message tagging the experts) belongs to."""
        with Session(self.engine, expire_on_commit=False) as session:
            return session.scalars(select(HandoffRecord).where(HandoffRecord.platform == platform,
                                                               HandoffRecord.message_id == message_id)).first()

    def add_expert_reply(self, handoff_id: int, *, platform: str, message_id: str, user_id: str, text: str,
                         posted_at: datetime | None = None) -> bool:
        """An expert's message in a waiting hand-off's thread; False if the hand-off was resolved
        meanwhile (or the message was recorded already). `posted_at`: when the platform says it
        was written (events may be handled out of order)."""
        with Session(self.engine) as session, session.begin():
            handoff = session.get(HandoffRecord, handoff_id, with_for_update=True)
            if handoff is None or handoff.resolved_at is not None:
                return False
            insert = _dialect_insert(self.engine)
            return session.execute(insert(ExpertReplyRecord).values(
                handoff_id=handoff_id, platform=platform, message_id=message_id,
                author=self.user_hash(platform, user_id), text=text, posted_at=posted_at or _now(),
            ).on_conflict_do_nothing(index_elements=["platform", "message_id"])).rowcount > 0

    def edit_expert_reply(self, platform: str, message_id: str, text: str | None) -> bool:
        """An expert's reply edited (`text`) or deleted (None); False if it is not one."""
        values = {"text": text, "edited_at": _now()} if text is not None else {"text": "", "deleted": True}
        mine = (ExpertReplyRecord.platform == platform, ExpertReplyRecord.message_id == message_id)
        with Session(self.engine) as session:  # a read first: every edit anywhere arrives here, few are replies
            if session.scalar(select(ExpertReplyRecord.id).where(*mine)) is None:
                return False
        with Session(self.engine) as session, session.begin():
            return session.execute(update(ExpertReplyRecord).where(
                ExpertReplyRecord.platform == platform, ExpertReplyRecord.message_id == message_id,
            ).values(**values)).rowcount > 0

    def expert_replies(self, handoff_id: int) -> list[ExpertReplyRecord]:
        """A hand-off's expert replies still standing, in the order they were written."""
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(
                select(ExpertReplyRecord).where(ExpertReplyRecord.handoff_id == handoff_id,
                                                ExpertReplyRecord.deleted.is_(False))
                # Within one instant, the platform's ids (Slack's ts, Discord's snowflakes) keep the order.
                .order_by(ExpertReplyRecord.posted_at, func.length(ExpertReplyRecord.message_id),
                          ExpertReplyRecord.message_id)
            ))

    def handoff_stats(self) -> HandoffStats:
        with Session(self.engine) as session:
            rows = session.execute(select(HandoffRecord.requested_at, HandoffRecord.resolved_at)).all()
        waits = sorted(
            (_aware(done) - _aware(asked)).total_seconds() / 60 for asked, done in rows if done is not None
        )
        median = waits[len(waits) // 2] if waits else None
        return HandoffStats(requested=len(rows), resolved=len(waits), median_minutes_to_resolve=median)

    # ------------------------------------------------------------------ deliveries

    def claim_event(self, platform: str, event_id: str, *, ttl: timedelta) -> bool:
        """True for the first delivery of an event within `ttl`, across every process on this
        database: the primary key decides between two replicas that receive it at once."""
        now = _now()
        insert = _dialect_insert(self.engine)
        stmt = insert(DeliveredEventRecord).values(platform=platform, event_id=event_id, seen_at=now)
        with Session(self.engine) as session, session.begin():
            # An expired claim is taken over, so one event id is never refused forever.
            # RETURNING, not rowcount: an ORM-enabled INSERT's rowcount is -1 on PostgreSQL.
            claimed = session.execute(stmt.on_conflict_do_update(
                index_elements=["platform", "event_id"], set_={"seen_at": now},
                where=DeliveredEventRecord.__table__.c.seen_at < now - ttl,
            ).returning(DeliveredEventRecord.__table__.c.event_id)).first() is not None
            if claimed and secrets.randbelow(_PURGE_EVERY) == 0:
                session.execute(delete(DeliveredEventRecord).where(DeliveredEventRecord.seen_at < now - ttl))
        return claimed

    # ------------------------------------------------------------------ ratings

    def rate(
        self, answer_id: str, *, platform: str, user_id: str, value: int,
        reason: str | None = None, correction: str | None = None,
    ) -> RatingRecord:
        """Record or replace this user's vote on an answer (last write wins).

        One statement (INSERT … ON CONFLICT DO UPDATE), so two clicks at once cannot both insert:
        the second one updates what the first wrote."""
        if value not in (1, -1):
            raise ValueError(f"a rating is +1 or -1, got {value!r}")
        user, now = self.user_hash(platform, user_id), _now()
        table = RatingRecord.__table__
        insert = _dialect_insert(self.engine)
        stmt = insert(RatingRecord).values(
            answer_id=answer_id, user_hash=user, value=value, created_at=now, updated_at=now,
            reason=reason.strip() or None if reason is not None else None,
            correction=correction.strip() or None if correction is not None else None,
        )
        changed = table.c.value != stmt.excluded.value  # a changed vote drops the explanation given for the old one

        def kept(column: str, given: str | None):
            return stmt.excluded[column] if given is not None else case((changed, None), else_=table.c[column])

        stmt = stmt.on_conflict_do_update(
            index_elements=["answer_id", "user_hash"],
            set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at,
                  "reason": kept("reason", reason), "correction": kept("correction", correction)},
        ).returning(RatingRecord)
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                self._adopt_unsalted_vote(session, answer_id, platform, user_id)
                return session.scalars(stmt).one()
        except IntegrityError as exc:  # the foreign key: no such answer
            raise UnknownAnswer(answer_id) from exc

    def retract(self, answer_id: str, *, platform: str, user_id: str, value: int) -> bool:
        """Delete this user's vote on an answer if it is still `value` (a removed 👍/👎 reaction).

        A vote changed since (👍 reaction, then the 👎 button) is left alone, and so is an answer
        the user never voted on. True if a vote was removed; stats and export no longer count it.
        """
        if value not in (1, -1):
            raise ValueError(f"a rating is +1 or -1, got {value!r}")
        user = self.user_hash(platform, user_id)
        with Session(self.engine) as session, session.begin():
            self._adopt_unsalted_vote(session, answer_id, platform, user_id)
            removed = session.execute(
                delete(RatingRecord).where(
                    RatingRecord.answer_id == answer_id, RatingRecord.user_hash == user, RatingRecord.value == value,
                )
            ).rowcount
        return removed > 0

    def _adopt_unsalted_vote(self, session: Session, answer_id: str, platform: str, user_id: str) -> None:
        """Databases from before the salt hold votes under the unsalted hash; the first time that
        user touches the vote again it moves to their salted hash, so it is replaced, not doubled."""
        if not self._salt:
            return
        salted, unsalted = self.user_hash(platform, user_id), hash_user(platform, user_id)
        taken = select(RatingRecord.id).where(RatingRecord.answer_id == answer_id, RatingRecord.user_hash == salted)
        session.execute(
            update(RatingRecord)
            .where(RatingRecord.answer_id == answer_id, RatingRecord.user_hash == unsalted, ~taken.exists())
            .values(user_hash=salted)
        )

    def ratings(self, answer_id: str) -> list[RatingRecord]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(select(RatingRecord).where(RatingRecord.answer_id == answer_id)))

    def rated_answers(self) -> Iterator[tuple[AnswerRecord, list[RatingRecord]]]:
        """Every answer with at least one rating or a review, oldest first (for the training export)."""
        reviews = table("reviews", column("answer_id"))  # feedback/reviews.py
        with Session(self.engine, expire_on_commit=False) as session:
            rated = select(RatingRecord.answer_id).union(select(reviews.c.answer_id))
            for record in session.scalars(
                select(AnswerRecord).where(AnswerRecord.id.in_(rated)).order_by(AnswerRecord.created_at)
            ):
                yield record, list(record.ratings)

    def document_votes(self, collection: str) -> dict[str, tuple[int, int]]:
        """Document path → (👍, 👎) votes on the answers from `collection` that cited it (each
        user's vote once per answer; answers from several collections count for each)."""
        tally: dict[str, list[int]] = {}
        with Session(self.engine) as session:
            rows = session.execute(
                select(AnswerRecord.collection, AnswerRecord.sources, RatingRecord.value)
                .join(RatingRecord, RatingRecord.answer_id == AnswerRecord.id)
                .where(AnswerRecord.collection.contains(collection, autoescape=True))
            )
            for answered_from, sources, value in rows:
                if collection not in answered_from.split("+"):
                    continue
                for path in {s.get("path") for s in sources or [] if isinstance(s, dict) and s.get("path")}:
                    counts = tally.setdefault(path, [0, 0])
                    counts[0 if value > 0 else 1] += 1
        return {path: (up, down) for path, (up, down) in tally.items()}

    def stats(self) -> list[ModelStats]:
        with Session(self.engine) as session:
            answers = dict(session.execute(select(AnswerRecord.model, func.count()).group_by(AnswerRecord.model)).all())
            votes = session.execute(
                select(AnswerRecord.model, RatingRecord.value, func.count())
                .join(RatingRecord, RatingRecord.answer_id == AnswerRecord.id)
                .group_by(AnswerRecord.model, RatingRecord.value)
            ).all()
        up = {m: n for m, v, n in votes if v == 1}
        down = {m: n for m, v, n in votes if v == -1}
        return [ModelStats(m, answers[m], up.get(m, 0), down.get(m, 0)) for m in sorted(answers)]


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=timezone.utc) if moment and not moment.tzinfo else moment  # SQLite drops the zone


SALT_FILE = "user_hash_salt"
_PURGE_EVERY = 200  # one claim in this many also deletes the expired ones


def user_salt(settings) -> str:
    """TEAMBOT_USER_HASH_SALT, or else a random salt made once and kept in the data dir (owner-only):
    an unsalted hash of a Slack or Discord user id is a lookup away from the id."""
    from core.settings import secret_value

    if configured := secret_value(settings.user_hash_salt):
        return configured
    salt, created = read_or_create(Path(settings.data_dir) / SALT_FILE)
    if created:
        logging.getLogger("teambot.feedback").warning(
            "TEAMBOT_USER_HASH_SALT is not set: made a random salt for hashing user ids in %s (readable by this user "
            "only). Keep it, or set the variable; with several hosts on one database, set the same value on each.",
            Path(settings.data_dir) / SALT_FILE,
        )
    return salt


def _dialect_insert(engine: Engine):
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ValueError(f"the feedback store supports SQLite and PostgreSQL, not {engine.dialect.name}")
    return insert


def _alembic_config(connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


# Alembic's migration context is process-global, and two bots starting on a new database would both
# create it: one upgrade at a time, in this process and across processes.
_UPGRADING = threading.Lock()
_PG_UPGRADE_LOCK = 0x7465616D626F74  # pg_advisory_xact_lock key: "teambot"


@contextmanager
def _upgrade_transaction(engine: Engine):
    with _UPGRADING, _file_lock(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_UPGRADE_LOCK})
        yield connection


def _to_wal(path: Path) -> None:
    """Put a new database in WAL mode once, under the upgrade lock: two processes converting it at
    the same moment both need its exclusive lock, and SQLite refuses one at once ("database is
    locked", no busy wait: each holds the shared lock the other waits for)."""
    import sqlite3

    with open(f"{path}.upgrade-lock", "a", opener=private_opener) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        connection = sqlite3.connect(path, timeout=30)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()


@contextmanager
def _file_lock(engine: Engine):
    """SQLite's upgrade lock, held until the upgrade's transaction has committed: released any
    earlier, the next process reads the old revision and runs the same migration again."""
    if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        yield
        return
    with open(f"{engine.url.database}.upgrade-lock", "a", opener=private_opener) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the database's schema up to the newest migration; (revision before, revision now)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    before = current_revision(engine)
    head = head_revision()
    if before != head:
        with _upgrade_transaction(engine) as connection:
            # Another process may have upgraded it while this one waited for the lock.
            if MigrationContext.configure(connection).get_current_revision() != head:
                command.upgrade(_alembic_config(connection), "head")
    return before, head
