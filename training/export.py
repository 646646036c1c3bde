"""Turn rated answers into a fine-tuning dataset (`teambot feedback export`).

Whose answers: a fine-tuned model may repeat what it learned wherever it answers, so the export
takes a scope, a set of collections (default: TEAMBOT_COLLECTION alone), and only answers whose
every collection is in it (one from "Finance+Handbook" is not in a Handbook scope). Left out too,
unless the operator names the channel: answers only the asker saw or only some people may ask for
(the channel rule is `private`, or has allowed_users/allowed_groups), and direct messages. The
scope is written to summary.json, and from there to the run and the activation.

Which answers become examples:
- majority 👍 (each user's last vote counts once): the answer as the model gave it;
- majority 👎 with a user's correction: the latest correction replaces the answer;
- a reviewer's correction (the review page) outranks the users' votes and corrections, and an
  answer a reviewer excluded from training is left out;
- left out (counted in the summary): 👎 without a correction, ties, answers recorded without the
  prompt the model saw, abstentions ("I don't know…" teaches the model to give up), and replies
  the user never saw as written (withheld by the leak guard, uncited where citations are
  required, or stopped by the asker mid-answer).
Each example is the chat the model actually saw (system prompt, thread turns, quoted documents
and question) plus the assistant turn to learn.

Then, in this order: everything is scrubbed of personal data and secrets, what people typed and
the documents quoted alike (a model learns a contact address from a passage as well as from a
question); examples longer than the context are dropped (never
truncated: a cut answer teaches cut answers), so a long duplicate cannot displace a short one;
the same question in the same thread context keeps only its latest example.

Splits: train (to learn), dev (early stopping and checkpoint choice) and test (the promotion
gate only). Examples are grouped so that nothing of a test question leaks into training: answers
citing the same source document share a group, and so do questions the project's embedder finds
near-identical (paraphrases). A group goes to one split whole: groups are ordered by a hash of
their key and dealt out until test and dev each hold their share of the examples, the rest to
train. The order is fixed, so as the data grows a group moves only where the boundaries shift,
and the splits stay balanced however few groups there are. Output goes to `data_dir/sft/` as
JSONL and a `datasets` DatasetDict; the preference data made from the same votes
(training/preference.py) to `data_dir/sft/dpo/` and `data_dir/sft/kto/`, split by the same groups.
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

from core.secret_files import make_private, private_dir
from core.settings import Settings
from pipeline.embedders import embedder_spec
from pipeline.prompts import is_abstention
from training import preference, retrieval_pairs
from training.answer_records import NOT_SHOWN, source_paths
from training.bases import resolve_base, tokenizer_file
from training.scrub import scrub
from training.splits import SPLITS, export_dir, write_split

# Share of the examples in each held-out split, at least (whole groups); the rest train.
HELD_OUT = {"test": 0.15, "dev": 0.15}
CHARS_PER_TOKEN = 3.0  # conservative for English prose when no tokenizer is at hand
TOKENS_PER_MESSAGE = 6  # role markers and separators the chat template adds
# Slack conversation ids: D… a direct message, G… a group DM (or a private channel of old).
SLACK_DIRECT = ("D", "G")

DROP_REASONS = {
    "out_of_scope": "from a collection outside the scope",
    "private_channel": "from a private channel",
    "restricted_channel": "from a channel only some people may ask in",
    "direct_message": "from a direct message",
    "private_answer": "shown only to its asker",
    "downvoted_no_correction": "👎 without a correction",
    "tie": "tied votes",
    "no_prompt": "recorded without its prompt",
    "abstention": "an abstention",
    "not_shown": "withheld or not shown as written",
    "empty": "empty question or answer",
    "too_long": "longer than the context",
    "duplicate": "same question in the same thread context",
    "excluded": "excluded from training by a reviewer",
}


class ExportRefused(RuntimeError):
    """Too few examples remain; carries the summary so the caller can still show it."""

    def __init__(self, message: str, result: "ExportResult") -> None:
        super().__init__(message)
        self.result = result


@dataclass
class ExportResult:
    train: list[dict] = field(default_factory=list)
    dev: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    rated: int = 0
    groups: int = 0
    token_counter: str = "chars"  # "tokenizer" when lengths were counted with the model's tokenizer
    max_tokens: int = 0
    preference: preference.PreferenceData = field(default_factory=preference.PreferenceData)
    preference_too_long: int = 0
    retrieval: dict[str, list[dict]] = field(default_factory=dict)  # split -> query adapter pairs
    out_dir: Path | None = None
    # {"collections": [...], "include_channels": [...]}: what the data may come from (sorted).
    scope: dict = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return sum(len(getattr(self, s)) for s in SPLITS)

    def summary(self) -> dict:
        return {
            "scope": self.scope,
            "rated_answers": self.rated, "kept": self.kept, **{s: len(getattr(self, s)) for s in SPLITS},
            "groups": self.groups, "dropped": dict(self.dropped), "max_tokens": self.max_tokens,
            "token_counter": self.token_counter,
            "preference": {**self.preference.summary(), "dropped_too_long": self.preference_too_long},
            "retrieval": {split: len(rows) for split, rows in self.retrieval.items()},
        }

    def format(self) -> str:
        sizes = ", ".join(f"{s} {len(getattr(self, s))}" for s in SPLITS)
        scope = ", ".join(self.scope.get("collections", []))
        if self.scope.get("include_channels"):
            scope += f" (and channels {', '.join(self.scope['include_channels'])})"
        lines = [f"scope: {scope}", f"rated answers: {self.rated}", f"kept: {self.kept} ({sizes}; {self.groups} groups)"]
        for reason, label in DROP_REASONS.items():
            if self.dropped.get(reason):
                lines.append(f"dropped, {label}: {self.dropped[reason]}")
        pref = self.preference.summary()
        for method, label in (("dpo", "DPO preference pairs"), ("kto", "KTO examples")):
            if pref[method]:
                lines.append(f"{label}: " + ", ".join(f"{s} {n}" for s, n in pref[method].items()))
        if pref["kto"]:
            lines.append(f"KTO desirable / undesirable: {pref['kto_desirable']} / {pref['kto_undesirable']}")
        if any(self.retrieval.values()):
            lines.append("retrieval pairs (query adapter): " + ", ".join(f"{s} {len(r)}" for s, r in self.retrieval.items()))
        lines.append(f"lengths counted with: {self.token_counter} (limit {self.max_tokens} tokens)")
        if self.out_dir:
            lines.append(f"written to: {self.out_dir}")
        return "\n".join(lines)


def normalize_question(text: str) -> str:
    """Case, accents, punctuation and spacing removed: near-identical questions compare equal."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def bucket(key: str) -> float:
    digest = hashlib.sha256(key.encode()).hexdigest()
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


