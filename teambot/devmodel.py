"""The dev/test chat model imported into Ollama (`teambot services up`).

The weights come from `core.packaged_models`; they are imported with a Modelfile (`ollama create
teambot-dev -f …`) in ChatML, or through the API when the server is not one we built. With
several Ollama replicas (`teambot.ollama_replicas`), into each of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import ollama

from core.chat_formats import CHATML_PARAMETERS as PARAMETERS
from core.chat_formats import DEFAULT_SYSTEM, OLLAMA_CHATML
from core.packaged_models import GGUF_SHA256, DevModelError, assemble_gguf
from core.readiness import ServiceError, ollama_ready, wait_until_ready
from core.servers import OLLAMA, has_model
from core.settings import DEV_MODEL, Settings
from teambot import ollama_replicas

MODEL_LISTED_WAIT = 60.0  # seconds; a balancer sends a replica requests a second after it answers


def modelfile_text(gguf: Path) -> str:
    """Modelfile: the GGUF, ChatML template, system prompt and stop tokens."""
    params = "".join(f'PARAMETER stop "{s}"\n' for s in PARAMETERS["stop"])
    params += f"PARAMETER temperature {PARAMETERS['temperature']}\nPARAMETER num_ctx {PARAMETERS['num_ctx']}\n"
    return f'FROM {gguf}\nTEMPLATE """{OLLAMA_CHATML}"""\nSYSTEM """{DEFAULT_SYSTEM}"""\n{params}'


def ensure_dev_model(settings: Settings, log=print) -> str:
    """Import the dev model into the Ollama at ollama_url, or into each replica behind it (directly:
    through the balancer only one would get it); 'present' or 'created'."""
    found = ollama_replicas.replicas(settings)
    if not found:
        state = _ensure(settings, settings.ollama_url, log)
    else:
        states = [_ensure(settings, r.url, log, blobs=r.models_dir(settings) / "blobs") for r in found]
        state = "created" if "created" in states else "present"
    # Up means the model is listed where clients ask for it: each replica and the balancer's URL.
    urls = [r.url for r in found] + [settings.ollama_url]
    try:
        wait_until_ready(lambda: all(ollama_ready(url, DEV_MODEL) for url in urls), what=f"{DEV_MODEL} in Ollama",
                         timeout=MODEL_LISTED_WAIT)
    except ServiceError as exc:
        raise DevModelError(f"{exc} at {', '.join(urls)}") from None
    return state


def _ensure(settings: Settings, url: str, log, blobs: Path | None = None) -> str:
    client = ollama.Client(host=url)
    if has_model(client, DEV_MODEL):
        return "present"
    gguf = assemble_gguf(settings)
    if blobs is not None:
        # A replica of ours: the cached GGUF is linked into its blob store under the digest it is
        # known by, instead of being hashed and uploaded again for every replica.
        log(f"importing {gguf.name} into the Ollama at {url} as {DEV_MODEL}…")
        _link_blob(gguf, blobs / f"sha256-{GGUF_SHA256}")
        _create(client, gguf.name, f"sha256:{GGUF_SHA256}")
        return "created"
    modelfile = gguf.parent / f"{DEV_MODEL}.Modelfile"
    modelfile.write_text(modelfile_text(gguf))
    log(f"importing {gguf.name} into Ollama as {DEV_MODEL}…")
    binary = OLLAMA.binary_path(settings)
    if binary.exists():
        host = url.split("://", 1)[1]
        proc = subprocess.run(
            [str(binary), "create", DEV_MODEL, "-f", str(modelfile)],
            env={**os.environ, "OLLAMA_HOST": host}, capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise DevModelError(f"ollama create {DEV_MODEL} failed: {proc.stderr.strip()[-500:]}")
    else:
        # An Ollama we did not build: the same Modelfile, through the API.
        _create(client, gguf.name, client.create_blob(gguf))
    return "created"


def _create(client: ollama.Client, name: str, digest: str) -> None:
    client.create(
        model=DEV_MODEL, files={name: digest}, template=OLLAMA_CHATML, system=DEFAULT_SYSTEM,
        parameters=PARAMETERS, stream=False,
    )


def _link_blob(gguf: Path, blob: Path) -> None:
    if blob.exists():
        return
    blob.parent.mkdir(parents=True, exist_ok=True)
    partial = blob.with_name(blob.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(gguf, partial)
    except OSError:  # another file system
        shutil.copyfile(gguf, partial)
    partial.replace(blob)
