"""What the review page reads and writes (`teambot review`), in the feedback database.

Reviewers log in with a password kept as an scrypt hash (hashlib's, RFC 7914); five failed logins
in a row lock the account for LOCKOUT. A review of an answer holds the reviewer's correction (the
training target from then on, over any user's), the cause of a bad answer, "exclude from
training", and whether the correction is approved to be served for matching questions. Every change
to a review or to a document override is kept as an event: who, when, old and new value.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from functools import cache
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, Text, and_, case, func, literal, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from feedback.store import (
    AnswerRecord, Base, ExpertReplyRecord, FeedbackStore, HandoffRecord, RatingRecord, _aware, _now,
)

CAUSES = {
    "retrieval_missed": "retrieval missed the right passage",
    "wrong_passage": "wrong passage used",
    "wrong_despite_passage": "answer wrong despite the right passage",
    "tone_format": "tone or format",
    "outdated_document": "outdated document",
    "not_answerable": "not answerable from the documents",
}
DOCUMENT_ACTIONS = ("demote", "hide")
ROLES = ("admin", "reviewer")
SORTS = {"worst": "most 👎 over 👍 first", "newest": "newest first", "oldest": "oldest first",
         "most_down": "most 👎 first", "most_up": "most 👍 first"}
MAX_FAILED_LOGINS = 5
STALE_DAYS = 180  # a cited page not changed at its origin for this long is listed on the quality page
LOCKOUT = timedelta(minutes=15)
SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # OWASP's minimum for scrypt; ~50 ms a check


class ReviewerRecord(Base):
    __tablename__ = "reviewers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # +1 ends every session
    role: Mapped[str] = mapped_column(String(16), default="reviewer", server_default="reviewer")  # admin | reviewer
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class ClaimRecord(Base):
    """A reviewer took an answer to review: others opening it are told, and a second save over
    theirs is refused (the form's `seen` stamp)."""

    __tablename__ = "review_claims"

    answer_id: Mapped[str] = mapped_column(ForeignKey("answers.id"), primary_key=True)
    reviewer: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReviewRecord(Base):
    __tablename__ = "reviews"

    answer_id: Mapped[str] = mapped_column(ForeignKey("answers.id"), primary_key=True)
    correction: Mapped[str | None] = mapped_column(Text)
    cause: Mapped[str | None] = mapped_column(String(32))
    exclude: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    approved: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0", index=True)
    reviewer: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReviewEventRecord(Base):
    __tablename__ = "review_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(String(1200), index=True)  # "answer:<id>" or "document:<collection>:<path>"
    reviewer: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    field: Mapped[str] = mapped_column(String(32))
    old: Mapped[str | None] = mapped_column(Text)
    new: Mapped[str | None] = mapped_column(Text)


class DocumentOverrideRecord(Base):
    __tablename__ = "document_overrides"

    collection: Mapped[str] = mapped_column(String(128), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    action: Mapped[str] = mapped_column(String(16))
    reviewer: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def stamp(review) -> str:
    """A review's version, as the review form carries it (empty: not reviewed yet)."""
    return _aware(review.updated_at).isoformat() if review is not None and review.updated_at else ""


class ReviewError(ValueError):
    pass


class ReviewConflict(ReviewError):
    """Another reviewer saved the review after this one opened it."""


@cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(16))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT, dklen=32)
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    computed = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    return hmac.compare_digest(computed.hex(), digest)


@dataclass
class InboxFilter:
    # attention (more 👎 than 👍, or a person was asked for help), down, up, none (no votes), any,
    # expert (an expert answered its hand-off)
    vote: str = "attention"
    collection: str = ""
    model: str = ""
    since: date | None = None
    until: date | None = None
    has_reason: bool = False
    reviewed: str = "no"  # any, yes, no: the inbox shrinks as answers are reviewed
    search: str = ""  # words in the question or the answer
    sort: str = "worst"  # one of SORTS
    page: int = 1
    per_page: int = 25


@dataclass
class InboxRow:
    id: str
    created_at: datetime
    question: str
    answer: str
    collection: str
    model: str
    up: int
    down: int
    reasons: int
    reviewed: bool
    cause: str | None
    expert: bool = False  # an expert answered its resolved hand-off: a draft to review
    corrections: int = 0  # users' suggested corrections (the 👎 form)


