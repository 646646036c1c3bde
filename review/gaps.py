"""Questions the documents don't answer: the answers that show a gap, grouped by question.

An answer shows a gap when the bot abstained (or its answer was replaced by the abstention:
ungrounded, uncited), when someone asked a person for help with it, or when it got more 👎 than
👍 and a reviewer named the cause "retrieval missed" or "not answerable". Their questions are
embedded with the project's embedder (the bots' own, pipeline/embedders.py) and grouped: a
question joins the group whose first question it is most similar to, at the embedder's
`same_topic` similarity or above, else starts one. Each gap lists how often it was asked, examples, and the documents its
answers were given most often (the closest the knowledge base came). A gap is closed once a
later answer to one of its questions got a 👍, or a reviewer approved an answer to one of them.
The thresholds were chosen on the fixed set in tests/test_gaps.py (24 questions, 7 topics and 4
single ones; precision and recall of the pairs grouped together: MiniLM at 0.45 1.00 / 0.89, e5
at 0.86 0.90 / 1.00).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from core.answer import Outcome
from feedback.reviews import ReviewRecord
from feedback.store import AnswerRecord, FeedbackStore, HandoffRecord, _aware

GAP_OUTCOMES = {Outcome.ABSTAINED.value, Outcome.UNGROUNDED.value, Outcome.UNCITED.value}
GAP_CAUSES = {"retrieval_missed", "not_answerable"}


@dataclass
class Gap:
    questions: list[str] = field(default_factory=list)  # as asked, newest first
    answer_ids: list[str] = field(default_factory=list)
    documents: list[tuple[str, int]] = field(default_factory=list)  # (path, answers given it), most first
    collections: list[str] = field(default_factory=list)
    first_asked: datetime | None = None
    last_asked: datetime | None = None
    closed: bool = False
    closed_by: str = ""  # "👍" or "reviewed answer"

    @property
    def count(self) -> int:
        return len(self.answer_ids)

    def as_dict(self) -> dict:
        return {"count": self.count, "examples": self.questions[:3], "questions": self.questions,
                "answers": self.answer_ids, "documents": [{"path": p, "answers": n} for p, n in self.documents],
                "collections": self.collections, "closed": self.closed, "closed_by": self.closed_by,
                "first_asked": self.first_asked.isoformat() if self.first_asked else None,
                "last_asked": self.last_asked.isoformat() if self.last_asked else None}


def _shows_gap(answer: AnswerRecord, review: ReviewRecord | None, handed_off: bool) -> bool:
    if answer.abstained or answer.outcome in GAP_OUTCOMES or handed_off:
        return True
    down = sum(1 for r in answer.ratings if r.value < 0)
    return down > len(answer.ratings) - down and review is not None and review.cause in GAP_CAUSES


def find_gaps(store: FeedbackStore, embed: Callable[[list[str]], np.ndarray], threshold: float, *,
              include_closed: bool = False) -> list[Gap]:
    """The gaps, most asked first (closed ones only with `include_closed`)."""
    with Session(store.engine) as session:
        answers = list(session.scalars(select(AnswerRecord).options(selectinload(AnswerRecord.ratings))
                                       .order_by(AnswerRecord.created_at)))
        reviews = {r.answer_id: r for r in session.scalars(select(ReviewRecord))}
        handed = set(session.scalars(select(HandoffRecord.answer_id)))
    showing = [a for a in answers if _shows_gap(a, reviews.get(a.id), a.id in handed)]
    if not showing:
        return []
    vectors = _normalized(embed([a.question for a in showing]))
    groups: list[list[int]] = []
    for i in range(len(showing)):
        if groups:
            similarity = vectors[[g[0] for g in groups]] @ vectors[i]
            best = int(np.argmax(similarity))
            if similarity[best] >= threshold:
                groups[best].append(i)
                continue
        groups.append([i])
    gaps = [_gap([showing[i] for i in group]) for group in groups]
    _close(gaps, [a for a in answers if a not in showing], vectors, showing, reviews, embed, threshold)
    gaps.sort(key=lambda g: (g.closed, -g.count, -(g.last_asked.timestamp() if g.last_asked else 0)))
    return [g for g in gaps if include_closed or not g.closed]


def question_embedder(settings):
    """Questions embedded as the bots embed them (pipeline/embedders.py), loaded once."""
    from pipeline.embedders import text_embedder

    embedder = text_embedder(settings)
    embedder.warm_up()

    def embed(texts: list[str]) -> np.ndarray:
        return np.array([embedder.run(text=t)["embedding"] for t in texts], dtype=np.float32).reshape(len(texts), -1)

    return embed


def _gap(members: list[AnswerRecord]) -> Gap:
    documents = Counter(path for a in members
                        for path in {d.get("path") for d in a.retrieved or [] if isinstance(d, dict) and d.get("path")})
    newest = sorted(members, key=lambda a: _aware(a.created_at), reverse=True)
    return Gap(questions=[a.question for a in newest], answer_ids=[a.id for a in newest],
               documents=documents.most_common(3), collections=sorted({a.collection for a in members}),
               first_asked=_aware(newest[-1].created_at), last_asked=_aware(newest[0].created_at))


def _close(gaps: list[Gap], others: list[AnswerRecord], vectors: np.ndarray, showing: list[AnswerRecord],
           reviews: dict, embed, threshold: float) -> None:
    """A gap closes when an answer to one of its questions was approved by a reviewer, or a later
    answer to a question like them got a 👍 (and no 👎)."""
    index = {a.id: i for i, a in enumerate(showing)}
    for gap in gaps:
        if any(reviews.get(a) is not None and reviews[a].approved for a in gap.answer_ids):
            gap.closed, gap.closed_by = True, "reviewed answer"
    liked = [a for a in others if a.ratings and all(r.value > 0 for r in a.ratings)]
    if not liked:
        return
    liked_vectors = _normalized(embed([a.question for a in liked]))
    for gap in gaps:
        if gap.closed:
            continue
        mine = vectors[[index[a] for a in gap.answer_ids]]
        for answer, vector in zip(liked, liked_vectors):
            if _aware(answer.created_at) > gap.first_asked and float((mine @ vector).max()) >= threshold:
                gap.closed, gap.closed_by = True, "👍"
                break


def _normalized(vectors) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
