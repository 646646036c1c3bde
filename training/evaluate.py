"""The promotion gate: a fine-tune against its base and the model answering now (`teambot eval`).

Scored on the run's test split only (train taught it, dev chose its checkpoint), grouped at
export so no test question's source document or paraphrase was trained on. Three models:
- base: the same loaded weights with the LoRA adapter switched off;
- active: the model the bots answer with now. The base again when it is the base's own Ollama
  model; an earlier fine-tune of the same base loaded as a second adapter; anything else (another
  family) asked through Ollama, answers only (no loss);
- candidate: the run's adapter;
and for a DPO/KTO run the SFT run it started from ("sft"), shown beside them.
Per model: the completion loss on the reference answers, then greedy answers scored with token
F1, ROUGE-L, citation compliance and abstention rate (see training/scores.py), overall and for
upvoted vs corrected examples; and on the test split's preference pairs, how often the chosen
answer is likelier than the rejected one and by what margin (summed log-probability).

The candidate is promotable when, against base and active alike, its loss is lower (base) or
not higher (active), its answer score is not lower by more than ANSWER_TOLERANCE, it cites as
often and abstains no more often (within one example or RATE_TOLERANCE); and the test split
has at least `train_min_test_examples`, scored whole (a `--limit` report never promotes). For
DPO/KTO runs the preference margin takes the loss's place (higher than the base's, not lower
than the active model's): preference training may trade likelihood of the reference answers.
`teambot publish` then scores the published model as Ollama serves it (quantized, another
runtime) against the base and active models served the same way (`score_served`): it must
answer better than the base and hold up to the active model, or it is not activated.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from core.active_model import active_model, model_name
from core.settings import Settings
from training import runs, scores
from training.bases import ALIASES, BaseSpec, resolve_base
from training.splits import read_split

ANSWER_TOLERANCE = 0.02  # greedy answers on a few dozen questions move by about this much
RATE_TOLERANCE = 0.05  # citation and abstention rates; at least one example's worth
GENERATION_SEED = 42  # as the answering pipeline: the served model is scored as it answers


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


def completion_logprob(model, tokenizer, prompt: list[dict], completion: list[dict]) -> float:
    """Summed log-probability of the completion's tokens after the prompt (what DPO compares)."""
    import torch

    prompt_ids = _encode(tokenizer, prompt, True)
    full_ids = _encode(tokenizer, prompt + completion, False)
    start = _common_prefix(prompt_ids, full_ids)
    ids = torch.tensor([full_ids], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=ids, logits_to_keep=len(full_ids) - start + 1).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(1, ids[0, start:, None]).sum().item()


def preference_scores(model, tokenizer, pairs: list[dict]) -> dict | None:
    """On preference pairs: how often the chosen answer is likelier than the rejected one
    (accuracy) and by how much on average (margin, in summed log-probability)."""
    if not pairs:
        return None
    was_training = model.training
    model.eval()
    try:
        margins = [
            completion_logprob(model, tokenizer, p["prompt"], p["chosen"])
            - completion_logprob(model, tokenizer, p["prompt"], p["rejected"])
            for p in pairs
        ]
    finally:
        model.train(was_training)
    return {"pairs": len(pairs), "accuracy": sum(m > 0 for m in margins) / len(margins), "margin": sum(margins) / len(margins)}


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


def ollama_answers(client, model: str, rows: list[dict], max_new_tokens: int) -> list[str]:
    """Answers from a model as Ollama serves it, greedy and seeded like the bots' pipeline."""
    options = {"temperature": 0, "seed": GENERATION_SEED, "num_predict": max_new_tokens}
    return [
        client.chat(model=model, messages=row["messages"][:-1], options=options).message.content.strip()
        for row in rows
    ]


