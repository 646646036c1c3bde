"""One question, start to finish, the same on every chat platform.

The Slack and Discord adapters only parse their platform's events into a `Question` and render
replies through a `Reply`. Everything between is here: the channel's rules (bots.channel_rules:
whether to answer at all, who may ask, which collections, citations required), validation, rate
limits, admission to the bounded pool of generations (a question beyond it gets a clear "busy"
reply rather than an unbounded wait), thread history, asking the pipeline, recording the answer
so that votes find it, the one feedback reminder, metrics, and the reply a user sees when
something fails.

Generations run on this pool's threads, never on a platform's own threads or event loop, so a
burst of questions on one platform cannot delay the acknowledgements of either.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol

from bots.channel_rules import DEFAULT_RULE, ChannelRule, ChannelRules, looks_like_question
from bots.ratelimit import RateLimiter
from core import metrics
from core.answer import STOPPED_NOTE, Answer, Outcome, Turn
from core.errors import TeambotError
from core.settings import Settings
from feedback.store import FeedbackStore
from pipeline.feedback_sources import FeedbackSources

log = logging.getLogger("teambot.conversation")

BUSY = "I'm answering a lot of questions right now. Please try again in a moment."
NOT_ALLOWED = (
    "Sorry, in this channel I only answer questions from the people it is set up for. "
    "A channel admin can add you."
)
CLOSED = "I don't answer questions here. Please ask in one of the team's channels."
NO_SOURCE = (
    "I couldn't find a source for this in the team's documents, and this channel only gets answers that cite one."
)
NO_SOURCE_HELP = " Use *I need more help* below to ask a person."
STOPPED = "Stopped."
REMINDER = "Did that answer help? A 👍 or 👎 under it tells us, and it improves the next answers."


@dataclass(frozen=True)
class Question:
    platform: str
    text: str  # as typed, the bot's mention removed; validated once admitted
    user: str | None
    workspace: str | None  # Slack team, Discord guild
    channel: str
    thread: str  # the conversation: its earlier turns are carried into the answer
    collection: str  # where the platform's settings point; the channel rule's collections come first
    rule: ChannelRule = DEFAULT_RULE
    groups: frozenset[str] = field(default_factory=frozenset)  # the asker's groups among those the rule names
    # Who sees the conversation, as the platform says: public, private_channel or direct_message.
    where: str = "public"

    @property
    def audience(self) -> str:
        """Who could see this answer: recorded with it, so that training later leaves out what was
        not public then, whatever the rules say by that time."""
        if self.rule.private:
            return "private_answer"
        if self.rule.restricted and self.where == "public":
            return "restricted_channel"
        return self.where

    @property
    def collections(self) -> str | tuple[str, ...]:
        found = self.rule.collections or (self.collection,)
        return found[0] if len(found) == 1 else found


@dataclass(frozen=True)
class Refusal:
    """A question not answered by design; `text` is what the asker is told."""

    outcome: str  # not_allowed | invalid | rate_limited | busy
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

    def finish(self, answer: Answer, *, votes: bool, handoff: bool) -> list[str]:
        """Show the answer (with its sources; with 👍/👎 if `votes`, and "I need more help" if
        `handoff`); the ids of its messages, the one carrying the buttons last."""

    def fail(self, text: str) -> None:
        """Show a short error instead of the answer."""

    def remind(self, text: str) -> None:
        """Tell the asker `text` where only they see it (ephemeral, or a direct message)."""


@dataclass
class _Job:
    """An admitted question on its way: what `stop` needs to end it."""

    question: Question
    reply: Reply
    future: Future | None = None  # once queued for a thread


class Answering(Protocol):
    """What the core needs of the answering service (pipeline.querying.AnswerService; tests
    use a scripted one)."""

    def validate(self, question: str) -> str: ...

    def ask(self, question: str, *, collection: str | Sequence[str] | None = None, history: Sequence[Turn] = (),
            on_token: Callable[[str], None] | None = None, stop: threading.Event | None = None,
            place: tuple[str, str] | None = None) -> Answer: ...

    def use_feedback(self, feedback: FeedbackSources | None) -> None: ...


class Conversations:
    """Questions from any platform, answered by a bounded pool of generation threads."""

    def __init__(
        self, settings: Settings, service: Answering | None, store: FeedbackStore | None, *, limiter: RateLimiter | None = None,
        workers: int | None = None, queue: int | None = None, rules: ChannelRules | None = None,
    ) -> None:
        self.settings, self.service, self.store = settings, service, store
        # Feedback helps at once: the service reads votes, reviewers' verdicts and approved
        # corrections from this store, until the bot closes.
        if service is not None:
            service.use_feedback(feedback_from(store))
        self.limiter = limiter or RateLimiter.from_settings(settings)
        self.rules = rules or ChannelRules.from_settings(settings)
        self.reminders = Reminders(store)
        workers = workers or settings.answer_workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="teambot-answer")
        # Generations running plus questions waiting for a thread: past this, "busy".
        self.capacity = workers + (settings.answer_queue if queue is None else queue)
        self._in_flight = 0
        self._changed = threading.Condition()
        # (platform, channel, thread) → the stop switches of its answers waiting or in progress
        self._stops: dict[tuple[str, str, str], dict[threading.Event, _Job]] = {}

    def close(self) -> None:
        """Finish the answers in progress and queued, then stop (reminders not yet due are dropped)."""
        self._pool.shutdown(wait=True)
        self.reminders.close()
        if self.service is not None:  # a service outliving this store stops reading it
            self.service.use_feedback(None)

    def rule_for(self, *keys: str | int | None, direct: bool = False) -> ChannelRule:
        """The rule of the first of `keys` (channel, parent channel, workspace/guild) that has one;
        for a direct message, the rules' `[dm]` (never a channel's or workspace's)."""
        return self.rules.for_dm() if direct else self.rules.for_channel(*keys)

    @staticmethod
    def wanted(rule: ChannelRule, text: str, *, addressed: bool, from_bot: bool = False) -> bool:
        """Is this message for the bot? `addressed`: a mention, a DM, a follow-up in its thread;
        otherwise only a question in a channel whose rule answers plain questions."""
        if from_bot and not rule.answer_bots:
            return False
        return addressed or (rule.respond_to == "questions" and looks_like_question(text))

    def stop(self, platform: str, channel: str, thread: str | None, *, user: str | None = None) -> bool:
        """Stop the answers waiting or in progress in this thread (any thread of the channel when
        None; only those `user` asked, when given): one waiting for a thread is told so and frees its
        place at once; a generation ends at its next token, and its slot with it. False if none."""
        with self._changed:
            found = [(switch, job) for (p, c, t), switches in self._stops.items() if (p, c) == (platform, channel)
                     and thread in (None, t) for switch, job in switches.items() if user in (None, job.question.user)]
            waiting = []
            for switch, job in found:
                switch.set()
                # Still waiting for a thread: cancelled here, once, and told so on a thread of its own
                # (the caller may be a platform's event loop, which the reply needs).
                if job.future is not None and not job.future.cancelled() and job.future.cancel():
                    waiting.append((switch, job))
        for switch, job in waiting:
            threading.Thread(target=self._answer_then_release, args=(job.question, job.reply, switch),
                             name="teambot-stopped", daemon=True).start()
        return bool(found)

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
        if question.rule.closed:
            return self._refuse(question, "not_allowed", CLOSED)
        if not question.rule.allows(question.user, question.groups):
            return self._refuse(question, "not_allowed", NOT_ALLOWED)
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
        # Stoppable from before the reply starts: starting it shows the platform's Stop button.
        job, switch = _Job(question, reply), threading.Event()
        self._remember_stop(job, switch)
        try:
            if thread := reply.start(question.text):
                self._forget_stop(job.question, switch)
                job.question = question = replace(question, thread=thread)
                self._remember_stop(job, switch)
        except Exception as exc:  # noqa: BLE001 - nowhere to answer: nothing more to do
            self._forget_stop(question, switch)
            self._release_slot()
            metrics.observe_error(question.platform, exc)
            log.warning("cannot reply in %s on %s: %s", question.channel, question.platform, exc, exc_info=exc)
            return None
        try:
            job.future = self._pool.submit(self._answer_then_release, question, reply, switch)
        except RuntimeError:  # shutting down: the reply started is ended
            self._forget_stop(question, switch)
            self._release_slot()
            _tell(question, reply, BUSY)
            raise
        return None

    def _remember_stop(self, job: "_Job", switch: threading.Event) -> None:
        q = job.question
        with self._changed:
            self._stops.setdefault((q.platform, q.channel, q.thread), {})[switch] = job

    def _forget_stop(self, question: Question, switch: threading.Event) -> None:
        key = (question.platform, question.channel, question.thread)
        with self._changed:
            switches = self._stops.get(key, {})
            switches.pop(switch, None)
            if not switches:
                self._stops.pop(key, None)

    def _answer_then_release(self, question: Question, reply: Reply, stop: threading.Event) -> None:
        try:
            if stop.is_set():  # stopped while it waited for a thread
                metrics.observe_refusal(question.platform, "stopped")
                _tell(question, reply, STOPPED)
            else:
                self.answer(question, reply, stop)
        finally:
            self._forget_stop(question, stop)
            self._release_slot()

    def answer(self, question: Question, reply: Reply, stop: threading.Event | None = None) -> Answer | None:
        """Answer an admitted question into `reply`: stream, record, show with sources and votes.
        A stopped answer is shown as far as it went, recorded as `stopped`, without buttons."""
        rule = question.rule
        try:
            # Where answers are private, so is a thread's memory: another member replying in it
            # gets the turns they asked, never the first asker's.
            history = self.store.thread_history(
                question.platform, question.channel, question.thread, self.settings.history_turns,
                asker=(question.user or "") if rule.private else None,
            )
            # Where citations are required, nothing is shown before the answer is known to cite.
            answer = self.service.ask(
                question.text, collection=question.collections, history=history,
                on_token=None if rule.citations_required else reply.token, stop=stop,
                place=(question.platform, question.channel or ""),
            )
            if rule.citations_required and answer.outcome is Outcome.ANSWERED and not answer.cited:
                answer = _without_source(answer, rule)
            elif rule.citations_required and answer.outcome is Outcome.STOPPED:  # held back, never shown
                answer = replace(answer, text=STOPPED_NOTE, sources=[])
        except Exception as exc:  # noqa: BLE001 - the asker gets a reply and the bot stays up
            self._failed(question, reply, exc)
            return None
        # Recorded before the buttons appear, so that even an instant vote finds its answer.
        recorded = self._record(question, answer, reply.message_id)
        votes = recorded and answer.outcome is not Outcome.STOPPED
        try:
            shown = reply.finish(answer, votes=votes, handoff=votes and rule.has_experts)
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
        if votes and question.user and rule.feedback_reminder_minutes:
            self.reminders.schedule(rule.feedback_reminder_minutes * 60, answer.id, question.platform, reply.remind)
        log.info("answered %s on %s in %.1fs with %d source(s)", answer.id, question.platform,
                 answer.timings.get("total", 0.0), len(answer.sources))
        return answer

    def _record(self, question: Question, answer: Answer, message_id: str | None) -> bool:
        try:
            self.store.record_answer(
                answer, platform=question.platform, user_id=question.user, workspace=question.workspace,
                channel=question.channel, thread=question.thread, message_id=message_id, audience=question.audience,
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
        _tell(question, reply, text)


def _tell(question: Question, reply: Reply, text: str) -> None:
    """Show `text` instead of an answer (an error, or that it was stopped before it began)."""
    try:
        reply.fail(text)
    except Exception as error:  # noqa: BLE001
        log.error("could not post an error reply in %s: %s", question.channel, error)


def _without_source(answer: Answer, rule: ChannelRule) -> Answer:
    """What a citations-only channel is shown instead of an answer that cites nothing."""
    text = NO_SOURCE + (NO_SOURCE_HELP if rule.has_experts else "")
    log.info("answer %s cites no document: not shown in a citations-only channel", answer.id)
    return replace(answer, text=text, sources=[], outcome=Outcome.UNCITED)


class Reminders:
    """One "did that help?" per answer that got no vote in time, sent from a thread of its own.

    The store decides (`claim_reminder`): an answer voted on meanwhile, or reminded already by
    another process, is skipped. Reminders not yet due when the bot stops are dropped: a missed
    reminder is better than a second one."""

    def __init__(self, store) -> None:
        self.store = store
        self._due: list[tuple[float, int, str, str, Callable[[str], None]]] = []
        self._count = 0
        self._closed = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def schedule(self, delay: float, answer_id: str, platform: str, send: Callable[[str], None]) -> None:
        with self._changed:
            if self._closed:
                return
            self._count += 1
            heapq.heappush(self._due, (time.monotonic() + delay, self._count, answer_id, platform, send))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="teambot-reminders", daemon=True)
                self._thread.start()
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _next(self):
        with self._changed:
            while not self._closed:
                wait = self._due[0][0] - time.monotonic() if self._due else None
                if wait is not None and wait <= 0:
                    return heapq.heappop(self._due)
                self._changed.wait(wait)
        return None

    def _run(self) -> None:
        while (due := self._next()) is not None:
            _, _, answer_id, platform, send = due
            try:
                if self.store.claim_reminder(answer_id):
                    send(REMINDER)
                    metrics.observe_reminder(platform)
            except Exception:  # noqa: BLE001 - a reminder is a nicety: never more than a log line
                log.exception("could not remind the asker of answer %s", answer_id)


def feedback_from(store: FeedbackStore) -> FeedbackSources:
    from feedback.reviews import ReviewStore
    from pipeline.reviewed import Reviewed

    reviews = ReviewStore(store)

    def reviewed_answers(collection: str) -> list[Reviewed]:
        # Follow-ups are left out: "and for contractors?" means what its thread said, and only first
        # questions are matched.
        # Kept to its conversation unless everyone could read it there (answers before 0007 did not say).
        return [Reviewed(answer.id, answer.question, review.correction, list(answer.sources or []),
                         frozenset(answer.collection.split("+")),
                         None if answer.audience == "public" else (answer.platform, answer.channel or ""),
                         review.updated_at.timestamp() if review.updated_at else 0.0)
                for answer, review in reviews.approved_corrections(collection)
                if sum(1 for m in answer.prompt or [] if isinstance(m, dict) and m.get("role") == "user") <= 1]

    return FeedbackSources(document_votes=store.document_votes, document_overrides=reviews.document_overrides,
                           reviewed_answers=reviewed_answers)
