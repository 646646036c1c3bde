"""Answer overhead: `AnswerService.ask` end to end against one raw streaming Ollama chat.

    python -m bench.answer_overhead [--repeats 5] [--tokens 64]

The sample handbook is ingested into a scratch collection and one fixed question is asked,
so the retrieved context, and with it the prompt, is the same every time. Ours: `ask` with
streaming (`on_token`): validation, query embedding, hybrid search, relevance gate, prompt
building, generation, leak guard, citations. Raw: `ollama.Client.chat(stream=True)` with the
identical final messages (`answer.prompt` of our first run) and the same options. Both use
temperature 0, a fixed seed and the same `num_predict`, alternating, and report median total
seconds and time to first token. Needs the real Weaviate and Ollama; the Ollama server is
shared, so other clients' requests can queue in front of either path.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.harness import ROOT, alternate, drop_collections, load, median, ratio, scratch_name, table, write_result
from pipeline.indexing import Indexer
from pipeline.querying import AnswerService
from core.settings import load_settings

HANDBOOK = ROOT / "examples" / "handbook"
QUESTION = "How many days of paid vacation do full-time employees get?"  # a one-sentence answer
SEED = 42
KEEP_ALIVE = "30m"  # what our generator asks for, so neither path unloads the model


def run(repeats: int, tokens: int, question: str) -> dict:
    import ollama

    settings = load_settings(temperature=0.0, max_answer_tokens=tokens)
    options = {"num_predict": tokens, "temperature": 0.0, "seed": SEED}
    name = scratch_name("Answer")
    try:
        Indexer(settings, name).ingest([HANDBOOK])
        service = AnswerService(settings)
        first = service.ask(question, collection=name)  # loads the model and gives the prompt
        if first.abstained or not first.prompt:
            raise RuntimeError(f"the fixed question was not answered from the handbook: {first.text!r}")
        # Settings carry no seed; the generator's options are the place for it.
        service.chat_generator(first.model).generation_kwargs["seed"] = SEED
        client = ollama.Client(host=settings.ollama_url, timeout=settings.generation_timeout)

        def ours() -> dict:
            first_token: list[float] = []
            started = time.perf_counter()
            answer = service.ask(
                question, collection=name,
                on_token=lambda _t: first_token or first_token.append(time.perf_counter() - started),
            )
            total = time.perf_counter() - started
            if answer.prompt != first.prompt:
                raise RuntimeError("the prompt changed between runs: the comparison would not be fair")
            return {"total": total, "ttft": first_token[0] if first_token else total, "text": answer.text,
                    "retrieve": answer.timings.get("retrieve", 0.0),
                    "model_first_token": answer.timings.get("first_token", total)}

        def raw() -> dict:
            first_token: float | None = None
            parts, last = [], None
            started = time.perf_counter()
            for last in client.chat(model=first.model, messages=first.prompt, stream=True, options=options,
                                    keep_alive=KEEP_ALIVE):
                if last.message.content:
                    first_token = first_token or time.perf_counter() - started
                    parts.append(last.message.content)
            total = time.perf_counter() - started
            return {"total": total, "ttft": first_token or total, "text": "".join(parts).strip(),
                    "eval_count": last.eval_count, "prompt_eval_count": last.prompt_eval_count}

        ours(), raw()  # both warm, the seed in effect for ours
        load_before = load()
        mine, theirs = alternate(repeats, ours, raw)
        load_after = load()
        client.close()
        service.close()
    finally:
        drop_collections(settings, [name])
    return {
        "question": question, "model": first.model, "num_predict": tokens, "temperature": 0.0, "seed": SEED,
        "repeats": repeats, "prompt_chars": sum(len(m["content"]) for m in first.prompt),
        "ours_total_s": median([r["total"] for r in mine]), "raw_total_s": median([r["total"] for r in theirs]),
        "ours_ttft_s": median([r["ttft"] for r in mine]), "raw_ttft_s": median([r["ttft"] for r in theirs]),
        "ours_retrieve_s": median([r["retrieve"] for r in mine]),
        # ours: when the model's first token arrived; the leak guard may hold it back before on_token.
        "ours_model_ttft_s": median([r["model_first_token"] for r in mine]),
        "ratio_total": ratio(median([r["total"] for r in mine]), median([r["total"] for r in theirs])),
        "ratio_ttft": ratio(median([r["ttft"] for r in mine]), median([r["ttft"] for r in theirs])),
        "same_text": sum(a["text"] == b["text"] for a, b in zip(mine, theirs)),
        "answer": first.text, "generated_tokens": median([r["eval_count"] or 0 for r in theirs]),
        "ours_runs": mine, "raw_runs": theirs, "load_before": load_before, "load_after": load_after,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64, help="num_predict for both paths.")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args.repeats, args.tokens, args.question)
    print(f"answer: {result['question']!r} with {result['model']}, num_predict {result['num_predict']}, "
          f"{result['repeats']} runs each, load {result['load_before']} → {result['load_after']}")
    print(table(
        ["path", "median total s", "median first token s"],
        [["ours (AnswerService.ask)", result["ours_total_s"], result["ours_ttft_s"]],
         ["raw (ollama chat stream)", result["raw_total_s"], result["raw_ttft_s"]],
         ["ratio ours/raw", result["ratio_total"], result["ratio_ttft"]]],
    ))
    print(f"(ours includes retrieval: median {result['ours_retrieve_s']:.3f}s; the model's first token reached ours at "
          f"{result['ours_model_ttft_s']:.3f}s, the leak guard held it until the first shown token; "
          f"{result['generated_tokens']:.0f} tokens "
          f"generated; identical answer text in {result['same_text']}/{result['repeats']} pairs)")
    write_result("answer_overhead", result, args.out)
    return result


if __name__ == "__main__":
    main()
