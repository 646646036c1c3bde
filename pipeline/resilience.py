"""Retries with backoff for transient failures, and a circuit breaker per server.

A call to Weaviate or Ollama that fails on something that may pass (connection refused while a
server restarts, a 503 while a model loads) is tried again after a short, growing, jittered
wait. When a server keeps failing, its breaker opens: questions fail fast with a clear reply
for a cool-down instead of each one waiting on a dead server, then a single trial call decides
whether the server is back.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("teambot.resilience")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitOpen(RuntimeError):
    """The server failed too often lately; it is not being called until the cool-down ends."""

    def __init__(self, breaker: "CircuitBreaker") -> None:
        super().__init__(
            f"{breaker.name}: circuit open after {breaker.failures} consecutive failures; "
            f"next trial in {breaker.retry_in():.0f}s"
        )
        self.breaker = breaker


class CircuitBreaker:
    """Closed → (N consecutive failures) → open → (cool-down) → half-open → one trial call:
    success closes it, failure opens it again. Thread-safe; `clock` is injectable for tests."""

    def __init__(
        self, name: str, failure_threshold: int = 5, cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = max(1, failure_threshold)
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def failures(self) -> int:
        return self._failures

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        return HALF_OPEN if self._clock() - self._opened_at >= self.cooldown else OPEN

    def retry_in(self) -> float:
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self.cooldown - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a call go through now? In half-open state only one trial at a time does."""
        with self._lock:
            state = self._state()
            if state == CLOSED:
                return True
            if state == HALF_OPEN and not self._trial_running:
                self._trial_running = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            if self._opened_at is not None:
                log.info("%s: answering again; circuit closed", self.name)
            self._failures = 0
            self._opened_at = None
            self._trial_running = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial_running or self._failures >= self.failure_threshold:
                if self._opened_at is None or self._trial_running:
                    log.warning(
                        "%s: circuit open after %d consecutive failures; failing fast for %.0fs",
                        self.name, self._failures, self.cooldown,
                    )
                self._opened_at = self._clock()
            self._trial_running = False

    def release(self) -> None:
        """The call ended without saying anything about the server's health."""
        with self._lock:
            self._trial_running = False

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {"state": self._state(), "consecutive_failures": self._failures}


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3  # tries in all, the first included
    backoff: float = 0.5  # seconds before the first retry; doubles each time
    max_backoff: float = 8.0

    def delay(self, retry: int) -> float:
        """Wait before retry number `retry` (1-based): exponential, with jitter so that many
        waiting callers do not come back at the same instant."""
        base = min(self.max_backoff, self.backoff * 2 ** (retry - 1))
        return base * random.uniform(0.5, 1.0)


def call(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    breaker: CircuitBreaker | None = None,
    is_failure: Callable[[BaseException], bool],
    is_retryable: Callable[[BaseException], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `fn`, retrying retryable failures with backoff, under `breaker`.

    `is_failure` tells server failures (which count against the breaker) from other errors
    (a bug, bad input: raised at once, the breaker untouched). `is_retryable` narrows which
    failures are worth another try (default: all); a timeout, for one, already waited long.
    Raises CircuitOpen without calling `fn` while the breaker is open.
    """
    if breaker is not None and not breaker.allow():
        raise CircuitOpen(breaker)
    retryable = is_retryable or is_failure
    attempt = 1
    while True:
        try:
            result = fn()
        except BaseException as exc:
            failed = is_failure(exc)
            if failed and attempt < policy.attempts and retryable(exc):
                wait = policy.delay(attempt)
                log.info(
                    "%s call failed (%s); retry %d of %d in %.2fs", breaker.name if breaker else "a",
                    type(exc).__name__, attempt, policy.attempts - 1, wait,
                )
                sleep(wait)
                attempt += 1
                continue
            if breaker is not None:
                breaker.record_failure() if failed else breaker.release()
            raise
        if breaker is not None:
            breaker.record_success()
        return result


# ---------------------------------------------------------------------- what kind of failure


def chain(exc: BaseException | None):
    """The exception and those it wraps, at most ten deep."""
    seen = 0
    while exc is not None and seen < 10:
        yield exc
        exc = exc.__cause__ or exc.__context__
        seen += 1


def is_unavailable(exc: BaseException) -> bool:
    """True when the error (or one it wraps) comes from talking to Weaviate or Ollama."""
    import grpc
    import httpx
    import ollama
    from haystack.document_stores.errors import DocumentStoreError
    from weaviate.exceptions import WeaviateBaseError

    kinds = (WeaviateBaseError, DocumentStoreError, ollama.ResponseError, httpx.HTTPError, grpc.RpcError,
             ConnectionError, TimeoutError)
    return any(isinstance(e, kinds) for e in chain(exc))


def is_timeout(exc: BaseException) -> bool:
    return any(
        isinstance(e, TimeoutError) or "timeout" in type(e).__name__.lower() or "timed out" in str(e).lower()
        or "deadline" in str(e).lower()
        for e in chain(exc)
    )


def is_retryable(exc: BaseException) -> bool:
    """Worth another try soon: refused connections, 5xx/429 answers. Not a timeout (it already
    waited long), not a 4xx such as an unknown model."""
    import ollama

    if not is_unavailable(exc) or is_timeout(exc):
        return False
    for e in chain(exc):
        status = getattr(e, "status_code", None)
        if isinstance(e, ollama.ResponseError) and status is not None and status != -1:
            return status >= 500 or status == 429
    return True


def is_missing_collection(exc: BaseException) -> bool:
    """Weaviate says the collection does not exist (a 404 on its schema, or a search of an unknown class)."""
    return any(getattr(e, "status_code", None) == 404 or "could not find class" in str(e) for e in chain(exc))
