"""Prometheus metrics of the running bots, served at /metrics by each bot's health listener (bots/health.py).

A registry of our own (not prometheus_client's global one) so that only teambot's series are
exposed and tests can read them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

QUESTIONS = Counter(
    "teambot_questions", "Questions received, by platform and outcome (answered, abstained, withheld, "
    "uncited, stopped, invalid, rate_limited, busy, not_allowed, error).", ["platform", "outcome"], registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "teambot_stage_seconds", "Time spent per answering stage (rewrite, retrieve, generate, total).", ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160), registry=REGISTRY,
)
ERRORS = Counter(
    "teambot_errors", "Questions that failed, by error kind (KnowledgeBaseUnavailable, ModelTimeout, …).",
    ["platform", "kind"], registry=REGISTRY,
)
FEEDBACK = Counter(
    "teambot_feedback", "Votes recorded, by platform and value (up, down).", ["platform", "value"], registry=REGISTRY,
)
SEARCH_HEDGES = Counter(
    "teambot_search_hedges_total", "Searches sent again to another Weaviate node because the first was slow to answer.",
    registry=REGISTRY,
)
FOLLOWUP_REWRITES = Counter(
    "teambot_followup_rewrites", "Follow-ups the model was asked to rewrite before the search, by what was searched "
    "(rewritten; subject when the rewrite failed).", ["method"], registry=REGISTRY,
)
SEARCHES_RUNNING = Gauge(
    "teambot_searches_running", "Knowledge-base searches running now (a hung server shows as searches that stay).",
    registry=REGISTRY,
)
RETRACTED = Counter(
    "teambot_feedback_retracted", "Votes taken back by removing the 👍/👎 reaction that cast them, by platform and "
    "value (up, down).", ["platform", "value"], registry=REGISTRY,
)

REDELIVERIES = Counter(
    "teambot_event_redeliveries", "Events the platform delivered again (Slack's X-Slack-Retry-Num), by reason and "
    "whether this process took it (first to claim it) or dropped it as already taken.",
    ["platform", "reason", "taken"], registry=REGISTRY,
)
HANDOFFS = Counter(
    "teambot_handoffs", "\"I need more help\" hand-offs to people, by platform and event (requested, resolved).",
    ["platform", "event"], registry=REGISTRY,
)
REMINDERS = Counter(
    "teambot_feedback_reminders", "Askers reminded once to vote on an answer that got no vote.", ["platform"],
    registry=REGISTRY,
)


def observe_handoff(platform: str, event: str) -> None:
    HANDOFFS.labels(platform, event).inc()


def observe_reminder(platform: str) -> None:
    REMINDERS.labels(platform).inc()


def observe_answer(platform: str, answer) -> None:
    QUESTIONS.labels(platform, answer.outcome.value).inc()
    for stage, seconds in (answer.timings or {}).items():
        STAGE_SECONDS.labels(stage).observe(seconds)


def observe_refusal(platform: str, outcome: str) -> None:
    """A question not answered by design: `invalid`, `rate_limited`, `busy`, `not_allowed`, or
    `stopped` by the asker before its answer began."""
    QUESTIONS.labels(platform, outcome).inc()


def observe_error(platform: str, exc: BaseException) -> None:
    QUESTIONS.labels(platform, "error").inc()
    ERRORS.labels(platform, type(exc).__name__).inc()


def observe_vote(platform: str, value: int) -> None:
    FEEDBACK.labels(platform, "up" if value > 0 else "down").inc()


def observe_retraction(platform: str, value: int) -> None:
    RETRACTED.labels(platform, "up" if value > 0 else "down").inc()


def observe_redelivery(platform: str, reason: str, taken: bool) -> None:
    REDELIVERIES.labels(platform, reason or "unknown", "yes" if taken else "no").inc()


SYNC_DOCUMENTS = Counter(
    "teambot_sync_documents", "Documents of synced sources, by source and what the sync did (seen, changed, deleted, "
    "not_modified).", ["source", "what"], registry=REGISTRY,
)
SYNC_ERRORS = Counter(
    "teambot_sync_errors", "Sync runs that failed and documents that could not be fetched, by source.", ["source"],
    registry=REGISTRY,
)
SYNC_LAST_SUCCESS = Gauge(
    "teambot_sync_last_success_timestamp_seconds", "When each source last synced without failing (Unix time).",
    ["source"], registry=REGISTRY,
)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
