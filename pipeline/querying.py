"""Answering: question → embed → Weaviate hybrid search → relevance gate → prompt → Ollama.

`AnswerService` is what `teambot ask` and the bots call. It builds its Haystack pipelines once
per collection and model and reuses them (and the embedder and Weaviate connections) across
questions; `ask` may be called from several threads.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
from haystack import Document, Pipeline, component
from haystack.components.builders import ChatPromptBuilder
from haystack.dataclasses import StreamingChunk
from haystack_integrations.components.embedders.sentence_transformers import SentenceTransformersTextEmbedder
from haystack_integrations.components.generators.ollama import OllamaChatGenerator
from haystack_integrations.components.retrievers.weaviate import WeaviateHybridRetriever

from pipeline.answer import Answer, Source, Turn
from pipeline.errors import InvalidQuestion, KnowledgeBaseUnavailable, ModelTimeout, ModelUnavailable
from pipeline.prompts import ABSTAIN, SYSTEM_PROMPT, TEMPLATE
from pipeline.stores import document_store, embedder_path, forget_store
from teambot.settings import Settings

_CITATION = re.compile(r"\[(\d{1,2})\]")
SNIPPET_CHARS = 240


@component
class RelevanceGate:
    """Passes the retrieved chunks on only if the best one is similar enough to the question.

    Hybrid scores are rank-fused and relative (the best hit always scores high), so they cannot
    tell "nothing relevant" apart; the cosine similarity of the embeddings can. Gating on the
    best chunk (not each one) keeps the retriever's recall for questions that do match.
    """

    def __init__(self, min_similarity: float) -> None:
        self.min_similarity = min_similarity

    @component.output_types(documents=list[Document], similarities=list[float])
    def run(self, documents: list[Document], query_embedding: list[float]) -> dict:
        query = np.asarray(query_embedding, dtype=np.float32)
        query /= np.linalg.norm(query) or 1.0
        docs, sims = [], []
        for doc in documents:
            if doc.embedding is not None:
                vec = np.asarray(doc.embedding, dtype=np.float32)
                docs.append(doc)
                sims.append(float(vec @ query / (np.linalg.norm(vec) or 1.0)))
        if not sims or max(sims) < self.min_similarity:
            return {"documents": [], "similarities": []}
        return {"documents": docs, "similarities": sims}


def _model_name(settings: Settings) -> str:
    from training.active_model import active_model  # stdlib-only: no torch on the bot path

    return active_model(settings)


class AnswerService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._new_embedder().warm_up()  # load the model now, not on the first question
        self._retrieval: dict[str, Pipeline] = {}
        self._generation: dict[str, Pipeline] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ pipelines

    def _new_embedder(self) -> SentenceTransformersTextEmbedder:
        # One instance per pipeline (Haystack forbids sharing); the model itself is loaded once and shared.
        return SentenceTransformersTextEmbedder(
            model=embedder_path(self.settings), local_files_only=True, progress_bar=False, normalize_embeddings=True
        )

    def retrieval_pipeline(self, collection: str) -> Pipeline:
        with self._lock:
            if collection not in self._retrieval:
                p = Pipeline()
                p.add_component("embedder", self._new_embedder())
                p.add_component(
                    "retriever",
                    WeaviateHybridRetriever(
                        document_store=document_store(self.settings, collection),
                        top_k=self.settings.top_k, alpha=self.settings.alpha,
                    ),
                )
                p.add_component("gate", RelevanceGate(self.settings.min_similarity))
                p.connect("embedder.embedding", "retriever.query_embedding")
                p.connect("embedder.embedding", "gate.query_embedding")
                p.connect("retriever.documents", "gate.documents")
                self._retrieval[collection] = p
            return self._retrieval[collection]

    def generation_pipeline(self, model: str) -> Pipeline:
        with self._lock:
            if model not in self._generation:
                p = Pipeline()
                p.add_component(
                    "prompt", ChatPromptBuilder(template=TEMPLATE, required_variables=["question", "documents"])
                )
                p.add_component(
                    "llm",
                    OllamaChatGenerator(
                        model=model, url=self.settings.ollama_url, timeout=int(self.settings.generation_timeout),
                        keep_alive="30m",
                        generation_kwargs={
                            "num_predict": self.settings.max_answer_tokens,
                            "temperature": self.settings.temperature,
                        },
                    ),
                )
                p.connect("prompt.prompt", "llm.messages")
                self._generation[model] = p
            return self._generation[model]

    # ------------------------------------------------------------------ answering

    def validate(self, question: str) -> str:
        question = (question or "").replace("\x00", "").strip()
        if not question:
            raise InvalidQuestion("empty question")
        if len(question) > self.settings.max_question_chars:
            raise InvalidQuestion(
                f"question of {len(question)} characters",
                user_message=(
                    f"Your question is too long ({len(question):,} characters; the limit is "
                    f"{self.settings.max_question_chars:,}). Please shorten it."
                ),
            )
        return question

    def retrieve(self, question: str, collection: str | None = None) -> tuple[list[Document], list[float], dict[str, float]]:
        collection = collection or self.settings.collection
        started = time.perf_counter()
        try:
            out = self.retrieval_pipeline(collection).run(
                {"embedder": {"text": question}, "retriever": {"query": question}},
                include_outputs_from={"embedder"},
            )
        except Exception as exc:
            if not _is_unavailable(exc):
                raise
            forget_store(self.settings, collection)  # reconnect on the next question
            with self._lock:
                self._retrieval.pop(collection, None)
            raise KnowledgeBaseUnavailable(f"retrieval from {collection} failed: {type(exc).__name__}: {exc}") from exc
        timings = {"retrieve": time.perf_counter() - started}
        return out["gate"]["documents"], out["gate"]["similarities"], timings

    def ask(
        self,
        question: str,
        *,
        collection: str | None = None,
        history: Sequence[Turn] = (),
        on_token: Callable[[str], None] | None = None,
    ) -> Answer:
        started = time.perf_counter()
        question = self.validate(question)
        collection = collection or self.settings.collection
        model = _model_name(self.settings)
        history = list(history)[-self.settings.history_turns :] if self.settings.history_turns else []
        # Follow-ups ("and how long does that take?") retrieve with the previous question as context.
        search_text = f"{history[-1].question}\n{question}" if history else question
        documents, similarities, timings = self.retrieve(search_text, collection)
        retrieved = [_source(i, d, s) for i, (d, s) in enumerate(zip(documents, similarities), 1)]
        if not documents:
            timings["total"] = time.perf_counter() - started
            if on_token:
                on_token(ABSTAIN)
            return Answer(
                question=question, text=ABSTAIN, sources=[], model=model, collection=collection,
                abstained=True, timings=timings,
            )

        def stream(chunk: StreamingChunk) -> None:
            if on_token and chunk.content:
                on_token(chunk.content)

        gen_started = time.perf_counter()
        try:
            out = self.generation_pipeline(model).run(
                {
                    "prompt": {
                        "system_prompt": SYSTEM_PROMPT, "history": history, "documents": documents,
                        "question": question,
                    },
                    "llm": {"streaming_callback": stream},
                },
                include_outputs_from={"prompt"},
            )
        except Exception as exc:
            if not _is_unavailable(exc):
                raise
            if "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower():
                raise ModelTimeout(f"generation with {model} timed out: {exc}") from exc
            raise ModelUnavailable(f"generation with {model} failed: {type(exc).__name__}: {exc}") from exc
        timings["generate"] = time.perf_counter() - gen_started
        timings["total"] = time.perf_counter() - started
        text = (out["llm"]["replies"][0].text or "").strip()
        prompt = [{"role": m.role.value, "content": m.text or ""} for m in out["prompt"]["prompt"]]
        return Answer(
            question=question, text=text or ABSTAIN, sources=_cited(text, retrieved), model=model,
            collection=collection, abstained=_abstains(text), retrieved=retrieved,
            context=prompt[-1]["content"], prompt=prompt, timings=timings,
        )


def _is_unavailable(exc: BaseException) -> bool:
    """True when the error (or one it wraps) comes from talking to Weaviate or Ollama."""
    import grpc
    import httpx
    import ollama
    from haystack.document_stores.errors import DocumentStoreError
    from weaviate.exceptions import WeaviateBaseError

    kinds = (WeaviateBaseError, DocumentStoreError, ollama.ResponseError, httpx.HTTPError, grpc.RpcError,
             ConnectionError, TimeoutError)
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, kinds):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _source(number: int, doc: Document, similarity: float) -> Source:
    snippet = " ".join(doc.content.split())
    if len(snippet) > SNIPPET_CHARS:
        snippet = snippet[: SNIPPET_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return Source(
        number=number, title=doc.meta.get("title") or "untitled", path=doc.meta.get("source", ""),
        url=doc.meta.get("url") or "", snippet=snippet, chunk_id=doc.id, score=round(similarity, 4),
        section=doc.meta.get("section") or "",
    )


def _abstains(text: str) -> bool:
    return not text.strip() or text.strip().lower().startswith(ABSTAIN.lower()[:12])


def _cited(text: str, retrieved: list[Source]) -> list[Source]:
    """The sources the answer cites; if it cites none, the best match it was given."""
    if _abstains(text):
        return []
    numbers = {int(n) for n in _CITATION.findall(text)}
    cited = [s for s in retrieved if s.number in numbers]
    return cited or retrieved[:1]
