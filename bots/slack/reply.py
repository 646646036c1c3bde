"""How one answer appears in a Slack thread.

Each answer is an agent session of its thread (`agents.sessions.setStatus`): `processing` while
the bot works, which gives the asker Slack's Stop button (bots.slack.app stops the answer on
`agent_session_stopped`), titled with the first question, and `active` again once the answer is
shown (a stream's stop does that; anything else sets it). The thread also shows a loading status
("is thinking…", with loading messages; `assistant.threads.setStatus`), which Slack clears when a
message appears or after two minutes without one: it is set again while nothing is shown yet (an
answer held back until it is known to cite a source, a slow start). The answer
streams with Slack's chat streaming API (`chat.startStream` / `appendStream` / `stopStream`,
through slack_sdk's `ChatStream`); the sources and the 👍/👎 `feedback_buttons` go in the
final `stopStream` blocks. The generation thread only hands tokens over: a background sender
makes the calls, so a slow or rate-limited Slack never slows the generation.

Every answer is delivered whole. A message holds at most MARKDOWN_LIMIT characters: the answer
continues in the next message of the thread, and a stream nearing Slack's lifetime for streams
is closed and continued the same way. When Slack refuses a stream (rate limited past the
retries, message_not_found, msg_too_long, a stream that expired), the rest of the answer is
posted as new messages with `markdown` blocks instead, and the stuck partial one is deleted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web.chat_stream import ChatStream

from bots.formatting import FENCE, fill
from bots.ratelimit import TokenBucket
from bots.slack.blocks import MARKDOWN_LIMIT, answer_tail, defuse_mentions, escape, markdown_messages
from core.answer import STOPPED_NOTE, Answer, Outcome

log = logging.getLogger("teambot.slack")

STATUS = "is thinking…"
LOADING_MESSAGES = ["Searching the team's documents…", "Reading the best passages…", "Writing the answer…"]
FLUSH_INTERVAL = 1.0  # seconds between appends to one stream
FLUSH_CHARS = 1500  # …or sooner, once this much is waiting
STREAM_MAX_AGE = 240.0  # seconds; Slack ends a stream about 5 minutes after it started
APPENDS_PER_MINUTE = 90  # chat.appendStream is Tier 4 (100+ a minute per workspace): kept below
STREAMS_PER_MINUTE = 18  # chat.startStream and chat.stopStream are Tier 2 (20+ a minute each): one of each a stream
STATUS_REFRESH = 100.0  # seconds; Slack clears a loading status after two minutes without a message
TITLE_CHARS = 200  # agents.sessions.setStatus's limit
_FENCE_ROOM = len("\n" + FENCE)


class StreamBudget:
    """Slack's rate limits on streaming, shared by every answer in this process: appends (an
    answer whose turn has not come keeps collecting text, so many answers at once make fewer,
    longer appends) and streams (a start and its stop; an answer that finds none left is posted
    whole once it is complete, instead of running into Slack's limit)."""

    def __init__(self, appends_per_minute: float = APPENDS_PER_MINUTE,
                 streams_per_minute: float = STREAMS_PER_MINUTE) -> None:
        self._appends = TokenBucket(appends_per_minute, time.monotonic())
        self._streams = TokenBucket(streams_per_minute, time.monotonic())
        self._lock = threading.Lock()

    def take(self) -> bool:
        """One append."""
        with self._lock:
            return self._appends.take(time.monotonic())

    def take_stream(self) -> bool:
        """One stream: its start and its stop."""
        with self._lock:
            return self._streams.take(time.monotonic())


class NoStreamLeft(Exception):
    """The process has used its share of chat.startStream for now: the answer is posted instead."""


@dataclass
class _Part:
    """One message of the answer and the text meant for it (a reopened code fence included)."""

    stream: ChatStream
    text: str = ""
    opened: float = 0.0  # when its stream started; 0 until then
    done: bool = False  # stopped: Slack shows it as a finished message


class _Sender:
    """Streams text into Slack on a thread of its own: the first words at once, then at most one
    append per FLUSH_INTERVAL (and budget token); what is left goes with `send(last=True)`."""

    def __init__(self, client: WebClient, channel: str, thread: str, recipient: tuple[str | None, str | None],
                 budget: StreamBudget, refresh_status: Callable[[], None]) -> None:
        self.client, self.channel, self.thread, self.budget = client, channel, thread, budget
        self.user, self.team = recipient
        self.refresh_status = refresh_status
        self.parts: list[_Part] = []
        self.received = ""  # the answer as generated
        self.unsent = ""  # text given to `send` and not yet to a message (kept when Slack refuses it)
        self.failed: Exception | None = None  # SlackApiError, or NoStreamLeft
        self._pending = ""
        self._sent_at = 0.0
        self._status_at = time.monotonic()
        self._closed = False
        self._changed = threading.Condition()
        self._worker = threading.Thread(target=self._run, name="teambot-slack-stream", daemon=True)
        self._worker.start()

    def add(self, text: str) -> None:
        with self._changed:
            if not self.received:
                text = text.lstrip()  # an answer starts at its first word
            self.received += text
            self._pending = defuse_mentions(self._pending + text)  # also a mention split over two tokens
            self._changed.notify()

    def close(self) -> str:
        """Stop the background sends; what they had not sent yet."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._worker.join()
        rest, self._pending = self._pending, ""
        return rest

    def _next_batch(self) -> str | None:
        """Wait for text worth sending now ("" when the status is due again); None once closed."""
        with self._changed:
            while not self._closed:
                shown = any(p.stream.ts for p in self.parts)
                if not shown and time.monotonic() - self._status_at >= STATUS_REFRESH:
                    self._status_at = time.monotonic()
                    return ""
                # A trailing "<" waits: the next token may make it a mention that has to be defused.
                ready = self._pending.rstrip("<")
                first = not self.parts
                due = first or len(ready) >= FLUSH_CHARS or time.monotonic() - self._sent_at >= FLUSH_INTERVAL
                if ready.strip() and due and self.failed is None and (first or self.budget.take()):
                    self._pending = self._pending[len(ready):]
                    self._sent_at = time.monotonic()
                    return ready
                self._changed.wait(FLUSH_INTERVAL / 4)
        return None

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            if not batch:
                self.refresh_status()
                continue
            try:
                self.send(batch)
            except (SlackApiError, NoStreamLeft) as exc:
                self.failed = exc
                log.warning("streaming an answer in %s failed: %s", self.channel, _error(exc))

    def send(self, text: str, *, last: bool = False, blocks: list[dict] | None = None) -> None:
        """Append `text` to the answer's messages: a full (or old) message is stopped and the text
        goes on in the next. With `last`, the final message is stopped with `blocks` under it."""
        self.unsent += text
        while True:
            part = self.parts[-1] if self.parts and not self.parts[-1].done else self._open()
            aged = part.opened and time.monotonic() - part.opened > STREAM_MAX_AGE
            room = MARKDOWN_LIMIT - _FENCE_ROOM - len(part.text)
            head, rest = ("", self.unsent) if aged else fill(part.text, self.unsent, room)
            if not rest:
                break
            self.unsent = rest
            self._stop(part, head)
        self.unsent = ""
        if last:
            self._stop(part, head, blocks)
        elif head:
            self._append(part, head)

    def end_with(self, note: str) -> bool:
        """Stop the open stream with `note` at its end; False if none is open or Slack refuses."""
        part = self.parts[-1] if self.parts else None
        if part is None or part.done or not part.stream.ts or self.failed is not None:
            return False
        try:
            self._stop(part, note)
            return True
        except SlackApiError as exc:
            log.info("could not end the answer in %s with its error: %s", self.channel, exc.response.get("error"))
            return False

    def stuck_text(self) -> str:
        """What Slack has not shown as finished: the unfinished messages' text and the unsent."""
        return "\n".join(p.text for p in self.parts if not p.done) + self.unsent

    # ------------------------------------------------------------------ Slack calls

    def _open(self) -> _Part:
        if not self.budget.take_stream():
            raise NoStreamLeft("no chat.startStream left this minute")
        stream = self.client.chat_stream(
            channel=self.channel, thread_ts=self.thread, recipient_user_id=self.user, recipient_team_id=self.team,
            buffer_size=1,  # the batching is ours: each append goes out at once
        )
        self.parts.append(part := _Part(stream))
        return part

    def _append(self, part: _Part, text: str) -> None:
        part.text += text  # before the call: if Slack refuses it, it is posted instead
        part.opened = part.opened or time.monotonic()
        part.stream.append(markdown_text=text)

    def _stop(self, part: _Part, text: str, blocks: list[dict] | None = None) -> None:
        part.text += text
        part.opened = part.opened or time.monotonic()
        part.stream.stop(markdown_text=text or None, blocks=blocks or None)
        part.done = True


class SlackReply:
    """An answer in a Slack thread: session and status, streamed answer, sources and feedback.
    For `/ask` (`asked_by`), the bot first posts the question itself and answers in that
    message's thread."""

    def __init__(self, client: WebClient, channel: str, thread: str | None, *, user: str | None, team: str | None,
                 budget: StreamBudget, asked_by: str | None = None) -> None:
        self.client, self.channel, self.thread = client, channel, thread
        self.user, self.team, self.budget, self.asked_by = user, team, budget, asked_by
        self._sender: _Sender | None = None

    @property
    def message_id(self) -> str | None:
        parts = self._sender.parts if self._sender else []
        return parts[0].stream.ts if parts else None

    def start(self, question: str) -> str | None:
        new_thread = None
        if self.asked_by:
            text = f"<@{self.asked_by}> asked: {escape(question)}"
            self.thread = new_thread = self.client.chat_postMessage(channel=self.channel, text=text)["ts"]
        self._session("processing", title=_title(question))
        self._show_status()
        self._sender = _Sender(self.client, self.channel, self.thread, (self.user, self.team), self.budget,
                               self._show_status)
        return new_thread

    def token(self, delta: str) -> None:
        self._sender.add(delta)

    def finish(self, answer: Answer, *, votes: bool, handoff: bool = False) -> list[str]:
        sender = self._sender
        if answer.outcome is Outcome.STOPPED:
            return self._stopped(sender)
        shown = sender.received.lstrip()
        tail = answer_tail(answer, votes=votes, handoff=handoff)
        if not answer.text.startswith(shown):  # withheld by the leak guard after it began: replaced
            sender.close()
            return self._replace(sender, answer.text, tail)
        sender.add(answer.text[len(shown):])  # what was not streamed (an answer given whole)
        rest = sender.close()
        if sender.failed is None:
            try:
                sender.send(rest, last=True, blocks=tail)  # the stream's stop ends the session's processing
                return [p.stream.ts for p in sender.parts]
            except (SlackApiError, NoStreamLeft) as exc:
                log.warning("finishing the answer in %s failed (%s); posting it instead", self.channel, _error(exc))
        else:
            sender.unsent += rest
        return self._post_instead(sender, tail)

    def _stopped(self, sender: _Sender) -> list[str]:
        """The asker stopped the answer: what was shown stays (Slack has ended a stream it was
        showing), with a note that it stopped; nothing more is sent."""
        sender.close()
        # The note may have gone out already (a stop before the first word: it was the first batch).
        said = STOPPED_NOTE in "".join(p.text for p in sender.parts)
        if sender.end_with("" if said else f"\n\n{STOPPED_NOTE}"):
            return [p.stream.ts for p in sender.parts if p.stream.ts]
        posted = None if said else self._post(STOPPED_NOTE)
        if said:
            self._session("active")
        return [p.stream.ts for p in sender.parts if p.stream.ts] + ([posted] if posted else [])

    def _replace(self, sender: _Sender, text: str, tail: list[dict]) -> list[str]:
        """Take back every message of the answer so far and show `text` instead."""
        for part in sender.parts:
            if part.stream.ts and not part.done:
                try:  # ended first, so that a failed delete does not leave it streaming
                    part.stream.stop()
                except SlackApiError as exc:
                    log.info("could not end a stream: %s", exc.response.get("error"))
            part.done, part.text = False, ""  # unfinished and empty: deleted, and `text` posted in its place
        sender.unsent = text
        return self._post_instead(sender, tail)

    def _post_instead(self, sender: _Sender, tail: list[dict]) -> list[str]:
        """What Slack did not finish showing, as new messages; the unfinished ones are removed."""
        posted = [
            self.client.chat_postMessage(channel=self.channel, thread_ts=self.thread, text=text, blocks=blocks)["ts"]
            for text, blocks in markdown_messages(sender.stuck_text().strip(), tail)
        ]
        for part in sender.parts:
            if not part.done and part.stream.ts:
                try:
                    self.client.chat_delete(channel=self.channel, ts=part.stream.ts)
                except SlackApiError as exc:
                    log.info("could not remove an unfinished answer message: %s", exc.response.get("error"))
        self._session("active")  # no stream's stop did it
        return [p.stream.ts for p in sender.parts if p.done] + posted

    def fail(self, text: str) -> None:
        if self._sender is not None:
            self._sender.close()
            if self._sender.end_with(f"\n\n_{text}_"):  # the words already streamed stay, with why they stop
                return
        self.client.chat_postMessage(channel=self.channel, thread_ts=self.thread, text=text)
        self._session("active")

    def remind(self, text: str) -> None:
        whom = self.asked_by or self.user
        if whom:
            self.client.chat_postEphemeral(channel=self.channel, user=whom, thread_ts=self.thread, text=text)

    # ------------------------------------------------------------------ the thread's state

    def _session(self, status: str, title: str | None = None) -> None:
        """The thread's agent session: `processing` shows Slack's Stop button; the title is kept
        from the first answer of the thread (Slack ignores it on an existing session)."""
        try:
            asker = self.asked_by or self.user or ""
            self.client.agents_sessions_setStatus(
                channel_id=self.channel, thread_ts=self.thread, status=status, title=title,
                # The one who gets the Stop button: a person (another app's bot id is none).
                initiator_user_id=asker if title and asker[:1] in ("U", "W") else None,
            )
        except SlackApiError as exc:  # only the session is missing: the answer can still be shown
            log.warning("could not set the session %s in %s: %s", status, self.channel, exc.response.get("error"))

    def _show_status(self) -> None:
        try:
            self.client.assistant_threads_setStatus(
                channel_id=self.channel, thread_ts=self.thread, status=STATUS, loading_messages=LOADING_MESSAGES,
            )
        except SlackApiError as exc:  # only the status is missing: the answer can still be posted
            log.warning("could not show the status in %s: %s", self.channel, exc.response.get("error"))

    def _post(self, text: str) -> str | None:
        try:
            ts = self.client.chat_postMessage(channel=self.channel, thread_ts=self.thread, text=text)["ts"]
        except SlackApiError as exc:
            log.warning("could not post in %s: %s", self.channel, exc.response.get("error"))
            ts = None
        self._session("active")
        return ts


def _title(question: str) -> str:
    title = " ".join(question.split())
    return title if len(title) <= TITLE_CHARS else title[: TITLE_CHARS - 1] + "…"


def _error(exc: Exception) -> str:
    return exc.response.get("error") if isinstance(exc, SlackApiError) else str(exc)


class SlackPrivateReply:
    """An answer only its asker sees (a channel whose rule is `private`): an ephemeral message in
    the question's thread, with "Share with the channel". Ephemeral messages cannot be streamed or
    edited, so the answer is posted once it is complete; a short note says it is on its way."""

    WORKING = "Looking that up… only you will see the answer."

    def __init__(self, client: WebClient, channel: str, thread: str | None, *, user: str) -> None:
        self.client, self.channel, self.thread, self.user = client, channel, thread, user
        self.message_id = None  # an ephemeral message has no ts that reactions or replies could find

    def _ephemeral(self, text: str, blocks: list[dict] | None = None) -> None:
        self.client.chat_postEphemeral(channel=self.channel, user=self.user, thread_ts=self.thread, text=text,
                                       blocks=blocks)

    def start(self, question: str) -> None:
        self._ephemeral(self.WORKING)

    def token(self, delta: str) -> None:
        pass  # shown whole, in finish

    def finish(self, answer: Answer, *, votes: bool, handoff: bool = False) -> list[str]:
        tail = answer_tail(answer, votes=votes, handoff=handoff, share=votes and not answer.abstained)
        for text, blocks in markdown_messages(answer.text.strip(), tail):
            self._ephemeral(text, blocks)
        return []

    def fail(self, text: str) -> None:
        self._ephemeral(text)

    def remind(self, text: str) -> None:
        self._ephemeral(text)


def ephemeral(client: WebClient, channel: str | None, user: str | None, thread: str | None, text: str,
              blocks: list[dict] | None = None) -> None:
    """Tell `user` something only they see, under `thread`; a failure is only logged."""
    if not channel or not user:
        return
    try:
        client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread, text=text, blocks=blocks)
    except SlackApiError as exc:
        log.warning("could not tell %s: %s", user, exc.response.get("error"))
