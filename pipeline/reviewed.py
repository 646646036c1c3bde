"""Reviewed answers, served at once: a correction a reviewer approved on the review page answers
new questions that match the reviewed question closely (cosine similarity of the project's
embeddings at least `reviewed_answer_similarity`), with the sources of the reviewed answer and a
"reviewed answer" mark. Only where the asking channel searches every collection the reviewed
answer came from: an answer reviewed in a channel that reads Finance and the handbook quotes
Finance, and a channel that reads the handbook alone never sees it. An answer given where not
everyone could read it (a private channel, a DM: the experts there may have written what only its
members may know) is served only in that same conversation. The threshold is measured in
bench/reviewed_match.py: paraphrases above it, different questions on the same topic below.

One question, one answer: where several approved answers (say a reviewer's correction and
later an expert's answer to the same question) have questions this similar, in the same scope,
only the most recently reviewed one is served: they are merged, not doubled.

Only first questions are matched: a follow-up ("and for part-time staff?") means what its thread
says, which the reviewed question's thread may not have said.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.refresh import Refreshed


@dataclass(frozen=True)
class Reviewed:
    answer_id: str  # the reviewed answer
    question: str
    correction: str
    sources: list[dict] = field(default_factory=list)  # as the reviewed answer showed them
    collections: frozenset[str] = frozenset()  # every collection the reviewed answer was answered from
    place: tuple[str, str] | None = None  # (platform, channel) it is kept to; None: wherever the collections are read
    reviewed_at: float = 0.0  # when the review was last saved (seconds since the epoch): the newest of duplicates wins

    def readable_from(self, collections: frozenset[str], place: tuple[str, str] | None = None) -> bool:
        """Whether a channel searching `collections` (at `place`) may be shown this answer and its sources."""
        return bool(self.collections) and self.collections <= collections and self.place in (None, place)


# collection -> the approved corrections answered from it
ReviewedSource = Callable[[str], list[Reviewed]]


class ReviewedAnswers:
    """The approved corrections of one collection and their question embeddings, read and embedded
    in the background every `refresh_s` seconds (pipeline/refresh.py): a question never waits on
    the feedback database, and a correction approved a moment ago is served from the next read on."""

    def __init__(self, collection: str, embed: Callable[[list[str]], np.ndarray], source: ReviewedSource,
                 threshold: float, refresh_s: float) -> None:
        self.collection, self.embed, self.source, self.threshold = collection, embed, source, threshold
        self._known: dict[tuple[str, str], np.ndarray] = {}  # embeddings, computed once per reviewed answer
        # (items, their question vectors) replaced together: a reader never pairs one with the other's.
        self._state: Refreshed[tuple[list[Reviewed], np.ndarray]] = Refreshed(
            self._read, refresh_s, ([], np.zeros((0, 0), dtype=np.float32)), f"reviewed answers for {collection}",
        )

    def _read(self) -> tuple[list[Reviewed], np.ndarray]:
        items = self.source(self.collection)
        missing = [i for i in items if (i.answer_id, i.question) not in self._known]
        if missing:
            for item, vector in zip(missing, self.embed([i.question for i in missing])):
                self._known[(item.answer_id, item.question)] = vector
        vectors = np.array([self._known[(i.answer_id, i.question)] for i in items], dtype=np.float32)
        return _newest_of_duplicates(items, vectors, self.threshold)

    def match(self, question_vector: np.ndarray, readable: frozenset[str],
              place: tuple[str, str] | None = None) -> tuple[Reviewed, float] | None:
        """The reviewed answer whose question is most similar, if similar enough, among those a
        channel searching the `readable` collections (at `place`) may see."""
        items, vectors = self._state.get()
        allowed = np.array([item.readable_from(readable, place) for item in items], dtype=bool)
        if not allowed.any():
            return None
        similarities = np.where(allowed, vectors @ question_vector, -np.inf)
        # Equally close (the same question reviewed in a private channel and in a public one): the newest.
        best = max(np.flatnonzero(similarities >= similarities.max() - 1e-6), key=lambda i: items[i].reviewed_at)
        return (items[best], float(similarities[best])) if similarities[best] >= self.threshold else None

    def __bool__(self) -> bool:
        return bool(self._state.get()[0])


def _newest_of_duplicates(items: list[Reviewed], vectors: np.ndarray, threshold: float) -> tuple[list[Reviewed], np.ndarray]:
    """Of reviewed answers to the same question (similarity at the threshold or above) in the same
    scope, the most recently reviewed one."""
    kept: list[int] = []
    for i in sorted(range(len(items)), key=lambda i: items[i].reviewed_at, reverse=True):
        scope = (items[i].collections, items[i].place)
        if not any((items[k].collections, items[k].place) == scope and float(vectors[k] @ vectors[i]) >= threshold
                   for k in kept):
            kept.append(i)
    kept.sort()
    return [items[i] for i in kept], vectors[kept] if kept else vectors[:0]
