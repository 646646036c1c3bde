"""Weaviate document stores: one collection per team, with the vector space of its embedder."""

from __future__ import annotations

import math
import re
import threading
import time
from urllib.parse import urlsplit

from haystack.utils import Secret
from haystack_integrations.document_stores.weaviate import AuthApiKey, WeaviateDocumentStore
from haystack_integrations.document_stores.weaviate.document_store import DOCUMENT_COLLECTION_PROPERTIES

from core import readiness
from core.settings import Settings
from pipeline.embedders import PACKAGED_EMBEDDER, embedder_spec

SPACE_NOTE = "teambot chunks; vectors: "  # the collection's description: the embedder space follows

# A text property compared with `==` must be `field`-tokenized. With Weaviate's default `word`
# tokenization, `source == ".../git.html"` also matches ".../git-push.html" and every other path
# made of the same words, and deleting one file's old chunks deleted theirs too.
EXACT = {"tokenization": "field"}
# Chunk metadata we keep; anything else a converter/splitter adds is dropped before writing so
# the Weaviate schema stays fixed and small.
META_PROPERTIES = [
    {"name": "source", "dataType": ["text"], **EXACT},  # absolute file path
    {"name": "root", "dataType": ["text"], **EXACT},  # the folder or file it was ingested as
    {"name": "url", "dataType": ["text"], **EXACT},  # where a colleague opens it, with the section anchor
    {"name": "url_base", "dataType": ["text"], **EXACT},  # `ingest --url-base` of its root, kept for later runs
    {"name": "title", "dataType": ["text"]},
    {"name": "section", "dataType": ["text"]},
    {"name": "position", "dataType": ["int"]},  # chunk number within the file
    {"name": "page_number", "dataType": ["int"]},
    {"name": "file_type", "dataType": ["text"], **EXACT},
    {"name": "content_hash", "dataType": ["text"], **EXACT},  # SHA-256 of the file and the URL it has
    {"name": "chunk_count", "dataType": ["int"]},  # chunks of that file version
    {"name": "updated", "dataType": ["text"]},  # when the page last changed at its origin (ISO 8601); synced sources
]
META_FIELDS = [p["name"] for p in META_PROPERTIES]
COLLECTION_PROPERTIES = [
    {**p, **EXACT} if p["name"] == "_original_id" else p for p in DOCUMENT_COLLECTION_PROPERTIES
] + META_PROPERTIES
EXACT_FIELDS = frozenset(p["name"] for p in COLLECTION_PROPERTIES if p.get("tokenization") == "field")
# The BM25 half of the hybrid search reads the chunk text only. Weighting title and section words
# (`title^2`, `section^2`) was measured and lost: recall@5 0.836 against 0.955 on the PostgreSQL
# reference pages (bench/retrieval_quality.py --grid), as "Parameters"/"Description" headings and
# one-word command titles match far too much.
BM25_PROPERTIES = ["content"]

_COLLECTION_NAME = re.compile(r"^[A-Z][A-Za-z0-9_]{0,99}$")
_stores: dict[tuple, WeaviateDocumentStore] = {}
_return_properties: dict[str, list[str]] = {}  # collection → the properties a search returns
_lock = threading.Lock()


class InvalidCollectionName(ValueError):
    pass


class _Store(WeaviateDocumentStore):
    """The Haystack store, minus two things it does on the side.

    An object count on every use of its collection: the library tests `if self._collection:`, and
    a weaviate Collection's truth value is its len(): an aggregate query, twice per search, 6-10 ms
    each at 50k chunks and growing with the collection (bench/retrieval_latency.py).

    Creating a plain collection when the name is not found on connecting: teambot's collections
    are made by the indexer, behind an alias (`pipeline.collection_aliases`), and a search in the
    instant an old plain collection gives way to an alias of its name must not re-create it.
    """

    _return_properties: list[str] | None = None
    node_url: str = ""  # the Weaviate node this store talks to (a live one when it was made)
    consistency: str | None = None  # ONE / QUORUM / ALL: replicas that must answer each search and write

    @property
    def client(self):
        if self._client is None:
            import weaviate
            from weaviate.connect.base import ConnectionParams

            client = weaviate.WeaviateClient(
                connection_params=ConnectionParams.from_url(
                    url=self._url, grpc_port=self._grpc_port, grpc_secure=self._grpc_secure
                ),
                auth_client_secret=self._auth_client_secret.resolve_value() if self._auth_client_secret else None,
                additional_config=self._additional_config, additional_headers=self._connection_headers(),
            )
            client.connect()
            self._client = client
        return self._client

    @property
    def collection(self):
        if self._collection is None:
            collection = self.client.collections.get(self._collection_settings["class"])
            if self.consistency:
                from weaviate.classes.config import ConsistencyLevel

                collection = collection.with_consistency_level(ConsistencyLevel[self.consistency])
            self._collection = collection
        return self._collection

    def _hybrid_retrieval(self, query, query_embedding, filters=None, top_k=None, alpha=0.7, max_vector_distance=None):
        """The library's hybrid query without its schema read before every query (the properties to
        return are read once per store)."""
        from haystack_integrations.document_stores.weaviate._filters import convert_filters

        name = self._collection_settings["class"]
        if self._return_properties is None:
            # Read once per collection and process, not per connection: a store made again on
            # another node after its node died must not wait for a schema read, which a cluster
            # answers only once it has elected a new Raft leader (some 20 s after losing one).
            if name not in _return_properties:
                _return_properties[name] = [
                    p.name for p in self.collection.config.get().properties if p.name != "blob_data"
                ]
            self._return_properties = _return_properties[name]
        result = self.collection.query.hybrid(
            query=query, vector=query_embedding, alpha=alpha, limit=top_k, max_vector_distance=max_vector_distance,
            filters=convert_filters(filters) if filters else None, include_vector=True,
            query_properties=BM25_PROPERTIES, return_properties=self._return_properties, return_metadata=["score"],
        )
        return [WeaviateDocumentStore._to_document(obj) for obj in result.objects]


