"""All of teambot's configuration, read from `TEAMBOT_*` environment variables and `.env`.

The README's configuration table is generated from the field descriptions here
(`teambot config --markdown`), so this module is the one source of truth.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_MODEL = "teambot-dev"
PRODUCTION_MODEL = "llama2:7b-chat"


def secret_value(value: SecretStr | None) -> str:
    """An optional secret setting as text, "" when unset or blank."""
    return value.get_secret_value().strip() if value is not None else ""


def all_secrets(settings: "Settings") -> list[str]:
    """The values of every secret setting that is set, stripped; for a URL with a password (the
    feedback database's), the password on its own too, as error messages quote it apart."""
    values = (getattr(settings, name) for name in type(settings).model_fields)
    found = [text for value in values if isinstance(value, SecretStr) and (text := secret_value(value))]
    passwords = [urlsplit(text).password for text in found if "://" in text]
    return found + [unquote(p) for p in passwords if p]


class SettingsError(ValueError):
    """Raised with a readable, one-line-per-field message when configuration is invalid."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TEAMBOT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- storage ---
    data_dir: Path = Field(
        Path.home() / ".local/share/teambot",
        description="Where server data, the feedback DB, training runs and logs live.",
    )
    cache_dir: Path = Field(
        Path.home() / ".cache/teambot",
        description="Built server binaries and assembled model files, keyed by version.",
    )
    feedback_db_url: SecretStr | None = Field(
        None,
        description="SQLAlchemy URL of the feedback store (`postgresql+psycopg://user:password@host/db`); unset "
        "means SQLite in data_dir. A secret: it can hold a password.",
    )

    # --- Weaviate ---
    weaviate_url: str = Field("http://127.0.0.1:8080", description="Weaviate REST endpoint.")
    weaviate_grpc_port: int = Field(50051, ge=1, le=65535, description="Weaviate gRPC port.")
    weaviate_version: str = Field("v1.38.10", description="Weaviate tag built by `services up`.")
    weaviate_api_key: SecretStr | None = Field(
        None,
        description=(
            "API key for Weaviate; `services up` then starts Weaviate requiring it. Set it on shared "
            "networks: Weaviate's gRPC port listens on every interface."
        ),
    )
    weaviate_peers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="The other nodes of a Weaviate cluster, comma-separated REST URLs (`?grpc=PORT` where a node's "
        "gRPC port is not TEAMBOT_WEAVIATE_GRPC_PORT); searches and writes move to a live one when theirs dies.",
    )
    weaviate_replication_factor: int = Field(
        1, ge=1, le=15, description="Copies of each collection teambot creates (one per node; 3 survives a node down).",
    )
    weaviate_shards: int = Field(1, ge=1, le=64, description="Shards of each collection teambot creates.")
    weaviate_connect_wait: float = Field(
        15.0, ge=0, le=600,
        description="Seconds a command that needs Weaviate (ingest, admin work) waits for a node whose REST and gRPC "
        "ports both answer, e.g. one just (re)started, before it gives up.",
    )
    weaviate_consistency: Literal["ONE", "QUORUM", "ALL"] = Field(
        "QUORUM", description="Replicas that must answer each search and write (with one copy, all levels are alike).",
    )
    collection: str = Field("TeambotDocs", description="Default Weaviate collection.")
    link_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts whose links answers and sources may carry besides those of `ingest --url-base`s, "
        "comma-separated (`wiki.example.com,docs.example.com`); any other link is shown as code, not as a link.",
    )
    channel_collections: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description='Channel/guild id → collection, JSON (`{"C0123":"Sales"}`).',
    )
    sources: Path | None = Field(
        None,
        description="TOML file of synced sources (websites, git repositories, Confluence, Google Drive, Confluence "
        "and Notion exports) that `teambot sync` keeps in the collections. See the README's \"Sources\".",
    )
    channel_rules: Path | None = Field(
        None,
        description="TOML file of per-channel rules (who may ask, when to answer, citations, private answers, "
        "experts for hand-offs); re-read when it changes. See the README's \"Channel rules\".",
    )

    # --- Ollama ---
    ollama_url: str = Field("http://127.0.0.1:11434", description="Ollama endpoint.")
    ollama_version: str = Field("v0.24.0", description="Ollama tag built by `services up`.")
    ollama_replicas: int = Field(
        1, ge=1, le=8, description="Ollama servers `services up` starts; more than one: behind haproxy at ollama_url.",
    )
    ollama_num_parallel: int = Field(
        0, ge=0, le=64, description="Requests each Ollama server generates at once (OLLAMA_NUM_PARALLEL); 0: Ollama's default.",
    )
    model: str = Field(
        DEV_MODEL,
        description=f"Chat model served by Ollama; `{PRODUCTION_MODEL}` in production.",
    )
    generation_timeout: float = Field(120.0, gt=0, description="Seconds before a generation is abandoned.")
    max_answer_tokens: int = Field(384, ge=16, le=8192, description="Upper bound on answer length.")
    temperature: float = Field(0.1, ge=0, le=2, description="Sampling temperature.")

    # --- retrieval ---
    embedder: str = Field(
        "all-MiniLM-L6-v2-int8",
        description="`all-MiniLM-L6-v2-int8` or `e5-small-v2-int8` (ONNX, no torch), or on sentence-transformers "
        "(`teambot[torch-embedder]`) the packaged `all-MiniLM-L6-v2` or a model folder. Changing it rebuilds "
        "collections of another vector space at their next ingest.",
    )
    chunk_words: int = Field(120, ge=20, le=2000, description="Words per chunk.")
    chunk_overlap: int = Field(30, ge=0, le=1000, description="Words shared by neighbouring chunks.")
    pdf_max_pages: int = Field(
        2000, ge=1, description="Pages of one PDF that ingest reads; a longer one is indexed up to there (reported).",
    )
    pdf_max_chars: int = Field(
        2_000_000, ge=1000,
        description="Characters of text ingest keeps of one PDF, up to the page that would pass it (reported); "
        "stops PDFs whose few KB expand to millions of characters.",
    )
    pdf_timeout: float = Field(
        60.0, gt=0, description="Seconds ingest spends extracting one PDF's text; it keeps the pages read by then.",
    )
    top_k: int = Field(4, ge=1, le=50, description="Chunks given to the model.")
    chunks_per_page: int = Field(
        2, ge=0, le=50, description="At most this many of the chunks given to the model come from one page (0 = no cap).",
    )
    alpha: float = Field(0.5, ge=0, le=1, description="Hybrid weight: 0 = BM25 only, 1 = vector only.")
    min_similarity: float | None = Field(
        None, ge=-1, le=1, description="Below this cosine similarity the bot abstains; unset, the threshold tuned "
        "for the embedder (pipeline/embedders.py: 0.32 for all-MiniLM-L6-v2-int8).",
    )
    min_support: float | None = Field(
        None, ge=0, le=1, description="An answer whose sentences' mean cosine similarity to the passages it cites "
        "is below this is replaced by the abstention (0 = no check); unset, the threshold measured for the embedder "
        "(0.35 for all-MiniLM-L6-v2).",
    )
    document_boost_max: float = Field(
        2.0, ge=1.0, le=10.0,
        description="Votes on answers move the cited documents' ranking within 1/this×–this× (1 = off).",
    )
    document_votes_refresh: float = Field(30.0, ge=0, description="Seconds between reads of the document votes.")
    recency_weight: float = Field(
        0.0, ge=0.0, le=0.5,
        description="How much a synced page's age lowers its ranking: at most this share, half of it after "
        "recency_half_life_days (0 = off; pages without a date are never lowered).",
    )
    recency_half_life_days: float = Field(180.0, gt=0, description="Age at which recency_weight lowers a page by half of it.")
    history_turns: int = Field(3, ge=0, le=20, description="Thread turns carried into follow-ups.")
    followup_search: Literal["subject", "rewrite", "glue"] = Field(
        "subject", description="How a follow-up is searched: with the previous question's subject words (subject), "
        "rewritten into a standalone question by the model (rewrite), or glued to the previous question (glue).",
    )
    rewrite_timeout: float = Field(
        15.0, gt=0, description="Seconds a follow-up's rewrite by the model may take before the subject search is made instead.",
    )
    max_question_chars: int = Field(4000, ge=100, description="Longer questions are refused.")

    # --- chat platforms (secrets: never printed) ---
    slack_bot_token: SecretStr | None = Field(None, description="Slack bot token (xoxb-…).")
    slack_app_token: SecretStr | None = Field(None, description="Slack app token for Socket Mode (xapp-…).")
    slack_signing_secret: SecretStr | None = Field(None, description="Slack signing secret (HTTP mode).")
    slack_api_url: str = Field(
        "https://slack.com/api/", description="Slack Web API base URL (an egress proxy, or a stand-in in tests).",
    )
    slack_suggested_prompts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "Which tool do expense claims go in?", "How do I request time off?", "Where is the on-call runbook?",
        ],
        max_length=4,
        description="Prompts offered when someone opens teambot in Slack's agent view; JSON list or one per line.",
    )
    discord_token: SecretStr | None = Field(None, description="Discord bot token.")
    discord_dev_guild: int | None = Field(None, description="Sync /ask to this guild only (development).")
    discord_reply_in_thread: bool = Field(
        False, description="Answer a Discord mention in a new thread instead of a reply in the channel."
    )
    user_hash_salt: SecretStr | None = Field(
        None, description="Salt for hashing user ids in the feedback store; unset: one is made on first start and "
        "kept in data_dir/user_hash_salt (set it on every host when several share one database).",
    )
    http_port: int = Field(3000, ge=1, le=65535, description="Port of the Slack HTTP mode server.")
    health_host: str = Field(
        "127.0.0.1", description="Address of the bots' `/healthz` and `/metrics` listener (`0.0.0.0` to expose it)."
    )
    health_port: int = Field(9100, ge=0, le=65535, description="Port of that listener; 0 turns it off.")
    answer_workers: int = Field(4, ge=1, le=64, description="Answers generated at once, per bot process.")
    answer_queue: int = Field(
        16, ge=0, le=10_000, description="Questions that may wait for a free generation; beyond, \"busy, try again\"."
    )

    # --- reliability, abuse limits and logs ---
    retrieval_timeout: float = Field(15.0, gt=0, description="Seconds before a knowledge-base search is abandoned.")
    retry_attempts: int = Field(
        3, ge=1, le=10, description="Tries of a Weaviate/Ollama call that failed transiently (refused, 503)."
    )
    retry_backoff: float = Field(0.5, ge=0, le=30, description="Seconds before the first retry; doubles each time.")
    circuit_failures: int = Field(
        5, ge=1, le=1000, description="Consecutive failures after which a server is left alone for the cool-down."
    )
    circuit_cooldown: float = Field(
        30.0, ge=0, le=3600, description="Seconds questions fail fast after the circuit opens, before a trial call."
    )
    user_questions_per_minute: float = Field(10, ge=0, description="Questions one user may ask per minute; 0 = no limit.")
    channel_questions_per_minute: float = Field(
        30, ge=0, description="Questions one channel may ask per minute; 0 = no limit."
    )
    log_format: Literal["text", "json"] = Field("text", description="`json`: one JSON object per log line.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Least severe level logged.")

    # --- fine-tuning (`teambot feedback export`, `train`, `eval`, `publish`) ---
    train_base_model: str = Field(
        "",
        description="Weights to fine-tune: `gemma3-270m`, `smollm2-135m`, `qwen2.5-coder-0.5b`, an HF id or path; "
        "empty = the weights behind `model`.",
    )
    train_min_examples: int = Field(20, ge=1, description="Export refuses to write fewer training examples.")
    train_min_test_examples: int = Field(
        20, ge=1, description="The promotion gate refuses a fine-tune scored on fewer test examples."
    )
    train_max_tokens: int = Field(
        1024, ge=64, le=32768, description="Longest training example in tokens; longer ones are dropped."
    )

    # --- the review page (`teambot review`) ---
    review_host: str = Field(
        "127.0.0.1", description="Address of the review page; beyond loopback, serve it behind TLS (Secure cookies)."
    )
    review_port: int = Field(8090, ge=0, le=65535, description="Port of the review page.")
    review_secret_key: SecretStr | None = Field(
        None, description="Signs the review page's session cookies; empty = a random key kept in `data_dir`."
    )
    reviewed_answer_similarity: float | None = Field(
        None, ge=0, le=1.01,
        description="A new question at least this similar (cosine) to a reviewed one gets its approved answer; >1 = off; "
        "unset, the threshold measured for the embedder (0.86 for all-MiniLM-L6-v2).",
    )

    @field_validator("channel_collections", mode="before")
    @classmethod
    def _parse_mapping(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"must be a JSON object, got {value[:40]!r} ({exc.msg})") from None
        return value

    @field_validator("weaviate_peers", "link_hosts", mode="before")
    @classmethod
    def _url_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("weaviate_peers")
    @classmethod
    def _peer_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"each peer is an http(s) URL, got {url!r}")
            if parts.query and not (parts.query.startswith("grpc=") and parts.query[5:].isdigit()):
                raise ValueError(f"a peer's only option is ?grpc=PORT, got {url!r}")
        return [u.rstrip("/") for u in value]

    @field_validator("slack_suggested_prompts", mode="before")
    @classmethod
    def _parse_list(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                try:
                    return json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"must be a JSON list or one prompt per line ({exc.msg})") from None
            return [line.strip() for line in value.splitlines() if line.strip()]
        return value

    @field_validator("slack_suggested_prompts")
    @classmethod
    def _prompt_lengths(cls, value: list[str]) -> list[str]:
        # Slack's limit on a suggested prompt's message.
        if too_long := [p for p in value if not p.strip() or len(p) > 1000]:
            raise ValueError(f"each prompt needs 1 to 1,000 characters: {too_long[0][:40]!r}")
        return [p.strip() for p in value]

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return value.strip().upper() if value.strip().lower() in ("debug", "info", "warning", "error") else value.strip().lower()

    @field_validator("weaviate_url", "ollama_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> "Settings":
        if self.chunk_overlap >= self.chunk_words:
            raise ValueError("chunk_overlap must be smaller than chunk_words")
        return self

    @property
    def feedback_url(self) -> str:
        return secret_value(self.feedback_db_url) or f"sqlite:///{self.data_dir / 'feedback.db'}"

    @property
    def weaviate_key(self) -> str:
        """TEAMBOT_WEAVIATE_API_KEY, or "" for anonymous access."""
        return secret_value(self.weaviate_api_key)

    @property
    def weaviate_nodes(self) -> list[tuple[str, int]]:
        """(REST URL, gRPC port) of every Weaviate node teambot may use, the configured one first."""
        nodes = [(self.weaviate_url, self.weaviate_grpc_port)]
        for peer in self.weaviate_peers:
            parts = urlsplit(peer)
            grpc = int(parts.query[5:]) if parts.query else self.weaviate_grpc_port
            nodes.append((parts._replace(query="").geturl(), grpc))
        return nodes

    @property
    def weaviate_host_port(self) -> tuple[str, int]:
        rest = self.weaviate_url.split("://", 1)[1]
        host, _, port = rest.partition(":")
        return host, int(port or 80)

    def collection_for(self, *keys: str | int | None) -> str:
        """The collection of the first key (channel, then workspace/guild) that is mapped."""
        for key in keys:
            if key is not None and str(key) in self.channel_collections:
                return self.channel_collections[str(key)]
        return self.collection


def load_settings(**overrides: object) -> Settings:
    """Settings from env/.env, turning pydantic's errors into one clear message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            env = f"TEAMBOT_{field.upper()}" if err["loc"] else "settings"
            lines.append(f"{env}: {err['msg']}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None

