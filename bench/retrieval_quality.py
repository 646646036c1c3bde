"""Retrieval quality on the sample handbook: recall@3 and abstention accuracy per setting.

    python -m bench.retrieval_quality [--grid]

Ingests examples/handbook into a scratch collection for each chunking setting, asks the
questions of bench/qa_set.json (answerable ones name the file that holds the answer), and
reports recall@3 for each hybrid alpha and the abstention accuracy of the relevance gate at
its configured threshold (answerable questions must pass it, unanswerable ones must not).
Needs the real Weaviate (`teambot services up`); Ollama is not used.
"""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path

from pipeline.indexing import Indexer
from pipeline.querying import AnswerService
from pipeline.stores import document_store, forget_store
from teambot.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
QA = json.loads((ROOT / "bench" / "qa_set.json").read_text())
HANDBOOK = ROOT / "examples" / "handbook"


def evaluate(chunk_words: int, overlap: int, alphas: list[float], thresholds: list[float]) -> list[dict]:
    base = load_settings()
    collection = f"Bench_{uuid.uuid4().hex[:8]}"
    results = []
    try:
        settings = base.model_copy(update={"chunk_words": chunk_words, "chunk_overlap": overlap, "top_k": 3})
        Indexer(settings, collection).ingest([HANDBOOK])
        for alpha in alphas:
            for threshold in thresholds:
                tuned = settings.model_copy(update={"alpha": alpha, "min_similarity": threshold})
                service = AnswerService(tuned)
                hits = passed = 0
                misses, leaks = [], []
                for question, expected in QA["answerable"]:
                    docs, _, _ = service.retrieve(question, collection)
                    passed += bool(docs)
                    found = expected in [Path(d.meta["source"]).name for d in docs[:3]]
                    hits += found
                    if not found:
                        misses.append(question)
                refused = 0
                for question in QA["unanswerable"]:
                    docs, _, _ = service.retrieve(question, collection)
                    refused += not docs
                    if docs:
                        leaks.append(question)
                service.close()
                n_pos, n_neg = len(QA["answerable"]), len(QA["unanswerable"])
                results.append({
                    "chunk_words": chunk_words, "overlap": overlap, "alpha": alpha, "min_similarity": threshold,
                    "recall@3": hits / n_pos, "abstention_accuracy": (passed + refused) / (n_pos + n_neg),
                    "false_abstentions": n_pos - passed, "missed_abstentions": n_neg - refused,
                    "not_in_top3": misses, "not_abstained": leaks,
                })
    finally:
        document_store(base, collection).client.collections.delete(collection)
        forget_store(base, collection)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", action="store_true", help="Try several chunk sizes, alphas and thresholds.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "retrieval_quality.json")
    args = parser.parse_args()
    settings = load_settings()
    if args.grid:
        chunkings = [(60, 15), (120, 30), (200, 40)]
        alphas = [0.25, 0.5, 0.75]
        thresholds = [0.25, 0.3, 0.35, 0.4]
    else:
        chunkings = [(settings.chunk_words, settings.chunk_overlap)]
        alphas = [settings.alpha]
        thresholds = [settings.min_similarity]
    rows = [row for words, overlap in chunkings for row in evaluate(words, overlap, alphas, thresholds)]
    print(f"{'words':>5} {'overlap':>7} {'alpha':>5} {'gate':>5} {'recall@3':>8} {'abstain acc':>11} {'false abst':>10} {'missed abst':>11}")
    for r in rows:
        print(
            f"{r['chunk_words']:>5} {r['overlap']:>7} {r['alpha']:>5} {r['min_similarity']:>5} "
            f"{r['recall@3']:>8.3f} {r['abstention_accuracy']:>11.3f} {r['false_abstentions']:>10} {r['missed_abstentions']:>11}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