def collection_settings(name: str, settings: Settings | None = None) -> dict:
    """The definition of a collection teambot writes chunks into; replicated and sharded as
    `settings` say (a copy on each of TEAMBOT_WEAVIATE_REPLICATION_FACTOR nodes)."""
    definition = {
        "class": name, "invertedIndexConfig": {"indexNullState": True},
        "properties": [dict(p) for p in COLLECTION_PROPERTIES],
    }
    if settings is not None:
        definition["description"] = SPACE_NOTE + embedder_spec(settings).space
    if settings is not None and settings.weaviate_replication_factor > 1:
        # A node that missed a delete (it was down) gets it from the others: newest change wins.
        definition["replicationConfig"] = {
            "factor": settings.weaviate_replication_factor, "deletionStrategy": "TimeBasedResolution",
        }
    if settings is not None:  # unsaid, a cluster gives each collection one shard per node
        definition["shardingConfig"] = {"desiredCount": settings.weaviate_shards}
    return definition


def embedding_space(config) -> str:
    """The vector space a collection was embedded in, from its description; collections made before
    it was recorded were embedded by the packaged MiniLM."""
    description = config.description or ""
    return description[len(SPACE_NOTE):] if description.startswith(SPACE_NOTE) else PACKAGED_EMBEDDER


def node_health_path(settings: Settings) -> str:
    """What tells a usable Weaviate node: `ready` for a single one; in a cluster `live`, since a
    node reports not ready while the cluster elects a Raft leader, yet searches and writes work."""
    return readiness.WEAVIATE_LIVE if settings.weaviate_peers else readiness.WEAVIATE_READY


def live_node(settings: Settings, timeout: float = 1.0, wait: float = 0.0) -> tuple[str, int]:
    """(REST URL, gRPC port) of the first configured Weaviate node whose REST and gRPC ports both
    answer, asking again for up to `wait` seconds (a node just restarted opens gRPC after REST);
    the configured one when none does (the caller's error then names it)."""
    nodes = settings.weaviate_nodes
    if len(nodes) == 1 and not wait:
        return nodes[0]
    deadline = time.monotonic() + wait
    while True:
        for url, grpc in nodes:
            if _node_live(settings, url, grpc, timeout):
                return url, grpc
        if time.monotonic() >= deadline:
            return nodes[0]
        time.sleep(readiness.POLL)


def live_nodes(settings: Settings, timeout: float = 1.0) -> list[tuple[str, int]]:
    """(REST URL, gRPC port) of every configured Weaviate node whose REST and gRPC ports both answer."""
    return [(url, grpc) for url, grpc in settings.weaviate_nodes if _node_live(settings, url, grpc, timeout)]


def _node_live(settings: Settings, url: str, grpc: int, timeout: float) -> bool:
    return readiness.weaviate_ready(url, grpc, api_key=settings.weaviate_key, path=node_health_path(settings),
                                    timeout=timeout)


