"""The learning loop, measured: does a team's voting make the bot better on questions nobody voted on?

    python -m bench.learning_loop [--route smollm2|qwen] [--small] [--train N] [--held-out N]
                                  [--corrections 0.3] [--noise 0.05] [--sft-steps N] [--dpo-steps N]

A simulated team over the PostgreSQL 15 documentation (Debian's postgresql-doc-15: the SQL
reference, the programs, the configuration chapters and the function tables;
bench/loop_questions.py builds the questions from what the pages document and splits them by
page and topic). The team asks its questions through `AnswerService` (the bots' answer core),
the answers are recorded in a real feedback store, and an oracle votes as a careful colleague
would: 👍 when the answer states the documented fact and cites the page it lives on (for a
question the pages cannot answer: when it says so), 👎 otherwise with a reason; a share of the
👎 (`--corrections`) gets a reviewer's correction on the review store, written from the
documented answer and citing the gold page's passage where the search found it; a share of all
votes (`--noise`) is flipped, as people misclick.

Then the product's own commands, as an operator runs them (`teambot feedback export`, `train
--retrieval`, `train`, `eval`, `publish --activate`; subprocesses on this run's data directory):
an SFT run on the route's base, a DPO run on the SFT run, then a query adapter from the same votes
(last, so that the model stages measure the model alone); each is gated and published (a run the gate refuses is published with --force to be measured, and the
table says so). After each stage the held-out questions are asked through `AnswerService` with
what is active, and scored: key fact stated, gold page cited, abstention on unanswerable
questions, hallucinated links (a URL the sources do not hold, or a [n] no passage has), answer
length and latency, each with a 95 % bootstrap interval, and each stage's change against the base
with a paired interval (the same questions resampled together). Retrieval is scored on the held-out
questions too (recall@1/5, MRR of the gold page), with the query adapter off and on, and the
base model once more with the immediate mechanisms on (reviewed answers served, documents
boosted or demoted by votes).

Routes: `smollm2` (SmolLM2-135M, published as a LoRA ADAPTER on its Ollama base) and `qwen` (the
0.5B dev model, merged and quantized). `--small`: 20 questions, two passages per question and a few steps, published without `teambot eval`
(forced), for the suite.
Needs the real Weaviate and Ollama; results go to bench/results/learning_loop_<route>.json.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import loop_questions
from bench.harness import RESULTS, load, table, write_result
from core.settings import Settings, load_settings

COLLECTION = "LoopPostgres"  # kept between runs: the corpus takes minutes to ingest
SMALL_COLLECTION = "LoopPostgresSmall"
SMALL_QUESTIONS = 20
SMALL_DISTRACTORS = {"sql-vacuum.html", "app-psql.html", "runtime-config-query.html"}
ROUTES = {"smollm2": ("smollm2-135m", "adapter"), "qwen": ("qwen2.5-coder-0.5b", "merged")}
URL = re.compile(r"https?://[^\s)>\]]+")


@dataclass
class Team:
    corrections: float = 0.3  # share of 👎 a reviewer corrects
    noise: float = 0.05  # share of votes flipped
    seed: int = 7


# ---------------------------------------------------------------------------- scoring


def score(answer, question: loop_questions.Question) -> dict:
    """What the held-out table counts for one answer."""
    from pipeline.guard import CITATION
    from pipeline.prompts import is_abstention

    abstained = answer.abstained or is_abstention(answer.text)
    numbers = {int(n) for n in CITATION.findall(answer.text)}
    # Pages the text cites by number: an answer citing nothing lists its best passage as a source, unasked.
    cited = {Path(s.path).name for s in answer.retrieved if s.number in numbers}
    known_links = {s.url for s in answer.retrieved if s.url} | {s.path for s in answer.retrieved}
    invented = [u for u in URL.findall(answer.text) if u.rstrip(".,;") not in known_links]
    invented += [n for n in numbers if n > len(answer.retrieved)]
    answerable = question.kind != "unanswerable"
    return {
        "id": question.id, "answerable": answerable, "abstained": abstained,
        "key_fact": answerable and not abstained and loop_questions.key_fact_present(answer.text, question),
        "gold_cited": answerable and question.page in cited,
        "hallucinated_links": len(invented), "words": len(answer.text.split()),
        "seconds": answer.timings.get("total", 0.0), "outcome": answer.outcome.value, "model": answer.model,
        "reviewed": bool(answer.reviewed_from),
    }


def bootstrap(values: list[float], rounds: int = 2000, seed: int = 0) -> dict:
    """Mean and its 95 % percentile-bootstrap interval."""
    if not values:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    data = np.asarray(values, dtype=float)
    means = np.random.default_rng(seed).choice(data, size=(rounds, data.size), replace=True).mean(axis=1)
    return {"mean": round(float(data.mean()), 4), "low": round(float(np.percentile(means, 2.5)), 4),
            "high": round(float(np.percentile(means, 97.5)), 4), "n": int(data.size)}


def summarize(rows: list[dict]) -> dict:
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    return {
        "key_fact": bootstrap([float(r["key_fact"]) for r in answerable]),
        "gold_cited": bootstrap([float(r["gold_cited"]) for r in answerable]),
        "abstention_accuracy": bootstrap([float(r["abstained"]) for r in unanswerable]),
        "false_abstentions": bootstrap([float(r["abstained"]) for r in answerable]),
        "hallucinated_links": bootstrap([float(r["hallucinated_links"] > 0) for r in rows]),
        "words": bootstrap([float(r["words"]) for r in rows]),
        "seconds": bootstrap([float(r["seconds"]) for r in rows]),
        "reviewed_served": sum(r["reviewed"] for r in rows),
    }


def paired_delta(rows: list[dict], reference: list[dict], key: str, rounds: int = 2000, seed: int = 0) -> dict:
    """The stage's mean minus the reference stage's on the same answerable questions, with a 95 %
    interval from resampling the questions (paired: each question's two answers move together)."""
    before = {r["id"]: float(r[key]) for r in reference if r["answerable"]}
    diffs = [float(r[key]) - before[r["id"]] for r in rows if r["answerable"] and r["id"] in before]
    return bootstrap(diffs, rounds, seed)


def oracle(row: dict, question: loop_questions.Question, rng: random.Random, team: Team) -> tuple[int, str]:
    """The team's vote on one answer and why."""
    if row["answerable"]:
        good = row["key_fact"] and row["gold_cited"]
        why = ("states the documented fact and cites its page" if good else
               "cites the right page but misses the point" if row["gold_cited"] else
               "does not say what the docs say" if not row["key_fact"] else "does not cite where it comes from")
    else:
        good = row["abstained"]
        why = "rightly says the docs do not cover it" if good else "answers what the docs do not say"
    if rng.random() < team.noise:
        return (-1 if good else 1), "misclick"
    return (1 if good else -1), why


def correction(answer, question: loop_questions.Question) -> str:
    """A reviewer's correction: the documented answer, citing the gold page's passage if the search found it."""
    if question.kind == "unanswerable":
        return "I don't know: the documentation does not cover this."
    number = next((s.number for s in answer.retrieved if Path(s.path).name == question.page), None)
    text = f"`{question.subject}`: {question.answer}" if question.form == "task" else question.answer
    return f"{text} [{number}]" if number else f"{text} (See {question.page}.)"


# ---------------------------------------------------------------------------- the loop


def teambot(settings: Settings, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """One product command on this run's data directory, as an operator types it."""
    env = {**os.environ, "TEAMBOT_DATA_DIR": str(settings.data_dir), "TEAMBOT_FEEDBACK_DB_URL": settings.feedback_url,
           "TEAMBOT_COLLECTION": settings.collection, "TEAMBOT_MODEL": settings.model,
           "TEAMBOT_TRAIN_MIN_EXAMPLES": str(settings.train_min_examples),
           "TEAMBOT_TRAIN_MAX_TOKENS": str(settings.train_max_tokens),
           "TEAMBOT_MAX_ANSWER_TOKENS": str(settings.max_answer_tokens), "TEAMBOT_TOP_K": str(settings.top_k)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "teambot.cli", *args], env=env, capture_output=True, text=True)
    said = done.stdout.strip().splitlines() + (done.stderr.strip().splitlines()[-1:] if done.returncode else [])
    print(f"$ teambot {' '.join(args)}  ({time.monotonic() - started:.0f}s, exit {done.returncode})\n"
          + "\n".join("  " + line for line in said), flush=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"teambot {' '.join(args)} failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    return done


def ask_all(settings: Settings, questions, *, feedback: bool = False, store=None, record: bool = False) -> list[tuple]:
    """Every question asked through the answer core; (question, answer, row)."""
    from bots.conversation import feedback_from
    from pipeline.querying import AnswerService

    service = AnswerService(settings)
    if feedback:
        service.use_feedback(feedback_from(store))
    done = []
    try:
        for i, question in enumerate(questions, 1):
            answer = service.ask(question.q, collection=settings.collection)
            if record:
                store.record_answer(answer, platform="slack", user_id=f"U{i % 7}", workspace="T1", channel="CLOOP",
                                    thread=f"{i}.000", audience="public")
            done.append((question, answer, score(answer, question)))
            if i % 25 == 0:
                print(f"  asked {i}/{len(questions)}", flush=True)
    finally:
        service.close()
    return done


def vote(settings: Settings, store, asked: list[tuple], team: Team) -> dict:
    """The oracle's votes (and the reviewer's corrections) into the product's stores."""
    from feedback.reviews import ReviewStore

    reviews = ReviewStore(store)
    rng = random.Random(team.seed)
    counts = {"up": 0, "down": 0, "corrected": 0, "misclicks": 0}
    for i, (question, answer, row) in enumerate(asked, 1):
        value, why = oracle(row, question, rng, team)
        store.rate(answer.id, platform="slack", user_id=f"U{i % 7}", value=value, reason=why)
        counts["up" if value > 0 else "down"] += 1
        counts["misclicks"] += why == "misclick"
        if value < 0 and why != "misclick" and rng.random() < team.corrections:
            reviews.save_review(answer.id, "reviewer", correction=correction(answer, question), cause=None,
                                exclude=False, approved=True)
            counts["corrected"] += 1
    return counts


def retrieval_ranks(settings: Settings, questions, adapted: bool) -> dict:
    """Gold-page ranks of the held-out answerable questions, searched as the bot searches, with the
    active query adapter or without one."""
    from pipeline.embedders import embedder_spec
    from pipeline.query_adapter import QueryAdapter
    from training.export import project_embedder
    from training.query_adapter import measures, search_ranks

    answerable = [q for q in questions if q.kind != "unanswerable"]
    pairs = [{"question": q.q, "collection": settings.collection, "sources": [str(loop_questions.DOCS / q.page)]}
             for q in answerable]
    vectors = project_embedder(settings)([p["question"] for p in pairs])
    name = ""
    if adapted:  # mapped as the bots map them: the component the search runs
        adapter = QueryAdapter(settings, settings.collection, embedder_spec(settings).space)
        mapped = [adapter.run(embedding=v.tolist()) for v in vectors]
        vectors, name = np.array([m["embedding"] for m in mapped], dtype=np.float32), mapped[0]["adapter"] if mapped else ""
    return {**measures(search_ranks(settings, pairs, vectors, None)), "adapter": name or None}


def held_out(settings: Settings, questions, label: str, results: dict, **options) -> None:
    started = time.monotonic()
    asked = ask_all(settings, questions, **options)
    rows = [row for _, _, row in asked]
    base = results["stages"].get("base", {}).get("rows")
    deltas = {f"{key} vs base": paired_delta(rows, base, key) for key in ("key_fact", "gold_cited")} if base else {}
    results["stages"][label] = {**summarize(rows), **deltas, "minutes": round((time.monotonic() - started) / 60, 1),
                                "models": sorted({r["model"] for r in rows}), "rows": rows}
    s = results["stages"][label]
    print(f"{label}: key fact {s['key_fact']['mean']:.3f} [{s['key_fact']['low']:.3f}, {s['key_fact']['high']:.3f}], "
          f"gold cited {s['gold_cited']['mean']:.3f}, abstained right {s['abstention_accuracy']['mean']:.3f}", flush=True)


def publish(settings: Settings, run: str, route: str | None = None) -> dict:
    """Publish and activate `run`; forced (and said so) when its gate refuses it."""
    args = ["publish", "--run", run, "--activate"] + (["--route", route] if route else [])
    done = teambot(settings, *args, check=False)
    forced = done.returncode != 0
    if forced:
        teambot(settings, *args, "--force")
    return {"run": run, "gate_refused": forced, "refusal": (done.stdout + done.stderr).strip()[-400:] if forced else ""}


def prepare(settings: Settings, small: bool, gold: set[str]) -> Settings:
    from pipeline.indexing import Indexer

    pages = loop_questions.corpus_pages()
    if small:  # the small set's gold pages and a few others to tell them from
        pages = [p for p in pages if p.name in gold or p.name in SMALL_DISTRACTORS]
    collection = SMALL_COLLECTION if small else COLLECTION
    report = Indexer(settings, collection).ingest(pages)  # incremental: unchanged pages are skipped
    print(f"corpus: {len(pages)} pages in {collection} ({report.chunks_written} chunks written, {report.seconds:.0f}s)",
          flush=True)
    return settings.model_copy(update={"collection": collection})


def run(route: str, *, small: bool, train_n: int, held_out_n: int, team: Team, sft_steps: int, dpo_steps: int,
        work: Path, max_answer_tokens: int) -> dict:
    from feedback.store import FeedbackStore

    base, publish_route = ROUTES[route]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    settings = load_settings(data_dir=work, feedback_db_url=f"sqlite:///{work / 'feedback.db'}", train_base_model=base,
                             train_min_examples=4 if small else 20, train_max_tokens=1024 if small else 2048,
                             max_answer_tokens=max_answer_tokens, **({"top_k": 2} if small else {}))
    splits = loop_questions.split(loop_questions.build())
    if small:
        splits = loop_questions.small(splits, SMALL_QUESTIONS)
        train_questions, held_questions = splits["train"], splits["held_out"]
    else:
        train_questions = _sample(splits["train"], train_n)
        held_questions = _sample(splits["held_out"], held_out_n)
    settings = prepare(settings, small, {q.page for q in train_questions + held_questions if q.page})
    spec_model = _serve_base(settings, base)
    settings = settings.model_copy(update={"model": spec_model})
    results: dict = {"route": route, "base": base, "served_base": spec_model, "small": small, "team": team.__dict__,
                     "questions": {"train": len(train_questions), "held_out": len(held_questions),
                                   "set": loop_questions.describe(splits)},
                     "stages": {}, "retrieval": {}, "runs": {}}
    started = time.monotonic()
    store = FeedbackStore(settings.feedback_url)
    print(f"the team asks {len(train_questions)} questions with {spec_model}", flush=True)
    asked = ask_all(settings, train_questions, store=store, record=True)
    results["team_votes"] = vote(settings, store, asked, team)
    results["team_asked"] = summarize([row for _, _, row in asked])
    print(f"votes: {results['team_votes']}", flush=True)

    held_out(settings, held_questions, "base", results)
    held_out(settings, held_questions, "base + reviewed answers and boosts", results, feedback=True, store=store)
    results["retrieval"]["without adapter"] = retrieval_ranks(settings, held_questions, adapted=False)

    export = teambot(settings, "feedback", "export", "--collections", settings.collection)
    results["export"] = export.stdout
    steps = ["--max-steps", str(sft_steps)]

    # Batches of 2 (× 2 accumulated for the full run): PostgreSQL prompts are long, and 4 of them
    # at 2,048 tokens take 15 GB on the CPU.
    batches = ["--batch-size", "2", "--grad-accum", "1" if small else "2"]
    teambot(settings, "train", "--base", base, "--run-id", "loop-sft", *steps, *batches,
            "--eval-steps", str(sft_steps if small else max(1, sft_steps // 5)))
    if not small:  # the suite's run is published unevaluated (forced): the gate has tests of its own, and it costs minutes
        teambot(settings, "eval", "--run", "loop-sft", check=False)
    results["runs"]["sft"] = publish(settings, "loop-sft", publish_route)
    held_out(settings, held_questions, "SFT", results)

    teambot(settings, "train", "--base", base, "--method", "dpo", "--from-run", "loop-sft", "--run-id", "loop-dpo",
            "--max-steps", str(dpo_steps), *batches, "--eval-steps", str(dpo_steps if small else max(1, dpo_steps // 5)))
    if not small:
        teambot(settings, "eval", "--run", "loop-dpo", check=False)
    results["runs"]["dpo"] = publish(settings, "loop-dpo", publish_route)
    held_out(settings, held_questions, "DPO", results)

    # Retrieval last, so that the model stages above measure the model alone.
    done = teambot(settings, "train", "--retrieval", "--run-id", "loop-retrieval", check=False)
    if done.returncode == 0:
        results["runs"]["retrieval"] = publish(settings, "loop-retrieval")
        results["retrieval"]["with adapter"] = retrieval_ranks(settings, held_questions, adapted=True)
        held_out(settings, held_questions, "DPO + query adapter", results)
    else:
        results["runs"]["retrieval"] = {"refused": (done.stdout + done.stderr).strip()[-400:]}
    results["minutes"] = round((time.monotonic() - started) / 60, 1)
    results["load"] = load()
    return results


def _sample(questions, n: int):
    """A fixed, kind-stratified sample of n questions (all of them when n is 0 or more than there are)."""
    if not n or n >= len(questions):
        return list(questions)
    rng = random.Random(11)
    by_kind: dict[str, list] = {}
    for q in questions:
        by_kind.setdefault(q.kind, []).append(q)
    picked = []
    for kind, members in sorted(by_kind.items()):
        picked += rng.sample(members, max(1, round(n * len(members) / len(questions))))
    return sorted(picked, key=lambda q: q.id)[:n]


def _serve_base(settings: Settings, base: str) -> str:
    """The Ollama model serving the base weights, made from the packaged GGUF where needed."""
    import ollama

    from training.bases import resolve_base
    from training.publish import ensure_ollama_base

    spec = resolve_base(settings, base)
    if not spec.ollama_base:  # the dev model is the base's own Ollama model
        return settings.model
    with ollama.Client(host=settings.ollama_url) as client:
        ensure_ollama_base(settings, client, spec, print)
    return spec.ollama_base


def report(results: dict) -> str:
    rows = []
    for label, s in results["stages"].items():
        rows.append([label, *(f"{s[k]['mean']:.3f} [{s[k]['low']:.2f}, {s[k]['high']:.2f}]" for k in
                              ("key_fact", "gold_cited", "abstention_accuracy", "hallucinated_links")),
                     f"{s['words']['mean']:.0f}", f"{s['seconds']['mean']:.1f}"])
    lines = [table(["held-out", "key fact", "gold page cited", "abstains (unanswerable)", "hallucinated links",
                    "words", "s/answer"], rows)]
    deltas = [[label, *(f"{s[k]['mean']:+.3f} [{s[k]['low']:+.2f}, {s[k]['high']:+.2f}]"
                        for k in ("key_fact vs base", "gold_cited vs base"))]
              for label, s in results["stages"].items() if "key_fact vs base" in s]
    if deltas:
        lines.append(table(["paired, vs base", "key fact", "gold page cited"], deltas))
    retrieval = results["retrieval"]
    if retrieval:
        lines.append(table(["held-out search", "R@1", "R@5", "MRR", "questions"],
                           [[k, v["recall@1"], v["recall@5"], v["mrr"], v["questions"]] for k, v in retrieval.items()]))
    for stage, published in results["runs"].items():
        if published.get("gate_refused"):
            lines.append(f"{stage}: the gate refused it (published with --force to measure): {published['refusal'][-200:]}")
        elif published.get("refused"):
            lines.append(f"{stage}: not trained: {published['refused'][-200:]}")
    return "\n".join(lines)


def _default(value, otherwise):
    return otherwise if value is None else value


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--route", choices=sorted(ROUTES), default="smollm2")
    parser.add_argument("--small", action="store_true", help="20 questions, 2 passages each, a few steps (the suite's run).")
    parser.add_argument("--train", type=int, default=0, help="Questions the team asks (0: all of the train split).")
    parser.add_argument("--held-out", type=int, default=0, help="Held-out questions asked per stage (0: all).")
    parser.add_argument("--corrections", type=float, default=None, help="Share of 👎 a reviewer corrects "
                        "(default 0.3; --small: 1.0, so that 12 questions make a dataset).")
    parser.add_argument("--noise", type=float, default=None, help="Share of votes flipped (default 0.05; --small: 0).")
    parser.add_argument("--max-answer-tokens", type=int, default=None,
                        help="Answer length cap, the same for every stage (default 160; --small: 32).")
    parser.add_argument("--sft-steps", type=int, default=None)
    parser.add_argument("--dpo-steps", type=int, default=None)
    parser.add_argument("--work", type=Path, default=None, help="The run's data directory (emptied first).")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or Path(load_settings().data_dir) / "bench-learning-loop" / args.route
    results = run(args.route, small=args.small, train_n=args.train, held_out_n=args.held_out,
                  team=Team(_default(args.corrections, 1.0 if args.small else 0.3),
                            _default(args.noise, 0.0 if args.small else 0.05)),
                  sft_steps=args.sft_steps or (2 if args.small else 200),
                  dpo_steps=args.dpo_steps or (1 if args.small else 100), work=work,
                  max_answer_tokens=args.max_answer_tokens or (32 if args.small else 160))
    print(report(results))
    name = f"learning_loop_{args.route}" + ("_small" if args.small else "")
    write_result(name, results, args.out or RESULTS / f"{name}.json")
    return results


if __name__ == "__main__":
    main()
