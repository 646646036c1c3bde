"""Ingest throughput: `Indexer.ingest` against the raw libraries, in chunks per second.

    python -m bench.ingest_throughput [--corpus generated|postgresql] [--docs 100] [--repeats 3] [--changed 20]

Ours: `pipeline.indexing.Indexer.ingest` on a folder (read, hash, convert, split, embed, write).
Raw: the very chunks our splitter makes of those files (same text, same title/section prefix our
embedder adds), encoded by the configured embedder's own library (`bench.harness.RawEncoder`:
sentence-transformers' `encode`, or onnxruntime with the tokenizer) and written with
weaviate-client's `collection.data.insert_many`. Corpora: `generated` handbook-like Markdown pages
(bench/corpus.py), or `postgresql`: the 218 real HTML reference pages of Debian's
`postgresql-doc-15` (big pages, paths that share words).

Then the incremental case: `--changed` files are edited and ingested again. Ours re-indexes
them and deletes their old chunks (exact-match filters); raw encodes and inserts their new chunks
and deletes the old ones by id. Every run writes into a fresh scratch collection; all are deleted
at the end. Needs the real Weaviate.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from bench import corpus
from bench.harness import (
    RawEncoder, alternate, drop_collections, load, median, ratio, raw_client, schema, scratch_name, table, timed,
    write_result,
)
from bench.retrieval_quality import POSTGRESQL_DOCS
from pipeline.indexing import EMBED_BATCH, WRITE_BATCH, Indexer, _sha256
from core.settings import load_settings


def our_chunks(indexer: Indexer, paths: list[Path]) -> list:
    """The chunks our own converter and splitter make of `paths`, metadata included."""
    return [c for p in paths for c in indexer.chunk(indexer.convert(p, _sha256(p)))]


def embedding_text(doc) -> str:
    # What the document embedder encodes after its passage prefix: title and section, then the text.
    meta = [str(doc.meta[k]) for k in ("title", "section") if doc.meta.get(k) is not None]
    return "\n".join([*meta, doc.content or ""])


def count(client, name: str) -> int:
    return client.collections.use(name).aggregate.over_all(total_count=True).total_count


def corpus_files(name: str, docs: int, folder: Path) -> list[Path]:
    if name == "generated":
        return corpus.write_docs(folder, docs)
    if not POSTGRESQL_DOCS.is_dir():
        raise SystemExit("the PostgreSQL corpus is Debian's documentation package: apt-get install postgresql-doc-15")
    folder.mkdir(parents=True)
    for page in sorted([*POSTGRESQL_DOCS.glob("sql-*.html"), *POSTGRESQL_DOCS.glob("app-*.html")]):
        shutil.copy(page, folder / page.name)
    return sorted(folder.iterdir())


def edit(paths: list[Path], round_: int) -> None:
    """Change each file a little, in a way every format keeps (a sentence before its end)."""
    for path in paths:
        text = path.read_text(encoding="utf-8")
        note = f" Revised in round {round_}."
        cut = text.rfind("</body>") if path.suffix == ".html" else -1
        path.write_text(text[:cut] + f"<p>{note}</p>" + text[cut:] if cut > 0 else text + note, encoding="utf-8")


def run(corpus_name: str, docs: int, repeats: int, changed: int, folder: Path) -> dict:
    from weaviate.classes.data import DataObject
    from weaviate.classes.query import Filter
    from weaviate.util import generate_uuid5

    settings = load_settings()
    paths = corpus_files(corpus_name, docs, folder)
    created: list[str] = []
    client = raw_client(settings)
    try:
        probe = Indexer(settings, scratch_name("IngestProbe"))
        chunk_seconds, chunks = timed(lambda: our_chunks(probe, paths))
        model = RawEncoder(settings)
        model.encode([embedding_text(c) for c in chunks[:8]], query=False, batch_size=EMBED_BATCH)
        probe.embedder.warm_up()

        def raw_write(name: str, batch: list) -> None:
            vectors = model.encode([embedding_text(c) for c in batch], query=False, batch_size=EMBED_BATCH)
            objects = [DataObject(properties={"_original_id": c.id, "content": c.content, **c.meta},
                                  uuid=generate_uuid5(c.id), vector=v.tolist()) for c, v in zip(batch, vectors)]
            for start in range(0, len(objects), WRITE_BATCH):
                result = client.collections.use(name).data.insert_many(objects[start : start + WRITE_BATCH])
                if result.has_errors:
                    raise RuntimeError(f"raw insert failed: {next(iter(result.errors.values())).message}")

        written: dict[str, list[int]] = {"ours": [], "raw": []}
        incremental: dict[str, list[float]] = {"ours": [], "raw": []}
        rounds = iter(range(1, 1000))

        def ours() -> float:
            indexer = Indexer(settings, scratch_name("IngestOurs"))
            created.append(indexer.collection)
            seconds, report = timed(lambda: indexer.ingest([folder]))
            assert not report.skipped, report.skipped
            written["ours"].append(count(client, indexer.collection))
            if changed:
                # Edit, re-ingest: only the edited files are re-indexed, their old chunks deleted.
                edit(paths[:changed], next(rounds))
                again, report = timed(lambda: indexer.ingest([folder]))
                assert len(report.indexed) == changed and report.chunks_deleted > 0, report.summary()
                incremental["ours"].append(again)
            return seconds

        def raw() -> float:
            name = scratch_name("IngestRaw")
            created.append(name)
            client.collections.create_from_dict(schema(name))
            seconds, _ = timed(lambda: raw_write(name, chunks))
            written["raw"].append(count(client, name))
            if changed:
                edit(paths[:changed], next(rounds))
                new = our_chunks(probe, paths[:changed])  # same per-file work ours does, then write + delete

                def update() -> None:
                    old = {c.id for c in chunks if c.meta["source"] in {str(p) for p in paths[:changed]}}
                    raw_write(name, new)
                    client.collections.use(name).data.delete_many(
                        where=Filter.by_property("_original_id").contains_any(sorted(old))
                    )

                again, _ = timed(update)
                incremental["raw"].append(again)
            return seconds

        load_before = load()
        mine, theirs = alternate(repeats, ours, raw)
        load_after = load()
    finally:
        client.close()
        drop_collections(settings, created)
    n = len(chunks)
    return {
        "corpus": corpus_name, "docs": len(paths), "chunks": n, "repeats": repeats, "embed_batch_size": EMBED_BATCH,
        "chunking_seconds": chunk_seconds, "ours_seconds": mine, "raw_seconds": theirs,
        "ours_chunks_per_s": n / median(mine), "raw_chunks_per_s": n / median(theirs),
        "ratio_time": ratio(median(mine), median(theirs)), "objects_written": written,
        "changed_files": changed, "incremental_seconds": incremental,
        "ratio_incremental": ratio(median(incremental["ours"]), median(incremental["raw"])) if changed else None,
        "load_before": load_before, "load_after": load_after,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=["generated", "postgresql"], default="generated")
    parser.add_argument("--docs", type=int, default=100, help="Generated documents to ingest.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--changed", type=int, default=0, help="Files edited and ingested again after each run.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="teambot-bench-") as tmp:
        result = run(args.corpus, args.docs, args.repeats, args.changed, Path(tmp) / "docs")
    print(f"ingest ({result['corpus']}): {result['docs']} files → {result['chunks']} chunks, {args.repeats} runs each, "
          f"load {result['load_before']} → {result['load_after']}")
    rows = [["ours (Indexer.ingest)", median(result["ours_seconds"]), result["ours_chunks_per_s"]],
            ["raw (encode + insert_many)", median(result["raw_seconds"]), result["raw_chunks_per_s"]],
            ["ratio ours/raw (time)", result["ratio_time"], ""]]
    if args.changed:
        inc = result["incremental_seconds"]
        rows += [[f"re-ingest, {args.changed} files edited: ours", median(inc["ours"]), ""],
                 [f"re-ingest, {args.changed} files edited: raw", median(inc["raw"]), ""],
                 ["ratio ours/raw (time)", result["ratio_incremental"], ""]]
    print(table(["path", "median s", "chunks/s"], rows))
    print(f"(our convert + split alone: {result['chunking_seconds']:.2f}s; the raw path starts from those chunks)")
    write_result(f"ingest_throughput_{args.corpus}", result, args.out)
    return result


if __name__ == "__main__":
    main()
