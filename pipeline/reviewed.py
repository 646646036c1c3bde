"""Reviewed answers, served at once: a correction a reviewer approved on the review page answers
new questions that match the reviewed question closely (cosine similarity of the project's
embeddings at least `reviewed_answer_similarity`, same collection), with the sources of the
reviewed answer and a "reviewed answer" mark. The threshold is measured in
bench/reviewed_match.py: paraphrases above it, different questions on the same topic below.

Only first questions are matched: a follow-up ("and for part-time staff?") means what its thread
says, which the reviewed question's thread may not have said.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("teambot.answer")


@dataclass(frozen=True)
class Reviewed:
    answer_id: str  # the reviewed answer
    question: str
    correction: str
    sources: list[dict] = field(default_factory=list)  # as the reviewed answer showed them


# collection -> the approved corrections answered from it
ReviewedSource = Callable[[str], list[Reviewed]]


class ReviewedAnswers:
    """The approved corrections of one collection and their question embeddings, re-read every
    `refresh_s` seconds (embeddings are computed once per reviewed answer)."""

    def __init__(self, collection: str, embed: Callable[[list[str]], np.ndarray], source: ReviewedSource,
                 threshold: float, refresh_s: float) -> None:
        self.collection, self.embed, self.source = collection, embed, source
        self.threshold, self.refresh_s = threshold, refresh_s
        self._read_at = float("-inf")
        self._items: list[Reviewed] = []
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._known: dict[tuple[str, str], np.ndarray] = {}
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        if time.monotonic() - self._read_at < self.refresh_s:
            return
        with self._lock:
            if time.monotonic() - self._read_at < self.refresh_s:
                return
            try:
                items = self.source(self.collection)
            except Exception as exc:  # noqa: BLE001 - the last set read stays in use
                log.warning("reviewed answers for %s could not be read: %s", self.collection, exc)
                self._read_at = time.monotonic()
                return
            missing = [i for i in items if (i.answer_id, i.question) not in self._known]
            if missing:
                for item, vector in zip(missing, self.embed([i.question for i in missing])):
                    self._known[(item.answer_id, item.question)] = vector
            self._items = items
            self._vectors = np.array([self._known[(i.answer_id, i.question)] for i in items], dtype=np.float32)
            self._read_at = time.monotonic()

    def match(self, question_vector: np.ndarray) -> tuple[Reviewed, float] | None:
        """The reviewed answer whose question is most similar, if similar enough."""
        self._refresh()
        if not self._items:
            return None
        similarities = self._vectors @ question_vector
        best = int(np.argmax(similarities))
        return (self._items[best], float(similarities[best])) if similarities[best] >= self.threshold else None

    def __bool__(self) -> bool:
        self._refresh()
        return bool(self._items)
