"""Retrieval and answer quality on a real documentation set and on the sample handbook.

    python -m bench.retrieval_quality [--corpus postgresql|gitdoc|handbook] [--grid] [--answers] [--followups]

`postgresql`: the 218 reference pages (SQL commands and client/server programs) of PostgreSQL 15
from Debian's `postgresql-doc-15` package, with bench/corpora/postgresql_qa.json: 67 questions a
colleague would ask, each with the page that answers it (checked by hand) and the strings a
correct answer contains, and 18 questions the pages cannot answer. `handbook`: examples/handbook
with bench/qa_set.json. `gitdoc`: the 206 pages of Git's manual from Debian's `git-doc`, with
bench/corpora/gitdoc_qa.json (32 + 12 questions): held out, never tuned on, so run it only at the
chosen settings (no --grid) to check that the PostgreSQL figures carry over to another corpus.

For each chunking the corpus is ingested into a scratch collection; for each hybrid alpha (and
BM25 field weighting) every question is searched once for its top 10 chunks. Reported:
recall@1 / @5 (a chunk of the right page among the first k), recall@top_k (among the chunks
the model is given: a search of top_k, as the bot runs it), MRR over the top 10, and
the abstention accuracy of the relevance gate at each threshold (answerable questions pass it,
unanswerable ones do not). `--answers` also asks the dev model through `AnswerService.ask` at
the configured settings and scores the answers: the key fact present for answerable questions,
an abstention for unanswerable ones. `--followups` searches the second turns of
bench/corpora/postgresql_followups.json (46 two-turn threads over the same pages, written by hand: a
first question, the bot's short answer, and a follow-up such as "And how do I take that away
again?" with the page that answers it) four ways (pipeline/followups.py): as asked, glued to
the first question, with the first question's subject words, and rewritten by the served model. Needs the real
Weaviate (and Ollama for --answers and --followups).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.harness import RESULTS, ROOT, drop_collections, load, percentile, scratch_name, table, write_result
from pipeline import stores
from pipeline.indexing import Indexer
from core.active_model import model_for
from core.answer import Turn
from pipeline.embedders import min_similarity
from pipeline.followups import glued, with_subject
from pipeline.querying import AnswerService
from core.settings import Settings, load_settings

POSTGRESQL_DOCS = Path("/usr/share/doc/postgresql-doc-15/html")
GIT_DOCS = Path("/usr/share/doc/git-doc")
TOP = 10  # chunks retrieved per question for the ranking metrics
BM25_WEIGHTINGS = {"content only": ["content"], "title^2,section^2": ["content", "title^2", "section^2"]}


def corpus(name: str) -> tuple[list[Path], list[dict], list[str]]:
    """(files to ingest, answerable questions as {q, file, expect}, unanswerable questions)."""
    if name == "handbook":
        qa = json.loads((ROOT / "bench" / "qa_set.json").read_text())
        answerable = [{"q": q, "file": f, "expect": []} for q, f in qa["answerable"]]
        return [ROOT / "examples" / "handbook"], answerable, qa["unanswerable"]
    if name == "gitdoc":
        if not GIT_DOCS.is_dir():
            raise SystemExit("the held-out Git corpus is Debian's documentation package: apt-get install git-doc")
        qa = json.loads((ROOT / "bench" / "corpora" / "gitdoc_qa.json").read_text())
        return sorted(GIT_DOCS.glob("*.html")), qa["answerable"], qa["unanswerable"]
    if not POSTGRESQL_DOCS.is_dir():
        raise SystemExit("the PostgreSQL corpus is Debian's documentation package: apt-get install postgresql-doc-15")
    qa = json.loads((ROOT / "bench" / "corpora" / "postgresql_qa.json").read_text())
    pages = sorted([*POSTGRESQL_DOCS.glob("sql-*.html"), *POSTGRESQL_DOCS.glob("app-*.html")])
    return pages, qa["answerable"], qa["unanswerable"]


def _rank(docs, gold: str) -> int | None:
    """1-based rank of the first chunk from the gold file, or None."""
    return next((i for i, d in enumerate(docs, 1) if Path(d.meta["source"]).name == gold), None)


def search_all(settings: Settings, collection: str, answerable: list[dict], unanswerable: list[str]) -> dict:
    """Every question's top chunks (no gate) and its best cosine similarity."""
    service = AnswerService(settings.model_copy(update={"top_k": TOP, "min_similarity": -1.0}))
    # The chunks the model is given come from a search of top_k (and the page cap's pool of it):
    # recall@top_k is counted on that search, not on the first top_k of a longer list.
    served = AnswerService(settings.model_copy(update={"min_similarity": -1.0}))
    try:
        ranks, served_ranks, best_pos, best_neg, started = [], [], [], [], time.perf_counter()
        for item in answerable:
            docs, sims, _ = service.retrieve(item["q"], collection)
            ranks.append(_rank(docs, item["file"]))
            best_pos.append(max(sims, default=-1.0))
            served_ranks.append(_rank(served.retrieve(item["q"], collection)[0], item["file"]))
        for question in unanswerable:
            _, sims, _ = service.retrieve(question, collection)
            best_neg.append(max(sims, default=-1.0))
        seconds = time.perf_counter() - started
    finally:
        service.close()
        served.close()
    return {"ranks": ranks, "served_ranks": served_ranks, "best_pos": best_pos, "best_neg": best_neg,
            "ms_per_search": 1000 * seconds / (2 * len(answerable) + len(unanswerable))}