def _prompt(record) -> tuple[list[dict], list[str]]:
    """(the scrubbed chat the model saw, quoted documents included; the thread's earlier turns)."""
    prompt = [
        {"role": str(m.get("role", "user")), "content": str(m.get("content") or "")}
        for m in (record.prompt or []) if isinstance(m, dict)
    ]
    if not any(m["role"] == "user" for m in prompt):
        return [], []
    messages = [{"role": m["role"], "content": scrub(m["content"])} for m in prompt]
    # Earlier turns of the thread: the same question after different turns is another example.
    context = [normalize_question(m["content"]) for m in messages[:-1] if m["role"] != "system"]
    return messages, context


def reviewed_verdict(record, review, vote: int, correction: str | None) -> tuple[int, str | None, str | None]:
    """(vote, correction, kind) once a reviewer's correction outranks the users': the answer as
    given if it is the answer as given, else 👎 with that correction."""
    if review is None or not (review.correction or "").strip():
        return vote, correction, None
    if review.correction.strip() == (record.answer_text or "").strip():
        return 1, None, None
    return -1, review.correction, "reviewed"


def _example(record, vote: int, correction: str | None, prompt: list[dict], context: list[str],
             kind: str | None = None) -> tuple[dict | None, str | None]:
    """(the SFT example, None) or (None, why it is left out)."""
    if vote == 0:
        return None, "tie"
    if vote < 0 and not correction:
        return None, "downvoted_no_correction"
    target = (record.answer_text if vote > 0 else correction or "").strip()
    if not (record.question or "").strip() or not target:
        return None, "empty"
    if vote > 0 and record.outcome in NOT_SHOWN:
        return None, "not_shown"
    if is_abstention(target) or (vote > 0 and record.outcome == "abstained"):
        return None, "abstention"
    if not prompt:
        return None, "no_prompt"
    return {
        "messages": [*prompt, {"role": "assistant", "content": scrub(target)}],
        "question": scrub(record.question.strip()), "answer_id": record.id,
        "kind": kind or ("upvoted" if vote > 0 else "corrected"), "model": record.model, "sources": source_paths(record),
        "thread_context": context,
    }, None


def left_out(record, collections: frozenset[str], include_channels: frozenset[str], rules) -> str | None:
    """Why an answer may not be learned from at all (see DROP_REASONS), or None."""
    asked = {c for c in (record.collection or "").split("+") if c}
    if not asked or not asked <= collections:
        return "out_of_scope"
    # Discord records a thread under its parent channel; the thread may have a rule of its own.
    keys = (record.thread, record.channel) if record.platform == "discord" else (record.channel,)
    channels = [c for c in keys if c]
    if include_channels & set(channels):
        return None
    # Who could see it when it was given, as recorded then (answers since migration 0007).
    if record.audience and record.audience != "public":
        return record.audience
    if (record.platform == "discord" and not record.workspace) or (
            record.platform == "slack" and (record.channel or "").startswith(SLACK_DIRECT)):
        return "direct_message"
    rule = rules.for_channel(*channels, record.workspace) if rules is not None else None
    if rule is not None and rule.private:
        return "private_channel"
    if rule is not None and rule.restricted:
        return "restricted_channel"
    return None