def score_answers(answers: list[str], rows: list[dict]) -> dict:
    """Answer metrics overall, and the answer score per kind of example (upvoted, corrected)."""
    references = [r["messages"][-1]["content"] for r in rows]
    f1 = [scores.token_f1(a, r) for a, r in zip(answers, references)]
    rouge = [scores.rouge_l(a, r) for a, r in zip(answers, references)]
    by_kind: dict[str, list[float]] = {}
    for row, f, r in zip(rows, f1, rouge):
        by_kind.setdefault(row.get("kind", "upvoted"), []).append((f + r) / 2)
    return {
        "token_f1": sum(f1) / len(f1), "rouge_l": sum(rouge) / len(rouge),
        "citation_compliance": scores.citation_compliance(answers, references),
        "abstention_rate": scores.abstention_rate(answers),
        "answer_score_by_kind": {k: sum(v) / len(v) for k, v in sorted(by_kind.items())},
        "answers": answers, "f1": f1,
    }


def _score(model, tokenizer, rows: list[dict], stop_ids: list[int], max_new_tokens: int) -> dict:
    loss = completion_loss(model, tokenizer, rows)
    scores = score_answers(generate_answers(model, tokenizer, rows, stop_ids, max_new_tokens), rows)
    return {"eval_loss": loss, "perplexity": math.exp(min(loss, 50)), **scores}


def answer_score(scores: dict) -> float:
    return (scores["token_f1"] + scores["rouge_l"]) / 2


def compare(candidate: dict, reference: dict, label: str, examples: int, *, strict_loss: bool,
            by_preference: bool = False) -> tuple[bool, list[str]]:
    """Whether `candidate` is at least as good as `reference` on every gated metric, and why.

    `by_preference` (DPO/KTO runs): the preference margin on the test pairs replaces the loss on
    reference answers, which preference training is free to trade (it moves probability from
    rejected answers, not only towards chosen ones)."""
    ok, reasons = True, []
    rate_slack = max(RATE_TOLERANCE, 1 / max(examples, 1)) + 1e-9
    c_pref, r_pref = candidate.get("preference"), reference.get("preference")
    if by_preference and c_pref and r_pref:
        c, r = c_pref["margin"], r_pref["margin"]
        better = c > r if strict_loss else c >= r
        ok &= better
        reasons.append(f"preference margin {c:.2f} {'>' if c > r else '=' if c == r else '<'} {label} {r:.2f} "
                       f"(chosen likelier in {c_pref['accuracy']:.0%} vs {r_pref['accuracy']:.0%} of {c_pref['pairs']} pairs)")
    elif candidate.get("eval_loss") is not None and reference.get("eval_loss") is not None:
        c, r = candidate["eval_loss"], reference["eval_loss"]
        better = c < r if strict_loss else c <= r
        ok &= better
        reasons.append(f"test loss {c:.3f} {'<' if c < r else '=' if c == r else '>'} {label} {r:.3f}")
    a, b = answer_score(candidate), answer_score(reference)
    if a >= b - ANSWER_TOLERANCE:
        reasons.append(f"answer score {a:.3f} {'>=' if a >= b else 'within ' + str(ANSWER_TOLERANCE) + ' of'} {label} {b:.3f}")
    else:
        ok = False
        reasons.append(f"answer score {a:.3f} below {label} {b:.3f}")
    c, r = candidate.get("citation_compliance"), reference.get("citation_compliance")
    if c is not None and r is not None and c < r - rate_slack:
        ok = False
        reasons.append(f"cites in {c:.0%} of answers, {label} in {r:.0%}")
    c, r = candidate["abstention_rate"], reference["abstention_rate"]
    if c > r + rate_slack:
        ok = False
        reasons.append(f"abstains on {c:.0%} of answerable questions, {label} on {r:.0%}")
    return ok, reasons


