"""Training throughput: `teambot train`'s trainer against a plain TRL SFTTrainer + peft run.

    python -m bench.training_throughput [--steps 4] [--batch-size 2] [--repeats 1]

Both fine-tune the same base (default: the packaged Gemma 3 270M, float32 on CPU) with the
same LoRA adapter (r, alpha, dropout, all linear layers), learning rate, schedule, batch size,
maximum length and seed, on the same generated question/answer chats, for one epoch of
exactly steps × batch-size examples, so both see the same tokens. Ours is
`training.train.build_trainer` (its loss runs the LM head on answer positions only); raw is
`trl.SFTTrainer` with a `peft.LoraConfig` and TRL's own loss, with the same precision and
gradient-checkpointing choice as ours (`--trl-defaults` keeps TRL's defaults for those instead).
Ours evaluates and checkpoints periodically during `teambot train`; here both only train.

Each run is a fresh subprocess, alternating (on a GPU after one uncounted run of each, since the
first process pays for the driver's first use), so its peak memory is its own:
`torch.cuda.max_memory_allocated` on CUDA, `ru_maxrss` (whole process, model load included)
on CPU. Both get the same number of torch threads. Reports tokens/s (all tokens of the
examples; answer tokens separately) and the ratio. Needs `pip install -e '.[train]'`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import corpus
from bench.harness import load, median, ratio, table, write_result
from pipeline.prompts import SYSTEM_PROMPT

LEARNING_RATE = 2e-4
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}
SEED = 42


def examples(count: int, seed: int = 5) -> list[dict]:
    """Chats shaped like exported feedback: system prompt, one quoted document and a question,
    and the answer that cites it."""
    rng = random.Random(seed)
    rows = []
    for n, chunk in enumerate(corpus.chunks(count, seed=seed, words=90)):
        words = chunk["content"].split()
        fact = " ".join(words[rng.randrange(0, max(1, len(words) - 12)):][:12]).rstrip(".;,")
        user = (f'Documents:\n<document number="1" title="{chunk["title"]}">\n{chunk["content"]}\n</document>\n\n'
                f"Question: What does the handbook say in {chunk['title']} (item {n})?")
        rows.append({"messages": [
            {"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user},
            {"role": "assistant", "content": f"The handbook says: {fact} [1]."},
        ]})
    return rows


def _sft_config(output_dir: str, steps: int, batch_size: int, max_length: int, trl_defaults: bool):
    import torch
    from trl import SFTConfig

    device = {} if trl_defaults else {
        "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(), "fp16": False,
        "gradient_checkpointing": torch.cuda.is_available(),
    }
    return SFTConfig(
        output_dir=output_dir, seed=SEED, data_seed=SEED, num_train_epochs=1, max_steps=steps,
        per_device_train_batch_size=batch_size, learning_rate=LEARNING_RATE, lr_scheduler_type="cosine",
        warmup_steps=0, weight_decay=0.0, max_length=max_length, packing=False,
        use_cpu=not torch.cuda.is_available(), eval_strategy="no", save_strategy="no", logging_steps=1,
        report_to=[], disable_tqdm=True, dataloader_num_workers=0, **device,
    )


def _raw_trainer(settings, spec, rows, output_dir, steps, batch_size, max_length, trl_defaults):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from training.models import ensure_cached

    source = ensure_cached(settings, spec) if spec.gguf else spec.hf_id
    tokenizer = AutoTokenizer.from_pretrained(source)
    if spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=torch.bfloat16 if cuda else torch.float32, **({"device_map": {"": 0}} if cuda else {})
    )
    dataset = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
    return SFTTrainer(
        model=model, args=_sft_config(output_dir, steps, batch_size, max_length, trl_defaults),
        processing_class=tokenizer, train_dataset=dataset, peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA),
    )


def _our_trainer(settings, spec, rows, output_dir, steps, batch_size, max_length):
    from training.models import load_base
    from training.train import TrainOptions, build_trainer

    loaded = load_base(settings, spec, log=lambda *_: None)
    options = TrainOptions(
        epochs=1, max_steps=steps, batch_size=batch_size, learning_rate=LEARNING_RATE, lora_r=LORA["r"],
        lora_alpha=LORA["lora_alpha"], lora_dropout=LORA["lora_dropout"], target_modules=LORA["target_modules"],
        max_length=max_length, eval_steps=steps + 1, seed=SEED,  # no evaluation inside the timed steps
    )
    trainer = build_trainer(loaded, rows, rows[:1], options, Path(output_dir))
    trainer.args.disable_tqdm = True
    return trainer


def worker(which: str, data: Path, steps: int, batch_size: int, max_length: int, base: str, trl_defaults: bool) -> dict:
    """One training run in this process; prints and returns its figures."""
    import torch
    from transformers import set_seed

    from core.settings import load_settings
    from training.bases import resolve_base

    settings = load_settings()
    spec = resolve_base(settings, base)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    set_seed(SEED)
    with tempfile.TemporaryDirectory(prefix="teambot-bench-train-") as out:
        if which == "ours":
            trainer = _our_trainer(settings, spec, rows, out, steps, batch_size, max_length)
        else:
            trainer = _raw_trainer(settings, spec, rows, out, steps, batch_size, max_length, trl_defaults)
        prepared = trainer.train_dataset
        tokens = sum(len(ids) for ids in prepared["input_ids"])
        # TRL folds the completion mask into labels: -100 marks the prompt tokens the loss skips.
        answer_tokens = (sum(sum(1 for t in labels if t != -100) for labels in prepared["labels"])
                         if "labels" in prepared.column_names else None)
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - started
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "trainer": which, "steps": result.global_step, "examples": len(prepared), "tokens": tokens,
        "answer_tokens": answer_tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
        "device": "cuda" if cuda else "cpu", "torch_threads": torch.get_num_threads(),
        "peak_memory_mib": (torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20,
        "peak_memory_kind": "cuda max_memory_allocated" if cuda else "ru_maxrss (process)",
        "rss_peak_before_train_mib": rss_before / 1024, "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }


def run(steps: int, batch_size: int, max_length: int, repeats: int, base: str, threads: int, trl_defaults: bool,
        warmup: bool = False) -> dict:
    runs: dict[str, list[dict]] = {"ours": [], "raw": []}
    with tempfile.TemporaryDirectory(prefix="teambot-bench-") as tmp:
        data = Path(tmp) / "train.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in examples(steps * batch_size)))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
        load_before = load()
        # On a GPU the first process of all pays for the driver's and libraries' first use (a
        # first run took 1.8x as long as the same run after it): one run of each, not counted.
        order = [(False, "ours"), (False, "raw")] if warmup else []
        for i in range(repeats):
            order += [(True, which) for which in (("ours", "raw") if i % 2 == 0 else ("raw", "ours"))]
        for counted, which in order:
            command = [sys.executable, "-m", "bench.training_throughput", "--worker", which, "--data", str(data),
                       "--steps", str(steps), "--batch-size", str(batch_size), "--max-length", str(max_length),
                       "--base", base] + (["--trl-defaults"] if trl_defaults else [])
            proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"{which} training run failed:\n{proc.stderr[-3000:]}")
            if counted:
                runs[which].append(json.loads(lines[-1]))
        load_after = load()
    ours, raw = runs["ours"], runs["raw"]
    return {
        "base": base, "steps": steps, "batch_size": batch_size, "max_length": max_length, "repeats": repeats,
        "torch_threads": threads, "trl_defaults": trl_defaults, "warmup": warmup, "learning_rate": LEARNING_RATE,
        "lora": LORA,
        "tokens": ours[0]["tokens"], "answer_tokens": ours[0]["answer_tokens"], "device": ours[0]["device"],
        "ours_tokens_per_s": median([r["tokens_per_s"] for r in ours]),
        "raw_tokens_per_s": median([r["tokens_per_s"] for r in raw]),
        "ours_peak_memory_mib": max(r["peak_memory_mib"] for r in ours),
        "raw_peak_memory_mib": max(r["peak_memory_mib"] for r in raw),
        "ratio_throughput": ratio(median([r["tokens_per_s"] for r in ours]), median([r["tokens_per_s"] for r in raw])),
        "ours_runs": ours, "raw_runs": raw, "load_before": load_before, "load_after": load_after,
    }


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=1, help="Runs of each trainer (each a fresh process).")
    parser.add_argument("--base", default="gemma3-270m", help="Base model, as `teambot train --base` takes it.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both (default: idle cores).")
    parser.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None,
                        help="One uncounted run of each first (default: on a GPU).")
    parser.add_argument("--trl-defaults", action="store_true", help="Raw run keeps TRL's precision/checkpointing defaults.")
    parser.add_argument("--worker", choices=["ours", "raw"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be at least 1")
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.steps, args.batch_size, args.max_length, args.base,
                                args.trl_defaults)))
        return {}
    cores = os.cpu_count() or 1
    threads = args.threads or max(1, min(cores, cores - round(os.getloadavg()[0])))
    warmup = args.warmup if args.warmup is not None else _cuda()
    result = run(args.steps, args.batch_size, args.max_length, args.repeats, args.base, threads, args.trl_defaults,
                 warmup)
    print(f"training: {result['base']} on {result['device']}, {args.steps} steps × batch {args.batch_size} "
          f"({result['tokens']} tokens, {result['answer_tokens']} answer tokens), {threads} thread(s), "
          f"load {result['load_before']} → {result['load_after']}")
    print(table(
        ["trainer", "tokens/s", "peak MiB", "seconds"],
        [["ours (teambot train)", result["ours_tokens_per_s"], result["ours_peak_memory_mib"],
          median([r["seconds"] for r in result["ours_runs"]])],
         ["raw (TRL SFTTrainer + peft)", result["raw_tokens_per_s"], result["raw_peak_memory_mib"],
          median([r["seconds"] for r in result["raw_runs"]])],
         ["ratio ours/raw (throughput)", result["ratio_throughput"], "", ""]],
    ))
    write_result("training_throughput", result, args.out)
    return result


if __name__ == "__main__":
    main()
