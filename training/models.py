"""Loading a base model and its tokenizer for training, evaluation and merging.

Packaged GGUF bases are dequantized by transformers once (~35–60 s for Gemma 3 270M) and
cached as float32 safetensors under `cache_dir/models/` (reloads in seconds). Hugging Face
ids and local directories load as they are: bf16 on CUDA (optionally 4-bit when bitsandbytes
is importable), float32 on CPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from core.settings import Settings
from training.bases import BaseSpec, UnknownBase, cached_dir, parameter_count

COMPLETE_MARKER = ".complete"
# A floor, not an estimate: float32 weights (4 bytes a parameter) and the bf16 copy a merge writes
# out (2); the adapter, its optimizer state and activations come on top.
CPU_BYTES_PER_PARAMETER = 6


class NotEnoughMemory(ValueError):
    pass


@dataclass
class Loaded:
    model: object
    tokenizer: object
    spec: BaseSpec
    source: Path | str  # where the weights were read from
    device: str


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def idle_cores(sample_s: float = 0.25) -> float:
    """Cores idle right now, from two /proc/stat samples (iowait counts as idle: the load
    average also counts processes blocked on disk, which use no CPU)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values[:8])  # idle + iowait, all but guest time

    try:
        idle_before, total_before = sample()
        time.sleep(sample_s)
        idle_after, total_after = sample()
    except (OSError, ValueError, IndexError):
        return float(os.cpu_count() or 1)
    return (os.cpu_count() or 1) * (idle_after - idle_before) / max(total_after - total_before, 1)


def use_idle_cpu_threads() -> int:
    """One torch thread per idle core, unless OMP_NUM_THREADS says otherwise.

    OpenMP threads that outnumber the free cores spin against each other: on a busy 2-core
    machine a 250-token Gemma 3 270M forward took 0.9 s with 1 thread and 1.8–8 s with 2. On an
    idle one, 2 threads halve a SmolLM2 training step (29 s → 15 s for 4×250 tokens).
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cores = os.cpu_count() or 1
    share = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # processes of one launch split the cores
    threads = max(1, min(cores // share, round(idle_cores() / share)))
    torch.set_num_threads(threads)
    return threads


def can_load_4bit() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


def prepare_tokenizer(tokenizer, spec: BaseSpec):
    if spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    if tokenizer.chat_template is None:
        raise ValueError(
            f"{spec.name} has no chat template; fine-tune a chat model or one of the packaged bases"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _clear_gguf_quantizer(model) -> None:
    """A dequantized GGUF still carries the quantizer marker that blocks training and saving."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def ensure_cached(settings: Settings, spec: BaseSpec, log=print) -> Path:
    """The float32 safetensors copy of a GGUF base, created on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cached_dir(settings, spec)
    if (target / COMPLETE_MARKER).exists():
        return target
    from core.packaged_models import DevModelError

    try:
        gguf = spec.gguf(settings)
    except DevModelError as exc:  # the packaged chunks are missing or corrupt
        raise UnknownBase(str(exc)) from None
    log(f"dequantizing {gguf.name} into {target} (first use only, about a minute)…")
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name), spec)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _clear_gguf_quantizer(model)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    write_sentencepiece_model(gguf, staging / "tokenizer.model")
    (staging / COMPLETE_MARKER).write_text(json.dumps({"gguf": str(gguf), "size": gguf.stat().st_size}))
    shutil.rmtree(target, ignore_errors=True)
    staging.replace(target)
    return target


def available_memory() -> int:
    """Bytes the kernel says can be allocated without swapping (MemAvailable)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_cpu_memory(settings: Settings, spec: BaseSpec) -> None:
    """Refuse a base too big for this machine's memory before loading it, instead of being
    killed halfway through (a 7B model in float32 needs ~40 GB)."""
    parameters = parameter_count(settings, spec)
    if not parameters:
        return
    needed, available = parameters * CPU_BYTES_PER_PARAMETER, available_memory()
    if needed > available:
        raise NotEnoughMemory(
            f"{spec.name} has {parameters / 1e9:.1f}B parameters: training, evaluating or merging it on the CPU "
            f"(float32) needs about {needed / 2**30:.0f} GiB of memory, and {available / 2**30:.1f} GiB is available. "
            "Run it on a machine with a CUDA GPU, or fine-tune a smaller base (e.g. --base smollm2-135m)."
        )


def load_base(settings: Settings, spec: BaseSpec, *, load_in_4bit: bool = False, log=print) -> Loaded:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = device()
    if dev == "cpu":
        check_cpu_memory(settings, spec)
        log(f"using {use_idle_cpu_threads()} CPU thread(s)")
    source: Path | str = ensure_cached(settings, spec, log=log) if spec.gguf else spec.hf_id
    kwargs: dict = {"dtype": torch.bfloat16 if dev == "cuda" else torch.float32}
    if load_in_4bit:
        if not can_load_4bit():
            raise ValueError("4-bit loading needs a CUDA GPU and the bitsandbytes package")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
    if dev == "cuda" and os.environ.get("ACCELERATE_USE_FSDP", "").lower() not in ("1", "true"):
        # One GPU per process under DDP (LOCAL_RANK); FSDP places the shards itself.
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    try:
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(source), spec)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:  # not downloaded and no network, gated repo, missing files
        raise UnknownBase(f"cannot load the base model {source}: {exc}") from None
    return Loaded(model=model, tokenizer=tokenizer, spec=spec, source=source, device=dev)


def stop_token_ids(tokenizer, spec: BaseSpec) -> list[int]:
    """Token ids that end an assistant turn (generation stops on any of them)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids.update(vocab[s] for s in spec.stop if s in vocab)
    return sorted(ids)


# ----------------------------------------------------------------- sentencepiece for Ollama


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def write_sentencepiece_model(gguf: Path, target: Path) -> bool:
    """Write `tokenizer.model` from a GGUF's SentencePiece vocabulary; False if it has none.

    Ollama's safetensors importer builds a SentencePiece tokenizer only from `tokenizer.model`
    (pieces, scores and types); from `tokenizer.json` alone it would build a GPT-2 style BPE,
    which tokenizes Gemma's text wrongly. Only the fields Ollama reads are encoded.
    """
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf))

    def field_values(name: str, convert):
        f = reader.fields.get(name)  # array fields: f.data indexes the parts holding each item
        return None if f is None else [convert(f.parts[i]) for i in f.data]

    model_field = reader.fields.get("tokenizer.ggml.model")
    if model_field is None or model_field.contents() != "llama":
        return False
    pieces = field_values("tokenizer.ggml.tokens", bytes)
    scores = field_values("tokenizer.ggml.scores", lambda a: float(a[0])) or [0.0] * len(pieces)
    types = field_values("tokenizer.ggml.token_type", lambda a: int(a[0])) or [1] * len(pieces)
    out = bytearray()
    for text, score, kind in zip(pieces, scores, types):
        # ModelProto.SentencePiece: 1 piece (string), 2 score (float), 3 type (enum); GGUF
        # token types use SentencePiece's numbering.
        body = b"\x0a" + _varint(len(text)) + text + b"\x15" + struct.pack("<f", float(score))
        body += b"\x18" + _varint(int(kind))
        out += b"\x0a" + _varint(len(body)) + body  # ModelProto field 1: repeated pieces
    target.write_bytes(bytes(out))
    return True
