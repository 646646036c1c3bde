"""Chat formats: how a conversation is written out for a model, identically at training and at serving time.

ChatML is what Qwen2.5 (the dev model) and SmolLM2 were trained on; Ollama renders it with
`OLLAMA_CHATML` (prepending SYSTEM when a request carries no system message), Hugging Face
tokenizers with `HF_CHATML`, token for token the same text.
"""

from __future__ import annotations

OLLAMA_CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
HF_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHATML_STOP = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
CHATML_PARAMETERS = {"stop": CHATML_STOP, "temperature": 0.1, "num_ctx": 4096}
# The Modelfile's SYSTEM: used when a request carries no system message of its own.
DEFAULT_SYSTEM = (
    "You are teambot, a helpful assistant for a team's internal documents. Answer only from "
    "the documents you are given, cite them as [1], [2], and say you don't know otherwise."
)
