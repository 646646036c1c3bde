"""What feedback tells the answering at once. The bots read it from the feedback store and hand
it to `AnswerService`; the pipeline never reads the store itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.boosts import Overrides, Votes
    from pipeline.reviewed import ReviewedSource


@dataclass(frozen=True)
class FeedbackSources:
    """Votes and reviewers' demotions rank documents; approved corrections answer matching questions."""

    document_votes: Votes | None = None
    document_overrides: Overrides | None = None
    reviewed_answers: ReviewedSource | None = None
