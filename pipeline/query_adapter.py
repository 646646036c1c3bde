"""A learned map of question embeddings, applied before the vector search (retrieval learned from votes).

A query adapter is a low-rank residual map trained by `teambot train --retrieval`
(training/query_adapter.py) on the questions of 👍 and corrected answers and the passages they
cited: q' = normalize(q + (q·U)·Vᵀ). Only the question moves, so the collection needs no
re-index, and the map is undone by a rollback. It is published under `data_dir/query_adapters/`
and activated per scope like a fine-tuned model (core.active_model, kind "query_adapter"): it
maps the questions of the collections it was trained on, no others.

The relevance gate and reviewed-answer matching still see the question's own embedding: their
thresholds were measured on it. numpy only, on the bot's hot path.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
from haystack import component

from core.active_model import model_for

log = logging.getLogger("teambot.query_adapter")

KIND = "query_adapter"
ADAPTERS_DIR = "query_adapters"


def adapter_name(run_id: str) -> str:
    """The name a retrieval run is published under."""
    return f"teambot-qa-{run_id}".lower()


def adapter_path(settings, name: str) -> Path:
    return Path(settings.data_dir) / ADAPTERS_DIR / f"{name}.npz"


class QueryMap:
    """One adapter's matrices: U (dim × r), V (dim × r), and the space it was trained in."""

    def __init__(self, up: np.ndarray, down: np.ndarray, space: str) -> None:
        if up.shape != down.shape or up.ndim != 2:
            raise ValueError(f"a query adapter holds two dim × rank matrices, got {up.shape} and {down.shape}")
        self.up, self.down, self.space = up.astype(np.float32), down.astype(np.float32), space

    @classmethod
    def load(cls, path: Path) -> "QueryMap":
        with np.load(path, allow_pickle=False) as data:
            return cls(data["up"], data["down"], str(data["space"]))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            np.savez(out, up=self.up, down=self.down, space=np.array(self.space))

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Row vectors mapped and L2-normalized."""
        mapped = vectors + (vectors @ self.up) @ self.down.T
        return mapped / np.maximum(np.linalg.norm(mapped, axis=-1, keepdims=True), 1e-12)


@component
class QueryAdapter:
    """The active query adapter of a collection applied to a question's embedding (unchanged
    when none is active for it, or when the active one was trained in another vector space)."""

    def __init__(self, settings, collection: str, space: str, dimensions: int | None = None) -> None:
        self.settings, self.collection, self.space, self.dimensions = settings, collection, space, dimensions
        # name -> (the file's mtime and size when read, its map or None): a republished or mended
        # file is read again, a damaged one is not re-read (nor re-logged) per question.
        self._loaded: dict[str, tuple[tuple[int, int], QueryMap | None]] = {}
        self._lock = threading.Lock()

    @component.output_types(embedding=list[float], adapter=str)
    def run(self, embedding: list[float]) -> dict:
        name = model_for(self.settings, self.collection, kind=KIND)  # re-read per question: activation needs no restart
        mapping = self._map(name, len(embedding)) if name else None
        if mapping is None:
            return {"embedding": embedding, "adapter": ""}
        return {"embedding": mapping.apply(np.asarray(embedding, dtype=np.float32)).tolist(), "adapter": name}

    def _map(self, name: str, dimensions: int) -> QueryMap | None:
        path = adapter_path(self.settings, name)
        try:
            stat = path.stat()
            version = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            version = (0, -1)
        with self._lock:
            known = self._loaded.get(name)
            if known is None or known[0] != version:
                self._loaded[name] = (version, self._read(name, path, dimensions))
            return self._loaded[name][1]

    def _read(self, name: str, path: Path, dimensions: int) -> QueryMap | None:
        # Whatever is wrong with it, search as without one rather than fail every question.
        try:
            mapping = QueryMap.load(path)
        except Exception as exc:  # noqa: BLE001 - numpy raises EOFError, BadZipFile, zlib.error, ValueError…
            log.warning("query adapter %s is active but unreadable (%s): searching without it", path, exc)
            return None
        if mapping.space != self.space or mapping.up.shape[0] != dimensions:
            log.warning("query adapter %s maps %d-dimensional %s vectors, not %d-dimensional %s ones: searching "
                        "without it", name, mapping.up.shape[0], mapping.space, dimensions, self.space)
            return None
        return mapping
