"""A peft LoRA adapter written as a llama.cpp GGUF adapter, for Ollama's ADAPTER (llama bases).

Ollama v0.24 can convert a safetensors adapter itself, but for llama it applies the rotary
re-ordering of the query and key heads to LoRA's A matrices (the input side), while the GGUF
weights were re-ordered on the output side, so the q/k updates come out scrambled. Here B's rows
get the permutation llama.cpp's converter gives q_proj and k_proj, so the base GGUF + this adapter
computes what the evaluated model computed. Seen on SmolLM2 with a q/k-only adapter: next-token
log-probabilities 0.07 off the adapted model in transformers with this file, 0.16 with Ollama's
conversion, 0.17 without the permutation; Ollama's base is 0.09 off the dequantized base.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

# peft module path → GGUF tensor name (llama.cpp's llama tensor names)
MODULES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
KEY = re.compile(r"(?:base_model\.model\.)?model\.layers\.(\d+)\.(\w+\.\w+)\.lora_([AB])\.weight$")


class AdapterNotConvertible(ValueError):
    pass


def permute(weights, heads: int):
    """llama.cpp's q/k row order: each head's rotary halves interleaved (convert_hf_to_gguf)."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2).reshape(weights.shape)
    )


def write_gguf_adapter(adapter_dir: Path, base_config: dict, target: Path) -> str:
    """Write `target` from the peft adapter in `adapter_dir`; returns its SHA-256."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("use_rslora") or config.get("use_dora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise AdapterNotConvertible("only plain LoRA adapters (no rsLoRA, DoRA or per-module ranks) become GGUF adapters")
    heads = base_config["num_attention_heads"]
    kv_heads = base_config.get("num_key_value_heads") or heads
    writer = gguf.GGUFWriter(str(target), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(config["lora_alpha"]))
    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    for key in sorted(tensors):
        match = KEY.search(key)
        if not match or match.group(2) not in MODULES:
            raise AdapterNotConvertible(f"no GGUF name for the adapter tensor {key}")
        layer, module, side = match.groups()
        weights = tensors[key].astype(np.float32)
        if side == "B" and module in ("self_attn.q_proj", "self_attn.k_proj"):
            weights = permute(weights, heads if module == "self_attn.q_proj" else kv_heads)
        # numpy (r, n_in) / (n_out, r) are the ggml shapes llama.cpp expects for lora_a / lora_b.
        writer.add_tensor(f"blk.{layer}.{MODULES[module]}.weight.lora_{side.lower()}", np.ascontiguousarray(weights))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return hashlib.sha256(target.read_bytes()).hexdigest()