def build_examples(settings: Settings, store, *, max_tokens: int | None = None, embed=None,
                   collections=None, include_channels=(), rules=None) -> ExportResult:
    """Select, scrub, length-filter, dedupe, group and split rated answers, and the preference
    data from the same votes (nothing is written).

    `collections`: the scope (default: settings.collection alone); `include_channels`: channel ids
    whose private, restricted or direct answers are taken all the same; `rules`: the channel rules
    in force (bots.channel_rules.load_rules, passed in: training does not import bots);
    `embed` maps questions to normalized vectors (default: the project's embedder)."""
    scope = frozenset(collections if collections is not None else [settings.collection])
    if not scope:
        raise ValueError("the scope names no collection")
    if rules is None and settings.channel_rules:
        # Without them a private channel's answers would pass as public ones.
        raise ValueError(f"the channel rules of {settings.channel_rules} must be passed to the export")
    include = frozenset(include_channels)
    result = ExportResult(max_tokens=max_tokens or settings.train_max_tokens,
                          scope={"collections": sorted(scope), "include_channels": sorted(include)})
    count_tokens = _TokenCounter(settings)
    result.token_counter = count_tokens.kind
    latest: dict[tuple, dict] = {}  # (thread context, question) -> example; rated_answers() is oldest first
    voted: list[dict] = []  # every answer that is a preference signal
    latest_pair: dict[tuple, dict] = {}  # (question, collection) -> the latest answer saying which passages answer it
    reviews = _reviews(store)
    for record, ratings in store.rated_answers():
        result.rated += 1
        # Before anything else: an answer outside the scope is no SFT example nor preference signal.
        if reason := left_out(record, scope, include, rules):
            result.dropped[reason] += 1
            continue
        review = reviews.get(record.id)
        if review is not None and review.exclude:
            result.dropped["excluded"] += 1
            continue
        vote, correction, kind = reviewed_verdict(record, review, *verdict(ratings))
        prompt, context = _prompt(record)
        item = preference.voted_item(record, vote, correction, prompt, context)
        if item:
            voted.append(item)
        if found := retrieval_pairs.pair(record, vote, correction):
            latest_pair[(normalize_question(found["question"]), found["collection"])] = found
        example, reason = _example(record, vote, correction, prompt, context, kind)
        if reason:
            result.dropped[reason] += 1
            continue
        if count_tokens(example["messages"]) > result.max_tokens:
            result.dropped["too_long"] += 1
            continue
        key = (*example["thread_context"], normalize_question(example["question"]))
        if key in latest:
            result.dropped["duplicate"] += 1
        latest[key] = example
    examples = list(latest.values())
    pairs = list(latest_pair.values())
    # One grouping for SFT examples and preference rows: a 👎 answer lands in its question's split.
    nodes = examples + voted + pairs
    vectors = (embed or project_embedder(settings))([n["question"] for n in nodes]) if len(nodes) > 1 else None
    alike = embedder_spec(settings).alike  # paraphrases one group (MiniLM: 0.8; different questions 0.4–0.75)
    groups = _groups(nodes, vectors, alike)
    result.groups = len(groups)
    split_of: dict[str, str] = {}
    # Shares of the SFT examples, or of the retrieval pairs where they are more (long answers are
    # dropped from SFT, yet still say which passages answer).
    filled = {s: [0, 0] for s in SPLITS}
    for key in sorted(groups, key=bucket):
        held_out = [s for s in HELD_OUT if filled[s][0] < HELD_OUT[s] * len(examples)
                    or filled[s][1] < HELD_OUT[s] * len(pairs) and len(pairs) > len(examples)]
        split = held_out[0] if held_out else "train"
        for node in groups[key]:
            split_of[node["answer_id"]] = split
            if "messages" in node:
                node["group"] = key
                getattr(result, split).append(node)
                filled[split][0] += 1
            elif "positives" in node:
                filled[split][1] += 1
    voted_vectors = None if vectors is None else vectors[len(examples):len(examples) + len(voted)]
    same_question = _question_clusters(voted, voted_vectors, alike)
    result.retrieval = {split: [p for p in pairs if split_of.get(p["answer_id"]) == split] for split in SPLITS}
    result.preference, result.preference_too_long = preference.build(
        voted, same_question, split_of, count_tokens, result.max_tokens, SPLITS,
    )
    return result


