"""Learn retrieval from votes: a query adapter (`teambot train --retrieval`).

From the retrieval pairs of the export (training/retrieval_pairs.py: each question with the
passages that answered it and those the search showed in vain) this trains a low-rank residual
map of question embeddings, q' = normalize(q + (q·U)·Vᵀ), with a contrastive loss: the question
must come nearer its cited passages than the other passages of the batch (in-batch negatives)
and its own hard negatives. The passages' vectors are read from Weaviate as stored, so the map
learns the very space the search runs in, and nothing is re-indexed.

Early stopping on the dev split; the gate searches the collection (Weaviate's hybrid search, as
the bot searches, without boosts) for every test question with and without the map and refuses a
map under which recall@5 or MRR drops, against no map and against the map active now. Publishing copies the map to `data_dir/query_adapters/`;
activation and rollback are core.active_model's, kind "query_adapter" (pipeline/query_adapter.py
applies it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.settings import Settings
from pipeline.embedders import embedder_spec
from pipeline.query_adapter import QueryMap
from training import runs
from training.splits import SPLITS, export_dir, read_split

TOP = 10  # results per test search (MRR@10)


class QueryAdapterError(ValueError):
    pass


@dataclass
class QueryAdapterOptions:
    run_id: str | None = None
    rank: int = 16
    steps: int = 300
    batch_size: int = 32
    learning_rate: float = 2e-3
    temperature: float = 0.05
    weight_decay: float = 1e-4
    eval_every: int = 20
    patience: int = 5
    seed: int = 42


def load_pairs(settings: Settings) -> tuple[dict[str, list[dict]], dict]:
    """The export's retrieval pairs by split, and its scope."""
    root = export_dir(settings)
    summary_path = root / "summary.json"
    if not summary_path.is_file():
        raise QueryAdapterError(f"no export under {root}: run `teambot feedback export` first")
    scope = runs.read_json(summary_path).get("scope") or {}
    pairs = {s: read_split(root / "retrieval" / f"{s}.jsonl") if (root / "retrieval" / f"{s}.jsonl").is_file() else []
             for s in SPLITS}
    return pairs, scope


def passage_vectors(settings: Settings, pairs: list[dict]) -> dict[str, np.ndarray]:
    """chunk id → its vector as Weaviate stores it (passages deleted since are simply missing)."""
    from pipeline.stores import document_store

    by_collection: dict[str, set[str]] = {}
    for row in pairs:
        by_collection.setdefault(row["collection"], set()).update(row["positives"], row["negatives"])
    found = {}
    for collection, ids in by_collection.items():
        store = document_store(settings, collection)
        ordered = sorted(ids)
        for start in range(0, len(ordered), 200):
            chunk = ordered[start:start + 200]
            for doc in store.filter_documents({"field": "_original_id", "operator": "in", "value": chunk}):
                if doc.embedding is not None:
                    found[doc.id] = np.asarray(doc.embedding, dtype=np.float32)
    return found


def check_space(settings: Settings, collections: list[str]) -> str:
    """The space every scoped collection's vectors are in, which must be the embedder's."""
    from pipeline.stores import document_store, embedding_space

    space = embedder_spec(settings).space
    for collection in collections:
        stored = embedding_space(document_store(settings, collection).collection.config.get())
        if stored != space:
            raise QueryAdapterError(f"{collection} holds vectors of {stored}, TEAMBOT_EMBEDDER embeds in {space}: "
                                    "re-index it before training a query adapter")
    return space


@dataclass
class _Rows:
    questions: np.ndarray  # n × dim
    positives: list[list[int]]  # indices into the passage matrix
    negatives: list[list[int]]


def _rows(pairs: list[dict], question_vectors: np.ndarray, index: dict[str, int]) -> _Rows:
    keep, positives, negatives = [], [], []
    for i, row in enumerate(pairs):
        pos = [index[c] for c in row["positives"] if c in index]
        if pos:
            keep.append(i)
            positives.append(pos)
            negatives.append([index[c] for c in row["negatives"] if c in index])
    return _Rows(question_vectors[keep] if keep else question_vectors[:0], positives, negatives)


def dense_ranks(questions: np.ndarray, passages: np.ndarray, rows: _Rows, mapping: QueryMap | None) -> list[int]:
    """Rank (1-based) of each question's best positive among all passages of its split."""
    vectors = mapping.apply(questions) if mapping is not None else questions
    scores = vectors @ passages.T
    ranks = []
    for i, pos in enumerate(rows.positives):
        best = scores[i, pos].max()
        ranks.append(int((scores[i] > best).sum()) + 1)
    return ranks


def mrr(ranks: list[int | None], cutoff: int = TOP) -> float:
    return float(np.mean([1.0 / r if r and r <= cutoff else 0.0 for r in ranks])) if ranks else 0.0


def recall(ranks: list[int | None], k: int) -> float:
    return float(np.mean([1.0 if r and r <= k else 0.0 for r in ranks])) if ranks else 0.0


