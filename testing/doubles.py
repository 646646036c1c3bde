"""The one stand-in for the model in tests: `ScriptedAnswers` says what it is told to.

Two ways to use it:
- offline (default): the real `validate`, then the scripted reply streamed in pieces; no
  embedder and no servers. For adapter tests, where the subject is the platform side and an
  answer longer than the model's token cap, or an exact one, is needed on demand.
- `pipeline=True`: the whole real AnswerService (embedder, Weaviate hybrid search, relevance
  gate, prompt builder, leak guard, retries, deadline) with the scripted chat generator in
  Ollama's place: for feeding it odd input by the hundred, or making the model misbehave at will
  (recite its system prompt, repeat a secret), which the real CPU-bound model cannot be made to.

Either way it records what it was asked (`calls`), and with `pipeline=True` the prompts the
model was given (`prompts`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from haystack import component
from haystack.dataclasses import ChatMessage, StreamingChunk

from core.answer import Answer, Outcome, Source
from pipeline.querying import STOPPED, AnswerService

LEDGERLY = "Expense claims go in Ledgerly within 30 days [1]."
EXPENSES = Source(
    number=1, title="Expenses and Reimbursement", path="/handbook/expenses.md", snippet="Submit claims in Ledgerly…",
    chunk_id="expenses-0", score=0.71, section="Submitting a claim", url="https://handbook.example.com/expenses",
)
Reply = str | Sequence[str] | Callable[[str], str]


@component
class ScriptedChatGenerator:
    """In Ollama's place: streams the service's reply in pieces, as the real generator does."""

    def __init__(self, service: "ScriptedAnswers") -> None:
        self.service = service

    @component.output_types(replies=list[ChatMessage])
    def run(self, messages: list[ChatMessage], streaming_callback=None) -> dict:
        self.service.prompts.append(messages)
        pieces = self.service.pieces(messages[-1].text or "")
        for piece in pieces:
            if streaming_callback is not None:
                streaming_callback(StreamingChunk(content=piece))
            time.sleep(self.service.delay)
        return {"replies": [ChatMessage.from_assistant("".join(pieces))]}


class ScriptedAnswers(AnswerService):
    def __init__(
        self, settings, reply: Reply = LEDGERLY, *, pipeline: bool = False, sources: Sequence[Source] = (EXPENSES,),
        piece_chars: int = 40, delay: float = 0.0,
    ) -> None:
        self.pipeline = pipeline
        if pipeline:
            super().__init__(settings)
        else:
            self.settings = settings  # no embedder, no servers
        self.reply, self.sources, self.piece_chars, self.delay = reply, list(sources), piece_chars, delay
        self.calls: list[dict] = []
        self.prompts: list[list[ChatMessage]] = []

    def pieces(self, question: str) -> list[str]:
        """The reply to `question` as streamed: the given pieces, or `piece_chars` at a time."""
        if callable(self.reply):
            text = self.reply(question)
        elif isinstance(self.reply, str):
            text = self.reply
        else:
            return list(self.reply)
        return [text[i : i + self.piece_chars] for i in range(0, len(text), self.piece_chars)] or [""]

    def chat_generator(self, model: str) -> ScriptedChatGenerator:
        return ScriptedChatGenerator(self)

    def use_feedback(self, feedback) -> None:
        if self.pipeline:  # a scripted reply reads no feedback
            super().use_feedback(feedback)

    def ask(self, question, *, collection=None, history=(), on_token=None, stop=None, place=None) -> Answer:
        self.calls.append({"question": question, "collection": collection, "history": list(history), "place": place})
        if self.pipeline:
            return super().ask(question, collection=collection, history=history, on_token=on_token, stop=stop,
                               place=place)
        question = self.validate(question)
        said, outcome = [], Outcome.ANSWERED
        for piece in self.pieces(question):
            if stop is not None and stop.is_set():  # as the pipeline: it ends at the next token
                said.append(STOPPED if said else STOPPED.lstrip())
                outcome = Outcome.STOPPED
            else:
                said.append(piece)
            if on_token:
                on_token(said[-1])
            if outcome is Outcome.STOPPED:
                break
            if stop is not None:
                stop.wait(self.delay)
            else:
                time.sleep(self.delay)
        return Answer(question=question, text="".join(said), sources=list(self.sources), model="scripted",
                      collection=_collection_name(collection or self.settings.collection),
                      retrieved=list(self.sources), outcome=outcome)


def _collection_name(collection: str | Sequence[str]) -> str:
    return collection if isinstance(collection, str) else "+".join(collection)
