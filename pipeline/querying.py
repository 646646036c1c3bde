"""Answering: question → embed → Weaviate hybrid search → relevance gate → prompt → Ollama.

`AnswerService` is what `teambot ask` and the bots call. It builds its Haystack components once
per collection and model and reuses them (and the embedder and Weaviate connections) across
questions; `ask` may be called from several threads.

Components are called in turn rather than through a `Pipeline`: the pipeline deep-copies every
input and output, and the 384-float query embedding is copied element by element with a protocol
`isinstance` check on each, about 10 ms of a 35 ms search (bench/retrieval_latency.py); and a
generation cut off at its deadline must still leave the prompt it was given.

`ask` reads as its steps: validate, retrieve, then either abstain or generate (streamed through
the leak guard, against a wall-clock deadline) and settle what the user is shown (withheld,
abstained, a bare citation replaced by its passage, or the answer with the sources it cites).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import httpx
import numpy as np
from haystack import Document, component
from haystack.dataclasses import StreamingChunk
from haystack_integrations.components.generators.ollama import OllamaChatGenerator
from haystack_integrations.components.retrievers.weaviate import WeaviateHybridRetriever

from core import metrics
from core.active_model import model_for
from core.answer import STOPPED_NOTE, Answer, Outcome, Source, Turn
from core.errors import (
    EmbedderMismatch, InvalidQuestion, KnowledgeBaseUnavailable, ModelTimeout, ModelUnavailable, NoDocuments,
)
from core.settings import Settings
from pipeline import resilience
from pipeline.boosts import FeedbackBoost
from pipeline.diversity import PageDiversity
from pipeline.feedback_sources import FeedbackSources
from pipeline.followups import FollowUpRewriter, glued, with_subject
from pipeline.reviewed import Reviewed, ReviewedAnswers
from pipeline.grounding import GroundingCheck
from pipeline.guard import CITATION, WITHHELD, GuardedStream, LeakGuard, only_citations
from pipeline.links import LinkPolicy
from pipeline.prompts import ABSTAIN, SYSTEM_PROMPT, as_messages, is_abstention, prompt_builder
from pipeline.resilience import is_missing_collection, is_retryable, is_timeout, is_unavailable
from pipeline.query_adapter import QueryAdapter
from pipeline.embedders import embedder_spec, min_similarity, min_support, same_question, text_embedder
from pipeline.stores import (
    document_store, embedding_space, forget_store, live_nodes, node_health_path, replicas_needed,
)

log = logging.getLogger("teambot.answer")
NODE_CHECK_SECONDS = 0.5  # a search running longer has its node's readiness checked this often
# A search in a cluster still unanswered after this is sent again to another node, and the first
# answer wins. Searches take 0.03-0.2 s; a coordinator whose QUORUM read waits on a dead replica
# or a Raft election (5-15 s after the leader dies, at Weaviate's production timeouts) holds one
# for that long, while a second request is answered at once.
HEDGE_AFTER_SECONDS = 1.5
# Control characters (tabs and newlines aside) and lone surrogates, as binary or mis-decoded
# input carries them, mean nothing in a question and break encoders further down.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")
SPARE_SEARCH_THREADS = 2  # for searches abandoned after retrieval_timeout, until their query times out
MISSING_COLLECTION_RECHECK = 0.3  # seconds
SPACE_RECHECK = 60.0  # seconds between reads of the vector space a collection holds
CUT_OFF = "\n\n_(Cut off: the answer took longer than {seconds:.0f} seconds.)_"
STOPPED = "\n\n" + STOPPED_NOTE
# Every generation is seeded: the same prompt gives the same answer, so one retried after its
# server died mid-answer can skip what was already shown (Replay).
GENERATION_SEED = 42
SNIPPET_CHARS = 240
REVIEWED_MODEL = "reviewed"  # the model name recorded for answers served from a reviewer's correction
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
    """Query embedding → hybrid search → boosts from votes → page diversity → relevance gate, for
    one collection."""

    embedder: Any  # a text embedder of pipeline.embedders
    adapter: QueryAdapter
    retriever: WeaviateHybridRetriever
    store: Any  # the retriever's document store
    boost: FeedbackBoost
    diversity: PageDiversity
    gate: RelevanceGate
    node: str  # the Weaviate node its store talks to

    def run(self, question: str) -> dict:
        embedding = self.embedder.run(text=question)["embedding"]
        searched = self.adapter.run(embedding=embedding)["embedding"]
        # More candidates only when boosts or the page cap choose among them: otherwise the search is as it was.
        fetch = max(self.boost.candidates(), self.diversity.candidates())
        documents = self.retriever.run(query=question, query_embedding=searched, top_k=fetch)["documents"]
        documents = self.boost.run(documents=documents)["documents"]
        documents = self.diversity.run(documents=documents)["documents"]
        return self.gate.run(documents=documents, query_embedding=embedding)


class QuorumLost(ConnectionError):
    """Too few Weaviate nodes are live to answer at the configured consistency level: retrying
    soon would not help, so it is not retried."""


class PastDeadline(Exception):
    """Raised from the streaming callback: the generation ran past its wall-clock deadline."""


class Stopped(Exception):
    """Raised from the streaming callback: the asker stopped the answer. Leaving the stream closes
    the connection, and Ollama drops a generation whose client has gone."""


class Diverged(Exception):
    """A generation retried mid-answer did not begin with the text already streamed."""


class Replay:
    """Drops what a generation retried mid-answer repeats of the text already streamed.

    When the model server dies mid-answer (an Ollama replica killed behind the balancer), the
    user has seen the start of the answer. The retry sends the same prompt with the same seed
    to a live server, which writes the same text again: what was seen is skipped, and the stream
    goes on from where it broke. A retry that writes something else cannot continue what was
    shown: Diverged.
    """

    def __init__(self, seen: str) -> None:
        self.seen = seen
        self._again = ""

    @property
    def caught_up(self) -> bool:
        return len(self._again) >= len(self.seen)

    def __call__(self, delta: str) -> str:
        """The part of `delta` not streamed before."""
        if self.caught_up:
            return delta
        self._again += delta
        overlap = min(len(self._again), len(self.seen))
        if self._again[:overlap] != self.seen[:overlap]:
            raise Diverged(f"the retry differs from the {len(self.seen)} characters already streamed")
        return self._again[len(self.seen):]


class AnswerService:
    def __init__(self, settings: Settings, feedback: FeedbackSources | None = None) -> None:
        self.settings = settings
        # One embedder for every collection; loaded now, not on the first question.
        self._embedder = text_embedder(settings)
        self._embedder.warm_up()
        self.space = embedder_spec(settings).space
        self._spaces: dict[str, tuple[str, float]] = {}  # collection → the vector space it holds, when read
        self._retrieval: dict[tuple[str, tuple[str, int] | None], Retrieval] = {}  # by collection, node
        self._generators: dict[str, OllamaChatGenerator] = {}
        self.prompt_builder = prompt_builder()
        self.rewriter = FollowUpRewriter(settings.ollama_url, settings.rewrite_timeout)
        self.grounding = GroundingCheck(self._embedder)
        self._lock = threading.Lock()
        # Each server gets a breaker: when it keeps failing, questions fail fast for a while.
        self.breakers = {
            name: resilience.CircuitBreaker(name, settings.circuit_failures, settings.circuit_cooldown)
            for name in ("weaviate", "ollama")
        }
        self._retry = resilience.RetryPolicy(attempts=settings.retry_attempts, backoff=settings.retry_backoff)
        self._guard = LeakGuard.from_settings(settings)
        # Searches run here so that a hung one can be abandoned after retrieval_timeout; two threads
        # per generation (a search and its hedge), so that waiting for a thread never counts
        # against that timeout.
        self._search_pool = ThreadPoolExecutor(
            2 * settings.answer_workers + SPARE_SEARCH_THREADS, thread_name_prefix="teambot-search"
        )
        self._probe = httpx.Client(timeout=min(2.0, settings.retrieval_timeout))  # see _weaviate_ready
        self.feedback = feedback or FeedbackSources()
        self._reviewed: dict[str, ReviewedAnswers] = {}

    def use_feedback(self, feedback: FeedbackSources | None) -> None:
        """Read feedback from these sources from now on (None: none); what the old ones gave is dropped."""
        with self._lock:
            self.feedback = feedback or FeedbackSources()
            for retrieval in self._retrieval.values():
                retrieval.boost.forget()
            self._reviewed.clear()

    def _votes(self, collection: str) -> dict[str, tuple[int, int]]:
        return self.feedback.document_votes(collection) if self.feedback.document_votes else {}

    def _overrides(self, collection: str) -> dict[str, str]:
        return self.feedback.document_overrides(collection) if self.feedback.document_overrides else {}

    def embed(self, texts: list[str]) -> np.ndarray:
        """Normalized embeddings of `texts`, with the retrieval's embedder."""
        vectors = np.array([self._embedder.run(text=t)["embedding"] for t in texts], dtype=np.float32).reshape(len(texts), -1)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def reviewed_match(self, question: str, collection: str | Sequence[str],
                       place: tuple[str, str] | None = None) -> tuple[Reviewed, float] | None:
        """The approved reviewed answer for `question` in these collections, if one matches closely
        and came from these collections alone (and, if it was given in a private conversation,
        from `place`: (platform, channel))."""
        if self.feedback.reviewed_answers is None or same_question(self.settings) > 1:
            return None
        names = [collection] if isinstance(collection, str) else list(dict.fromkeys(collection))
        with self._lock:
            sets = [self._reviewed.setdefault(name, ReviewedAnswers(
                name, self.embed, self.feedback.reviewed_answers, same_question(self.settings),
                self.settings.document_votes_refresh,
            )) for name in names]
        sets = [s for s in sets if s]
        if not sets:
            return None
        vector = self.embed([question])[0]
        readable = frozenset(names)
        matches = [m for m in (s.match(vector, readable, place) for s in sets) if m]
        return max(matches, key=lambda m: m[1]) if matches else None

    def close(self) -> None:
        """Release the readiness-probe connection and the search threads."""
        self._probe.close()
        self._search_pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ components

    def retrieval(self, collection: str, node: tuple[str, int] | None = None) -> Retrieval:
        """The retrieval for `collection`, on the first live Weaviate node or on `node`."""
        with self._lock:
            if (collection, node) not in self._retrieval:
                store = document_store(self.settings, collection, node=node)
                top_k = self.settings.top_k
                self._retrieval[(collection, node)] = Retrieval(
                    embedder=self._embedder,
                    adapter=QueryAdapter(self.settings, collection, self.space),
                    retriever=WeaviateHybridRetriever(document_store=store, top_k=top_k, alpha=self.settings.alpha),
                    store=store,
                    boost=FeedbackBoost(collection, top_k, self.settings.document_boost_max, votes=self._votes,
                                        refresh_s=self.settings.document_votes_refresh, overrides=self._overrides,
                                        recency_weight=self.settings.recency_weight,
                                        half_life_days=self.settings.recency_half_life_days),
                    diversity=PageDiversity(top_k, self.settings.chunks_per_page),
                    gate=RelevanceGate(min_similarity(self.settings)),
                    node=getattr(store, "node_url", "") or self.settings.weaviate_url,
                )
            return self._retrieval[(collection, node)]

    def chat_generator(self, model: str):
        """The Ollama chat component for `model` (a published fine-tune can become active at any time)."""
        with self._lock:
            if model not in self._generators:
                self._generators[model] = OllamaChatGenerator(
                    model=model, url=self.settings.ollama_url, timeout=int(self.settings.generation_timeout),
                    keep_alive="30m",
                    generation_kwargs={
                        "num_predict": self.settings.max_answer_tokens, "temperature": self.settings.temperature,
                        "seed": GENERATION_SEED,
                    },
                )
            return self._generators[model]

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

    def retrieve(
        self, question: str, collection: str | Sequence[str] | None = None,
    ) -> tuple[list[Document], list[float], dict[str, float]]:
        """The best chunks for `question` and their cosine similarities; from several collections,
        the best of all of them (top_k in all), a missing one (or one of another vector space) skipped
        while another answers."""
        if collection is None or isinstance(collection, str):
            return self._retrieve_one(question, collection or self.settings.collection)
        found: list[tuple[float, Document]] = []
        started, missing = time.perf_counter(), []
        for name in dict.fromkeys(collection):
            try:
                documents, similarities, _ = self._retrieve_one(question, name)
            except (NoDocuments, EmbedderMismatch) as exc:  # the others still answer
                log.warning("searching %s: %s", name, exc)
                missing.append(exc)
                continue
            found += zip(similarities, documents)
        if missing and len(missing) == len(set(collection)):
            raise missing[0]
        found.sort(key=lambda pair: pair[0], reverse=True)
        best = found[: self.settings.top_k]
        return [d for _, d in best], [s for s, _ in best], {"retrieve": time.perf_counter() - started}

    def _retrieve_one(self, question: str, collection: str) -> tuple[list[Document], list[float], dict[str, float]]:
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
        except NoDocuments:
            raise  # the server answered: nothing was indexed here (its Weaviate error is only the context)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            raise KnowledgeBaseUnavailable(f"retrieval from {collection} failed: {type(exc).__name__}: {exc}") from exc
        timings = {"retrieve": time.perf_counter() - started}
        return out["documents"], out["similarities"], timings

    def _search_resiliently(self, question: str, collection: str) -> dict:
        return resilience.call(
            lambda: self._search(question, collection), policy=self._retry, breaker=self.breakers["weaviate"],
            is_failure=is_unavailable, is_retryable=lambda exc: is_retryable(exc) and not isinstance(exc, QuorumLost),
        )

    def _search(self, question: str, collection: str) -> dict:
        # weaviate-client retries a refused gRPC search for about a minute before giving up;
        # a readiness probe of the store's node first turns "Weaviate is down" into an immediate,
        # retryable error. Forgotten, the store is made again on a live node of a cluster.
        retrieval = self.retrieval(collection)
        if not self._weaviate_ready(retrieval.node):
            self._forget(collection)
            raise ConnectionError(f"Weaviate at {retrieval.node} is not ready")

        def search(retrieval: Retrieval) -> dict:
            with metrics.SEARCHES_RUNNING.track_inprogress():
                return retrieval.run(question)

        running: dict[Future, Retrieval] = {}
        first_error: BaseException | None = None
        try:
            self._check_space(collection, retrieval)
            running[self._search_pool.submit(search, retrieval)] = retrieval
            started = time.monotonic()
            deadline = started + self.settings.retrieval_timeout
            hedge_at = started + HEDGE_AFTER_SECONDS if len(self.settings.weaviate_nodes) > 1 else float("inf")
            while True:
                now = time.monotonic()
                if now >= deadline:
                    raise TimeoutError
                done, _ = wait(running, timeout=min(NODE_CHECK_SECONDS, deadline - now, max(0.0, hedge_at - now)),
                               return_when=FIRST_COMPLETED)
                for future in done:
                    running.pop(future)
                    if future.exception() is None:
                        return future.result()
                    first_error = first_error or future.exception()
                if not running:  # every request failed: the first one's error says why
                    raise first_error
                if time.monotonic() >= hedge_at:
                    hedge_at = float("inf")
                    hedge = self._hedge(collection, retrieval.node)
                    running[self._search_pool.submit(search, hedge)] = hedge
                    metrics.SEARCH_HEDGES.inc()
                    continue
                if done:
                    continue
                # A search slower than usual is watched: if its node stops answering (killed
                # mid-search), weaviate-client would retry it there with backoff until the timeout;
                # instead it is dropped, and with no other one running it fails now, as retryable,
                # and the retry goes to a live node.
                for future, on in list(running.items()):
                    if not self._weaviate_ready(on.node):
                        future.cancel()
                        del running[future]
                        if not running:
                            self._forget(collection)
                            raise ConnectionError(f"Weaviate at {on.node} stopped answering")
        except TimeoutError:
            self._forget(collection)
            raise TimeoutError(f"search in {collection} took longer than {self.settings.retrieval_timeout:.0f}s") from None
        except Exception as exc:
            if is_missing_collection(exc):
                # Not a server failure: no retries, and the breaker is left alone.
                raise NoDocuments(
                    f"collection {collection} does not exist",
                    user_message=f"There are no documents to answer from here yet: an admin can index some "
                    f"with `teambot ingest -c {collection} FOLDER`.",
                ) from None
            if is_unavailable(exc):
                self._forget(collection)
            raise
        finally:
            for future in running:  # the slower request, or those left when the search failed
                future.cancel()

    def _check_space(self, collection: str, retrieval: Retrieval) -> None:
        """Refuse to search a collection embedded by an embedder of another space: its similarities
        would be noise. Read again every SPACE_RECHECK seconds (a rebuild can switch what it holds)."""
        known = self._spaces.get(collection)
        if known is None or time.monotonic() - known[1] > SPACE_RECHECK:
            config = retrieval.store.collection.config.get()
            known = self._spaces[collection] = (embedding_space(config), time.monotonic())
        if known[0] != self.space:
            raise EmbedderMismatch(
                f"{collection} holds vectors of {known[0]}; TEAMBOT_EMBEDDER={self.settings.embedder} embeds in "
                f"{self.space}: teambot ingest --rebuild -c {collection}"
            )

    def _hedge(self, collection: str, node: str) -> Retrieval:
        """The retrieval of `collection` on a live node other than `node`. Raises QuorumLost when
        too few nodes are live for the consistency level: the search would wait out its timeout."""
        # A dead node refuses at once; a live one slowed by load gets as long as the readiness probe.
        live = live_nodes(self.settings, timeout=min(2.0, self.settings.retrieval_timeout))
        needed = replicas_needed(self.settings)
        if len(live) < needed:
            raise QuorumLost(
                f"{len(live)} of {len(self.settings.weaviate_nodes)} Weaviate nodes answer; a "
                f"{self.settings.weaviate_consistency} search needs {needed}"
            )
        others = [n for n in live if n[0] != node]
        return self.retrieval(collection, node=others[0]) if others else self.retrieval(collection)

    def _weaviate_ready(self, node: str) -> bool:
        # One pooled client: a fresh `httpx.get` per question built an SSL context and opened a
        # TCP connection each time, 20-30 ms of a ~55 ms search (bench/retrieval_latency.py).
        try:
            return self._probe.get(node + node_health_path(self.settings)).status_code == 200
        except httpx.HTTPError:
            return False

    def _forget(self, collection: str) -> None:
        """Drop the cached connection and pipeline: the next question reconnects. Other searches
        may still be running on the old connection: it is closed once they have timed out."""
        forget_store(self.settings, collection, close_after=2 * self.settings.retrieval_timeout)
        with self._lock:
            for key in [k for k in self._retrieval if k[0] == collection]:
                del self._retrieval[key]

    def ask(
        self,
        question: str,
        *,
        collection: str | Sequence[str] | None = None,
        history: Sequence[Turn] = (),
        on_token: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
        place: tuple[str, str] | None = None,
    ) -> Answer:
        """Answer `question` from `collection` (or the best of several), streaming what may be
        shown to `on_token`. Setting `stop` ends the generation at its next token: the answer is
        what was shown so far, with the outcome `stopped`. `place` is the asking conversation
        (platform, channel): reviewed answers kept to a private one are served only there."""
        started = time.perf_counter()
        question = self.validate(question)
        collection = collection or self.settings.collection
        history = list(history)[-self.settings.history_turns :] if self.settings.history_turns else []
        if not history and (reviewed := self.reviewed_match(question, collection, place)):
            return self._reviewed_answer(question, collection, *reviewed, on_token, started)
        # The fine-tune only where it learned from every collection searched (its scope).
        model = model_for(self.settings, collection)
        search_text, rewrite_seconds = self.search_text(question, history, model)
        documents, similarities, timings = self.retrieve(search_text, collection)
        if rewrite_seconds:
            timings["rewrite"] = rewrite_seconds
        links = LinkPolicy.for_documents(documents, self.settings.link_hosts)
        answer = Answer(
            question=question, text="", sources=[], model=model,
            collection=collection if isinstance(collection, str) else "+".join(dict.fromkeys(collection)),
            retrieved=[_source(i, d, s, links) for i, (d, s) in enumerate(zip(documents, similarities), 1)],
            timings=timings, searched=search_text if search_text != question else "",
        )
        if documents:
            guarded = self._guard.stream(on_token, links)
            text, prompt, ended = self._generate(answer, history, documents, guarded, started, stop)
            self._settle(answer, text, prompt, guarded, ended)
            if answer.outcome is Outcome.ANSWERED and not ended and min_support(self.settings) > 0:
                self._ground(answer, documents)
        else:  # nothing relevant: the model is not asked to invent something
            answer.text, answer.outcome = ABSTAIN, Outcome.ABSTAINED
            if on_token:
                on_token(ABSTAIN)
        timings["total"] = time.perf_counter() - started
        return answer

    def search_text(self, question: str, history: Sequence[Turn], model: str) -> tuple[str, float]:
        """What a question is searched as (pipeline/followups.py), and the seconds a model's rewrite
        took: a follow-up made standalone as configured; a first question as asked."""
        if not history:
            return question, 0.0
        method = self.settings.followup_search
        if method == "glue":
            return glued(question, history), 0.0
        if method == "subject":
            return with_subject(question, history), 0.0
        out = self.rewriter.run(question=question, history=list(history), model=model)
        metrics.FOLLOWUP_REWRITES.labels(method=out["method"]).inc()
        return out["question"], out["seconds"]

    def _reviewed_answer(self, question: str, collection: str | Sequence[str], reviewed: Reviewed, similarity: float,
                         on_token: Callable[[str], None] | None, started: float) -> Answer:
        fields = set(Source.__dataclass_fields__)
        sources = [Source(**{k: v for k, v in s.items() if k in fields}) for s in reviewed.sources
                   if isinstance(s, dict) and {"number", "title", "path"} <= s.keys()]
        for source in sources:
            source.snippet, source.chunk_id, source.score = source.snippet or "", source.chunk_id or "", source.score or 0.0
        if on_token:
            on_token(reviewed.correction)
        log.info("answered from reviewed answer %s (similarity %.3f)", reviewed.answer_id, similarity)
        return Answer(
            question=question, text=reviewed.correction, sources=sources, model=REVIEWED_MODEL,
            collection=collection if isinstance(collection, str) else "+".join(dict.fromkeys(collection)),
            retrieved=list(sources), reviewed_from=reviewed.answer_id,
            timings={"reviewed_similarity": round(similarity, 4), "total": time.perf_counter() - started},
        )

    def _generate(
        self, answer: Answer, history: list[Turn], documents: list[Document], guarded: GuardedStream, asked: float,
        stop: threading.Event | None = None,
    ) -> tuple[str, list, str]:
        """(the model's text, the prompt it was given, the note that it ended early: cut off at the
        deadline or stopped by the asker; "" when it ran to its end)."""
        prompt = self.prompt_builder.run(
            system_prompt=SYSTEM_PROMPT, history=history, documents=documents, question=answer.question,
        )["prompt"]
        timings = answer.timings
        started = time.perf_counter()
        deadline = started + self.settings.generation_timeout

        replay: Replay | None = None

        def stream(chunk: StreamingChunk) -> None:
            if stop is not None and stop.is_set():
                raise Stopped("stopped by the asker")
            if chunk.content:
                # The model's first token; the guard may hold it back a word or two before on_token sees it.
                timings.setdefault("first_token", time.perf_counter() - asked)
                if new := (replay(chunk.content) if replay else chunk.content):
                    guarded(new)
            if time.perf_counter() > deadline:
                raise PastDeadline(f"generation past its {self.settings.generation_timeout:.0f}s deadline")

        def generate() -> str:
            nonlocal replay
            if guarded.text:
                log.info("the answer in %s broke off after %d characters; asking again, past what was shown",
                         answer.collection, len(guarded.text))
                replay = Replay(guarded.text)
            reply = self.chat_generator(answer.model).run(messages=prompt, streaming_callback=stream)
            if replay and not replay.caught_up:
                raise Diverged(f"the retry ended within the {len(replay.seen)} characters already streamed")
            return (reply["replies"][0].text or "").strip()

        ended = ""
        try:
            text = resilience.call(
                generate, policy=self._retry, breaker=self.breakers["ollama"],
                # A model that streams past the deadline is answering: not a server failure.
                is_failure=lambda exc: not _past_deadline(exc) and is_unavailable(exc),
                # A retry after text was streamed goes on from there (Replay).
                is_retryable=is_retryable,
            )
        except resilience.CircuitOpen as exc:
            raise ModelUnavailable(str(exc)) from exc
        except Exception as exc:
            if any(isinstance(e, Stopped) for e in resilience.chain(exc)):
                text, ended = guarded.text.lstrip(), STOPPED
            elif _past_deadline(exc) and guarded.text.strip():
                text, ended = guarded.text.lstrip(), CUT_OFF.format(seconds=self.settings.generation_timeout)
            elif _past_deadline(exc) or (is_unavailable(exc) and is_timeout(exc)):
                raise ModelTimeout(f"generation with {answer.model} timed out: {exc}") from exc
            elif is_unavailable(exc):
                raise ModelUnavailable(f"generation with {answer.model} failed: {type(exc).__name__}: {exc}") from exc
            elif isinstance(exc, Diverged):
                raise ModelUnavailable(f"generation with {answer.model} broke off mid-answer: {exc}") from exc
            else:
                raise
        timings["generate"] = time.perf_counter() - started
        return text, prompt, ended

    def _ground(self, answer: Answer, documents: list[Document]) -> None:
        """An answer its cited passages do not support (pipeline/grounding.py) is not shown: the
        asker gets the abstention (and the hand-off where there are experts), the review page the draft."""
        # The passages its text cites; all of them when it cites none (answer.sources then holds the
        # best one only, to show, which is no measure of what the answer rests on).
        numbers = {int(n) for n in CITATION.findall(answer.text)}
        cited = [d for i, d in enumerate(documents, 1) if i in numbers] or documents
        started = time.perf_counter()
        out = self.grounding.run(answer=answer.text, documents=cited)
        answer.timings["ground"] = time.perf_counter() - started
        if out["support"] < min_support(self.settings):
            log.info("answer %s in %s not supported by its passages (%.3f < %.2f): %r", answer.id, answer.collection,
                     out["support"], min_support(self.settings), out["weakest"][:120])
            answer.draft, answer.text, answer.sources = answer.text, ABSTAIN, []
            answer.outcome = Outcome.UNGROUNDED

    def _settle(self, answer: Answer, text: str, prompt: list, guarded: GuardedStream, ended: str) -> None:
        """What the user is shown, and the outcome, sources and prompt recorded with it."""
        answer.prompt = as_messages(prompt)
        answer.context = answer.prompt[-1]["content"]
        if guarded.tripped or self._guard.leaks(text):
            # A small model may abstain and then recite its instructions: that is an abstention.
            if is_abstention(text):
                log.info("the model abstained in %s, then began to recite its instructions: cut off", answer.collection)
                answer.text, answer.outcome = ABSTAIN, Outcome.ABSTAINED
            else:
                log.warning("withheld an answer in %s that repeated the instructions or a secret", answer.collection)
                guarded.say(("\n\n" if guarded.text.strip() else "") + WITHHELD)
                answer.text, answer.outcome = WITHHELD, Outcome.WITHHELD
            return
        if ended == STOPPED:
            # Only what was let through: the guard may be holding back the start of a secret.
            text = guarded.shown.lstrip()
            guarded.say(STOPPED)
            answer.text, answer.outcome = (text + STOPPED).lstrip(), Outcome.STOPPED
            answer.sources = _cited(text, answer.retrieved) if text.strip() else []
            return
        text = guarded.links.render(text)  # what was streamed: links not allowed shown as code
        if only_citations(text):
            # A bare "[1]" (small models do this) tells the user nothing, and an empty reply is an
            # abstention; the guard has held either back, so this is shown instead.
            text = _passage_reply(answer.retrieved, text) if text else ABSTAIN
            guarded.say(text)
        else:
            guarded.finish()
        if ended:
            guarded.say(ended)
            text += ended
        answer.text = text
        answer.outcome = Outcome.ABSTAINED if is_abstention(text) else Outcome.ANSWERED
        answer.sources = _cited(text, answer.retrieved)