def gate(report: dict, min_examples: int) -> dict:
    """The promotion verdict of an evaluation report (written into it as `gate`)."""
    models, examples = report["models"], report["examples"]
    by_preference = report.get("method", "sft") != "sft"
    beats_base, reasons = compare(models["candidate"], models["base"], "base", examples, strict_loss=True,
                                  by_preference=by_preference)
    beats_active = beats_base
    active = models.get("active")
    if active is None:
        beats_active = False
        reasons.append(f"the active model {report.get('active_model')} could not be scored: {report.get('active_error')}")
    elif active.get("scored_as") != "base":
        beats_active, more = compare(models["candidate"], active, "active", examples, strict_loss=False,
                                     by_preference=by_preference)
        reasons += more
    enough = examples >= min_examples and not report.get("limited")
    if report.get("limited"):
        reasons.append(f"scored on the first {examples} test examples only (--limit): not a promotion decision")
    elif examples < min_examples:
        reasons.append(f"only {examples} test examples (the gate needs {min_examples}; TEAMBOT_TRAIN_MIN_TEST_EXAMPLES)")
    return {
        "beats_base": beats_base, "beats_active": beats_active, "enough_examples": enough,
        "promotable": beats_base and beats_active and enough, "min_examples": min_examples, "reasons": reasons,
    }


def served_gate(report: dict, served: dict) -> tuple[bool, list[str]]:
    """The published model as Ollama serves it, against the base and the active model as Ollama
    serves them (same runtime, same quantization noise): it must beat the base and hold up to
    the active model, as the evaluated candidate did."""
    examples, ok, reasons = report["examples"], True, []
    references = served["references"]
    if not references:
        return False, ["neither the base nor the active model could be asked through Ollama to compare with"]
    for label, reference in references.items():
        if reference.get("error"):
            ok = False
            reasons.append(f"the {label} model {reference['model']} could not be scored: {reference['error']}")
            continue
        fine, more = compare(served, reference, f"{label} as served", examples, strict_loss=False)
        ok &= fine
        reasons += more
        if label == "base" and answer_score(served) <= answer_score(reference):
            ok = False
            reasons.append(f"answers no better than the base as served ({answer_score(served):.3f})")
    return ok, reasons


def _active(settings: Settings, spec: BaseSpec, run_dir: Path) -> tuple[str, str, Path | None]:
    """(active model name, how to score it: base | adapter | ollama | self, the adapter if any)."""
    name = active_model(settings)
    if name == model_name(run_dir.name):
        return name, "self", None
    if name == spec.ollama_base or ALIASES.get(name) is spec:
        return name, "base", None
    for other in runs.runs_dir(settings).glob("*/config.json"):
        if model_name(other.parent.name) == name and (other.parent / "adapter").is_dir():
            if runs.read_json(other).get("base") == spec.name:
                return name, "adapter", other.parent / "adapter"
    return name, "ollama", None