def score(found: dict, answerable: list[dict], top_k: int, threshold: float) -> dict:
    ranks = found["ranks"]
    n = len(ranks)
    passed = sum(s >= threshold for s in found["best_pos"])
    refused = sum(s < threshold for s in found["best_neg"])
    return {
        "recall@1": sum(r == 1 for r in ranks if r) / n,
        "recall@5": sum(r <= 5 for r in ranks if r) / n,
        f"recall@{top_k}": sum(r is not None for r in found["served_ranks"]) / n,
        "mrr": sum(1 / r for r in ranks if r) / n,
        "abstention_accuracy": (passed + refused) / (n + len(found["best_neg"])),
        "false_abstentions": n - passed, "missed_abstentions": len(found["best_neg"]) - refused,
        "misses@5": [answerable[i]["q"] for i, r in enumerate(ranks) if not r or r > 5],
    }


def answers(settings: Settings, collection: str, answerable: list[dict], unanswerable: list[str]) -> dict:
    """The dev model's answers at `settings`: key fact present, abstentions where there is no answer."""
    service = AnswerService(settings)
    rows, started = [], time.perf_counter()
    try:
        for item in answerable:
            answer = service.ask(item["q"], collection=collection)
            correct = not answer.abstained and any(e.lower() in answer.text.lower() for e in item["expect"])
            cited = item["file"] in {Path(s.path).name for s in answer.sources}
            # Without the grounding check (pipeline/grounding.py), the draft would have been shown.
            correct_unchecked = correct or any(e.lower() in answer.draft.lower() for e in item["expect"] if answer.draft)
            rows.append({"q": item["q"], "answer": answer.text, "correct": correct, "cites_gold": cited,
                         "abstained": answer.abstained, "outcome": answer.outcome.value, "draft": answer.draft,
                         "correct_unchecked": correct_unchecked})
        abstained = []
        for question in unanswerable:
            answer = service.ask(question, collection=collection)
            abstained.append(answer.abstained)
            rows.append({"q": question, "answer": answer.text, "abstained": answer.abstained, "unanswerable": True,
                         "outcome": answer.outcome.value, "draft": answer.draft})
    finally:
        service.close()
    n = len(answerable)
    return {
        "answer_correct": sum(r["correct"] for r in rows[:n]) / n,
        "answer_cites_gold": sum(r["cites_gold"] for r in rows[:n]) / n,
        "answer_false_abstentions": sum(r["abstained"] for r in rows[:n]),
        "unanswerable_abstained": sum(abstained) / len(abstained),
        "ungrounded_answerable": sum(r["outcome"] == "ungrounded" for r in rows[:n]),
        "ungrounded_unanswerable": sum(r["outcome"] == "ungrounded" for r in rows[n:]),
        "answer_correct_unchecked": sum(r["correct_unchecked"] for r in rows[:n]) / n,
        "seconds": time.perf_counter() - started, "rows": rows,
    }


