"""The query adapter: retrieval learned from votes, published, activated per scope and rolled back
like a model (training/query_adapter.py, pipeline/query_adapter.py). Its training from a real
team's votes runs in the learning-loop benchmark's small mode (tests/test_bench_smoke.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from core.active_model import active_model
from core.answer import Answer, Source
from feedback.store import FeedbackStore
from pipeline.embedders import embedder_spec
from pipeline.query_adapter import QueryMap
from pipeline.querying import AnswerService
from teambot.cli import app
from training.export import build_examples
from training.query_adapter import QueryAdapterOptions, _Rows, dense_ranks, fit, gate, mrr, passage_vectors

QUESTION = "Which password manager do we use?"


def _steering_run(settings, run_id: str, towards: np.ndarray, scope: list[str], space: str) -> Path:
    """A run whose map sends every question towards one passage: unmistakable in the search."""
    up = np.zeros((towards.size, 1), np.float32)
    down = np.zeros((towards.size, 1), np.float32)
    up[:, 0] = 1.0 / np.sqrt(towards.size)  # q·U: about the mean of q, the same sign for MiniLM questions
    down[:, 0] = towards * 400.0
    run_dir = settings.data_dir / "runs" / run_id
    run_dir.mkdir(parents=True)
    QueryMap(up, down, space).save(run_dir / "query_adapter.npz")
    (run_dir / "config.json").write_text(json.dumps({"method": "retrieval", "scope": scope, "space": space}))
    (run_dir / "report.json").write_text(json.dumps({"gate": {"promotable": True, "reasons": []}}))
    return run_dir


def _top_page(settings, collection: str) -> str:
    service = AnswerService(settings)
    try:
        documents, _, _ = service.retrieve(QUESTION, collection)
        return Path(documents[0].meta["source"]).name
    finally:
        service.close()


def test_an_activated_query_adapter_moves_its_scope_s_searches_only_and_rolls_back(handbook, tmp_path, caplog):
    settings = handbook.service.settings.model_copy(update={"data_dir": tmp_path, "min_similarity": -1.0})
    env = {"TEAMBOT_DATA_DIR": str(tmp_path)}
    unmoved = _top_page(settings, handbook.collection)
    assert unmoved != "expenses.md"
    service = AnswerService(settings)
    expenses = next(d for d in service.retrieve("Which tool do I submit expense claims in?", handbook.collection)[0]
                    if Path(d.meta["source"]).name == "expenses.md")
    service.close()
    target = np.asarray(expenses.embedding, np.float32)
    space = embedder_spec(settings).space

    _steering_run(settings, "elsewhere", target, ["SomeOtherCollection"], space)
    result = CliRunner().invoke(app, ["publish", "--run", "elsewhere", "--activate"], env=env)
    assert result.exit_code == 0, result.output
    assert "active query adapter: teambot-qa-elsewhere" in result.output
    assert _top_page(settings, handbook.collection) == unmoved  # not its scope: searched as before

    _steering_run(settings, "steer", target, [handbook.collection], space)
    result = CliRunner().invoke(app, ["publish", "--run", "steer", "--activate"], env=env)
    assert result.exit_code == 0, result.output
    assert _top_page(settings, handbook.collection) == "expenses.md"  # from the next question on, no restart

    result = CliRunner().invoke(app, ["publish", "--rollback", "--retrieval"], env=env)
    assert result.exit_code == 0 and "active query adapter: teambot-qa-elsewhere" in result.output, result.output
    assert _top_page(settings, handbook.collection) == unmoved
    result = CliRunner().invoke(app, ["publish", "--rollback"], env=env)  # the model's rollback leaves it be
    assert result.exit_code == 0, result.output
    assert active_model(settings, "query_adapter") == "teambot-qa-elsewhere"
    result = CliRunner().invoke(app, ["publish", "--rollback", "--retrieval"], env=env)
    assert result.exit_code == 0 and "active query adapter: none" in result.output, result.output
    assert active_model(settings, "query_adapter") == ""

    # Active but damaged (cut short, or not a map at all), or of another vector space: searched
    # without it, and the log says why; published again whole, it is read again.
    assert CliRunner().invoke(app, ["publish", "--run", "steer", "--activate"], env=env).exit_code == 0
    published = tmp_path / "query_adapters" / "teambot-qa-steer.npz"
    whole = published.read_bytes()
    logger = logging.getLogger("teambot.query_adapter")
    logger.addHandler(caplog.handler)  # the CLI's logging setup stops propagation
    service = AnswerService(settings)
    try:
        for damaged in (whole[: len(whole) // 2], b"", b"not a map"):
            published.write_bytes(damaged)
            documents, _, _ = service.retrieve(QUESTION, handbook.collection)
            assert Path(documents[0].meta["source"]).name == unmoved
        assert caplog.text.count("unreadable") == 3
        published.write_bytes(whole)
        documents, _, _ = service.retrieve(QUESTION, handbook.collection)
        assert Path(documents[0].meta["source"]).name == "expenses.md"
        _steering_run(settings, "other-space", target, [handbook.collection], "e5-small-v2")
        assert CliRunner().invoke(app, ["publish", "--run", "other-space", "--activate"], env=env).exit_code == 0
        documents, _, _ = service.retrieve(QUESTION, handbook.collection)
        assert Path(documents[0].meta["source"]).name == unmoved
        assert "e5-small-v2 vectors" in caplog.text
    finally:
        service.close()
        logger.removeHandler(caplog.handler)


def test_publishing_refuses_a_map_that_failed_its_gate(tmp_path):
    run_dir = tmp_path / "runs" / "worse"
    run_dir.mkdir(parents=True)
    QueryMap(np.zeros((4, 1)), np.zeros((4, 1)), "x").save(run_dir / "query_adapter.npz")
    (run_dir / "config.json").write_text(json.dumps({"method": "retrieval", "scope": ["A"]}))
    verdict = gate({"questions": 30, "recall@1": 0.5, "recall@5": 0.8, "mrr": 0.6},
                   {"questions": 30, "recall@1": 0.6, "recall@5": 0.7, "mrr": 0.65})
    assert not verdict["promotable"] and verdict["reasons"] == ["recall@5 0.800 without a map → 0.700"]
    # Better than no map, worse than the map active now: not promotable either.
    live = {"questions": 30, "recall@1": 0.6, "recall@5": 0.9, "mrr": 0.7}
    better = {"questions": 30, "recall@1": 0.6, "recall@5": 0.85, "mrr": 0.68}
    assert gate({**live, "recall@5": 0.8, "mrr": 0.6}, better)["promotable"]
    assert gate({**live, "recall@5": 0.8, "mrr": 0.6}, better, live)["reasons"] == [
        "recall@5 0.900 with the active map → 0.850", "mrr 0.700 with the active map → 0.680"]
    (run_dir / "report.json").write_text(json.dumps({"gate": verdict}))
    result = CliRunner().invoke(app, ["publish", "--run", "worse", "--activate"], env={"TEAMBOT_DATA_DIR": str(tmp_path)})
    assert result.exit_code != 0 and "not promotable" in result.output
    assert not (tmp_path / "query_adapters").exists()


def _source(number: int, doc) -> Source:
    return Source(number=number, title=doc.meta.get("title", ""), path=doc.meta["source"], snippet=doc.content[:50],
                  chunk_id=doc.id, score=0.5)


@pytest.mark.parametrize("vote", ["up", "corrected", "down", "two collections", "up, citing nothing"])
def test_the_export_pairs_questions_with_the_passages_that_answered_them(handbook, tmp_path, vote):
    settings = handbook.service.settings.model_copy(update={"data_dir": tmp_path})
    store = FeedbackStore(f"sqlite:///{tmp_path}/feedback.db")
    documents, _, _ = handbook.service.retrieve(QUESTION, handbook.collection)
    retrieved = [_source(n, d) for n, d in enumerate(documents, 1)]
    collection = handbook.collection + ("+Finance" if vote == "two collections" else "")
    text = "Use the team vault." if vote == "up, citing nothing" else "Use the team vault [2]."
    answer = Answer(question=QUESTION, text=text, sources=[retrieved[1]], model="m",
                    collection=collection, retrieved=retrieved,
                    prompt=[{"role": "system", "content": "s"}, {"role": "user", "content": QUESTION}])
    store.record_answer(answer, platform="slack", user_id="U1", channel="C1")
    correction = "It is 1Password [1]." if vote == "corrected" else None
    store.rate(answer.id, platform="slack", user_id="U1", value=-1 if vote in ("corrected", "down") else 1,
               correction=correction)
    result = build_examples(settings, store, collections=[handbook.collection, "Finance"],
                            embed=lambda texts: np.eye(len(texts), 8, dtype=np.float32))
    pairs = [p for rows in result.retrieval.values() for p in rows]
    # Nothing says which passage answers it, or from where (an uncited answer's source is only the best passage).
    if vote in ("down", "two collections", "up, citing nothing"):
        assert pairs == []
        return
    (found,) = pairs
    cited = retrieved[0] if vote == "corrected" else retrieved[1]
    assert found["positives"] == [cited.chunk_id] and found["sources"] == [cited.path]
    other_pages = [r.chunk_id for r in retrieved if r.path != cited.path]
    assert found["negatives"] == other_pages  # other passages of the cited page are no wrong answers
    vectors = passage_vectors(settings, pairs)  # as Weaviate stores them: what the map is trained against
    assert set(vectors) == {*found["positives"], *found["negatives"]}
    assert np.allclose(vectors[cited.chunk_id], np.asarray(documents[0 if vote == "corrected" else 1].embedding), atol=1e-5)


def test_fit_learns_a_planted_map_and_keeps_the_identity_when_nothing_is_to_learn():
    """Questions embedded off their passages by a fixed rotation: the map must learn to turn them
    back (dev MRR up); with nothing to learn (already at rank 1) it stays the identity."""
    rng = np.random.default_rng(0)
    dim, n = 32, 240
    passages = rng.normal(size=(n, dim)).astype(np.float32)
    passages /= np.linalg.norm(passages, axis=1, keepdims=True)
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0].astype(np.float32)
    questions = 0.6 * passages @ rotation + 0.4 * passages  # partly off: a team asks in other words
    questions /= np.linalg.norm(questions, axis=1, keepdims=True)
    rows = _Rows(questions, [[i] for i in range(n)], [[(i + 1) % n] for i in range(n)])
    train = _Rows(questions[:180], rows.positives[:180], rows.negatives[:180])
    dev = _Rows(questions[180:], [[i] for i in range(60)], [])
    before = mrr(dense_ranks(dev.questions, passages[180:], dev, None))
    mapping, history = fit(train, passages, dev, passages[180:], QueryAdapterOptions(rank=16, steps=200, seed=1),
                           "test-space", log=lambda _: None)
    after = mrr(dense_ranks(dev.questions, passages[180:], dev, mapping))
    assert after > before + 0.1 and history["best_dev_mrr"] == pytest.approx(after, abs=1e-3)
    aligned = _Rows(passages[180:], dev.positives, [])
    mapping, history = fit(_Rows(passages[:180], train.positives, train.negatives), passages, aligned, passages[180:],
                           QueryAdapterOptions(steps=40, seed=1), "test-space", log=lambda _: None)
    assert not mapping.up.any() and not mapping.down.any()  # no step beat rank 1 everywhere: the identity