def _reviews(store) -> dict:
    """Reviews by answer id, from the review page's tables of the same database."""
    if not hasattr(store, "engine"):
        return {}
    from feedback.reviews import ReviewStore

    return ReviewStore(store).reviews()


def project_embedder(settings: Settings):
    """The answering pipeline's question embedder (pipeline.embedders), as the bot embeds questions."""

    def embed(texts: list[str]):
        import numpy as np

        from pipeline.embedders import text_embedder

        if not texts:
            return np.zeros((0, 0))
        embedder = text_embedder(settings)
        embedder.warm_up()
        return np.array([embedder.run(text=t)["embedding"] for t in texts], dtype=np.float32)

    return embed


def _similar(vectors, alike: float):
    """Index pairs (a < b) of questions at least `alike` similar."""
    for start in range(0, len(vectors), 1024):  # blocks: memory stays flat on large exports
        similar = vectors[start:start + 1024] @ vectors.T >= alike
        for a, b in zip(*similar.nonzero()):
            if start + a < b:
                yield start + int(a), int(b)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        self.parent[self.find(i)] = self.find(j)


def _groups(examples: list[dict], vectors, alike: float) -> dict[str, list[dict]]:
    sets = _UnionFind(len(examples))
    by_path: dict[str, int] = {}
    for i, example in enumerate(examples):
        for path in example["sources"]:
            if path in by_path:
                sets.union(i, by_path[path])
            by_path.setdefault(path, i)
    if vectors is not None:
        for a, b in _similar(vectors, alike):
            sets.union(a, b)
    members: dict[int, list[dict]] = {}
    for i, example in enumerate(examples):
        members.setdefault(sets.find(i), []).append(example)
    groups = {}
    for group in members.values():
        paths = sorted(p for e in group for p in e["sources"])
        key = paths[0] if paths else min(normalize_question(e["question"]) for e in group)
        groups[key] = group
    return groups


def _question_clusters(items: list[dict], vectors, alike: float) -> dict[str, str]:
    """answer id -> its question's cluster: near-identical questions after the same thread turns."""
    sets = _UnionFind(len(items))
    if vectors is not None:
        for a, b in _similar(vectors, alike):
            if items[a]["thread_context"] == items[b]["thread_context"]:
                sets.union(a, b)
    return {item["answer_id"]: items[sets.find(i)]["answer_id"] for i, item in enumerate(items)}


def export(settings: Settings, store=None, *, max_tokens: int | None = None, min_examples: int | None = None,
           embed=None, collections=None, include_channels=(), rules=None) -> ExportResult:
    """Build the dataset and write it to `data_dir/sft/`; raises ExportRefused when too small.
    The scope and the channel rules are those of build_examples."""
    if store is None:
        from feedback.store import FeedbackStore

        store = FeedbackStore.from_settings(settings)
    result = build_examples(settings, store, max_tokens=max_tokens, embed=embed, collections=collections,
                            include_channels=include_channels, rules=rules)
    minimum = min_examples if min_examples is not None else settings.train_min_examples
    if result.kept < minimum or not all(getattr(result, s) for s in SPLITS):
        raise ExportRefused(
            f"only {result.kept} usable examples in {result.groups} groups (need at least {minimum}, with some in "
            "each of train, dev and test): collect more 👍 answers or 👎 corrections, or lower "
            "TEAMBOT_TRAIN_MIN_EXAMPLES",
            result,
        )
    result.out_dir = write(result, export_dir(settings))
    return result


def write(result: ExportResult, out_dir: Path) -> Path:
    """JSONL per split, a DatasetDict, and summary.json; replaces the previous export whole."""
    from datasets import Dataset, DatasetDict

    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    # What people typed, scrubbed or not, is for the owner only: the data dir (made here if missing)
    # and the export are 0700, its files 0600; private while written, so there is no window.
    private_dir(staging.parent)
    staging.mkdir(mode=0o700)
    for split in SPLITS:
        write_split(staging / f"{split}.jsonl", getattr(result, split))
    DatasetDict(
        {split: Dataset.from_list(getattr(result, split)) for split in SPLITS}
    ).save_to_disk(str(staging / "dataset"))
    for method in preference.METHODS:
        (staging / method).mkdir()
        for split, rows in getattr(result.preference, method).items():
            write_split(staging / method / f"{split}.jsonl", rows)
    (staging / "retrieval").mkdir()
    for split, rows in result.retrieval.items():
        write_split(staging / "retrieval" / f"{split}.jsonl", rows)
    (staging / "summary.json").write_text(json.dumps(result.summary(), indent=2))
    make_private(staging)  # `datasets` writes its files with the umask's mode
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.replace(out_dir)
    return out_dir
