"""The fine-tuning loop on the CPU for a base Ollama takes no adapter for: Gemma 3 270M, feedback
→ export → train → publish merged → answer.

Real libraries end to end: the packaged Gemma 3 270M (dequantized once into cache_dir and
reused), TRL/peft LoRA training for a few steps, and the real Ollama server for publishing and
answering, directly and through the bots' AnswerService over the ingested handbook. The verbs
are driven through the `teambot` CLI, as an operator would. The gate (eval and the served
re-score) is tested on the Llama route, tests/test_training_llama.py. Steps and lengths are
small so the module stays within about five minutes on two cores.
"""

from __future__ import annotations

import json
import shutil
import uuid

import pytest
from typer.testing import CliRunner

from teambot.cli import app
from teambot.devmodel import has_model
from tests.training_support import ollama_for_run, seeded_env, teambot
from core.active_model import active_model, rollback, set_active_model
from training.bases import GEMMA3_270M, resolve_base

pytestmark = pytest.mark.training

RUN = f"t{uuid.uuid4().hex[:8]}"  # unique: the Ollama model name is derived from it
TRAIN_ARGS = ["--max-steps", "4", "--eval-steps", "2", "--batch-size", "4", "--lr", "5e-4", "--run-id"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return seeded_env(tmp_path_factory.mktemp("training"), "gemma3-270m", GEMMA3_270M.ollama_base,
                      max_tokens=384, min_test_examples=6)


@pytest.fixture(scope="module")
def ollama_client(env):
    yield from ollama_for_run(env[1], RUN)


@pytest.fixture(scope="module")
def cached_base(env):
    from training.models import ensure_cached

    _, settings = env
    return ensure_cached(settings, resolve_base(settings))


@pytest.fixture(scope="module")
def exported(env, cached_base):
    result = teambot(env, "feedback", "export")
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def trained(env, exported):
    result = teambot(env, "train", *TRAIN_ARGS, RUN)
    assert result.exit_code == 0, result.output
    return env[1].data_dir / "runs" / RUN, result.output


def test_export_counts_lengths_with_the_model_tokenizer(exported, env):
    assert "lengths counted with: tokenizer (limit 384 tokens)" in exported
    summary = json.loads((env[1].data_dir / "sft" / "summary.json").read_text())
    assert summary["dropped"]["too_long"] >= 1 and summary["test"] >= 6


def test_the_loss_covers_the_answer_and_not_the_prompt(env, exported):
    from training.splits import read_split
    from training.models import load_base
    from training.train import TrainOptions, build_trainer, label_split

    _, settings = env
    rows = [r for r in read_split(settings.data_dir / "sft" / "train.jsonl") if len(r["messages"]) == 3][:4]
    loaded = load_base(settings, resolve_base(settings))
    options = TrainOptions(max_steps=1, max_length=384, eval_steps=1)
    trainer = build_trainer(loaded, rows, rows[:1], options, settings.data_dir / "mask-check")
    by_learned = {f" {r['messages'][-1]['content']}<eos>\n\n": r for r in rows}
    for index in range(len(rows)):
        ignored, learned = label_split(trainer, loaded.tokenizer, index)
        # Exactly the answer and the end of its turn are learned…
        assert learned in by_learned, learned
        example = by_learned.pop(learned)
        # …and the whole prompt (system prompt, documents, question) is not.
        system, user = example["messages"][0]["content"], example["messages"][1]["content"]
        assert ignored == f"<bos>{system}\n\nUser: {user}\n\nAssistant:"


def test_training_lowers_the_loss_and_saves_a_run(trained):
    run_dir, output = trained
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4
    assert metrics["train_loss_after"] < metrics["train_loss_before"]
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]  # the dev split
    assert [e["step"] for e in metrics["eval_loss"]] == [2, 4]
    assert len(metrics["train_loss"]) == 4
    config = json.loads((run_dir / "config.json").read_text())
    assert config["base"] == "gemma3-270m" and config["arch"] == "gemma3_text" and config["device"] == "cpu"
    assert config["dataset"]["train"] == len((run_dir / "train.jsonl").read_text().splitlines())
    assert config["options"]["max_length"] == 384
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert not (run_dir / "checkpoints").exists()
    assert f"next: teambot eval --run {RUN}" in output


def test_train_without_an_export_says_what_to_do(tmp_path):
    result = CliRunner().invoke(app, ["train"], env={"TEAMBOT_DATA_DIR": str(tmp_path), "TEAMBOT_TRAIN_BASE_MODEL": "gemma3-270m"})
    assert result.exit_code == 1
    assert "run `teambot feedback export` first" in result.output


def test_publish_reports_an_unreachable_ollama(env, trained):
    variables = {**env[0], "TEAMBOT_OLLAMA_URL": "http://127.0.0.1:9"}
    result = CliRunner().invoke(app, ["publish", "--run", RUN, "--force"], env=variables)
    assert result.exit_code == 1
    assert "Ollama is not reachable at http://127.0.0.1:9" in result.output


def test_publish_refuses_a_run_that_was_not_evaluated(env, trained):
    run_dir, _ = trained
    unevaluated = run_dir.parent / f"{RUN}-noeval"
    shutil.copytree(run_dir, unevaluated, ignore=shutil.ignore_patterns("report.json"))
    result = teambot(env, "publish", "--run", unevaluated.name)
    assert result.exit_code == 1
    assert f"run `teambot eval --run {unevaluated.name}` first" in result.output


def test_publish_activates_a_model_that_answers_and_rolls_back(env, trained, ollama_client, handbook):
    # The gate and the served re-score are tested on the Llama route (tests/test_training_llama.py);
    # here an operator's --force publishes a Gemma 3 run unevaluated, through the merged route.
    variables, settings = env
    result = teambot(env, "publish", "--run", RUN, "--activate", "--force")
    assert result.exit_code == 0, result.output
    name = f"teambot-ft-{RUN}"
    assert f"published {name} (merged, q8_0" in result.output
    assert has_model(ollama_client, name)
    assert active_model(settings) == name

    # Ask it what a user would: a handbook question with its documents, as the bot sends it.
    example = json.loads((trained[0] / "test.jsonl").read_text().splitlines()[0])
    reply = ollama_client.chat(model=name, messages=example["messages"][:-1], options={"num_predict": 48, "temperature": 0})
    assert reply.message.content.strip()
    shown = ollama_client.show(name)
    assert "Assistant:" in shown.template

    # The bots' answering service reads the active model per question: no restart needed.
    service = handbook.service
    set_active_model(service.settings, name, scope=[handbook.collection])
    try:
        answer = service.ask("How much can I spend on meals when travelling?", collection=handbook.collection)
    finally:
        rollback(service.settings)
    assert answer.model == name and "generate" in answer.timings and answer.text.strip()

    rolled = teambot(env, "publish", "--rollback")
    assert rolled.exit_code == 0 and f"active model: {settings.model}" in rolled.output
    assert active_model(settings) == settings.model