def _past_deadline(exc: BaseException) -> bool:
    return any(isinstance(e, PastDeadline) for e in resilience.chain(exc))


def _source(number: int, doc: Document, similarity: float, links: LinkPolicy) -> Source:
    # The section's own heading is shown beside the snippet (Source.section); leave it out here.
    snippet = " ".join(_HEADING.sub("", doc.content).split())
    if len(snippet) > SNIPPET_CHARS:
        snippet = snippet[: SNIPPET_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return Source(
        number=number, title=doc.meta.get("title") or "untitled", path=doc.meta.get("source", ""),
        url=links.source_url(doc.meta.get("url") or ""), snippet=snippet, chunk_id=doc.id, score=round(similarity, 4),
        section=doc.meta.get("section") or "", updated=doc.meta.get("updated") or "",
    )


def _passage_reply(retrieved: list[Source], citations: str) -> str:
    """For an answer that is only citation markers: the first cited passage, quoted."""
    numbers = [int(n) for n in CITATION.findall(citations)]
    source = next((s for s in retrieved if s.number in numbers), retrieved[0])
    return f'The closest passage I found, in "{source.title}": "{source.snippet}" [{source.number}]'




def _cited(text: str, retrieved: list[Source]) -> list[Source]:
    """The sources the answer cites; if it cites none, the best match it was given."""
    if is_abstention(text):
        return []
    numbers = {int(n) for n in CITATION.findall(text)}
    cited = [s for s in retrieved if s.number in numbers]
    return cited or retrieved[:1]