def followups(settings: Settings, collection: str) -> dict:
    """The follow-up set's second turns searched each way pipeline/followups.py knows: recall, MRR,
    and the time the served model's rewrites took."""
    threads = json.loads((ROOT / "bench" / "corpora" / "postgresql_followups.json").read_text())["threads"]
    service = AnswerService(settings.model_copy(update={"top_k": TOP, "min_similarity": -1.0}))
    model = model_for(settings, collection)
    ranks: dict[str, list] = {"as asked": [], "glued": [], "subject": [], "rewritten": []}
    rewrites, seconds, fallbacks = [], [], 0
    try:
        for thread in threads:
            history = [Turn(thread["first"], thread["first_answer"])]
            out = service.rewriter.run(question=thread["follow"], history=history, model=model)
            seconds.append(out["seconds"])
            fallbacks += out["method"] != "rewritten"
            rewrites.append({"follow": thread["follow"], "searched": out["question"], "method": out["method"]})
            for method, text in (("as asked", thread["follow"]), ("glued", glued(thread["follow"], history)),
                                 ("subject", with_subject(thread["follow"], history)), ("rewritten", out["question"])):
                ranks[method].append(_rank(service.retrieve(text, collection)[0], thread["file"]))
    finally:
        service.close()
    n = len(threads)
    rows = [{"search": method, "recall@1": sum(r == 1 for r in found if r) / n,
             "recall@5": sum(r <= 5 for r in found if r) / n, "mrr": sum(1 / r for r in found if r) / n}
            for method, found in ranks.items()]
    return {"threads": n, "rows": rows, "rewrite_p50_s": percentile(seconds, 50), "rewrite_p95_s": percentile(seconds, 95),
            "rewrite_fallbacks": fallbacks, "rewrites": rewrites, "model": model}


def _indexer(settings: Settings, collection: str, html: str) -> Indexer:
    indexer = Indexer(settings, collection)
    if html == "trafilatura":  # what teambot used before its section-aware converter, for comparison
        from haystack.components.converters import HTMLToDocument

        indexer._converters["html"] = HTMLToDocument(
            extraction_kwargs={"output_format": "markdown", "include_formatting": True}
        )
    return indexer


