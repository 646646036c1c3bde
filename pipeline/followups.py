"""Follow-ups searched as standalone questions.

"How do I make it start over from 1 later?", after "How do I create a sequence that starts at
1000?", finds nothing on its own, and glued to the previous question it drags that question's
task ("create") back into the search, which then finds the page already answered. Three ways to
search it, chosen by `followup_search` (measured in bench/retrieval_quality.py --followups):

- `subject` (default): the follow-up, then the previous question's subject words: its words less
  function words and task verbs ("sequence 1000"). No model call.
- `rewrite`: the served model rewrites it, with the thread's last question, into one question
  that names what it is about, under a tight token budget. When it cannot (slow, down, a reply
  that is not a question) the `subject` search is made instead: a rewrite is never worth failing
  the answer for.
- `glue`: the previous question and the follow-up, as teambot did before.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence

from haystack import component
from haystack.dataclasses import ChatMessage
from haystack_integrations.components.generators.ollama import OllamaChatGenerator

from core.answer import Turn

log = logging.getLogger(__name__)

# Words that say how a question is asked or what is to be done, not what it is about.
FUNCTION_WORDS = frozenset("""
a an the and or but nor of to in on for with by from at as into about over under is are be been being was were am
do does did done i my me mine we our us you your it its that this these those them they their there here what which
who whom whose how when where why can could should would will shall may might must have has had not no so if then
than too very just only also again afterwards later now one ones some any all each every own same other another
more most much many please still even
""".split())
TASK_VERBS = frozenset("""
make makes get gets set sets run runs use uses install add adds remove removes delete deletes drop drops change
changes show shows see find start starts stop stops take takes give gives let write define declare check create
creates build update back up put keep turn rename move tell need want work happen happens go know
""".split())
_WORD = re.compile(r"[\w$\\][\w$\\.-]*")

REWRITE_TOKENS = 48
MAX_REWRITE_CHARS = 400
_CITATION = re.compile(r"\s*\[\d+\]")


def glued(question: str, history: Sequence[Turn]) -> str:
    """The previous question, then the follow-up."""
    return f"{history[-1].question}\n{question}" if history else question


def subject_words(question: str) -> str:
    """`question` without its function words and task verbs: what it is about."""
    return " ".join(w for w in _WORD.findall(question) if w.lower() not in FUNCTION_WORDS | TASK_VERBS)


def with_subject(question: str, history: Sequence[Turn]) -> str:
    """The follow-up, then what the previous question was about."""
    return f"{question}\n{subject_words(history[-1].question)}" if history else question


def rewrite_prompt(question: str, previous: str) -> list[ChatMessage]:
    # One plain instruction in the user turn: the 0.5B dev model, given a system rule or worked
    # examples, answered the follow-up or repeated it word for word.
    return [ChatMessage.from_user(
        f'First question: "{previous}"\nSecond question: "{question}"\n'
        "Write the second question again so that it names what it is about, taken from the first question. "
        "Keep its meaning. Write only the new second question."
    )]


def clean(reply: str) -> str:
    """The question in the model's reply, or "" when the reply is not one question."""
    lines = [line for line in (reply or "").strip().splitlines() if line.strip()]
    text = _CITATION.sub("", lines[0] if lines else "").strip().strip("\"'` ")
    return text if text.endswith("?") and 3 <= len(text) <= MAX_REWRITE_CHARS else ""


@component
class FollowUpRewriter:
    """Follow-up + thread turns → the question to search and how it was made: "rewritten", or
    "subject" when the model's rewrite failed."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url, self.timeout = url, timeout
        self._generators: dict[str, OllamaChatGenerator] = {}
        self._lock = threading.Lock()

    def _generator(self, model: str) -> OllamaChatGenerator:
        with self._lock:
            if model not in self._generators:
                self._generators[model] = OllamaChatGenerator(
                    model=model, url=self.url, timeout=max(1, round(self.timeout)), keep_alive="30m",
                    generation_kwargs={"num_predict": REWRITE_TOKENS, "temperature": 0.0, "seed": 0},
                )
            return self._generators[model]

    @component.output_types(question=str, method=str, seconds=float)
    def run(self, question: str, history: list[Turn], model: str) -> dict:
        if not history:
            return {"question": question, "method": "as asked", "seconds": 0.0}
        started = time.perf_counter()
        previous = history[-1].question
        try:
            reply = self._generator(model).run(messages=rewrite_prompt(question, previous))["replies"][0].text
            rewritten = clean(reply or "")
        except Exception as exc:  # noqa: BLE001 - any failure falls back to the rule
            log.warning("rewriting a follow-up with %s failed (%s: %s); searching it with its subject",
                        model, type(exc).__name__, exc)
            rewritten = ""
        seconds = time.perf_counter() - started
        if not rewritten or rewritten.lower() == question.lower():
            return {"question": with_subject(question, history), "method": "subject", "seconds": seconds}
        return {"question": rewritten, "method": "rewritten", "seconds": seconds}
