"""What a question turns into: the answer text, its sources, and what produced it."""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum


class Outcome(str, Enum):
    """What became of a question that reached the model or the gate before it."""

    ANSWERED = "answered"
    ABSTAINED = "abstained"  # nothing relevant was found, or the model said it does not know
    WITHHELD = "withheld"  # the guard stopped a reply that repeated the instructions or a secret
    UNCITED = "uncited"  # a channel that requires citations got an answer that cites none: not shown
    STOPPED = "stopped"  # the asker stopped it mid-answer: what was shown until then
    UNGROUNDED = "ungrounded"  # its cited passages did not support it (pipeline/grounding.py): the abstention shown


# What an answer the asker stopped ends with, on every platform.
STOPPED_NOTE = "_(Stopped.)_"

_CITATION = re.compile(r"\[(\d{1,2})\]")


@dataclass(frozen=True)
class Turn:
    """One earlier exchange in a thread, carried into follow-up questions."""

    question: str
    answer: str


@dataclass
class Source:
    """One cited chunk. `number` is the [n] the answer text uses."""

    number: int
    title: str
    path: str  # file path or URL
    snippet: str
    chunk_id: str
    score: float
    section: str = ""
    url: str = ""  # a link the chat platforms can render, when the document has one
    updated: str = ""  # when its page last changed at its origin (ISO 8601), for synced sources

    @property
    def link(self) -> str:
        return self.url or self.path

    def freshness(self, now: datetime | None = None) -> str:
        """"updated 3 days ago" for a synced page; '' when its origin gave no date."""
        try:
            when = datetime.fromisoformat(self.updated)
        except ValueError:
            return ""
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        days = ((now or datetime.now(timezone.utc)) - when).days
        if days < 1:
            return "updated today"
        if days < 2:
            return "updated yesterday"
        for unit, size in (("year", 365), ("month", 30), ("week", 7), ("day", 1)):
            if days >= size * (2 if unit != "day" else 1):
                count = days // size
                return f"updated {count} {unit}{'s' if count > 1 else ''} ago"
        return ""


@dataclass
class Answer:
    question: str
    text: str
    sources: list[Source]
    model: str
    collection: str
    outcome: Outcome = Outcome.ANSWERED
    # Everything retrieved (not only the cited sources), for the feedback store and training.
    retrieved: list[Source] = field(default_factory=list)
    context: str = ""  # the context block exactly as the prompt carried it
    prompt: list[dict[str, str]] = field(default_factory=list)  # chat messages sent to the model
    timings: dict[str, float] = field(default_factory=dict)  # seconds: embed, retrieve, generate, total
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    searched: str = ""  # what was searched, when not the question itself: a follow-up made standalone
    draft: str = ""  # the model's text when something else was shown instead (an ungrounded answer)
    reviewed_from: str = ""  # served from a reviewer's approved correction of that answer

    @property
    def cited(self) -> bool:
        """The text cites at least one of its sources by number ("[2]")."""
        numbers = {int(n) for n in _CITATION.findall(self.text)}
        return any(s.number in numbers for s in self.sources)

    @property
    def abstained(self) -> bool:
        """No answer from the documents: the user was told so (or that it was withheld)."""
        return self.outcome is not Outcome.ANSWERED

    def to_dict(self) -> dict:
        return {**asdict(self), "outcome": self.outcome.value, "abstained": self.abstained}

    def format_plain(self) -> str:
        """Text for terminals: the answer, then numbered sources."""
        lines = [self.text.strip()]
        if self.sources:
            lines.append("")
            lines.append("Sources:")
            for s in self.sources:
                where = f"{s.link}" + (f" § {s.section}" if s.section else "")
                lines.append(f"  [{s.number}] {s.title} — {where}")
        return "\n".join(lines)
