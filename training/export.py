"""Turn rated answers into a supervised fine-tuning dataset (`teambot feedback export`).

Which answers become examples:
- majority 👍 (each user's last vote counts once): the answer as the model gave it;
- majority 👎 with a user's correction: the latest correction replaces the answer;
- majority 👎 without a correction, and ties: left out (counted in the summary).
Each example is the chat the model actually saw (the stored prompt messages: system prompt,
thread turns, quoted documents and question) plus the assistant turn to learn.

Then: personal data and secrets are scrubbed, near-identical questions keep only their latest
example, over-long examples are dropped (never truncated: a cut answer teaches cut answers),
and examples are split train/eval by a hash of the question, so an example stays on its side
as the data grows. Output goes to `data_dir/sft/` as JSONL and a `datasets` DatasetDict.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from core.settings import Settings
from training.bases import resolve_base, tokenizer_file
from training.scrub import scrub

EVAL_FRACTION = 0.2
CHARS_PER_TOKEN = 3.0  # conservative for English prose when no tokenizer is at hand
TOKENS_PER_MESSAGE = 6  # role markers and separators the chat template adds

DROP_REASONS = {
    "downvoted_no_correction": "👎 without a correction",
    "tie": "tied votes",
    "duplicate": "near-duplicate question",
    "too_long": "longer than the context",
    "empty": "empty question or answer",
}


class ExportRefused(RuntimeError):
    """Too few examples remain; carries the summary so the caller can still show it."""

    def __init__(self, message: str, result: "ExportResult") -> None:
        super().__init__(message)
        self.result = result


@dataclass
class ExportResult:
    train: list[dict] = field(default_factory=list)
    eval: list[dict] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    rated: int = 0
    token_counter: str = "chars"  # "tokenizer" when lengths were counted with the model's tokenizer
    max_tokens: int = 0
    out_dir: Path | None = None

    @property
    def kept(self) -> int:
        return len(self.train) + len(self.eval)

    def summary(self) -> dict:
        return {
            "rated_answers": self.rated, "kept": self.kept, "train": len(self.train), "eval": len(self.eval),
            "dropped": dict(self.dropped), "max_tokens": self.max_tokens, "token_counter": self.token_counter,
        }

    def format(self) -> str:
        lines = [f"rated answers: {self.rated}", f"kept: {self.kept} (train {len(self.train)}, eval {len(self.eval)})"]
        for reason, label in DROP_REASONS.items():
            if self.dropped.get(reason):
                lines.append(f"dropped, {label}: {self.dropped[reason]}")
        lines.append(f"lengths counted with: {self.token_counter} (limit {self.max_tokens} tokens)")
        if self.out_dir:
            lines.append(f"written to: {self.out_dir}")
        return "\n".join(lines)


def normalize_question(text: str) -> str:
    """Case, accents, punctuation and spacing removed: near-identical questions compare equal."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def split_of(question: str, eval_fraction: float = EVAL_FRACTION) -> str:
    return "eval" if _bucket(question) < eval_fraction else "train"


def _bucket(question: str) -> float:
    digest = hashlib.sha256(normalize_question(question).encode()).hexdigest()
    return int(digest[:12], 16) / 16**12


def verdict(ratings) -> tuple[int, str | None]:
    """(+1, None) / (-1, correction or None) / (0, None) for a tie; one vote per user."""
    up = sum(1 for r in ratings if r.value == 1)
    down = sum(1 for r in ratings if r.value == -1)
    if up == down:
        return 0, None
    if up > down:
        return 1, None
    corrections = [r.correction for r in sorted(ratings, key=lambda r: r.updated_at) if r.value == -1 and r.correction]
    return -1, (corrections[-1] if corrections else None)


def _prompt_messages(record) -> list[dict]:
    """The chat the model saw; older records without one get documents + question."""
    messages = [
        {"role": str(m.get("role", "user")), "content": str(m.get("content") or "")}
        for m in (record.prompt or []) if isinstance(m, dict)
    ]
    if not messages:
        user = f"Documents:\n{record.context}\n\nQuestion: {record.question}" if record.context else record.question
        messages = [{"role": "user", "content": user}]
    return messages


