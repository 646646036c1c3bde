"""Document ranking that learns from votes, at once (not only at the next fine-tune).

Every 👍/👎 on an answer counts for the documents the answer cited. A document's boost is a
bounded multiplier on its chunks' hybrid scores: `max_boost ** lean` with
`lean = (up - down) / (up + down + PRIOR_VOTES)`, so between 1/max_boost and max_boost (0.5×–2× by
default), 1× with no votes, and a handful of votes moves it only part of the way. The retriever
fetches CANDIDATES × top_k chunks, at least MIN_CANDIDATES (when some document has a boost;
otherwise the search is as without boosts); the boosted scores order them, and the page cap
(pipeline/diversity.py) keeps the top_k the model sees. A reviewer can
demote a document (the lower bound, whatever its votes) or hide it (never given to the model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone

from haystack import Document, component

from pipeline.refresh import Refreshed

PRIOR_VOTES = 4  # votes a document needs before its boost goes halfway to the bound
CANDIDATES = 2  # chunks fetched per chunk kept, for boosts to choose from…
# …and at least this many: hybrid scores are min-max normalized over what is fetched, so the last
# of a few candidates scores 0 whatever it is, and no boost could lift it.
MIN_CANDIDATES = 10

# collection -> {document path: (👍 votes, 👎 votes)}
Votes = Callable[[str], dict[str, tuple[int, int]]]
# collection -> {document path: "demote" | "hide"}, a reviewer's say (the review page)
Overrides = Callable[[str], dict[str, str]]
HIDDEN = 0.0


def boost(up: int, down: int, max_boost: float) -> float:
    if max_boost <= 1.0 or up + down == 0:
        return 1.0
    return max_boost ** ((up - down) / (up + down + PRIOR_VOTES))


def recency(updated: str, now: datetime, weight: float, half_life_days: float) -> float:
    """A page's age as a bounded factor: 1 when new, 1 - weight/2 at the half-life, never below
    1 - weight; 1 for a page with no date (files) or with the weight off."""
    if not weight or not updated:
        return 1.0
    try:
        when = datetime.fromisoformat(updated)
    except ValueError:
        return 1.0
    age = max(0.0, (now - (when if when.tzinfo else when.replace(tzinfo=timezone.utc))).total_seconds() / 86400)
    return 1.0 - weight * (1.0 - 0.5 ** (age / half_life_days))


@component
class FeedbackBoost:
    """Re-ranks retrieved chunks by their documents' boosts (all of them: the page cap keeps top_k).

    The votes and overrides are read in the background every `refresh_s` seconds
    (pipeline/refresh.py): a search never waits on the feedback database, and when it cannot be
    read the last boosts read stay in use (none at first)."""

    def __init__(self, collection: str, top_k: int, max_boost: float, votes: Votes | None = None,
                 refresh_s: float = 30.0, overrides: Overrides | None = None, recency_weight: float = 0.0,
                 half_life_days: float = 180.0) -> None:
        self.collection, self.top_k, self.max_boost = collection, top_k, max_boost
        self.votes, self.overrides = votes, overrides
        self.recency_weight, self.half_life_days = recency_weight, half_life_days
        self._boosts: Refreshed[dict[str, float]] = Refreshed(self._read, refresh_s, {}, f"document votes for {collection}")

    def _read(self) -> dict[str, float]:
        votes = self.votes(self.collection) if self.votes else {}
        overrides = self.overrides(self.collection) if self.overrides else {}  # both read, or neither used
        boosts = {path: b for path, (up, down) in votes.items() if (b := boost(up, down, self.max_boost)) != 1.0}
        # A reviewer's demotion is the floor of the bound; a hidden document is never given.
        for path, action in overrides.items():
            boosts[path] = HIDDEN if action == "hide" else min(boosts.get(path, 1.0), 1 / max(self.max_boost, 2.0))
        return boosts

    def forget(self) -> None:
        """Read the votes again (the source changed)."""
        self._boosts.forget()

    def boosts(self) -> dict[str, float]:
        """Document path → boost (documents at 1× left out)."""
        return self._boosts.get() if (self.votes or self.overrides) else {}

    def candidates(self) -> int:
        """How many chunks to fetch: CANDIDATES × top_k when some document has a boost."""
        return max(self.top_k * CANDIDATES, MIN_CANDIDATES) if self.boosts() or self.recency_weight else self.top_k

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict:
        boosts = self.boosts()
        if boosts or self.recency_weight:
            boosted = []
            now = datetime.now(timezone.utc)
            for doc in documents:
                factor = boosts.get(doc.meta.get("source", ""), 1.0)
                if factor == HIDDEN:
                    continue
                factor *= recency(doc.meta.get("updated") or "", now, self.recency_weight, self.half_life_days)
                if factor != 1.0:
                    doc = replace(doc, score=(doc.score or 0.0) * factor, meta={**doc.meta, "boost": round(factor, 3)})
                boosted.append(doc)
            documents = sorted(boosted, key=lambda d: d.score or 0.0, reverse=True)
        return {"documents": documents}