def run(corpus_name: str, grid: bool, with_answers: bool, html: str = "sections", collection: str | None = None,
        with_followups: bool = False) -> dict:
    base = load_settings()
    files, answerable, unanswerable = corpus(corpus_name)
    if collection:  # an already ingested copy of the corpus, scored at the configured settings only
        found = search_all(base, collection, answerable, unanswerable)
        row = {"chunk_words": base.chunk_words, "overlap": base.chunk_overlap, "bm25": "content only",
               "alpha": base.alpha, "min_similarity": min_similarity(base), "ms_per_search": found["ms_per_search"],
               **score(found, answerable, base.top_k, min_similarity(base))}
        answered = answers(base, collection, answerable, unanswerable) if with_answers else None
        follow = followups(base, collection) if with_followups else None
        return {"corpus": corpus_name, "html_converter": html, "files": len(files), "answerable": len(answerable),
                "unanswerable": len(unanswerable), "top_k": base.top_k, "rows": [row], "answers": answered,
                "followups": follow, "collection": collection, "load": load()}
    if grid:
        chunkings, alphas, weightings = [(80, 20), (120, 30), (200, 40)], [0.25, 0.5, 0.75], list(BM25_WEIGHTINGS)
        thresholds = [0.2, 0.25, 0.3, 0.35, 0.4]
    else:
        chunkings, alphas = [(base.chunk_words, base.chunk_overlap)], [base.alpha]
        weightings, thresholds = ["content only"], [min_similarity(base)]
    rows, created, answered, follow = [], [], None, None
    default_bm25 = stores.BM25_PROPERTIES
    try:
        for words, overlap in chunkings:
            settings = base.model_copy(update={"chunk_words": words, "chunk_overlap": overlap})
            collection = scratch_name("Quality")
            created.append(collection)
            report = _indexer(settings, collection, html).ingest(files)
            print(f"{corpus_name}: {words}/{overlap} words → {report.chunks_written} chunks in {report.seconds:.0f}s",
                  flush=True)
            for weighting in weightings:
                stores.BM25_PROPERTIES = BM25_WEIGHTINGS[weighting]
                for alpha in alphas:
                    found = search_all(settings.model_copy(update={"alpha": alpha}), collection, answerable, unanswerable)
                    for threshold in thresholds:
                        rows.append({"chunk_words": words, "overlap": overlap, "bm25": weighting, "alpha": alpha,
                                     "min_similarity": threshold, "chunks": report.chunks_written,
                                     "ms_per_search": found["ms_per_search"],
                                     **score(found, answerable, base.top_k, threshold)})
            stores.BM25_PROPERTIES = default_bm25
            if with_answers and (words, overlap) == (base.chunk_words, base.chunk_overlap):
                answered = answers(base, collection, answerable, unanswerable)
            if with_followups and (words, overlap) == (base.chunk_words, base.chunk_overlap):
                follow = followups(base, collection)
    finally:
        stores.BM25_PROPERTIES = default_bm25
        drop_collections(base, created)
    return {"corpus": corpus_name, "html_converter": html, "files": len(files), "answerable": len(answerable),
            "unanswerable": len(unanswerable), "top_k": base.top_k, "rows": rows, "answers": answered,
            "followups": follow, "load": load()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=["postgresql", "gitdoc", "handbook"], default="postgresql")
    parser.add_argument("--grid", action="store_true", help="Try several chunk sizes, alphas, BM25 weightings, gates.")
    parser.add_argument("--answers", action="store_true", help="Also score the dev model's answers (needs Ollama).")
    parser.add_argument("--html", choices=["sections", "trafilatura"], default="sections",
                        help="HTML converter: teambot's section-aware one, or the trafilatura one it replaced.")
    parser.add_argument("--followups", action="store_true",
                        help="Also search the PostgreSQL follow-up threads each way (needs Ollama).")
    parser.add_argument("--collection", help="Score this already ingested copy of the corpus instead of ingesting it.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.collection and (args.grid or args.html != "sections"):
        parser.error("--collection scores an existing collection at the configured settings: no --grid or --html")
    if args.followups and args.corpus != "postgresql":
        parser.error("the follow-up threads are over the PostgreSQL pages: --corpus postgresql")
    result = run(args.corpus, args.grid, args.answers, args.html, args.collection, args.followups)
    k = result["top_k"]
    print(table(
        ["words", "bm25", "alpha", "gate", "R@1", "R@5", f"R@{k}", "MRR", "abstain acc", "false abst", "missed abst"],
        [[r["chunk_words"], r["bm25"], r["alpha"], r["min_similarity"], r["recall@1"], r["recall@5"],
          r[f"recall@{k}"], r["mrr"], r["abstention_accuracy"], r["false_abstentions"], r["missed_abstentions"]]
         for r in result["rows"]],
    ))
    if result["answers"]:
        a = result["answers"]
        print(f"answers ({result['answerable']} answerable, {result['unanswerable']} not): key fact present "
              f"{a['answer_correct']:.3f}, gold page cited {a['answer_cites_gold']:.3f}, false abstentions "
              f"{a['answer_false_abstentions']}, unanswerable abstained {a['unanswerable_abstained']:.3f}; "
              f"the grounding check replaced {a['ungrounded_answerable']} answers to answerable questions (key fact "
              f"present without it {a['answer_correct_unchecked']:.3f}) and {a['ungrounded_unanswerable']} to "
              f"unanswerable ones")
    if result["followups"]:
        f = result["followups"]
        print(f"follow-ups ({f['threads']} two-turn threads, second turn; rewrites by {f['model']}: p50 "
              f"{f['rewrite_p50_s']:.2f}s, p95 {f['rewrite_p95_s']:.2f}s, {f['rewrite_fallbacks']} fell back to the subject search)")
        print(table(["search", "R@1", "R@5", "MRR"], [[r["search"], r["recall@1"], r["recall@5"], r["mrr"]] for r in f["rows"]]))
    name = f"retrieval_quality_{args.corpus}" + ("_trafilatura" if args.html == "trafilatura" else "")
    write_result(name, result, args.out or RESULTS / f"{name}.json")
    return result


if __name__ == "__main__":
    main()
