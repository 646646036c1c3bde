"""The dev/test chat model imported into Ollama (`teambot services up`).

The weights come from `core.packaged_models`; they are imported with a Modelfile (`ollama create
teambot-dev -f …`) in ChatML, or through the API when the server is not one we built.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import ollama

from core.chat_formats import CHATML_PARAMETERS as PARAMETERS
from core.chat_formats import DEFAULT_SYSTEM, OLLAMA_CHATML
from core.packaged_models import DevModelError, assemble_gguf
from core.servers import OLLAMA, has_model
from core.settings import DEV_MODEL, Settings

def modelfile_text(gguf: Path) -> str:
    """Modelfile: the GGUF, ChatML template, system prompt and stop tokens."""
    params = "".join(f'PARAMETER stop "{s}"\n' for s in PARAMETERS["stop"])
    params += f"PARAMETER temperature {PARAMETERS['temperature']}\nPARAMETER num_ctx {PARAMETERS['num_ctx']}\n"
    return f'FROM {gguf}\nTEMPLATE """{OLLAMA_CHATML}"""\nSYSTEM """{DEFAULT_SYSTEM}"""\n{params}'


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
            model=DEV_MODEL, files={gguf.name: digest}, template=OLLAMA_CHATML, system=DEFAULT_SYSTEM,
            parameters=PARAMETERS, stream=False,
        )
    return "created"
