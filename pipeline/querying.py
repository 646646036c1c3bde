"""Answering: question → embed → Weaviate hybrid search → relevance gate → prompt → Ollama.

`AnswerService` is what `teambot ask` and the bots call. It builds its Haystack components once
per collection and model and reuses them (and the embedder and Weaviate connections) across
questions; `ask` may be called from several threads.

Retrieval calls its three components in turn rather than through a `Pipeline`: the pipeline
deep-copies every input and output, and the 384-float query embedding is copied element by
element with a protocol `isinstance` check on each, about 10 ms of a 35 ms search
(bench/retrieval_latency.py). Generation, where that copy is negligible, stays a `Pipeline`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
from haystack import Document, Pipeline, component
from haystack.components.builders import ChatPromptBuilder
from haystack.dataclasses import StreamingChunk
from haystack_integrations.components.embedders.sentence_transformers import SentenceTransformersTextEmbedder
from haystack_integrations.components.generators.ollama import OllamaChatGenerator
from haystack_integrations.components.retrievers.weaviate import WeaviateHybridRetriever

from pipeline import resilience
from pipeline.answer import Answer, Source, Turn
from pipeline.errors import InvalidQuestion, KnowledgeBaseUnavailable, ModelTimeout, ModelUnavailable, NoDocuments
from pipeline.guard import CITATION, WITHHELD, LeakGuard, only_citations
from pipeline.prompts import ABSTAIN, SYSTEM_PROMPT, TEMPLATE
from pipeline.stores import document_store, embedder_path, forget_store
from teambot import services
from teambot.settings import Settings

log = logging.getLogger("teambot.answer")
# Control characters (tabs and newlines aside) and lone surrogates, as binary or mis-decoded
# input carries them, mean nothing in a question and break encoders further down.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")
SEARCH_WORKERS = 4
MISSING_COLLECTION_RECHECK = 0.3  # seconds
SNIPPET_CHARS = 240
_HEADING = re.compile(r"^#{1,6} .*$", re.M)


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


@dataclass(frozen=True)
class Retrieval:
    """Query embedding → hybrid search → relevance gate, for one collection."""

    embedder: SentenceTransformersTextEmbedder
    retriever: WeaviateHybridRetriever
    gate: RelevanceGate

    def run(self, question: str) -> dict:
        embedding = self.embedder.run(text=question)["embedding"]
        documents = self.retriever.run(query=question, query_embedding=embedding)["documents"]
        return self.gate.run(documents=documents, query_embedding=embedding)


def _model_name(settings: Settings) -> str:
    from training.active_model import active_model  # stdlib-only: no torch on the bot path

    return active_model(settings)


class AnswerService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # One embedder for every collection (no Pipeline owns it); loaded now, not on the first question.
        self._embedder = SentenceTransformersTextEmbedder(
            model=embedder_path(settings), local_files_only=True, progress_bar=False, normalize_embeddings=True
        )
        self._embedder.warm_up()
        self._retrieval: dict[str, Retrieval] = {}
        self._generation: dict[str, Pipeline] = {}
        self._lock = threading.Lock()
        # Each server gets a breaker: when it keeps failing, questions fail fast for a while.
        self.breakers = {
            name: resilience.CircuitBreaker(name, settings.circuit_failures, settings.circuit_cooldown)
            for name in ("weaviate", "ollama")
        }
        self._retry = resilience.RetryPolicy(attempts=settings.retry_attempts, backoff=settings.retry_backoff)
        self._guard = LeakGuard.from_settings(settings)
        # Searches run here so that a hung one can be abandoned after retrieval_timeout.
        self._search_pool = ThreadPoolExecutor(SEARCH_WORKERS, thread_name_prefix="teambot-search")
        self._probe = httpx.Client(timeout=min(2.0, settings.retrieval_timeout))  # see _weaviate_ready

    def close(self) -> None:
        """Release the readiness-probe connection and the search threads."""
        self._probe.close()
        self._search_pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ components

    def retrieval(self, collection: str) -> Retrieval:
        with self._lock:
            if collection not in self._retrieval:
                self._retrieval[collection] = Retrieval(
                    embedder=self._embedder,
                    retriever=WeaviateHybridRetriever(
                        document_store=document_store(self.settings, collection),
                        top_k=self.settings.top_k, alpha=self.settings.alpha,
                    ),
                    gate=RelevanceGate(self.settings.min_similarity),
                )
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
        question = _UNPRINTABLE.sub("", question or "").strip()
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
            try:
                out = self._search_resiliently(question, collection)
            except NoDocuments:
                # Either nothing was ever indexed here, or a legacy plain collection is giving way
                # to an alias of its name (pipeline.collection_aliases.switch): milliseconds.
                time.sleep(MISSING_COLLECTION_RECHECK)
                out = self._search_resiliently(question, collection)
        except resilience.CircuitOpen as exc:
            raise KnowledgeBaseUnavailable(str(exc)) from exc
        except Exception as exc:
            if not _is_unavailable(exc):
                raise
            raise KnowledgeBaseUnavailable(f"retrieval from {collection} failed: {type(exc).__name__}: {exc}") from exc
        timings = {"retrieve": time.perf_counter() - started}
        return out["documents"], out["similarities"], timings

    def _search_resiliently(self, question: str, collection: str) -> dict:
        return resilience.call(
            lambda: self._search(question, collection), policy=self._retry, breaker=self.breakers["weaviate"],
            is_failure=_is_unavailable, is_retryable=_is_retryable,
        )

    def _search(self, question: str, collection: str) -> dict:
        # weaviate-client retries a refused gRPC search for about a minute before giving up;
        # a readiness probe first turns "Weaviate is down" into an immediate, retryable error.
        if not self._weaviate_ready():
            self._forget(collection)
            raise ConnectionError(f"Weaviate at {self.settings.weaviate_url} is not ready")
        future = self._search_pool.submit(self.retrieval(collection).run, question)
        try:
            return future.result(timeout=self.settings.retrieval_timeout)
        except TimeoutError:
            future.cancel()
            self._forget(collection)
            raise TimeoutError(f"search in {collection} took longer than {self.settings.retrieval_timeout:.0f}s") from None
        except Exception as exc:
            if _is_missing_collection(exc):
                # Not a server failure: no retries, and the breaker is left alone.
                raise NoDocuments(
                    f"collection {collection} does not exist",
                    user_message=f"There are no documents to answer from here yet: an admin can index some "
                    f"with `teambot ingest -c {collection} FOLDER`.",
                ) from None
            if _is_unavailable(exc):
                self._forget(collection)
            raise

    def _weaviate_ready(self) -> bool:
        # One pooled client: a fresh `httpx.get` per question built an SSL context and opened a
        # TCP connection each time, 20-30 ms of a ~55 ms search (bench/retrieval_latency.py).
        try:
            return self._probe.get(services.WEAVIATE.url(self.settings) + services.WEAVIATE.health_path).status_code == 200
        except httpx.HTTPError:
            return False

    def _forget(self, collection: str) -> None:
        """Drop the cached connection and pipeline: the next question reconnects."""
        forget_store(self.settings, collection)
        with self._lock:
            self._retrieval.pop(collection, None)

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

        guarded = self._guard.stream(on_token)

        def stream(chunk: StreamingChunk) -> None:
            if chunk.content:
                # The model's first token; the guard may hold it back a word or two before on_token sees it.
                timings.setdefault("first_token", time.perf_counter() - started)
                guarded(chunk.content)

        def generate() -> dict:
            return self.generation_pipeline(model).run(
                {
                    "prompt": {
                        "system_prompt": SYSTEM_PROMPT, "history": history, "documents": documents,
                        "question": question,
                    },
                    "llm": {"streaming_callback": stream},
                },
                include_outputs_from={"prompt"},
            )

        gen_started = time.perf_counter()
        try:
            out = resilience.call(
                generate, policy=self._retry, breaker=self.breakers["ollama"], is_failure=_is_unavailable,
                # Once text has been streamed to the user, a retry would repeat it.
                is_retryable=lambda exc: not guarded.text and _is_retryable(exc),
            )
        except resilience.CircuitOpen as exc:
            raise ModelUnavailable(str(exc)) from exc
        except Exception as exc:
            if not _is_unavailable(exc):
                raise
            if _is_timeout(exc):
                raise ModelTimeout(f"generation with {model} timed out: {exc}") from exc
            raise ModelUnavailable(f"generation with {model} failed: {type(exc).__name__}: {exc}") from exc
        timings["generate"] = time.perf_counter() - gen_started
        timings["total"] = time.perf_counter() - started
        text = (out["llm"]["replies"][0].text or "").strip()
        if guarded.tripped or self._guard.leaks(text):
            # A small model may abstain and then recite its instructions: that is an abstention.
            reply = ABSTAIN if _abstains(text) else WITHHELD
            if reply == WITHHELD:
                log.warning("withheld an answer in %s that repeated the instructions or a secret", collection)
                guarded.say(("\n\n" if guarded.text.strip() else "") + WITHHELD)
            else:
                log.info("the model abstained in %s, then began to recite its instructions: cut off", collection)
            return Answer(
                question=question, text=reply, sources=[], model=model, collection=collection, abstained=True,
                retrieved=retrieved, timings=timings,
            )
        if only_citations(text):
            # A bare "[1]" (small models do this) tells the user nothing, and an empty reply is an
            # abstention; the guard has held either back, so this is shown instead.
            text = _passage_reply(retrieved, text) if text else ABSTAIN
            guarded.say(text)
        else:
            guarded.finish()
        prompt = [{"role": m.role.value, "content": m.text or ""} for m in out["prompt"]["prompt"]]
        return Answer(
            question=question, text=text, sources=_cited(text, retrieved), model=model,
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
    return any(isinstance(e, kinds) for e in _chain(exc))


def _is_missing_collection(exc: BaseException) -> bool:
    """Weaviate says the collection does not exist (a 404 on its schema, or a search of an unknown class)."""
    return any(getattr(e, "status_code", None) == 404 or "could not find class" in str(e) for e in _chain(exc))


def _chain(exc: BaseException | None):
    """The exception and those it wraps, at most ten deep."""
    seen = 0
    while exc is not None and seen < 10:
        yield exc
        exc = exc.__cause__ or exc.__context__
        seen += 1


def _is_timeout(exc: BaseException) -> bool:
    return any(
        isinstance(e, TimeoutError) or "timeout" in type(e).__name__.lower() or "timed out" in str(e).lower()
        for e in _chain(exc)
    )


def _is_retryable(exc: BaseException) -> bool:
    """Worth another try soon: refused connections, 5xx/429 answers. Not a timeout (it already
    waited long), not a 4xx such as an unknown model."""
    import ollama

    if not _is_unavailable(exc) or _is_timeout(exc):
        return False
    for e in _chain(exc):
        status = getattr(e, "status_code", None)
        if isinstance(e, ollama.ResponseError) and status is not None and status != -1:
            return status >= 500 or status == 429
    return True


def _source(number: int, doc: Document, similarity: float) -> Source:
    # The section's own heading is shown beside the snippet (Source.section); leave it out here.
    snippet = " ".join(_HEADING.sub("", doc.content).split())
    if len(snippet) > SNIPPET_CHARS:
        snippet = snippet[: SNIPPET_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return Source(
        number=number, title=doc.meta.get("title") or "untitled", path=doc.meta.get("source", ""),
        url=doc.meta.get("url") or "", snippet=snippet, chunk_id=doc.id, score=round(similarity, 4),
        section=doc.meta.get("section") or "",
    )


def _passage_reply(retrieved: list[Source], citations: str) -> str:
    """For an answer that is only citation markers: the first cited passage, quoted."""
    numbers = [int(n) for n in CITATION.findall(citations)]
    source = next((s for s in retrieved if s.number in numbers), retrieved[0])
    return f'The closest passage I found, in "{source.title}": "{source.snippet}" [{source.number}]'


def _abstains(text: str) -> bool:
    return not text.strip() or text.strip().lower().startswith(ABSTAIN.lower()[:12])


def _cited(text: str, retrieved: list[Source]) -> list[Source]:
    """The sources the answer cites; if it cites none, the best match it was given."""
    if _abstains(text):
        return []
    numbers = {int(n) for n in CITATION.findall(text)}
    cited = [s for s in retrieved if s.number in numbers]
    return cited or retrieved[:1]