def evaluate_run(settings: Settings, run_dir: Path, *, max_new_tokens: int = 96, limit: int | None = None, log=print) -> dict:
    """Score base, active model and candidate on the run's test split; writes and returns report.json."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from training.models import load_base, stop_token_ids

    config = runs.read_json(run_dir / "config.json")
    test_path = run_dir / "test.jsonl"
    if not test_path.is_file():
        raise ValueError(f"run {run_dir.name} has no test split (it was trained from an older export): train it again")
    all_rows = read_split(test_path)
    rows = all_rows[:limit]
    if not rows:
        raise ValueError(f"run {run_dir.name} has no test examples to evaluate on")
    spec = resolve_base(settings, config["base"])
    active_name, active_kind, active_adapter = _active(settings, spec, run_dir)
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
    log(f"scoring the base model on {len(rows)} test examples…")
    with model.disable_adapter():
        base = _score(model, tokenizer, rows, stop_ids, max_new_tokens)
    pairs = read_split(run_dir / "pairs-test.jsonl") if (run_dir / "pairs-test.jsonl").is_file() else []
    with model.disable_adapter():
        base["preference"] = preference_scores(model, tokenizer, pairs)
    log("scoring the fine-tuned candidate…")
    candidate = _score(model, tokenizer, rows, stop_ids, max_new_tokens)
    candidate["preference"] = preference_scores(model, tokenizer, pairs)
    parent_dir = runs.runs_dir(settings) / config["parent_run"] if config.get("parent_run") else None
    parent = None
    if parent_dir is not None and (parent_dir / "adapter").is_dir():
        log(f"scoring the SFT run it started from, {parent_dir.name}…")
        parent = _score_adapter(model, parent_dir / "adapter", "parent", tokenizer, rows, stop_ids, max_new_tokens, pairs)
    active, active_error = None, None
    if active_kind in ("base", "self"):
        active = dict(base if active_kind == "base" else candidate)
    elif active_kind == "adapter" and parent is not None and active_adapter == parent_dir / "adapter":
        active = dict(parent)
    elif active_kind == "adapter":
        log(f"scoring the active model {active_name} (its adapter on the same base)…")
        active = _score_adapter(model, active_adapter, "active", tokenizer, rows, stop_ids, max_new_tokens, pairs)
    else:
        log(f"scoring the active model {active_name} through Ollama…")
        active, active_error = _score_through_ollama(settings, active_name, rows, max_new_tokens)
    if active is not None:
        active["scored_as"] = active_kind
    report = {
        "run": run_dir.name, "method": config.get("method", "sft"), "parent_run": config.get("parent_run"),
        "base": spec.name, "split": "test", "examples": len(rows),
        "test_examples": len(all_rows), "limited": len(rows) < len(all_rows), "max_new_tokens": max_new_tokens,
        "active_model": active_name, "active_error": active_error,
        "models": {
            name: {k: v for k, v in scores.items() if k not in ("answers", "f1")} if scores else None
            for name, scores in (("base", base), ("sft", parent), ("active", active), ("candidate", candidate))
            if name != "sft" or parent is not None
        },
        "answers": [
            {
                "question": row["question"], "kind": row.get("kind"), "reference": row["messages"][-1]["content"],
                "base": base["answers"][i], "active": active["answers"][i] if active else None,
                "candidate": candidate["answers"][i],
                "base_f1": round(base["f1"][i], 4), "candidate_f1": round(candidate["f1"][i], 4),
            }
            for i, row in enumerate(rows)
        ],
        "timings": {"load_s": round(load_s, 2), "eval_s": round(time.monotonic() - started, 2)},
    }
    report["gate"] = gate(report, settings.train_min_test_examples)
    runs.write_json(run_dir / "report.json", report)
    return report


def _score_adapter(model, adapter: Path, name: str, tokenizer, rows, stop_ids, max_new_tokens, pairs) -> dict:
    """Another adapter of the same base, loaded next to the candidate's and scored the same way."""
    model.load_adapter(adapter, adapter_name=name)
    model.set_adapter(name)
    try:
        scores = _score(model, tokenizer, rows, stop_ids, max_new_tokens)
        scores["preference"] = preference_scores(model, tokenizer, pairs)
    finally:
        model.set_adapter("default")
    return scores


def _score_through_ollama(settings: Settings, name: str, rows: list[dict], max_new_tokens: int) -> tuple[dict | None, str | None]:
    import ollama

    client = ollama.Client(host=settings.ollama_url, timeout=settings.generation_timeout)
    try:
        return score_answers(ollama_answers(client, name, rows, max_new_tokens), rows), None
    except (ConnectionError, OSError, ollama.ResponseError) as exc:
        return None, f"{exc}"
    finally:
        client.close()


def score_served(settings: Settings, run_dir: Path, model: str, spec: BaseSpec, log=print) -> dict:
    """Score the published model, and the base and active models, as Ollama serves them on the
    test split; recorded in report.json as `served`, with its verdict (`passed`, `reasons`)."""
    import ollama

    from core.servers import has_model

    report = runs.read_json(run_dir / "report.json")
    rows = read_split(run_dir / "test.jsonl")[: report["examples"]]
    client = ollama.Client(host=settings.ollama_url, timeout=settings.generation_timeout)
    try:
        log(f"scoring {model} as Ollama serves it on {len(rows)} test examples…")
        scores = score_answers(ollama_answers(client, model, rows, report["max_new_tokens"]), rows)
        names = {}
        if spec.ollama_base and has_model(client, spec.ollama_base):
            names["base"] = spec.ollama_base
        active = active_model(settings)
        if active not in (model, names.get("base")):
            names["active"] = active
        references = {}
        for label, name in names.items():
            log(f"scoring the {label} model {name} as Ollama serves it…")
            try:
                answers = ollama_answers(client, name, rows, report["max_new_tokens"])
                references[label] = {"model": name, **{k: v for k, v in score_answers(answers, rows).items() if k not in ("f1", "answers")}}
            except (ConnectionError, OSError, ollama.ResponseError) as exc:
                references[label] = {"model": name, "error": str(exc)}
    finally:
        client.close()
    served = {k: v for k, v in scores.items() if k != "f1"}
    served.update(model=model, references=references)
    served["passed"], served["reasons"] = served_gate(report, served)
    served["drop_from_evaluated"] = round(answer_score(report["models"]["candidate"]) - answer_score(served), 4)
    report["served"] = served
    runs.write_json(run_dir / "report.json", report)
    return served


