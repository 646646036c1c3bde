"""What the end-to-end training modules share: a data dir seeded with rated answers, the
`teambot` CLI run as an operator would, and an Ollama client that removes the run's models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest
from typer.testing import CliRunner

from core.settings import Settings, load_settings
from feedback.store import FeedbackStore
from teambot.cli import app
from tests.feedback_data import seed_feedback


def seeded_env(data_dir: Path, base: str, served_base: str, *, max_tokens: int, min_test_examples: int) -> tuple[dict, Settings]:
    """(environment for the CLI, the same as Settings) with the feedback store seeded."""
    variables = {
        "TEAMBOT_DATA_DIR": str(data_dir), "TEAMBOT_TRAIN_BASE_MODEL": base,
        # The rated answers of tests/feedback_data.py are the handbook's: the training scope.
        "TEAMBOT_COLLECTION": "Handbook",
        # The bots answer with the base itself (as Ollama serves it) until a fine-tune is activated.
        "TEAMBOT_MODEL": served_base,
        "TEAMBOT_TRAIN_MAX_TOKENS": str(max_tokens), "TEAMBOT_TRAIN_MIN_EXAMPLES": "20",
        "TEAMBOT_TRAIN_MIN_TEST_EXAMPLES": str(min_test_examples),
    }
    settings = load_settings(**{k.removeprefix("TEAMBOT_").lower(): v for k, v in variables.items()})
    seed_feedback(FeedbackStore.from_settings(settings))
    return variables, settings


def ollama_for_run(settings: Settings, run: str) -> Iterator[ollama.Client]:
    """A client of the real Ollama; afterwards the models published from `run` are deleted."""
    client = ollama.Client(host=settings.ollama_url)
    try:
        client.list()
    except (ConnectionError, OSError) as exc:
        pytest.fail(f"Ollama is not running at {settings.ollama_url} ({exc}): run `teambot services up`")
    yield client
    for model in client.list().models:
        if model.model.startswith(f"teambot-ft-{run}"):
            client.delete(model.model)
    client.close()


def teambot(env: tuple[dict, Settings], *args: str):
    result = CliRunner().invoke(app, list(args), env=env[0])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result