def replicas_needed(settings: Settings) -> int:
    """How many copies must answer a search or write at the configured consistency level."""
    factor = settings.weaviate_replication_factor
    return {"ONE": 1, "QUORUM": factor // 2 + 1, "ALL": factor}[settings.weaviate_consistency] if factor > 1 else 1


def exact_filter(field: str, value: str, operator: str = "==") -> dict:
    """A Haystack filter on a chunk property; refuses a property whose `==` would match by words."""
    if field not in EXACT_FIELDS:
        raise ValueError(f"{field!r} is word-tokenized: `{operator}` on it would not compare whole values")
    return {"field": f"meta.{field}", "operator": operator, "value": value}


def check_collection_name(name: str) -> str:
    if not _COLLECTION_NAME.match(name):
        raise InvalidCollectionName(
            f"collection name {name!r} is invalid: start with an upper-case letter, then letters, digits or _"
        )
    return name


def document_store(
    settings: Settings, collection: str | None = None, *, node: tuple[str, int] | None = None,
) -> WeaviateDocumentStore:
    """The store for one collection; cached so its client connection is reused across requests.
    On the first live node, or on `node` (REST URL, gRPC port) when given: a hedged search's."""
    name = check_collection_name(collection or settings.collection)
    key = _key(settings, name) + ((node,) if node else ())
    with _lock:
        if key not in _stores:
            api_key = settings.weaviate_key
            url, grpc_port = node or live_node(settings)
            store = _Store(
                url=url,
                grpc_port=grpc_port,
                auth_client_secret=AuthApiKey(api_key=Secret.from_token(api_key)) if api_key else None,
                collection_settings=collection_settings(name, settings),
                # A search gives up by itself at the retrieval timeout, so the thread waiting on a
                # hung server is freed then too (weaviate-client's default waits 30 s).
                additional_config=client_config(query_timeout=math.ceil(settings.retrieval_timeout)),
            )
            store.node_url = url
            # With one copy every level is the same; a level above ONE would only add round trips.
            store.consistency = settings.weaviate_consistency if settings.weaviate_replication_factor > 1 else None
            _stores[key] = store
        return _stores[key]


def _key(settings: Settings, name: str) -> tuple:
    return tuple(settings.weaviate_nodes), settings.weaviate_key, name


def forget_store(settings: Settings, collection: str, *, close_after: float = 0.0) -> None:
    """Drop a cached store (after its collection was deleted, or its server restarted): the next
    use connects afresh. `close_after`: seconds before its connection is closed, for searches
    still running on it (a failed search drops the store other searches may be using)."""
    prefix = _key(settings, collection)
    with _lock:
        gone = [_stores.pop(key) for key in [k for k in _stores if k[: len(prefix)] == prefix]]
    for store in gone:
        _close_later(store, close_after)


def forget_stores(settings: Settings) -> None:
    """Drop every cached store on these settings' Weaviate nodes (their node died): the next use
    connects to a live one. Searches still running on them get RETRIEVAL_TIMEOUT to finish."""
    nodes = tuple(settings.weaviate_nodes)
    with _lock:
        gone = [_stores.pop(key) for key in [k for k in _stores if k[0] == nodes]]
    for store in gone:
        _close_later(store, 2 * settings.retrieval_timeout)


def _close_later(store, seconds: float) -> None:
    if seconds <= 0:
        _close(store)
        return
    timer = threading.Timer(seconds, _close, args=(store,))
    timer.daemon = True
    timer.start()


def _close(store) -> None:
    try:
        store.close()
    except Exception:  # noqa: BLE001 - closing a dead connection must not mask the real error
        pass


def close_stores() -> None:
    """Close every cached store's connection (a command that is done with Weaviate)."""
    with _lock:
        stores = list(_stores.values())
        _stores.clear()
    for store in stores:
        _close(store)


def weaviate_credentials(settings: Settings):
    """weaviate-client credentials for the configured API key, or None (anonymous access)."""
    if not settings.weaviate_key:
        return None
    from weaviate.classes.init import Auth

    return Auth.api_key(settings.weaviate_key)


def client_config(query_timeout: int | None = None):
    """weaviate-client's settings for every connection teambot makes: gRPC channels with their own
    connections (core.readiness.GRPC_CHANNEL_OPTIONS), and the query timeout when given."""
    from weaviate.config import AdditionalConfig, GrpcConfig, Timeout

    grpc = GrpcConfig(channel_options=readiness.GRPC_CHANNEL_OPTIONS)
    return AdditionalConfig(grpc_config=grpc, **({"timeout": Timeout(query=query_timeout)} if query_timeout else {}))


def admin_client(settings: Settings):
    """A plain weaviate-client connection for work on collections and aliases; close it after use.
    Tries for up to TEAMBOT_WEAVIATE_CONNECT_WAIT to reach a node that answers on REST and gRPC (one
    just restarted opens gRPC late); a refused key or another error is raised at once."""
    import weaviate
    from weaviate.exceptions import WeaviateConnectionError, WeaviateGRPCUnavailableError

    deadline = time.monotonic() + settings.weaviate_connect_wait
    while True:
        url, grpc_port = live_node(settings, wait=max(deadline - time.monotonic(), 0.0))
        parts = urlsplit(url)
        try:
            return weaviate.connect_to_local(
                host=parts.hostname, port=parts.port or 80, grpc_port=grpc_port,
                auth_credentials=weaviate_credentials(settings), additional_config=client_config(),
            )
        except (WeaviateConnectionError, WeaviateGRPCUnavailableError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(readiness.POLL)