def fit(train: _Rows, passages: np.ndarray, dev: _Rows, dev_passages: np.ndarray, options: QueryAdapterOptions,
        space: str, log=print) -> tuple[QueryMap, dict]:
    """The map with the best dev MRR (the identity's, if nothing beats it)."""
    import torch

    torch.manual_seed(options.seed)
    dim = passages.shape[1]
    up = torch.nn.Parameter(torch.randn(dim, options.rank) * 0.01)
    down = torch.nn.Parameter(torch.zeros(dim, options.rank))
    optimizer = torch.optim.AdamW([up, down], lr=options.learning_rate, weight_decay=options.weight_decay)
    questions, all_passages = torch.from_numpy(train.questions), torch.from_numpy(passages)
    generator = np.random.default_rng(options.seed)

    def current() -> QueryMap:
        return QueryMap(up.detach().numpy().copy(), down.detach().numpy().copy(), space)

    def dev_mrr(mapping: QueryMap | None) -> float:
        return mrr(dense_ranks(dev.questions, dev_passages, dev, mapping)) if dev.positives else 0.0

    best_score, best, stale, history = dev_mrr(None), None, 0, []
    history.append({"step": 0, "dev_mrr": round(best_score, 4)})
    for step in range(1, options.steps + 1):
        batch = generator.choice(len(train.positives), size=min(options.batch_size, len(train.positives)), replace=False)
        candidates = sorted({p for i in batch for p in train.positives[i] + train.negatives[i]})
        column = {p: j for j, p in enumerate(candidates)}
        target = torch.zeros(len(batch), len(candidates), dtype=torch.bool)
        for row, i in enumerate(batch):
            for p in train.positives[i]:
                target[row, column[p]] = True
        q = questions[batch]
        mapped = torch.nn.functional.normalize(q + (q @ up) @ down.T, dim=-1)
        logits = mapped @ all_passages[candidates].T / options.temperature
        # Several cited passages per question: all of them are right (multi-positive InfoNCE).
        loss = (torch.logsumexp(logits, dim=1) - torch.logsumexp(logits.masked_fill(~target, -1e9), dim=1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % options.eval_every == 0 or step == options.steps:
            score = dev_mrr(current())
            history.append({"step": step, "loss": round(float(loss), 4), "dev_mrr": round(score, 4)})
            if score > best_score + 1e-6:
                best_score, best, stale = score, current(), 0
            else:
                stale += 1
                if stale >= options.patience:
                    break
    if best is None:  # nothing beat the identity on dev: a zero map is the identity
        best = QueryMap(np.zeros((dim, options.rank), np.float32), np.zeros((dim, options.rank), np.float32), space)
        log("no step beat searching without a map on the dev split")
    return best, {"history": history, "best_dev_mrr": round(best_score, 4), "steps": history[-1]["step"]}


def search_ranks(settings: Settings, pairs: list[dict], question_vectors: np.ndarray, mapping: QueryMap | None) -> list[int | None]:
    """Rank of the first result from a cited page, searching as the bot searches (hybrid, no boosts)."""
    from haystack_integrations.components.retrievers.weaviate import WeaviateHybridRetriever
    from pipeline.stores import document_store

    vectors = mapping.apply(question_vectors) if mapping is not None else question_vectors
    retrievers: dict[str, WeaviateHybridRetriever] = {}
    ranks = []
    for row, vector in zip(pairs, vectors):
        collection = row["collection"]
        if collection not in retrievers:
            retrievers[collection] = WeaviateHybridRetriever(document_store=document_store(settings, collection),
                                                             top_k=TOP, alpha=settings.alpha)
        docs = retrievers[collection].run(query=row["question"], query_embedding=vector.tolist())["documents"]
        wanted = set(row["sources"])
        ranks.append(next((i for i, d in enumerate(docs, 1) if d.meta.get("source") in wanted), None))
    return ranks


def measures(ranks: list[int | None]) -> dict:
    return {"questions": len(ranks), "recall@1": round(recall(ranks, 1), 4), "recall@5": round(recall(ranks, 5), 4),
            "mrr": round(mrr(ranks), 4)}


MIN_TEST = 5  # test questions the gate needs


def gate(before: dict, after: dict, active: dict | None = None, minimum: int = MIN_TEST) -> dict:
    """Promotable when neither recall@5 nor MRR drops against searching without a map, nor against
    the map active now, and one of them rises."""
    reasons = []
    if after["questions"] < minimum:
        reasons.append(f"only {after['questions']} test questions (need {minimum})")
    for label, reference in (("without a map", before), ("with the active map", active)):
        for key in ("recall@5", "mrr"):
            if reference is not None and after[key] < reference[key]:
                reasons.append(f"{key} {reference[key]:.3f} {label} → {after[key]:.3f}")
    if not reasons and after["mrr"] <= before["mrr"] and after["recall@5"] <= before["recall@5"]:
        reasons.append("no better than searching without it")
    return {"promotable": not reasons, "reasons": reasons}


def active_map(settings: Settings, collections: list[str]) -> tuple[str, QueryMap | None]:
    """The adapter active for these collections now, if any."""
    from core.active_model import model_for
    from pipeline.query_adapter import KIND, adapter_path

    name = model_for(settings, collections, kind=KIND)
    if not name:
        return "", None
    try:
        return name, QueryMap.load(adapter_path(settings, name))
    except Exception:  # noqa: BLE001 - an unreadable map serves nothing: the bots search without it
        return name, None


def train_query_adapter(settings: Settings, options: QueryAdapterOptions, log=print) -> Path:
    """Train, gate and save a query adapter run under data_dir/runs/<id>/."""
    from training.export import project_embedder

    pairs, scope = load_pairs(settings)
    # As for SFT examples (TEAMBOT_TRAIN_MIN_EXAMPLES): fewer, and a map learns a handful of questions.
    minimum = settings.train_min_examples
    if len(pairs["train"]) < minimum or len(pairs["test"]) < MIN_TEST:
        raise QueryAdapterError(
            f"the export holds {len(pairs['train'])} training and {len(pairs['test'])} test retrieval pairs (need "
            f"{minimum} and {MIN_TEST}): collect more 👍 answers that cite their sources, or corrections that do"
        )
    # Its scope: the collections its training pairs came from (an export's other collections were not learned).
    collections = sorted({r["collection"] for r in pairs["train"]} & set(scope.get("collections") or []))
    if not collections:
        raise QueryAdapterError("the export's retrieval pairs come from no collection of its scope")
    pairs = {s: [r for r in rows if r["collection"] in collections] for s, rows in pairs.items()}
    space = check_space(settings, collections)
    started = time.monotonic()
    run_id = runs.check_run_id(options.run_id or f"retrieval-{runs.new_run_id()}")
    run_dir = runs.runs_dir(settings) / run_id
    if run_dir.exists():
        raise QueryAdapterError(f"run {run_id} exists already")
    embed = project_embedder(settings)
    vectors = passage_vectors(settings, [r for rows in pairs.values() for r in rows])
    ids = sorted(vectors)
    index = {c: i for i, c in enumerate(ids)}
    passages = np.stack([vectors[c] for c in ids]) if ids else np.zeros((0, 0), np.float32)
    questions = {s: embed([r["question"] for r in pairs[s]]) for s in SPLITS}
    rows = {s: _rows(pairs[s], questions[s], index) for s in SPLITS}
    if len(rows["train"].positives) < minimum:
        raise QueryAdapterError(f"only {len(rows['train'].positives)} training pairs still have their passages in Weaviate")
    log(f"training a rank-{options.rank} query adapter on {len(rows['train'].positives)} pairs "
        f"({len(ids)} passages), dev {len(rows['dev'].positives)}, test {len(pairs['test'])}")
    dev = rows["dev"]
    if not dev.positives:  # early stopping needs something: a fifth of train, then not trained on
        cut = max(1, len(rows["train"].positives) // 5)
        train = rows["train"]
        dev = _Rows(train.questions[:cut], train.positives[:cut], train.negatives[:cut])
        rows["train"] = _Rows(train.questions[cut:], train.positives[cut:], train.negatives[cut:])
        log(f"no dev pairs: early stopping on {cut} training pairs held back")
    # The dev split ranks among the passages its own pairs name: the ones the search showed for those questions.
    dev_ids = sorted({i for r in (dev.positives + dev.negatives) for i in r})
    dev_local = {g: j for j, g in enumerate(dev_ids)}
    dev_rows = _Rows(dev.questions, [[dev_local[i] for i in p] for p in dev.positives], [])
    mapping, history = fit(rows["train"], passages, dev_rows, passages[dev_ids] if dev_ids else passages[:0], options,
                           space, log)
    before = measures(search_ranks(settings, pairs["test"], questions["test"], None))
    after = measures(search_ranks(settings, pairs["test"], questions["test"], mapping))
    active_name, active = active_map(settings, collections)
    now = measures(search_ranks(settings, pairs["test"], questions["test"], active)) if active else None
    verdict = gate(before, after, now)
    log(f"test search: recall@5 {before['recall@5']:.3f} → {after['recall@5']:.3f}, MRR {before['mrr']:.3f} → "
        f"{after['mrr']:.3f}: {'promotable' if verdict['promotable'] else '; '.join(verdict['reasons'])}")
    run_dir.mkdir(parents=True)
    mapping.save(run_dir / "query_adapter.npz")
    runs.write_json(run_dir / "config.json", {
        "method": "retrieval", "space": space, "scope": collections, "export_scope": scope,
        "options": options.__dict__, "pairs": {s: len(pairs[s]) for s in SPLITS},
    })
    runs.write_json(run_dir / "metrics.json", {**history, "seconds": round(time.monotonic() - started, 1)})
    runs.write_json(run_dir / "report.json", {"retrieval": {"before": before, "after": after, "active": now,
                                                            "active_name": active_name or None}, "gate": verdict})
    return run_dir
