"""The review page's inbox on 100k answers: milliseconds per page for its filters, on SQLite (and
PostgreSQL with --url), against the bare SQL count of the same rows (what any inbox must at least do);
and the read of one collection's document votes that retrieval's boosts refresh from.

    python -m bench.review_inbox [--answers 100000] [--url postgresql+psycopg://…]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import insert, text

from feedback.reviews import InboxFilter, ReviewRecord, ReviewStore
from feedback.store import AnswerRecord, FeedbackStore, RatingRecord

FILTERS = {
    "the default queue (👎 or help asked, not reviewed)": InboxFilter(),
    "👎 first, page 1": InboxFilter(vote="down", reviewed="any"),
    "👎 first, page 40": InboxFilter(vote="down", reviewed="any", page=40),
    "any vote, one collection": InboxFilter(vote="any", reviewed="any", collection="Sales"),
    "👎, one model, last 7 days": InboxFilter(vote="down", reviewed="any", model="teambot-ft-3",
                                             since=date.today() - timedelta(days=7)),
    "👎 with a reason, not reviewed": InboxFilter(vote="down", has_reason=True, reviewed="no"),
}


def fill(store: FeedbackStore, answers: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    rows, ratings, reviews = [], [], []
    for i in range(answers):
        answer_id = uuid.uuid4().hex
        rows.append({
            "id": answer_id, "created_at": now - timedelta(minutes=rng.randrange(90 * 24 * 60)), "platform": "slack",
            "channel": f"C{i % 40}", "thread": answer_id, "question": f"Question {i} about the handbook?",
            "collection": rng.choice(["Handbook", "Sales", "Support", "Engineering"]), "retrieved": [], "context": "",
            "prompt": [], "answer_text": f"Answer {i} [1].", "abstained": False, "outcome": "answered",
            "model": rng.choice(["teambot-dev", "teambot-ft-1", "teambot-ft-2", "teambot-ft-3"]), "timings": {},
            "sources": [{"path": f"docs/page-{rng.randrange(300)}.md"}],
        })
        for user in range(rng.choice([0, 0, 1, 1, 2, 3])):
            value = rng.choice([1, 1, -1])
            ratings.append({"answer_id": answer_id, "user_hash": f"u{user}", "value": value, "created_at": now,
                            "updated_at": now, "reason": "wrong" if value < 0 and rng.random() < 0.3 else None})
        if rng.random() < 0.02:
            reviews.append({"answer_id": answer_id, "exclude": False, "approved": False, "reviewer": "maria",
                            "updated_at": now, "cause": "wrong_passage"})
    with store.engine.begin() as connection:
        for start in range(0, len(rows), 5000):
            connection.execute(insert(AnswerRecord), rows[start:start + 5000])
        for start in range(0, len(ratings), 5000):
            connection.execute(insert(RatingRecord), ratings[start:start + 5000])
        if reviews:
            connection.execute(insert(ReviewRecord), reviews)


def timed(call, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--answers", type=int, default=100_000)
    parser.add_argument("--url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = FeedbackStore(args.url or f"sqlite:///{tmp}/feedback.db", user_salt="bench")
        started = time.perf_counter()
        fill(store, args.answers)
        print(f"{args.answers:,} answers on {store.engine.dialect.name}, filled in {time.perf_counter() - started:.1f}s")
        reviews = ReviewStore(store)
        bare = timed(lambda: store.engine.connect().execute(text(
            "SELECT count(*) FROM (SELECT answer_id FROM ratings GROUP BY answer_id "
            "HAVING sum(CASE WHEN value < 0 THEN 1 ELSE 0 END) > sum(CASE WHEN value > 0 THEN 1 ELSE 0 END)) AS d"
        )).scalar())
        print(f"{'query':<34} {'ms':>8} {'rows':>8}")
        print(f"{'bare SQL: count of 👎 answers':<34} {bare:>8.1f}")
        for label, f in FILTERS.items():
            rows, total = reviews.inbox(f)
            ms = timed(lambda f=f: reviews.inbox(f))
            print(f"{label:<34} {ms:>8.1f} {total:>8,}  ({ms / bare:.1f}× the bare count)")
        votes = timed(lambda: store.document_votes("Sales"), repeat=3)
        print(f"{'document votes of one collection':<34} {votes:>8.1f}           (read by each bot every "
              "TEAMBOT_DOCUMENT_VOTES_REFRESH seconds)")
        store.engine.dispose()


if __name__ == "__main__":
    main()
