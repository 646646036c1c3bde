"""Training runs on disk: `data_dir/runs/<run-id>/` holds everything one fine-tune produced.

    config.json     base model, hyper-parameters, dataset sizes, timings, and the scope: the
                    collections its data came from (where the published model may answer)
    train.jsonl     the examples trained on; dev.jsonl (early stopping) and test.jsonl (the gate)
    adapter/        the LoRA adapter (peft) and the tokenizer with its chat template
    query_adapter.npz  instead, for `teambot train --retrieval`: the query adapter (training/query_adapter.py)
    metrics.json    train/eval loss history, training-set loss before and after
    report.json     `teambot eval`: base / active / candidate on the test split, the gate, the served scores
    published.json  `teambot publish`: the Ollama model made from it
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from core.settings import Settings

RUN_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class RunNotFound(LookupError):
    pass


def runs_dir(settings: Settings) -> Path:
    return settings.data_dir / "runs"


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def check_run_id(run_id: str) -> str:
    """Run ids become directory and Ollama model names: lowercase letters, digits, . _ -."""
    if not RUN_ID.match(run_id):
        raise ValueError(f"invalid run id {run_id!r}: use lowercase letters, digits, '.', '_' or '-'")
    return run_id


def resolve_run(settings: Settings, run: str, *, any_kind: bool = False) -> Path:
    """The directory of run `run` ("latest": the most recently finished model run); a query
    adapter's run (`train --retrieval`) only with `any_kind` (publishing takes both)."""
    root = runs_dir(settings)
    if run == "latest":
        done = [p for p in root.glob("*/adapter") if p.is_dir()] if root.is_dir() else []
        if not done:
            raise RunNotFound(f"no finished training run under {root}: run `teambot train` first")
        return max(done, key=lambda p: p.stat().st_mtime).parent
    path = root / run
    if not RUN_ID.match(run) or not (path / "config.json").is_file():
        known = sorted(p.name for p in root.iterdir() if (p / "config.json").is_file()) if root.is_dir() else []
        hint = f"; known runs: {', '.join(known[-5:])}" if known else ""
        raise RunNotFound(f"no training run {run!r} under {root}{hint}")
    if (path / "query_adapter.npz").is_file() and not (path / "adapter").is_dir():
        if any_kind:
            return path
        raise RunNotFound(f"run {run!r} is a query adapter (`teambot train --retrieval`): there is no model to "
                          "evaluate or train on; publish it with `teambot publish --run RUN`")
    if not (path / "adapter").is_dir():
        raise RunNotFound(f"run {run!r} has no adapter: its training did not finish")
    return path


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
