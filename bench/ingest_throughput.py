"""Ingest throughput: `Indexer.ingest` against the raw libraries, in chunks per second.

    python -m bench.ingest_throughput [--docs 100] [--repeats 3]

Ours: `pipeline.indexing.Indexer.ingest` on a folder of generated handbook pages (read, hash,
convert, split, embed, write, clean up old versions). Raw: the very chunks our splitter makes
from those pages (same text, same title/section prefix our embedder adds), encoded with
`SentenceTransformer(model).encode` and inserted with weaviate-client's
`collection.batch.fixed_size`. Every run writes into a fresh scratch collection; all of them
are deleted at the end. Needs the real Weaviate.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import corpus
from bench.harness import (
    alternate, drop_collections, load, median, ratio, raw_client, schema, scratch_name, table, timed, write_result,
)
from pipeline.indexing import Indexer, _sha256
from pipeline.stores import embedder_path
from teambot.settings import load_settings

EMBED_BATCH = 64  # what our Indexer's embedder uses


def our_chunks(indexer: Indexer, paths: list[Path]) -> list:
    """The chunks our own converter and splitter make of `paths`, metadata included."""
    return [c for p in paths for c in indexer.chunk(indexer.convert(p, _sha256(p)))]


def embedding_text(doc) -> str:
    # What SentenceTransformersDocumentEmbedder(meta_fields_to_embed=["title", "section"]) encodes.
    meta = [str(doc.meta[k]) for k in ("title", "section") if doc.meta.get(k) is not None]
    return "\n".join([*meta, doc.content or ""])


def count(client, name: str) -> int:
    return client.collections.use(name).aggregate.over_all(total_count=True).total_count


def run(docs: int, repeats: int, batch_size: int, folder: Path) -> dict:
    from sentence_transformers import SentenceTransformer
    from weaviate.util import generate_uuid5

    settings = load_settings()
    paths = corpus.write_docs(folder, docs)
    created: list[str] = []
    client = raw_client(settings)
    try:
        probe = Indexer(settings, scratch_name("IngestProbe"))
        created.append(probe.collection)
        chunk_seconds, chunks = timed(lambda: our_chunks(probe, paths))
        texts = [embedding_text(c) for c in chunks]
        model = SentenceTransformer(embedder_path(settings), device="cpu", local_files_only=True)
        model.encode(texts[:8], batch_size=EMBED_BATCH, normalize_embeddings=True)
        probe.ingest(paths[:2])  # loads our embedder (shared per process) and connects

        written: dict[str, list[int]] = {"ours": [], "raw": []}

        def ours() -> float:
            indexer = Indexer(settings, scratch_name("IngestOurs"))
            created.append(indexer.collection)
            indexer.embedder.warm_up()
            seconds, report = timed(lambda: indexer.ingest([folder]))
            written["ours"].append(count(client, indexer.collection))
            assert not report.skipped, report.skipped
            return seconds

        def raw() -> float:
            name = scratch_name("IngestRaw")
            created.append(name)
            client.collections.create_from_dict(schema(name))
            collection = client.collections.use(name)

            def insert() -> None:
                vectors = model.encode(texts, batch_size=EMBED_BATCH, normalize_embeddings=True, show_progress_bar=False)
                with collection.batch.fixed_size(batch_size=batch_size) as batch:
                    for chunk, vector in zip(chunks, vectors):
                        batch.add_object(
                            properties={"_original_id": chunk.id, "content": chunk.content, **chunk.meta},
                            uuid=generate_uuid5(chunk.id), vector=vector.tolist(),
                        )
                if collection.batch.failed_objects:
                    raise RuntimeError(f"raw insert failed: {collection.batch.failed_objects[0].message}")

            seconds, _ = timed(insert)
            written["raw"].append(count(client, name))
            return seconds

        load_before = load()
        mine, theirs = alternate(repeats, ours, raw)
        load_after = load()
    finally:
        client.close()
        drop_collections(settings, created)
    n = len(chunks)
    return {
        "docs": docs, "chunks": n, "repeats": repeats, "raw_batch_size": batch_size, "embed_batch_size": EMBED_BATCH,
        "chunking_seconds": chunk_seconds, "ours_seconds": mine, "raw_seconds": theirs,
        "ours_chunks_per_s": n / median(mine), "raw_chunks_per_s": n / median(theirs),
        "ratio_time": ratio(median(mine), median(theirs)), "objects_written": written,
        "load_before": load_before, "load_after": load_after,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100, help="Generated documents to ingest.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100, help="Raw fixed_size batch size.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="teambot-bench-") as tmp:
        result = run(args.docs, args.repeats, args.batch_size, Path(tmp) / "docs")
    print(f"ingest: {result['docs']} docs → {result['chunks']} chunks, {args.repeats} runs each, "
          f"load {result['load_before']} → {result['load_after']}")
    print(table(
        ["path", "median s", "chunks/s"],
        [["ours (Indexer.ingest)", median(result["ours_seconds"]), result["ours_chunks_per_s"]],
         ["raw (encode + batch)", median(result["raw_seconds"]), result["raw_chunks_per_s"]],
         ["ratio ours/raw (time)", result["ratio_time"], ""]],
    ))
    print(f"(our convert + split alone: {result['chunking_seconds']:.2f}s; the raw path starts from those chunks)")
    write_result("ingest_throughput", result, args.out)
    return result


if __name__ == "__main__":
    main()
