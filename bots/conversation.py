"""One question, start to finish, the same on every chat platform.

The Slack and Discord adapters only parse their platform's events into a `Question` and render
replies through a `Reply`. Everything between is here: validation, rate limits, admission to the
bounded pool of generations (a question beyond it gets a clear "busy" reply rather than an
unbounded wait), thread history, asking the pipeline, recording the answer so that votes find it,
metrics, and the reply a user sees when something fails.

Generations run on this pool's threads, never on a platform's own threads or event loop, so a
burst of questions on one platform cannot delay the acknowledgements of either.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from bots.ratelimit import RateLimiter
from core import metrics
from core.answer import Answer
from core.errors import TeambotError
from core.settings import Settings

log = logging.getLogger("teambot.conversation")

BUSY = "I'm answering a lot of questions right now. Please try again in a moment."


@dataclass(frozen=True)
class Question:
    platform: str
    text: str  # as typed, the bot's mention removed; validated once admitted
    user: str | None
    workspace: str | None  # Slack team, Discord guild
    channel: str
    thread: str  # the conversation: its earlier turns are carried into the answer
    collection: str


@dataclass(frozen=True)
class Refusal:
    """A question not answered by design; `text` is what the asker is told."""

    outcome: str  # invalid | rate_limited | busy
    text: str


class Reply(Protocol):
    """How a platform shows one answer. `start` runs on the adapter's thread when the question is
    admitted and must not wait for the platform's event loop; the others run on a pool thread."""

    message_id: str | None  # the message that will carry the answer, once known (votes find it by this)

    def start(self, question: str) -> str | None:
        """Show that the bot is on it (a placeholder, typing); raises if nothing can be posted.
        Returns the conversation's thread when showing the question started a new one."""

    def token(self, delta: str) -> None:
        """More of the answer, as it is generated."""

    def finish(self, answer: Answer, *, votes: bool) -> list[str]:
        """Show the answer (with its sources; with 👍/👎 if `votes`); the ids of its messages, the
        one carrying the votes last."""

    def fail(self, text: str) -> None:
        """Show a short error instead of the answer."""


class Conversations:
    """Questions from any platform, answered by a bounded pool of generation threads."""

    def __init__(
        self, settings: Settings, service, store, *, limiter: RateLimiter | None = None,
        workers: int | None = None, queue: int | None = None,
    ) -> None:
        self.settings, self.service, self.store = settings, service, store
        self.limiter = limiter or RateLimiter.from_settings(settings)
        workers = workers or settings.answer_workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="teambot-answer")
        # Generations running plus questions waiting for a thread: past this, "busy".
        self.capacity = workers + (settings.answer_queue if queue is None else queue)
        self._in_flight = 0
        self._changed = threading.Condition()

    def close(self) -> None:
        """Finish the answers in progress and queued, then stop."""
        self._pool.shutdown(wait=True)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no admitted question is waiting or being answered; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._in_flight == 0, timeout)

    def _take_slot(self) -> bool:
        with self._changed:
            if self._in_flight >= self.capacity:
                return False
            self._in_flight += 1
            return True

    def _release_slot(self) -> None:
        with self._changed:
            self._in_flight -= 1
            self._changed.notify_all()

    def submit(self, question: Question, reply: Reply) -> Refusal | None:
        """Admit a question and queue its answer; or say why not (the adapter shows the refusal,
        each platform in its own way)."""
        admitted = self.admit(question)
        if isinstance(admitted, Refusal):
            return admitted
        self.enqueue(admitted, reply)
        return None

    def admit(self, question: Question) -> Question | Refusal:
        """The question, validated and holding a place in the pool; or why it is not answered.
        An admitted question must be passed to `enqueue`."""
        try:
            text = self.service.validate(question.text)
        except TeambotError as exc:
            return self._refuse(question, "invalid", exc.user_message)
        # A place in the pool first: a "busy" refusal must not spend the asker's rate-limit tokens.
        if not self._take_slot():
            return self._refuse(question, "busy", BUSY)
        if limited := self.limiter.check(question.user, question.channel):
            self._release_slot()
            return self._refuse(question, "rate_limited", limited)
        return replace(question, text=text)

    def enqueue(self, question: Question, reply: Reply) -> None:
        """Start the reply to an admitted question and queue its answer."""
        try:
            if thread := reply.start(question.text):
                question = replace(question, thread=thread)
        except Exception as exc:  # noqa: BLE001 - nowhere to answer: nothing more to do
            self._release_slot()
            metrics.observe_error(question.platform, exc)
            log.warning("cannot reply in %s on %s: %s", question.channel, question.platform, exc, exc_info=exc)
            return None
        try:
            self._pool.submit(self._answer_then_release, question, reply)
        except RuntimeError:  # shutting down
            self._release_slot()
            raise
        return None

    def _answer_then_release(self, question: Question, reply: Reply) -> None:
        try:
            self.answer(question, reply)
        finally:
            self._release_slot()

    def answer(self, question: Question, reply: Reply) -> Answer | None:
        """Answer an admitted question into `reply`: stream, record, show with sources and votes."""
        try:
            history = self.store.thread_history(
                question.platform, question.channel, question.thread, self.settings.history_turns
            )
            answer = self.service.ask(
                question.text, collection=question.collection, history=history, on_token=reply.token,
            )
        except Exception as exc:  # noqa: BLE001 - the asker gets a reply and the bot stays up
            self._failed(question, reply, exc)
            return None
        # Recorded before the buttons appear, so that even an instant vote finds its answer.
        recorded = self._record(question, answer, reply.message_id)
        try:
            shown = reply.finish(answer, votes=recorded)
        except Exception as exc:  # noqa: BLE001
            self._failed(question, reply, exc)
            return answer
        metrics.observe_answer(question.platform, answer)
        if recorded and shown:
            *parts, buttons = shown
            try:  # a reaction or a reply on any part of a split answer is about that answer
                self.store.set_message_id(answer.id, buttons, parts=parts)
            except Exception:  # noqa: BLE001 - the answer is shown; only later votes may miss it
                log.exception("could not note the messages of answer %s", answer.id)
        log.info("answered %s on %s in %.1fs with %d source(s)", answer.id, question.platform,
                 answer.timings.get("total", 0.0), len(answer.sources))
        return answer

    def _record(self, question: Question, answer: Answer, message_id: str | None) -> bool:
        try:
            self.store.record_answer(
                answer, platform=question.platform, user_id=question.user, workspace=question.workspace,
                channel=question.channel, thread=question.thread, message_id=message_id,
            )
            return True
        except Exception:  # noqa: BLE001 - the answer is still worth showing, only without votes
            log.exception("could not record answer %s", answer.id)
            return False

    @staticmethod
    def _refuse(question: Question, outcome: str, text: str) -> Refusal:
        metrics.observe_refusal(question.platform, outcome)
        return Refusal(outcome, text)

    @staticmethod
    def _failed(question: Question, reply: Reply, exc: BaseException) -> None:
        metrics.observe_error(question.platform, exc)
        if isinstance(exc, TeambotError):
            log.warning("could not answer in %s on %s: %s", question.channel, question.platform, exc)
            text = exc.user_message
        else:
            log.error("answering in %s on %s failed", question.channel, question.platform, exc_info=exc)
            text = TeambotError.user_message
        try:
            reply.fail(text)
        except Exception as error:  # noqa: BLE001
            log.error("could not post an error reply in %s: %s", question.channel, error)