def format_table(report: dict) -> str:
    def cell(value) -> str:
        if value is None:
            return "n/a"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    models = report["models"]
    columns = [("base", models["base"]), *([("sft", models["sft"])] if models.get("sft") else []),
               ("active", models.get("active")), ("candidate", models["candidate"])]
    if report.get("served"):
        columns.append(("served", report["served"]))
    rows = [
        ("test loss", "eval_loss"), ("perplexity", "perplexity"), ("token F1", "token_f1"),
        ("ROUGE-L", "rouge_l"), ("citation compliance", "citation_compliance"), ("abstention rate", "abstention_rate"),
    ]
    kinds = sorted({k for _, m in columns if m for k in m.get("answer_score_by_kind", {})})
    active = models.get("active") or {}
    method = report.get("method", "sft")
    lines = [
        f"run {report['run']} ({method.upper()}"
        + (f" on {report['parent_run']}" if report.get("parent_run") else "")
        + f"): {report['examples']} test examples, base {report['base']}, "
        f"active {report['active_model']} (scored as {active.get('scored_as', 'n/a')})", "",
        f"{'metric':<26}" + "".join(f"{name:>12}" for name, _ in columns),
    ]
    for label, key in rows:
        lines.append(f"{label:<26}" + "".join(f"{cell((m or {}).get(key)):>12}" for _, m in columns))
    if any((m or {}).get("preference") for _, m in columns):
        for label, key in (("preference accuracy", "accuracy"), ("preference margin", "margin")):
            lines.append(f"{label:<26}" + "".join(
                f"{cell(((m or {}).get('preference') or {}).get(key)):>12}" for _, m in columns))
    for kind in kinds:
        lines.append(f"{'answer score, ' + kind:<26}" + "".join(
            f"{cell((m or {}).get('answer_score_by_kind', {}).get(kind)):>12}" for _, m in columns))
    lines.append("")
    verdict = report["gate"]
    outcome = "PROMOTABLE" if verdict["promotable"] else "NOT promotable"
    lines.append(f"candidate is {outcome}: " + "; ".join(verdict["reasons"]))
    if report.get("served"):
        lines += ["", format_served(report["served"])]
    return "\n".join(lines)


def format_served(served: dict) -> str:
    """The served models side by side (answers only: Ollama gives no loss), and the verdict."""
    columns = [(label, ref) for label, ref in served["references"].items() if not ref.get("error")]
    columns.append(("candidate", served))
    lines = [f"as Ollama serves them ({served['model']}):", f"{'metric':<26}" + "".join(f"{name:>12}" for name, _ in columns)]
    for label, key in (("token F1", "token_f1"), ("ROUGE-L", "rouge_l"), ("citation compliance", "citation_compliance"),
                       ("abstention rate", "abstention_rate")):
        lines.append(f"{label:<26}" + "".join(
            f"{'n/a' if m.get(key) is None else format(m[key], '.3f'):>12}" for _, m in columns))
    verdict = "passes" if served["passed"] else "FAILS"
    lines.append(f"served candidate {verdict} the gate: " + "; ".join(served["reasons"]))
    lines.append(f"answer score as served {answer_score(served):.3f}, as evaluated in transformers "
                 f"{answer_score(served) + served['drop_from_evaluated']:.3f}")
    return "\n".join(lines)