class _TokenCounter:
    """Token lengths with the base model's tokenizer when cached, else a char heuristic."""

    def __init__(self, settings: Settings) -> None:
        self.tokenizer = None
        try:
            path = tokenizer_file(settings, resolve_base(settings))
        except ValueError:
            path = None
        if path is not None:
            from tokenizers import Tokenizer  # light (no torch); ships with transformers

            self.tokenizer = Tokenizer.from_file(str(path))

    @property
    def kind(self) -> str:
        return "tokenizer" if self.tokenizer else "chars"

    def __call__(self, messages: list[dict]) -> int:
        total = TOKENS_PER_MESSAGE * len(messages)
        for m in messages:
            if self.tokenizer is not None:
                total += len(self.tokenizer.encode(m["content"], add_special_tokens=False).ids)
            else:
                total += int(len(m["content"]) / CHARS_PER_TOKEN) + 1
        return total


def build_examples(settings: Settings, store, *, max_tokens: int | None = None) -> ExportResult:
    """Select, scrub, dedupe, length-filter and split rated answers (nothing is written)."""
    result = ExportResult(max_tokens=max_tokens or settings.train_max_tokens)
    count_tokens = _TokenCounter(settings)
    result.token_counter = count_tokens.kind
    latest: dict[str, dict] = {}  # normalized question -> example; rated_answers() is oldest first
    for record, ratings in store.rated_answers():
        result.rated += 1
        vote, correction = verdict(ratings)
        if vote == 0:
            result.dropped["tie"] += 1
            continue
        if vote < 0 and not correction:
            result.dropped["downvoted_no_correction"] += 1
            continue
        target = record.answer_text if vote > 0 else correction
        if not (record.question or "").strip() or not (target or "").strip():
            result.dropped["empty"] += 1
            continue
        messages = [
            {"role": m["role"], "content": scrub(m["content"])} for m in _prompt_messages(record)
        ] + [{"role": "assistant", "content": scrub(target.strip())}]
        question = scrub(record.question.strip())
        key = normalize_question(question)
        if key in latest:
            result.dropped["duplicate"] += 1
        latest[key] = {
            "messages": messages, "question": question, "answer_id": record.id,
            "kind": "upvoted" if vote > 0 else "corrected", "model": record.model,
        }
    for example in latest.values():
        if count_tokens(example["messages"]) > result.max_tokens:
            result.dropped["too_long"] += 1
            continue
        getattr(result, split_of(example["question"])).append(example)
    _keep_both_sides(result)
    return result


def _keep_both_sides(result: ExportResult) -> None:
    """With few examples the hash can put all on one side; move the closest one across."""
    if result.kept < 2:
        return
    if not result.eval:
        moved = min(result.train, key=lambda e: _bucket(e["question"]))
        result.train.remove(moved)
        result.eval.append(moved)
    elif not result.train:
        moved = max(result.eval, key=lambda e: _bucket(e["question"]))
        result.eval.remove(moved)
        result.train.append(moved)


def export_dir(settings: Settings) -> Path:
    return settings.data_dir / "sft"


def export(settings: Settings, store=None, *, max_tokens: int | None = None, min_examples: int | None = None) -> ExportResult:
    """Build the dataset and write it to `data_dir/sft/`; raises ExportRefused when too small."""
    if store is None:
        from feedback.store import FeedbackStore

        store = FeedbackStore.from_settings(settings)
    result = build_examples(settings, store, max_tokens=max_tokens)
    minimum = min_examples if min_examples is not None else settings.train_min_examples
    if result.kept < minimum or not result.train or not result.eval:
        raise ExportRefused(
            f"only {result.kept} usable examples (need at least {minimum}, with some in both train and "
            "eval): collect more 👍 answers or 👎 corrections, or lower TEAMBOT_TRAIN_MIN_EXAMPLES",
            result,
        )
    result.out_dir = write(result, export_dir(settings))
    return result


def write(result: ExportResult, out_dir: Path) -> Path:
    """JSONL per split, a DatasetDict, and summary.json; replaces the previous export whole."""
    from datasets import Dataset, DatasetDict

    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for split in ("train", "eval"):
        with open(staging / f"{split}.jsonl", "w", encoding="utf-8") as out:
            for example in getattr(result, split):
                out.write(json.dumps(example, ensure_ascii=False) + "\n")
    DatasetDict(
        {split: Dataset.from_list(getattr(result, split)) for split in ("train", "eval")}
    ).save_to_disk(str(staging / "dataset"))
    (staging / "summary.json").write_text(json.dumps(result.summary(), indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.replace(out_dir)
    return out_dir


def read_split(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
