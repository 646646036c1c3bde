"""Base vs fine-tuned on the run's held-out examples (`teambot eval --run RUN`).

Both models are the same loaded weights, with the LoRA adapter switched off for the base, so
the comparison costs one model load. Per model:
- eval loss: mean cross-entropy over the reference answers' tokens given their prompts (the
  training objective), and its perplexity exp(loss);
- answers generated greedily for the eval questions, scored against the references with
  token F1, ROUGE-L and citation compliance (see training/metrics.py).
The fine-tune beats the base when its eval loss is lower and its answer score (mean of token
F1 and ROUGE-L) is not lower by more than ANSWER_TOLERANCE; `teambot publish` needs that.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from core.settings import Settings
from training import metrics, runs
from training.bases import resolve_base
from training.export import read_split

ANSWER_TOLERANCE = 0.02  # greedy answers on a handful of questions move by about this much


def _encode(tokenizer, messages: list[dict], generation_prompt: bool) -> list[int]:
    return list(tokenizer.apply_chat_template(
        messages, add_generation_prompt=generation_prompt, tokenize=True, return_dict=False
    ))


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def completion_loss(model, tokenizer, rows: list[dict]) -> float:
    """Mean cross-entropy per reference-answer token, given the prompt (the training objective)."""
    import torch

    was_training = model.training
    model.eval()
    nll, counted = 0.0, 0
    try:
        for row in rows:
            prompt_ids = _encode(tokenizer, row["messages"][:-1], True)
            full_ids = _encode(tokenizer, row["messages"], False)
            start = _common_prefix(prompt_ids, full_ids)
            ids = torch.tensor([full_ids], device=model.device)
            with torch.no_grad():
                # Only the answer positions go through the LM head (a 262k-row matrix for Gemma 3).
                logits = model(input_ids=ids, logits_to_keep=len(full_ids) - start + 1).logits[0, :-1].float()
            nll += torch.nn.functional.cross_entropy(logits, ids[0, start:], reduction="sum").item()
            counted += len(full_ids) - start
    finally:
        model.train(was_training)
    return nll / max(counted, 1)


def generate_answers(model, tokenizer, rows: list[dict], stop_ids: list[int], max_new_tokens: int) -> list[str]:
    import torch

    answers = []
    for row in rows:
        prompt_ids = _encode(tokenizer, row["messages"][:-1], True)
        with torch.no_grad():
            generated = model.generate(
                input_ids=torch.tensor([prompt_ids], device=model.device),
                attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long, device=model.device),
                max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop_ids,
                pad_token_id=tokenizer.pad_token_id,
            )
        answers.append(tokenizer.decode(generated[0, len(prompt_ids):], skip_special_tokens=True).strip())
    return answers


def _score(model, tokenizer, rows: list[dict], stop_ids: list[int], max_new_tokens: int) -> dict:
    loss = completion_loss(model, tokenizer, rows)
    answers = generate_answers(model, tokenizer, rows, stop_ids, max_new_tokens)
    references = [r["messages"][-1]["content"] for r in rows]
    f1 = [metrics.token_f1(a, r) for a, r in zip(answers, references)]
    rouge = [metrics.rouge_l(a, r) for a, r in zip(answers, references)]
    return {
        "eval_loss": loss, "perplexity": math.exp(min(loss, 50)),
        "token_f1": sum(f1) / len(f1), "rouge_l": sum(rouge) / len(rouge),
        "citation_compliance": metrics.citation_compliance(answers, references),
        "answers": answers, "f1": f1,
    }


def answer_score(scores: dict) -> float:
    return (scores["token_f1"] + scores["rouge_l"]) / 2


def verdict(base: dict, tuned: dict) -> tuple[bool, list[str]]:
    reasons = []
    lower_loss = tuned["eval_loss"] < base["eval_loss"]
    reasons.append(
        f"eval loss {tuned['eval_loss']:.3f} {'<' if lower_loss else '>='} base {base['eval_loss']:.3f}"
    )
    a, b = answer_score(tuned), answer_score(base)
    answers_ok = a >= b - ANSWER_TOLERANCE
    if a >= b:
        reasons.append(f"answer score {a:.3f} >= base {b:.3f}")
    elif answers_ok:
        reasons.append(f"answer score {a:.3f} within {ANSWER_TOLERANCE} of base {b:.3f}")
    else:
        reasons.append(f"answer score {a:.3f} below base {b:.3f}")
    return lower_loss and answers_ok, reasons


def evaluate_run(settings: Settings, run_dir: Path, *, max_new_tokens: int = 96, limit: int | None = None, log=print) -> dict:
    """Score base and fine-tune on the run's eval split; writes and returns report.json."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from training.models import load_base, stop_token_ids

    config = runs.read_json(run_dir / "config.json")
    rows = read_split(run_dir / "eval.jsonl")[:limit]
    if not rows:
        raise ValueError(f"run {run_dir.name} has no held-out examples to evaluate on")
    spec = resolve_base(settings, config["base"])
    started = time.monotonic()
    loaded = load_base(settings, spec, log=log)
    model = PeftModel.from_pretrained(loaded.model, run_dir / "adapter")
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "adapter")  # the chat template it was trained with
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    load_s = time.monotonic() - started
    stop_ids = stop_token_ids(tokenizer, spec)
    started = time.monotonic()
    log(f"scoring the base model on {len(rows)} held-out examples…")
    with model.disable_adapter():
        base = _score(model, tokenizer, rows, stop_ids, max_new_tokens)
    log("scoring the fine-tuned model…")
    tuned = _score(model, tokenizer, rows, stop_ids, max_new_tokens)
    beats, reasons = verdict(base, tuned)
    report = {
        "run": run_dir.name, "base": spec.name, "examples": len(rows), "max_new_tokens": max_new_tokens,
        "base_model": {k: v for k, v in base.items() if k not in ("answers", "f1")},
        "finetuned": {k: v for k, v in tuned.items() if k not in ("answers", "f1")},
        "beats_base": beats, "reasons": reasons,
        "answers": [
            {
                "question": row["question"], "reference": row["messages"][-1]["content"],
                "base": b, "finetuned": t, "base_f1": round(bf, 4), "finetuned_f1": round(tf, 4),
            }
            for row, b, t, bf, tf in zip(rows, base["answers"], tuned["answers"], base["f1"], tuned["f1"])
        ],
        "timings": {"load_s": round(load_s, 2), "eval_s": round(time.monotonic() - started, 2)},
    }
    runs.write_json(run_dir / "report.json", report)
    return report


def format_table(report: dict) -> str:
    def cell(value) -> str:
        if value is None:
            return "n/a"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    rows = [
        ("eval loss", "eval_loss"), ("perplexity", "perplexity"), ("token F1", "token_f1"),
        ("ROUGE-L", "rouge_l"), ("citation compliance", "citation_compliance"),
    ]
    lines = [f"run {report['run']} — {report['examples']} held-out examples, base {report['base']}", ""]
    lines.append(f"{'metric':<22}{'base':>12}{'fine-tuned':>12}")
    for label, key in rows:
        lines.append(f"{label:<22}{cell(report['base_model'][key]):>12}{cell(report['finetuned'][key]):>12}")
    lines.append("")
    outcome = "beats the base" if report["beats_base"] else "does NOT beat the base"
    lines.append(f"fine-tuned {outcome}: " + "; ".join(report["reasons"]))
    return "\n".join(lines)
