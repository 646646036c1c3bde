"""The packages import one way: entry points (teambot) → bots, training → pipeline, feedback → core.

The contract is written once, in pyproject.toml ([tool.importlinter]), and checked here with
import-linter on this tree, and on a copy with one wrong-way import, which it must catch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["teambot", "bots", "training", "review", "pipeline", "feedback", "core"]
LINT = str(Path(sys.executable).with_name("lint-imports"))


def lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([LINT, "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def test_the_packages_import_one_way():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_a_wrong_way_import_is_caught(tmp_path):
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    # The base layer reaching up into the RAG pipeline for one helper: the mistake the contract exists for.
    (tmp_path / "core" / "wrong_way.py").write_text("from pipeline.guard import WITHHELD\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "core.wrong_way -> pipeline.guard" in result.stdout
