"""The packages import one way: entry points (teambot) → bots, training → pipeline, feedback → core;
tests → bench → testing (the stand-ins), and the product imports none of those three.

The contracts are written once, in pyproject.toml ([tool.importlinter]), and checked here with
import-linter on this tree, and on copies with one wrong-way import each, which it must catch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["teambot", "bots", "training", "review", "pipeline", "feedback", "core", "tests", "bench", "testing"]
LINT = str(Path(sys.executable).with_name("lint-imports"))


def lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([LINT, "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def test_the_packages_import_one_way():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("where", "line", "caught"), [
    # The base layer reaching up into the RAG pipeline for one helper: the mistake the contract exists for.
    ("core", "from pipeline.guard import WITHHELD", "core.wrong_way -> pipeline.guard"),
    # A benchmark borrowing a test's harness instead of the shared stand-ins.
    ("bench", "from tests.slack_harness import slack_http_bot", "bench.wrong_way -> tests.slack_harness"),
    # The product reaching for a stand-in.
    ("bots", "from testing.doubles import LEDGERLY", "bots.wrong_way -> testing.doubles"),
])
def test_a_wrong_way_import_is_caught(tmp_path, where, line, caught):
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "corpora"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / where / "wrong_way.py").write_text(line + "\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and caught in result.stdout
