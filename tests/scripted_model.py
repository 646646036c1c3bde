"""The real AnswerService (validation, embedder, Weaviate hybrid search, relevance gate, prompt
builder, leak guard, retries) with a scripted chat generator in Ollama's place.

For tests whose subject is everything around the model: feeding it hundreds of odd inputs,
or making it say something on demand (its system prompt, say). Each real generation costs
the CPU-bound model seconds and could not be made to misbehave at will.
"""

from __future__ import annotations

from haystack import Pipeline, component
from haystack.components.builders import ChatPromptBuilder
from haystack.dataclasses import ChatMessage, StreamingChunk

from pipeline.prompts import TEMPLATE
from pipeline.querying import AnswerService

LEDGERLY = "Expense claims go in Ledgerly within 30 days [1]."


@component
class ScriptedChatGenerator:
    def __init__(self, service: "ScriptedModelService") -> None:
        self.service = service

    @component.output_types(replies=list[ChatMessage])
    def run(self, messages: list[ChatMessage], streaming_callback=None) -> dict:
        self.service.prompts.append(messages)
        text = self.service.reply
        if streaming_callback is not None:
            step = self.service.chunk_chars
            for i in range(0, len(text), step):
                streaming_callback(StreamingChunk(content=text[i : i + step]))
        return {"replies": [ChatMessage.from_assistant(text)]}


class ScriptedModelService(AnswerService):
    def __init__(self, settings, reply: str = LEDGERLY) -> None:
        super().__init__(settings)
        self.reply = reply
        self.chunk_chars = 12  # characters per streamed chunk
        self.prompts: list[list[ChatMessage]] = []

    def generation_pipeline(self, model: str) -> Pipeline:
        with self._lock:
            if model not in self._generation:
                p = Pipeline()
                builder = ChatPromptBuilder(template=TEMPLATE, required_variables=["question", "documents"])
                p.add_component("prompt", builder)
                p.add_component("llm", ScriptedChatGenerator(self))
                p.connect("prompt.prompt", "llm.messages")
                self._generation[model] = p
            return self._generation[model]
