"""Preference data from votes: DPO pairs and KTO examples (written by `teambot feedback export`).

SFT learns only from answers people liked (or corrected); a 👎 answer is just as informative as
the thing not to say. From every voted answer the user saw as written:
- DPO pairs (prompt, chosen, rejected): the rejected answer is a 👎 answer, the chosen one its
  correction, else the latest 👍 answer to the same question (a near-identical question, by the
  project's embedder, in the same thread context) answered from the same documents (its [n]
  citations must fit), given to the prompt the 👎 answer had;
- KTO examples (prompt, completion, label): every 👍 answer is desirable, every 👎 answer
  undesirable, and every correction desirable.
👍 abstentions are left out as in SFT ("I don't know" is not a target); a 👎 abstention is a fine
thing to learn to avoid. Examples longer than the context are dropped, duplicates merged; the
split of each row is the split of its answer's group (see training/export.py), so the test split
never shares a source document or a paraphrase with training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.prompts import is_abstention
from training.answer_records import NOT_SHOWN, source_paths
from training.scrub import scrub

METHODS = ("dpo", "kto")


@dataclass
class PreferenceData:
    dpo: dict[str, list[dict]] = field(default_factory=dict)  # split -> pairs
    kto: dict[str, list[dict]] = field(default_factory=dict)  # split -> examples

    def summary(self) -> dict:
        kto = [row for rows in self.kto.values() for row in rows]
        return {
            "dpo": {split: len(rows) for split, rows in self.dpo.items()},
            "kto": {split: len(rows) for split, rows in self.kto.items()},
            "kto_desirable": sum(1 for row in kto if row["label"]),
            "kto_undesirable": sum(1 for row in kto if not row["label"]),
        }


def voted_item(record, vote: int, correction: str | None, prompt: list[dict], context: list[str]) -> dict | None:
    """One voted answer as the user saw it, scrubbed as its (already scrubbed) prompt is; None
    when it is no preference signal (withheld or not shown as written, no prompt, nothing said)."""

    answer = (record.answer_text or "").strip()
    if vote == 0 or record.outcome in NOT_SHOWN or not answer or not (record.question or "").strip() or not prompt:
        return None
    abstained = is_abstention(answer) or record.outcome == "abstained"
    if vote > 0 and abstained:
        return None
    return {
        "answer_id": record.id, "question": scrub(record.question.strip()), "prompt": prompt,
        "answer": scrub(answer), "vote": vote,
        "correction": scrub(correction.strip()) if correction and correction.strip() else None,
        "sources": source_paths(record), "thread_context": context,
    }


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def build(items: list[dict], same_question: dict[str, str], split_of: dict[str, str], count_tokens,
          max_tokens: int, splits: tuple[str, ...]) -> tuple[PreferenceData, int]:
    """DPO pairs and KTO examples per split; returns them and how many were too long.

    `same_question` maps an answer id to its question cluster, `split_of` to its split; `items`
    are in recording order (oldest first), so "latest" is the last one seen."""
    data = PreferenceData({s: [] for s in splits}, {s: [] for s in splits})
    too_long = 0
    latest_up: dict[str, dict] = {}
    for item in items:
        if item["vote"] > 0:
            latest_up[same_question[item["answer_id"]]] = item

    def fits(prompt: list[dict], *completions: str) -> bool:
        nonlocal too_long
        if any(count_tokens(prompt + _assistant(c)) > max_tokens for c in completions):
            too_long += 1
            return False
        return True

    pairs: dict[tuple, dict] = {}
    kto: dict[tuple, dict] = {}
    for item in items:
        key = (*item["thread_context"], item["question"].lower())
        base = {"question": item["question"], "answer_id": item["answer_id"], "split": split_of[item["answer_id"]]}
        if item["vote"] < 0:
            chosen, chosen_from = item["correction"], "correction"
            upvoted = latest_up.get(same_question[item["answer_id"]])
            # Another answer's text fits this prompt only if it cites the same documents ([n] markers).
            if not chosen and upvoted and upvoted["sources"] == item["sources"]:
                chosen, chosen_from = upvoted["answer"], f"upvoted:{upvoted['answer_id']}"
            if chosen and chosen != item["answer"] and fits(item["prompt"], chosen, item["answer"]):
                pairs[(*key, item["answer"])] = {
                    **base, "prompt": item["prompt"], "chosen": _assistant(chosen), "rejected": _assistant(item["answer"]),
                    "chosen_from": chosen_from,
                }
        rows = [(item["answer"], item["vote"] > 0, "upvoted" if item["vote"] > 0 else "downvoted")]
        if item["correction"]:
            rows.append((item["correction"], True, "corrected"))
        for text, label, kind in rows:
            if fits(item["prompt"], text):
                kto[(*key, text, label)] = {**base, "prompt": item["prompt"], "completion": _assistant(text), "label": label, "kind": kind}
    for row in pairs.values():
        data.dpo[row.pop("split")].append(row)
    for row in kto.values():
        data.kto[row.pop("split")].append(row)
    return data, too_long


def trainer_row(row: dict, method: str) -> dict:
    """The columns TRL's DPOTrainer / KTOTrainer read (conversational format)."""
    if method == "dpo":
        return {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}
    return {"prompt": row["prompt"], "completion": row["completion"], "label": row["label"]}