@dataclass(frozen=True)
class ExpertDraft:
    """What the experts wrote in a resolved hand-off's thread, joined in order: a draft answer."""

    text: str
    replies: int
    experts: int
    resolved_at: datetime


@dataclass
class Login:
    ok: bool
    locked_until: datetime | None = None
    failures: int = 0


@dataclass
class Quality:
    days: list[str] = field(default_factory=list)
    models: dict[str, dict[str, list]] = field(default_factory=dict)  # model -> {answers, up, down, up_rate, abstention_rate}
    causes: dict[str, list[int]] = field(default_factory=dict)  # cause -> per day
    documents: list[tuple[str, str, int, int]] = field(default_factory=list)  # (collection, path, 👎, 👍)
    # Synced pages answers cite that have not changed at their origin for STALE_DAYS:
    # (collection, title, link or path, times cited, last updated as YYYY-MM-DD)
    stale: list[tuple[str, str, str, int, str]] = field(default_factory=list)


class ReviewStore:
    """The review page's queries and writes, on the feedback store's engine."""

    def __init__(self, store: FeedbackStore) -> None:
        self.store = store
        self.engine = store.engine

    # ------------------------------------------------------------------ reviewers

    def add_reviewer(self, name: str, password: str, role: str | None = None) -> bool:
        """Create the reviewer (the first one an admin, later ones reviewers unless `role` says), or
        set a new password (and unlock; the role changes only when given); True when created."""
        if role not in (None, *ROLES):
            raise ReviewError(f"a role is one of {', '.join(ROLES)}")
        name = name.strip()
        if not name or len(name) > 64:
            raise ReviewError("a reviewer name is 1 to 64 characters")
        if len(password) < 12:
            raise ReviewError("use a password of at least 12 characters")
        with Session(self.engine) as session, session.begin():
            reviewer = session.get(ReviewerRecord, name)
            if reviewer is None:
                if role is None:  # the first one made manages the others
                    admins = session.scalar(select(func.count()).select_from(ReviewerRecord)
                                            .where(ReviewerRecord.role == "admin"))
                    role = "reviewer" if admins else "admin"
                session.add(ReviewerRecord(name=name, password_hash=hash_password(password), created_at=_now(),
                                           role=role, disabled=False))
                return True
            reviewer.password_hash, reviewer.failed_logins, reviewer.locked_until = hash_password(password), 0, None
            if role:
                reviewer.role = role
            reviewer.session_version = ReviewerRecord.session_version + 1  # the sessions open end
            return False

    def login(self, name: str, password: str) -> Login:
        """Check a password. An unknown name, a locked account and a wrong password take one path (a
        read, a password check, an UPDATE that finds no row for the first two): neither the answer
        nor its timing tells them apart. Failures are counted in the UPDATE itself (failed_logins + 1,
        not a value read before), so parallel guesses each count, on SQLite too."""
        now, r = _now(), ReviewerRecord
        with Session(self.engine) as session:
            reviewer = session.get(r, name)
        usable = reviewer is not None and not reviewer.disabled and not (_aware(reviewer.locked_until) or now) > now
        stored = reviewer.password_hash if usable else _dummy_hash()
        right = check_password(password, stored) and usable
        unlocked = and_(r.name == name, or_(r.locked_until.is_(None), r.locked_until <= now))
        with self.engine.begin() as connection:
            if right and connection.execute(update(r).where(unlocked, r.password_hash == stored)
                                            .values(failed_logins=0, locked_until=None)).rowcount:
                return Login(ok=True)
            failures = case((r.locked_until.is_(None), r.failed_logins + 1), else_=1)  # a lock ran out: five more tries
            row = connection.execute(update(r).where(unlocked).values(
                failed_logins=failures,
                locked_until=case((failures >= MAX_FAILED_LOGINS, literal(now + LOCKOUT, r.locked_until.type))),
            ).returning(r.failed_logins, r.locked_until)).first()
        return Login(ok=False, locked_until=_aware(row[1]) if row else None, failures=row[0] if row else 0)

    def session_key(self, name: str) -> str | None:
        """What a session of `name` must carry to stay valid: None when the reviewer is gone or
        locked; it changes with the password and the session version (end_sessions), so a new
        password or a logout ends every session, a copy of the cookie kept from before included."""
        with Session(self.engine) as session:
            reviewer = session.get(ReviewerRecord, name)
            if reviewer is None or reviewer.disabled or (_aware(reviewer.locked_until) or _now()) > _now():
                return None
            return hashlib.sha256(f"{reviewer.session_version}${reviewer.password_hash}".encode()).hexdigest()[:32]

    def end_sessions(self, name: str) -> None:
        """Log `name` out everywhere: the session version moves on (a logout)."""
        with self.engine.begin() as connection:
            connection.execute(update(ReviewerRecord).where(ReviewerRecord.name == name)
                               .values(session_version=ReviewerRecord.session_version + 1))

    def reviewers(self) -> list[ReviewerRecord]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(select(ReviewerRecord).order_by(ReviewerRecord.name)))

    def role_of(self, name: str) -> str | None:
        with Session(self.engine) as session:
            reviewer = session.get(ReviewerRecord, name)
            return None if reviewer is None or reviewer.disabled else reviewer.role

    def set_disabled(self, name: str, disabled: bool, *, by: str | None = None) -> bool:
        """Disable (every session ends, no login) or enable a reviewer; True when it changed. The
        last admin who can log in is never disabled, nor an admin by themself."""
        with Session(self.engine) as session, session.begin():
            reviewer = session.get(ReviewerRecord, name, with_for_update=True)
            if reviewer is None:
                raise ReviewError(f"no reviewer {name!r}")
            if disabled and by == name:
                raise ReviewError("you cannot disable yourself")
            if disabled and reviewer.role == "admin" and session.scalar(
                    select(func.count()).select_from(ReviewerRecord).where(
                        ReviewerRecord.role == "admin", ReviewerRecord.disabled.is_(False))) <= 1:
                raise ReviewError("the last admin cannot be disabled")
            if reviewer.disabled == disabled:
                return False
            reviewer.disabled = disabled
            reviewer.session_version = ReviewerRecord.session_version + 1
            return True

    # ------------------------------------------------------------------ who is on an answer

    def take(self, answer_id: str, reviewer: str) -> str | None:
        """`reviewer` takes the answer; returns who had it before, if someone else did."""
        with Session(self.engine) as session, session.begin():
            claim = session.get(ClaimRecord, answer_id, with_for_update=True)
            before = claim.reviewer if claim is not None and claim.reviewer != reviewer else None
            if claim is None:
                session.add(ClaimRecord(answer_id=answer_id, reviewer=reviewer, at=_now()))
            else:
                claim.reviewer, claim.at = reviewer, _now()
            return before

    def claim(self, answer_id: str) -> ClaimRecord | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(ClaimRecord, answer_id)

    # ------------------------------------------------------------------ inbox

    def inbox(self, f: InboxFilter) -> tuple[list[InboxRow], int]:
        """One page of answers and the number matching; 👎-heavy first, then newest."""
        votes = (
            select(
                RatingRecord.answer_id.label("answer_id"),
                func.sum(case((RatingRecord.value > 0, 1), else_=0)).label("up"),
                func.sum(case((RatingRecord.value < 0, 1), else_=0)).label("down"),
                func.sum(case((and_(RatingRecord.reason.is_not(None), RatingRecord.reason != ""), 1), else_=0)).label("reasons"),
                func.sum(case((and_(RatingRecord.correction.is_not(None), RatingRecord.correction != ""), 1),
                              else_=0)).label("corrections"),
            ).group_by(RatingRecord.answer_id).subquery()
        )
        up, down = func.coalesce(votes.c.up, 0), func.coalesce(votes.c.down, 0)
        expert = (
            select(ExpertReplyRecord.id).join(HandoffRecord, HandoffRecord.id == ExpertReplyRecord.handoff_id)
            .where(HandoffRecord.answer_id == AnswerRecord.id, HandoffRecord.resolved_at.is_not(None),
                   ExpertReplyRecord.deleted.is_(False))
            .exists()
        )
        query = (
            select(AnswerRecord, up, down, func.coalesce(votes.c.reasons, 0), ReviewRecord.answer_id, ReviewRecord.cause,
                   expert, func.coalesce(votes.c.corrections, 0))
            .outerjoin(votes, votes.c.answer_id == AnswerRecord.id)
            .outerjoin(ReviewRecord, ReviewRecord.answer_id == AnswerRecord.id)
        )
        conditions = []
        if f.vote == "attention":
            helped = select(HandoffRecord.id).where(HandoffRecord.answer_id == AnswerRecord.id).exists()
            conditions.append(or_(down > up, helped))
        elif f.vote == "down":
            conditions.append(down > up)
        elif f.vote == "up":
            conditions.append(up > down)
        elif f.vote == "none":
            conditions.append(up + down == 0)
        elif f.vote == "expert":
            conditions.append(expert)
        if f.collection:  # answered from it, alone or with others ("A+B")
            c = AnswerRecord.collection
            conditions.append(or_(c == f.collection, c.startswith(f.collection + "+", autoescape=True),
                                  c.endswith("+" + f.collection, autoescape=True),
                                  c.contains("+" + f.collection + "+", autoescape=True)))
        if f.model:
            conditions.append(AnswerRecord.model == f.model)
        if f.since:
            conditions.append(AnswerRecord.created_at >= datetime.combine(f.since, datetime.min.time(), timezone.utc))
        if f.until:
            conditions.append(AnswerRecord.created_at < datetime.combine(f.until + timedelta(days=1), datetime.min.time(), timezone.utc))
        if f.has_reason:  # a reason or a suggested correction: something a user wrote
            conditions.append(or_(votes.c.reasons > 0, votes.c.corrections > 0))
        if f.reviewed == "yes":
            conditions.append(ReviewRecord.answer_id.is_not(None))
        elif f.reviewed == "no":
            conditions.append(ReviewRecord.answer_id.is_(None))
        for word in f.search.split()[:8]:  # every word, in the question or the answer
            conditions.append(or_(AnswerRecord.question.icontains(word, autoescape=True),
                                  AnswerRecord.answer_text.icontains(word, autoescape=True)))
        query = query.where(*conditions)
        order = {"worst": ((down - up).desc(), AnswerRecord.created_at.desc()),
                 "newest": (AnswerRecord.created_at.desc(),), "oldest": (AnswerRecord.created_at.asc(),),
                 "most_down": (down.desc(), AnswerRecord.created_at.desc()),
                 "most_up": (up.desc(), AnswerRecord.created_at.desc())}[f.sort if f.sort in SORTS else "worst"]
        with Session(self.engine) as session:
            total = session.scalar(select(func.count()).select_from(query.with_only_columns(AnswerRecord.id).subquery()))
            page = session.execute(
                query.order_by(*order, AnswerRecord.id)
                .limit(f.per_page).offset((max(f.page, 1) - 1) * f.per_page)
            ).all()
        rows = [
            InboxRow(id=a.id, created_at=_aware(a.created_at), question=a.question, answer=a.answer_text,
                     collection=a.collection, model=a.model, up=int(u), down=int(d), reasons=int(r),
                     reviewed=reviewed is not None, cause=cause, expert=bool(by_expert), corrections=int(c))
            for a, u, d, r, reviewed, cause, by_expert, c in page
        ]
        return rows, int(total or 0)

    def facets(self) -> tuple[list[str], list[str]]:
        """The collections and models answers exist for (the inbox's filter choices)."""
        with Session(self.engine) as session:
            collections = sorted({c for (c,) in session.execute(select(AnswerRecord.collection).distinct()) if c})
            models = sorted({m for (m,) in session.execute(select(AnswerRecord.model).distinct()) if m})
        return collections, models

    # ------------------------------------------------------------------ one answer

    def review(self, answer_id: str) -> ReviewRecord | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(ReviewRecord, answer_id)

    def next_in_queue(self, f: InboxFilter, after: str) -> str | None:
        """The answer to open after `after` in the queue `f` (its first page of 100, in order):
        the one that followed it, else the first still in it."""
        rows, _ = self.inbox(InboxFilter(**{**f.__dict__, "page": 1, "per_page": 100}))
        ids = [r.id for r in rows]
        if after in ids and ids.index(after) + 1 < len(ids):
            return ids[ids.index(after) + 1]
        return next((i for i in ids if i != after), None)

    def bulk(self, answer_ids: list[str], reviewer: str, action: str, cause: str | None) -> int:
        """One action on many answers from the inbox: "reviewed" (marked reviewed as they are),
        "exclude" (from training; an approved correction is then withdrawn from serving) or "cause"
        (set). Other parts of each review are kept. Returns how many answers changed."""
        if action not in ("reviewed", "exclude", "cause"):
            raise ReviewError(f"unknown action {action!r}")
        if action == "cause" and cause not in CAUSES:
            raise ReviewError("choose the cause to set")
        if not answer_ids:
            raise ReviewError("no answers were selected")
        changed = 0
        for answer_id in dict.fromkeys(answer_ids):
            review = self.review(answer_id)
            current = {"correction": review.correction if review else None, "cause": review.cause if review else None,
                       "exclude": bool(review and review.exclude), "approved": bool(review and review.approved)}
            if action == "reviewed":
                changed += self._mark_reviewed(answer_id, reviewer)
                continue
            wanted = {**current, **({"exclude": True, "approved": False} if action == "exclude" else {"cause": cause})}
            changed += bool(self.save_review(answer_id, reviewer, **wanted))
        return changed

    def _mark_reviewed(self, answer_id: str, reviewer: str) -> bool:
        """A review with nothing to change: the answer leaves the "not reviewed" queue."""
        if self.store.get_answer(answer_id) is None:
            raise ReviewError(f"no answer {answer_id}")
        with Session(self.engine) as session, session.begin():
            if session.get(ReviewRecord, answer_id, with_for_update=True) is not None:
                return False
            at = _now()
            session.add(ReviewRecord(answer_id=answer_id, correction=None, cause=None, exclude=False, approved=False,
                                     reviewer=reviewer, updated_at=at))
            session.add(ReviewEventRecord(subject=f"answer:{answer_id}", reviewer=reviewer, at=at, field="reviewed",
                                          old=None, new="true"))
        return True

    def export_rows(self) -> list[dict]:
        """Every review with its answer, for the CSV/JSONL export."""
        with Session(self.engine) as session:
            rows = session.execute(select(AnswerRecord, ReviewRecord)
                                   .join(ReviewRecord, ReviewRecord.answer_id == AnswerRecord.id)
                                   .order_by(ReviewRecord.updated_at)).all()
        return [{"answer_id": a.id, "asked_at": _aware(a.created_at).isoformat(), "platform": a.platform,
                 "collection": a.collection, "model": a.model, "question": a.question, "answer": a.answer_text,
                 "correction": r.correction or "", "cause": r.cause or "", "excluded": r.exclude,
                 "approved": r.approved, "reviewer": r.reviewer, "reviewed_at": _aware(r.updated_at).isoformat()}
                for a, r in rows]

    def expert_draft(self, answer_id: str) -> ExpertDraft | None:
        """The experts' answer to the answer's resolved hand-off, as it stands now (edits and
        deletions in the thread followed), or None."""
        with Session(self.engine, expire_on_commit=False) as session:
            handoff = session.scalars(select(HandoffRecord).where(HandoffRecord.answer_id == answer_id)).first()
        if handoff is None or handoff.resolved_at is None:
            return None
        replies = self.store.expert_replies(handoff.id)
        if not replies:
            return None
        return ExpertDraft("\n\n".join(r.text for r in replies), len(replies), len({r.author for r in replies}),
                           _aware(handoff.resolved_at))

    def events(self, subject: str) -> list[ReviewEventRecord]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(
                select(ReviewEventRecord).where(ReviewEventRecord.subject == subject).order_by(ReviewEventRecord.id.desc())
            ))

    def save_review(self, answer_id: str, reviewer: str, *, correction: str | None, cause: str | None,
                    exclude: bool, approved: bool, seen: str | None = None) -> list[str]:
        """Write the review; returns the fields that changed (each one an event in the trail).
        `seen`: the review's stamp when the form was opened (`stamp`); if another reviewer has
        saved since, nothing is written (ReviewConflict)."""
        correction = (correction or "").strip() or None
        cause = cause or None
        if cause is not None and cause not in CAUSES:
            raise ReviewError(f"unknown cause {cause!r}")
        if approved and not correction:
            raise ReviewError("only a written correction can be approved to be served")
        if approved and exclude:
            raise ReviewError("an answer excluded from training is not served either: approve or exclude it")
        if self.store.get_answer(answer_id) is None:
            raise ReviewError(f"no answer {answer_id}")
        new = {"correction": correction, "cause": cause, "exclude": exclude, "approved": approved}
        with Session(self.engine) as session, session.begin():
            review = session.get(ReviewRecord, answer_id, with_for_update=True)
            if seen is not None and stamp(review) != seen and review is not None and review.reviewer != reviewer:
                raise ReviewConflict(f"{review.reviewer} saved this review at {_aware(review.updated_at):%H:%M} UTC "
                                     "while you were editing it; see the History below")
            if review is None:
                review = ReviewRecord(answer_id=answer_id, correction=None, cause=None, exclude=False, approved=False,
                                      reviewer=reviewer, updated_at=_now())
                if any(new.values()):  # saving an untouched form does not mark the answer reviewed
                    session.add(review)
            changed = [k for k, v in new.items() if getattr(review, k) != v]
            at = _now()
            for key in changed:
                session.add(ReviewEventRecord(subject=f"answer:{answer_id}", reviewer=reviewer, at=at, field=key,
                                              old=_text(getattr(review, key)), new=_text(new[key])))
                setattr(review, key, new[key])
            if changed:
                review.reviewer, review.updated_at = reviewer, at
        return changed

    def reviews(self) -> dict[str, ReviewRecord]:
        """Every review by answer id (for the training export)."""
        with Session(self.engine, expire_on_commit=False) as session:
            return {r.answer_id: r for r in session.scalars(select(ReviewRecord))}

    def approved_corrections(self, collection: str) -> list[tuple[AnswerRecord, ReviewRecord]]:
        """Reviewed answers approved to be served again, from `collection` (the bots' reviewed answers)."""
        with Session(self.engine, expire_on_commit=False) as session:
            rows = session.execute(
                select(AnswerRecord, ReviewRecord).join(ReviewRecord, ReviewRecord.answer_id == AnswerRecord.id)
                .where(ReviewRecord.approved.is_(True), ReviewRecord.exclude.is_(False))
                .where(AnswerRecord.collection.contains(collection, autoescape=True))
            ).all()
        return [(a, r) for a, r in rows if collection in a.collection.split("+")]

    # ------------------------------------------------------------------ documents

    def set_document_override(self, collection: str, path: str, action: str | None, reviewer: str) -> bool:
        """Demote or hide a document in retrieval (None: back to normal); True when it changed."""
        if action is not None and action not in DOCUMENT_ACTIONS:
            raise ReviewError(f"unknown document action {action!r}")
        with Session(self.engine) as session, session.begin():
            current = session.get(DocumentOverrideRecord, (collection, path), with_for_update=True)
            old = current.action if current else None
            if old == action:
                return False
            if action is None:
                session.delete(current)
            elif current is None:
                session.add(DocumentOverrideRecord(collection=collection, path=path, action=action, reviewer=reviewer, updated_at=_now()))
            else:
                current.action, current.reviewer, current.updated_at = action, reviewer, _now()
            session.add(ReviewEventRecord(subject=f"document:{collection}:{path}", reviewer=reviewer, at=_now(),
                                          field="document", old=old, new=action))
        return True

    def document_overrides(self, collection: str) -> dict[str, str]:
        with Session(self.engine) as session:
            return dict(session.execute(
                select(DocumentOverrideRecord.path, DocumentOverrideRecord.action)
                .where(DocumentOverrideRecord.collection == collection)
            ).all())

    def reviewed_since(self, days: int) -> int:
        """Answers whose review was saved in the last `days` days."""
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(ReviewRecord)
                                      .where(ReviewRecord.updated_at >= _now() - timedelta(days=days))) or 0)

    # ------------------------------------------------------------------ quality over time

    def quality(self, days: int = 30, today: date | None = None) -> Quality:
        """Per day and model: answers, 👍/👎 and abstentions; causes per day; documents behind 👎."""
        today = today or _now().date()
        first = today - timedelta(days=days - 1)
        start = datetime.combine(first, datetime.min.time(), timezone.utc)
        labels = [(first + timedelta(days=i)).isoformat() for i in range(days)]
        index = {label: i for i, label in enumerate(labels)}
        result = Quality(days=labels)
        with Session(self.engine) as session:
            answers = session.execute(
                select(AnswerRecord.id, AnswerRecord.created_at, AnswerRecord.model, AnswerRecord.outcome,
                       AnswerRecord.collection, AnswerRecord.sources)
                .where(AnswerRecord.created_at >= start)
            ).all()
            votes = session.execute(
                select(RatingRecord.answer_id, RatingRecord.value).join(AnswerRecord, AnswerRecord.id == RatingRecord.answer_id)
                .where(AnswerRecord.created_at >= start)
            ).all()
            causes = session.execute(
                select(ReviewRecord.cause, ReviewRecord.updated_at).where(ReviewRecord.cause.is_not(None), ReviewRecord.updated_at >= start)
            ).all()
        by_answer: dict[str, list[int]] = {}
        for answer_id, value in votes:
            by_answer.setdefault(answer_id, []).append(value)
        documents: dict[tuple[str, str], list[int]] = {}
        for answer_id, created, model, outcome, collection, sources in answers:
            day = index.get(_aware(created).date().isoformat())
            if day is None:
                continue
            series = result.models.setdefault(model, {k: [0] * days for k in ("answers", "up", "down", "abstained")})
            series["answers"][day] += 1
            series["abstained"][day] += outcome == "abstained"
            for value in by_answer.get(answer_id, []):
                series["up" if value > 0 else "down"][day] += 1
                for source in sources or []:
                    if isinstance(source, dict) and source.get("path"):
                        counts = documents.setdefault((collection, source["path"]), [0, 0])
                        counts[0 if value < 0 else 1] += 1
        for series in result.models.values():
            series["up_rate"] = [u / (u + d) if u + d else None for u, d in zip(series["up"], series["down"])]
            series["abstention_rate"] = [a / n if n else None for a, n in zip(series["abstained"], series["answers"])]
        for cause, updated in causes:
            day = index.get(_aware(updated).date().isoformat())
            if day is not None:
                result.causes.setdefault(cause, [0] * days)[day] += 1
        result.documents = sorted(
            ((c, p, down, up) for (c, p), (down, up) in documents.items() if down),
            key=lambda row: (-row[2], row[3], row[1]),
        )[:10]
        result.stale = _stale(answers, datetime.combine(today, datetime.max.time(), timezone.utc))
        return result


def _stale(answers, now: datetime) -> list[tuple[str, str, str, int, str]]:
    """The synced pages most cited by these answers whose origin has not changed for STALE_DAYS."""
    cited: dict[tuple[str, str], list] = {}
    for _id, _created, _model, _outcome, collection, sources in answers:
        for source in sources or []:
            if not isinstance(source, dict) or not source.get("updated") or not source.get("path"):
                continue
            try:
                updated = datetime.fromisoformat(source["updated"])
            except ValueError:
                continue
            updated = updated if updated.tzinfo else updated.replace(tzinfo=timezone.utc)
            entry = cited.setdefault((collection, source["path"]), [source.get("title") or "", source.get("url") or
                                                                    source["path"], 0, updated])
            entry[2] += 1
            entry[3] = max(entry[3], updated)
    rows = [(c, title, link, count, updated.date().isoformat())
            for (c, _path), (title, link, count, updated) in cited.items() if now - updated > timedelta(days=STALE_DAYS)]
    return sorted(rows, key=lambda row: (-row[3], row[4]))[:10]


def _text(value) -> str | None:
    if value is None:
        return None
    return str(value).lower() if isinstance(value, bool) else str(value)
