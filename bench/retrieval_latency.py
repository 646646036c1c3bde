"""Retrieval latency: `AnswerService.retrieve` against one raw encode + hybrid query, p50/p95.

    python -m bench.retrieval_latency [--sizes 5000,50000] [--queries 40]

A scratch collection holds the sample handbook (ingested by our Indexer, so real questions
find real chunks) plus generated filler chunks with random unit vectors, written with the raw
batch API (no embedding time), grown to each size in turn. At each size the questions of
bench/qa_set.json are asked, alternating ours and raw per question:
- ours: `AnswerService.retrieve` (query embedding, hybrid search, relevance gate);
- raw: the embedder's own library (`bench.harness.RawEncoder`: sentence-transformers, or onnxruntime
  with the tokenizer) + `collection.query.hybrid(query, vector, alpha, limit)`,
  with BM25 on `content` and the vectors returned, as ours does (the gate needs them), and the
  page cap (`chunks_per_page`) applied to its 3 × top_k results in a loop.
`--threads N` sets torch's CPU threads for both, with a torch embedder (default: torch's own choice,
one per core); onnxruntime takes one per core.
The collection is deleted at the end. Needs the real Weaviate; 50k takes minutes to fill.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from bench import corpus
from bench.harness import (
    ROOT, RawEncoder, drop_collections, load, percentile, ratio, raw_client, scratch_name, table, timed, write_result,
)
from pipeline.diversity import POOL
from pipeline.indexing import Indexer
from pipeline.querying import AnswerService
from core.settings import load_settings

HANDBOOK = ROOT / "examples" / "handbook"
QA = json.loads((ROOT / "bench" / "qa_set.json").read_text())
FILL_BATCH = 500


def questions() -> list[str]:
    return [q for q, _ in QA["answerable"]] + QA["unanswerable"]


def fill(collection, start: int, stop: int, dim: int) -> None:
    """Add generated chunks number start..stop-1 with random unit vectors (raw batch API)."""
    from weaviate.util import generate_uuid5

    records = corpus.chunks(stop, seed=11)[start:]
    vectors = corpus.unit_vectors(stop, dim, seed=13)[start:]
    with collection.batch.fixed_size(batch_size=FILL_BATCH, concurrent_requests=2) as batch:
        for n, (record, vector) in enumerate(zip(records, vectors), start):
            chunk_id = f"filler-{n}"
            batch.add_object(properties={"_original_id": chunk_id, **record}, uuid=generate_uuid5(chunk_id), vector=vector.tolist())
    if collection.batch.failed_objects:
        raise RuntimeError(f"filling failed: {collection.batch.failed_objects[0].message}")


def run(sizes: list[int], queries: int, threads: int | None = None) -> dict:
    from weaviate.classes.query import MetadataQuery

    settings = load_settings()
    if threads:
        import torch  # only a torch embedder reads it

        torch.set_num_threads(threads)
    name = scratch_name("Retrieval")
    client = raw_client(settings)
    rows = []
    try:
        report = Indexer(settings, name).ingest([HANDBOOK])
        handbook_chunks = report.chunks_written
        service = AnswerService(settings)
        model = RawEncoder(settings)
        collection = client.collections.use(name)
        dim = model.dim

        def ours(question: str):
            docs, _, _ = service.retrieve(question, name)
            return [d.id for d in docs]

        def raw(question: str):
            vector = model.encode([question], query=True)[0]
            cap, k = settings.chunks_per_page, settings.top_k
            result = collection.query.hybrid(
                query=question, vector=vector.tolist(), alpha=settings.alpha, limit=k * POOL if cap else k,
                query_properties=["content"], include_vector=True, return_metadata=MetadataQuery(score=True),
            )
            if not cap:
                return [o.properties["_original_id"] for o in result.objects]
            # The page cap: the first `cap` chunks of each page, topped up from the rest in order.
            per_page: dict[str, int] = {}
            kept, rest = [], []
            for o in result.objects:
                page = o.properties["source"]
                (kept if per_page.get(page, 0) < cap else rest).append(o.properties["_original_id"])
                per_page[page] = per_page.get(page, 0) + 1
            return kept[:k] + rest[: max(0, k - len(kept))]

        have = handbook_chunks
        for size in sorted(sizes):
            if size > have:
                fill_seconds, _ = timed(lambda: fill(collection, have - handbook_chunks, size - handbook_chunks, dim))
                have = size
            else:
                fill_seconds = 0.0
            total = collection.aggregate.over_all(total_count=True).total_count
            for q in questions()[:3]:  # warm both paths at this size
                ours(q), raw(q)
            mine, theirs, agree, compared = [], [], 0, 0
            load_before = load()
            for i, question in zip(range(queries), itertools.cycle(questions())):
                if i % 2 == 0:
                    t_ours, ids_ours = timed(lambda: ours(question))
                    t_raw, ids_raw = timed(lambda: raw(question))
                else:
                    t_raw, ids_raw = timed(lambda: raw(question))
                    t_ours, ids_ours = timed(lambda: ours(question))
                mine.append(t_ours)
                theirs.append(t_raw)
                if ids_ours:  # the gate passed: ours must have found what raw found
                    compared += 1
                    agree += set(ids_ours) == set(ids_raw)
            rows.append({
                "size": size, "objects": total, "fill_seconds": fill_seconds, "queries": len(mine),
                "ours_p50": percentile(mine, 50), "ours_p95": percentile(mine, 95),
                "raw_p50": percentile(theirs, 50), "raw_p95": percentile(theirs, 95),
                "ratio_p50": ratio(percentile(mine, 50), percentile(theirs, 50)),
                "ratio_p95": ratio(percentile(mine, 95), percentile(theirs, 95)),
                "same_results": f"{agree}/{compared}", "ours_seconds": mine, "raw_seconds": theirs,
                "load_before": load_before, "load_after": load(),
            })
        service.close()
    finally:
        client.close()
        drop_collections(settings, [name])
    return {"top_k": settings.top_k, "alpha": settings.alpha, "embedder": settings.embedder, "threads": threads, "sizes": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,50000", help="Collection sizes in chunks, comma-separated.")
    parser.add_argument("--queries", type=int, default=40, help="Timed questions per path and size.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not sizes or min(sizes) < 1:
        parser.error("--sizes needs at least one positive size")
    result = run(sizes, args.queries, args.threads)
    print(f"retrieval latency (ms), top_k {result['top_k']}, alpha {result['alpha']}, embedder {result['embedder']}, "
          f"{result['threads'] or 'default'} threads")
    print(table(
        ["chunks", "ours p50", "ours p95", "raw p50", "raw p95", "ratio p50", "ratio p95", "same top-k", "load 1m"],
        [[r["objects"], r["ours_p50"] * 1000, r["ours_p95"] * 1000, r["raw_p50"] * 1000, r["raw_p95"] * 1000,
          r["ratio_p50"], r["ratio_p95"], r["same_results"], r["load_before"][0]] for r in result["sizes"]],
    ))
    write_result("retrieval_latency", result, args.out)
    return result


if __name__ == "__main__":
    main()
