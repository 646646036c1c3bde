"""The embedders of pipeline/embedders.py side by side, on one corpus, in one run.

    python -m bench.embedders [--corpora postgresql,handbook] [--embedders NAME,NAME]

For each embedder each corpus is ingested into a scratch collection (`Indexer.ingest`: read, convert,
split, embed, write; chunks/s), every question of the corpus is embedded alone as the bot embeds a
question (p50/p95 ms, after a warm-up), and searched as bench/retrieval_quality searches it:
recall@1/@5, recall@top_k (what the model is given), MRR, and the relevance gate's abstention
accuracy at the embedder's threshold and at the threshold (0.10–0.95) with the best mean accuracy
over the corpora: the gate is tuned per embedder, since similarities of different models are not
on one scale (pipeline/embedders.py keeps the tuned one). A fresh process then builds an
`AnswerService` with that embedder: its start-up seconds, peak memory, and whether torch was
imported. The first embedder listed is the baseline the ratios are taken against.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import RESULTS, ROOT, drop_collections, load, percentile, ratio, scratch_name, table, write_result
from bench.retrieval_quality import corpus, score, search_all
from core.settings import load_settings
from pipeline.embedders import EMBEDDERS, min_similarity, text_embedder
from pipeline.indexing import Indexer

THRESHOLDS = [round(0.01 * i, 2) for i in range(10, 96)]  # 0.10 … 0.95
# Start-up of the answering side alone, in a fresh interpreter (what a bot process pays).
STARTUP = """
import json, sys, time
started = time.perf_counter()
from core.settings import load_settings
from pipeline.querying import AnswerService
service = AnswerService(load_settings().model_copy(update={"embedder": sys.argv[1]}))
service.embed(["warm"])
seconds = time.perf_counter() - started
# VmHWM, not getrusage's ru_maxrss: that one survives execve and would report the parent's peak.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "torch": "torch" in sys.modules, "max_rss_mib": peak / 1024,
                  "sentence_transformers": "sentence_transformers" in sys.modules}))
"""


def startup(name: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", STARTUP, name], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(name: str, corpus_name: str) -> dict:
    """Ingest, question embedding times and search results of one embedder on one corpus."""
    settings = load_settings().model_copy(update={"embedder": name})
    files, answerable, unanswerable = corpus(corpus_name)
    collection = scratch_name("Embedder")
    try:
        report = Indexer(settings, collection).ingest(files)
        print(f"{name} on {corpus_name}: {report.chunks_written} chunks in {report.seconds:.1f}s", flush=True)
        embedder = text_embedder(settings)
        embedder.warm_up()
        questions = [a["q"] for a in answerable] + list(unanswerable)
        embedder.run(text=questions[0])
        times = []
        for question in questions:
            started = time.perf_counter()
            embedder.run(text=question)
            times.append(1000 * (time.perf_counter() - started))
        found = search_all(settings, collection, answerable, unanswerable)
    finally:
        drop_collections(settings, [collection])
    at_gate = score(found, answerable, settings.top_k, min_similarity(settings))
    return {
        "embedder": name, "corpus": corpus_name, "space": EMBEDDERS[name].space, "chunks": report.chunks_written,
        "ingest_seconds": report.seconds, "ingest_chunks_per_s": report.chunks_written / report.seconds,
        "query_ms_p50": percentile(times, 50), "query_ms_p95": percentile(times, 95),
        "top_k": settings.top_k, "gate": min_similarity(settings),
        **{k: at_gate[k] for k in ("recall@1", "recall@5", f"recall@{settings.top_k}", "mrr", "misses@5")},
        "abstention_accuracy": at_gate["abstention_accuracy"],
        "gate_grid": [(t, score(found, answerable, settings.top_k, t)) for t in THRESHOLDS],
    }


def tuned_gate(rows: list[dict]) -> tuple[float, float]:
    """The threshold with the best mean abstention accuracy over the corpora (ties: the lower one),
    and that mean."""
    grids = [dict(r["gate_grid"]) for r in rows]
    means = [(t, sum(g[t]["abstention_accuracy"] for g in grids) / len(grids)) for t in THRESHOLDS]
    return max(means, key=lambda m: (round(m[1], 6), -m[0]))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default="postgresql,handbook",
                        help="Comma-separated tuning corpora (postgresql, handbook); the gate is tuned on all of them.")
    parser.add_argument("--embedders", default=",".join(EMBEDDERS),
                        help="Comma-separated names of pipeline.embedders.EMBEDDERS; the first is the baseline.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.embedders.split(",") if n.strip()]
    corpora = [c.strip() for c in args.corpora.split(",") if c.strip()]
    unknown = [n for n in names if n not in EMBEDDERS]
    if unknown or not names:
        parser.error(f"unknown embedder {', '.join(unknown) or '(none)'}; known: {', '.join(EMBEDDERS)}")
    if not corpora or set(corpora) - {"postgresql", "handbook"}:
        parser.error(f"--corpora takes postgresql and/or handbook, got {args.corpora!r}")
    rows, embedders = [], []
    for name in names:
        measured = [measure(name, c) for c in corpora]
        gate, mean = tuned_gate(measured)
        for row in measured:
            tuned = dict(row["gate_grid"])[gate]
            row.update(tuned_gate=gate, abstention_at_tuned=tuned["abstention_accuracy"],
                       false_abstentions_at_tuned=tuned["false_abstentions"],
                       missed_abstentions_at_tuned=tuned["missed_abstentions"])
            row["gate_grid"] = [(t, g["abstention_accuracy"]) for t, g in row["gate_grid"]]
        rows += measured
        embedders.append({"embedder": name, "tuned_gate": gate, "mean_abstention_at_tuned": mean,
                          "startup": startup(name)})
    base = {r["corpus"]: r for r in rows if r["embedder"] == names[0]}
    for row in rows:
        row["ingest_speedup"] = ratio(row["ingest_chunks_per_s"], base[row["corpus"]]["ingest_chunks_per_s"])
        row["query_p50_ratio"] = ratio(row["query_ms_p50"], base[row["corpus"]]["query_ms_p50"])
    k = rows[0]["top_k"]
    print(table(
        ["embedder", "corpus", "chunks/s", "× base", "query p50 ms", "× base", "R@1", "R@5", f"R@{k}", "MRR",
         "gate", "abst acc", "tuned gate", "abst acc", "false/missed"],
        [[r["embedder"], r["corpus"], r["ingest_chunks_per_s"], r["ingest_speedup"], r["query_ms_p50"],
          r["query_p50_ratio"], r["recall@1"], r["recall@5"], r[f"recall@{k}"], r["mrr"], r["gate"],
          r["abstention_accuracy"], r["tuned_gate"], r["abstention_at_tuned"],
          f"{r['false_abstentions_at_tuned']}/{r['missed_abstentions_at_tuned']}"] for r in rows],
    ))
    print(table(["embedder", "bot start-up s", "peak RSS MiB", "torch imported", "sentence-transformers imported"],
                [[e["embedder"], e["startup"]["seconds"], e["startup"]["max_rss_mib"], e["startup"]["torch"],
                  e["startup"]["sentence_transformers"]] for e in embedders]))
    result = {"corpora": corpora, "rows": rows, "embedders": embedders, "load": load()}
    write_result("embedders", result, args.out or RESULTS / "embedders.json")
    return result


if __name__ == "__main__":
    main()
