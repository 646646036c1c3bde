"""The exported dataset on disk: `data_dir/sft/`, one JSONL file per split (written private)."""

from __future__ import annotations

import json
from pathlib import Path

from core.secret_files import private_opener
from core.settings import Settings

SPLITS = ("train", "dev", "test")


def export_dir(settings: Settings) -> Path:
    return settings.data_dir / "sft"


def write_split(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", opener=private_opener) as out:
        out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def read_split(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
