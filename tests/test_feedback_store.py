"""FeedbackStore on its own: taking back a vote whose 👍/👎 reaction was removed (`retract`),
and opening a database written by an older version.

Fast (no servers): a temp SQLite store, answers and votes recorded the way the bots record them,
and what a user would see afterwards: `teambot feedback stats` and the SFT export.
"""

from __future__ import annotations

import pytest

from pipeline.answer import Answer
from pipeline.feedback_store import FeedbackStore, ModelStats
from teambot.settings import load_settings
from training.export import build_examples

QUESTION = "Which tool do expense claims go in?"


@pytest.fixture
def store(tmp_path) -> FeedbackStore:
    return FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}", user_salt="test")


def _answer(store: FeedbackStore, question: str = QUESTION) -> str:
    answer = Answer(question=question, text="Ledgerly, within 30 days [1].", sources=[], model="teambot-dev",
                    collection="Handbook")
    store.record_answer(answer, platform="slack", user_id="U0ASKER", channel="C0GENERAL")
    return answer.id


def _votes(store: FeedbackStore, answer_id: str) -> dict[str, int]:
    """user → vote on the answer, for the users these tests use."""
    hashes = {store.user_hash(p, u): u for p in ("slack", "discord") for u in ("U0ALICE", "U0BOB", "U0CAROL")}
    return {hashes[r.user_hash]: r.value for r in store.ratings(answer_id)}


def test_retract_removes_the_vote_only_while_it_still_has_that_value(store):
    answer_id = _answer(store)
    store.rate(answer_id, platform="slack", user_id="U0ALICE", value=1)
    store.rate(answer_id, platform="slack", user_id="U0BOB", value=-1, correction="Ledgerly.")
    store.rate(answer_id, platform="slack", user_id="U0CAROL", value=1)

    # 👎 removed, but Alice's vote is a 👍: kept.
    assert store.retract(answer_id, platform="slack", user_id="U0ALICE", value=-1) is False
    # 👍 removed: her vote is gone, nobody else's.
    assert store.retract(answer_id, platform="slack", user_id="U0ALICE", value=1) is True
    assert _votes(store, answer_id) == {"U0BOB": -1, "U0CAROL": 1}
    assert store.retract(answer_id, platform="slack", user_id="U0ALICE", value=1) is False  # nothing left to take back

    # Bob reacted 👎, then changed his vote to 👍 with the button; removing the 👎 keeps the 👍.
    store.rate(answer_id, platform="slack", user_id="U0BOB", value=1)
    assert store.retract(answer_id, platform="slack", user_id="U0BOB", value=-1) is False
    assert _votes(store, answer_id) == {"U0BOB": 1, "U0CAROL": 1}

    # The same user id on another platform, or an answer never recorded: nothing to take back.
    assert store.retract(answer_id, platform="discord", user_id="U0CAROL", value=1) is False
    assert store.retract("0" * 32, platform="slack", user_id="U0CAROL", value=1) is False
    assert _votes(store, answer_id) == {"U0BOB": 1, "U0CAROL": 1}
    with pytest.raises(ValueError):
        store.retract(answer_id, platform="slack", user_id="U0CAROL", value=0)


def test_a_retracted_vote_is_gone_from_stats_and_export_and_can_be_cast_again(store, tmp_path):
    kept = _answer(store)
    store.rate(kept, platform="slack", user_id="U0ALICE", value=1)
    store.rate(kept, platform="slack", user_id="U0BOB", value=-1)
    taken_back = _answer(store, "How many days of paid vacation do I get?")
    store.rate(taken_back, platform="slack", user_id="U0ALICE", value=1)
    assert store.stats() == [ModelStats("teambot-dev", answers=2, up=2, down=1)]

    assert store.retract(kept, platform="slack", user_id="U0BOB", value=-1)
    assert store.retract(taken_back, platform="slack", user_id="U0ALICE", value=1)
    assert store.stats() == [ModelStats("teambot-dev", answers=2, up=1, down=0)]
    # The export sees only the votes still standing: an answer with none left is not "rated",
    # and the other is now plainly 👍 (it was a tie).
    assert [(record.id, [r.value for r in ratings]) for record, ratings in store.rated_answers()] == [(kept, [1])]
    settings = load_settings(data_dir=tmp_path, cache_dir=tmp_path / "cache", train_base_model="gemma3-270m")
    examples = build_examples(settings, store)
    assert examples.rated == 1 and not examples.dropped
    assert [(e["answer_id"], e["kind"]) for e in examples.train + examples.eval] == [(kept, "upvoted")]

    # Reacting again casts the vote again.
    store.rate(taken_back, platform="slack", user_id="U0ALICE", value=1)
    assert store.stats() == [ModelStats("teambot-dev", answers=2, up=2, down=0)]


def test_a_database_from_before_the_conversation_index_keeps_its_answers_and_gains_the_index(tmp_path):
    import sqlite3

    path = tmp_path / "feedback.db"
    old = FeedbackStore(f"sqlite:///{path}")
    answer = Answer(question=QUESTION, text="Ledgerly [1].", sources=[], model="teambot-dev", collection="Handbook")
    old.record_answer(answer, platform="slack", user_id="U0ASKER", channel="C0GENERAL", thread="1700000000.000100")
    old.engine.dispose()
    with sqlite3.connect(path) as db:  # as an older teambot left it
        db.execute("DROP INDEX ix_answers_conversation")

    store = FeedbackStore(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        plan = " ".join(str(row) for row in db.execute(
            "EXPLAIN QUERY PLAN SELECT question FROM answers WHERE platform='slack' AND channel='C0GENERAL' "
            "AND thread='1700000000.000100'"))
    assert "ix_answers_conversation" in plan  # the bots' per-reply thread lookup is not a table scan
    assert [t.question for t in store.thread_history("slack", "C0GENERAL", "1700000000.000100", 3)] == [QUESTION]
