"""What every benchmark shares: alternating timed runs, percentiles, scratch collections, a
result file that records the machine and its load, and a plain-text table.

Each benchmark times OUR path and the RAW library on the same inputs in one process,
alternating which goes first so warm caches and a busy neighbour hurt both alike.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def alternate(repeats: int, ours: Callable[[], object], raw: Callable[[], object]) -> tuple[list, list]:
    """Run both `repeats` times, swapping which goes first each round; their results, in order."""
    mine, theirs = [], []
    for i in range(repeats):
        if i % 2 == 0:
            mine.append(ours())
            theirs.append(raw())
        else:
            theirs.append(raw())
            mine.append(ours())
    return mine, theirs


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) by linear interpolation, as numpy's default."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ratio(ours: float, raw: float) -> float:
    return ours / raw if raw else math.nan


def load() -> list[float]:
    """1, 5 and 15 minute load averages: the machine is shared, so every figure carries them."""
    return [round(x, 2) for x in os.getloadavg()]


def free_port_block(size: int, *, taken: set[int] = frozenset()) -> int:
    """The first of `size` consecutive ports that are free now (a server's or a cluster's ports).

    Below the kernel's range for outgoing connections, so no client socket takes one between this
    choice and the server's bind; free for TCP and UDP on loopback and on every interface (Weaviate
    binds gRPC and its cluster ports on all, gossip on UDP too); from a random place, so that two
    runs at once do not pick the same block."""
    import random
    import socket

    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    low, high = 10000, ephemeral - size
    for _ in range(400):
        base = random.randrange(low, high)
        ports = set(range(base, base + size))
        if ports & taken:
            continue
        try:
            for port in ports:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    for host in ("127.0.0.1", "0.0.0.0"):
                        with socket.socket(socket.AF_INET, kind) as s:
                            s.bind((host, port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free block of ports")


def scratch_name(kind: str) -> str:
    return f"Bench{kind}_{uuid.uuid4().hex[:8]}"


def raw_client(settings):
    """A plain weaviate-client v4 connection to the configured server."""
    from pipeline.stores import admin_client

    return admin_client(settings)


def schema(name: str) -> dict:
    """The collection definition our store creates, for raw-filled collections our code also reads."""
    from pipeline.stores import collection_settings

    return collection_settings(name)


def drop_collections(settings, names: Sequence[str]) -> None:
    """Delete scratch collections (aliases and what they point at), and forget our cached stores of them."""
    from pipeline import collection_aliases
    from pipeline.stores import forget_store

    client = raw_client(settings)
    try:
        for name in names:
            collection_aliases.drop(client, name)
            forget_store(settings, name)
    finally:
        client.close()


def machine() -> dict:
    return {
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
        "processor": platform.processor() or platform.machine(),
    }


def write_result(name: str, data: dict, out: Path | None = None) -> Path:
    """bench/results/<name>.json (or `out`) with the figures, the machine and the time; says where."""
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), **data}
    path.write_text(json.dumps(record, indent=2))
    print(f"wrote {path}")
    return path


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


class RawEncoder:
    """The configured embedder driven by its own library, as a user of it would: sentence-transformers'
    `encode`, or an onnxruntime session with the tokenizer and mean pooling. `encode(texts, query)`
    gives normalized vectors, with the query or passage prefix the model expects."""

    def __init__(self, settings) -> None:
        from pipeline.embedders import embedder_path, embedder_spec

        self.spec = embedder_spec(settings)
        if not self.spec.onnx:
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(embedder_path(settings), device="cpu", local_files_only=True)
            self.dim = self.model.get_embedding_dimension()
            return
        import onnxruntime
        from tokenizers import Tokenizer

        from core.packaged_models import onnx_embedder

        graph, tokenizer = onnx_embedder(settings, self.spec.name)
        self.session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.enable_truncation(max_length=self.spec.max_tokens)
        self.tokenizer.enable_padding()
        self.dim = self.session.get_outputs()[0].shape[-1]

    def encode(self, texts: list[str], query: bool, batch_size: int = 32):
        import numpy as np

        prefix = self.spec.query_prefix if query else self.spec.passage_prefix
        texts = [prefix + t for t in texts]
        if not self.spec.onnx:
            return self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
        out = []
        for start in range(0, len(texts), batch_size):
            encodings = self.tokenizer.encode_batch(texts[start : start + batch_size])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
            pooled = (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
            out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)
