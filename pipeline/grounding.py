"""A check after generation: is each sentence of an answer supported by a passage it was given?

A small model asked about something the documents do not cover may still answer, from general
knowledge ("according to the documents, payday is the 25th"). The relevance gate runs before the
model and cannot see that. Here every sentence of the answer (citation markers, code fences and
short fragments left out) is embedded with the project's embedder and compared with the passages
the answer cites (all passages given when it cites none): a sentence's support is its best cosine
similarity, and the answer's is the mean over its sentences. The weakest sentence alone (each
claim checked) refused 4 of 32 correct PostgreSQL answers for introductions such as "Here's an
example:" and code lines; the mean refused 1 at the same catch (bench/retrieval_quality.py).
"""

from __future__ import annotations

import re

import numpy as np
from haystack import Document, component

_CITATIONS = re.compile(r"\s*\[\d{1,2}\](?:\s*\[\d{1,2}\])*")
_FENCE = re.compile(r"```.*?```", re.S)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
MIN_WORDS = 4  # shorter fragments ("Yes.", "For example:") say nothing to check


def claims(answer: str) -> list[str]:
    """The sentences of `answer` that state something."""
    text = _FENCE.sub(" ", _CITATIONS.sub("", answer or ""))
    sentences = (s.strip(" -*#>\t") for s in _SENTENCE_END.split(text))
    return [s for s in sentences if len(s.split()) >= MIN_WORDS]


@component
class GroundingCheck:
    """Answer text + the passages it rests on → its support (the mean of its sentences'; 1.0 with
    nothing to check) and its weakest sentence."""

    def __init__(self, embedder) -> None:
        self.embedder = embedder  # a warmed-up text embedder of pipeline.embedders (normalized)

    @component.output_types(support=float, weakest=str)
    def run(self, answer: str, documents: list[Document]) -> dict:
        sentences = claims(answer)
        passages = [d.embedding for d in documents if d.embedding is not None]
        if not sentences or not passages:
            return {"support": 1.0, "weakest": ""}
        matrix = np.asarray(passages, dtype=np.float32)
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        supports = [float(np.max(matrix @ np.asarray(self.embedder.run(text=s)["embedding"], dtype=np.float32)))
                    for s in sentences]
        weakest = int(np.argmin(supports))
        return {"support": float(np.mean(supports)), "weakest": sentences[weakest]}
