"""Page diversity: at most a few chunks of one page among those given to the model.

A long page whose every section shares the question's words can otherwise fill every place, and
the page that answers comes sixth. With a cap the search fetches POOL × top_k chunks and keeps,
in the order the search (and the vote boosts) gave them, the first ones of each page up to the
cap; when the pool runs short, the best chunks left out fill the remaining places, so the model
always gets top_k passages.
"""

from __future__ import annotations

from collections import Counter

from haystack import Document, component

POOL = 3  # chunks fetched per chunk kept when a cap is set


@component
class PageDiversity:
    """Keeps the best `top_k` chunks with at most `per_page` of one page (0 = no cap)."""

    def __init__(self, top_k: int, per_page: int = 0) -> None:
        self.top_k, self.per_page = top_k, per_page

    def candidates(self) -> int:
        """How many chunks the search should fetch for this component to choose from."""
        return self.top_k * POOL if self.per_page else self.top_k

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict:
        if not self.per_page:
            return {"documents": documents[: self.top_k]}
        per_page: Counter[str] = Counter()
        kept, left_out = [], []
        for position, doc in enumerate(documents):
            page = doc.meta.get("source", "")
            (kept if per_page[page] < self.per_page else left_out).append(position)
            per_page[page] += 1
        chosen = kept[: self.top_k] + left_out[: max(0, self.top_k - len(kept))]
        # In the order given: a chunk filled in from the left-out ones ranks where its score puts it.
        return {"documents": [documents[i] for i in sorted(chosen)]}
