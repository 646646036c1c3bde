"""Errors the bots turn into a short reply. `user_message` is safe to show in chat."""

from __future__ import annotations


class TeambotError(Exception):
    user_message = "Sorry, something went wrong while answering. Please try again."

    def __init__(self, detail: str = "", user_message: str | None = None) -> None:
        super().__init__(detail or self.user_message)
        if user_message is not None:
            self.user_message = user_message


class InvalidQuestion(TeambotError):
    user_message = "Please ask a question: your message was empty."


class KnowledgeBaseUnavailable(TeambotError):
    user_message = "The knowledge base is unavailable, try again shortly."


class NoDocuments(TeambotError):
    """The collection searched does not exist: nothing was ever indexed for this channel."""

    user_message = "There are no documents to answer from here yet: ask an admin to index some with `teambot ingest`."


class EmbedderMismatch(TeambotError):
    """The collection was embedded in another vector space than the configured embedder's."""

    user_message = ("The documents here were indexed with another embedder than the one this bot searches with: "
                    "an admin must re-index them (`teambot ingest --rebuild`).")


class ModelUnavailable(TeambotError):
    user_message = "The language model is unavailable, try again shortly."


class ModelTimeout(ModelUnavailable):
    user_message = "The language model took too long to answer, try again shortly."
