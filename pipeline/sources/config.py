"""The sources file (TOML, named by TEAMBOT_SOURCES): what `teambot sync` keeps in the collections.

One `[sources.<name>]` table per source. Every source has a `kind`, the `collection` it fills, how
often it is synced (`every`: "30m", "6h", "1d") and `include`/`exclude` glob patterns on the path of
each document within the source. The mass-deletion guard refuses a run that would remove more than
`max_delete_share` of a source's documents when that is at least `max_delete_min` documents.

    [sources.sqlite-docs]
    kind = "website"
    collection = "Docs"
    every = "6h"
    sitemaps = ["https://docs.example.com/sitemap.xml"]
    prefix = "https://docs.example.com/c3ref/"

    [sources.handbook]
    kind = "git"
    collection = "Handbook"
    repository = "https://git.example.com/ops/handbook.git"
    branch = "main"
    paths = ["docs/"]
    web_url = "https://git.example.com/ops/handbook"
    forge = "gitlab"
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator,
)

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_COLLECTION = re.compile(r"^[A-Z][_0-9A-Za-z]{0,127}$")
_EVERY = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SourcesError(ValueError):
    """The sources file cannot be used; the message names the file, the table and the key."""


def parse_every(text: str) -> timedelta:
    match = _EVERY.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an interval like '30m', '6h' or '1d'")
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 60:
        raise ValueError("sources are synced at most once a minute")
    return timedelta(seconds=seconds)


def _matching(value: str, pattern: str, what: str, shown: str | None = None) -> str:
    if not re.match(pattern, value):
        raise ValueError(f"{shown if shown is not None else value!r} is not {what}")
    return shown if shown is not None else value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


# Secrets come from the environment; the file only names the variable.
EnvName = Annotated[
    str, AfterValidator(lambda v: _matching(v, r"^[A-Z_][A-Z0-9_]{0,99}$", "an environment variable name")),
]


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""  # the table's name, filled in by the loader
    collection: str = Field(description="The collection its documents go to.")
    every: str = Field("6h", description="How often it is synced: '30m', '6h', '1d'.")
    include: tuple[str, ...] = Field(("*",), description="Glob patterns a document's path must match.")
    exclude: tuple[str, ...] = Field((), description="Glob patterns of paths left out.")
    max_delete_share: float = Field(0.5, gt=0, le=1, description="Refuse a run that would remove more than this share…")
    max_delete_min: int = Field(20, ge=1, description="…when that is at least this many documents.")

    @field_validator("collection")
    @classmethod
    def _collection(cls, value: str) -> str:
        if not _COLLECTION.match(value):
            raise ValueError(f"{value!r} is not a collection name (a capital letter, then letters, digits, _)")
        return value

    @field_validator("every")
    @classmethod
    def _every(cls, value: str) -> str:
        parse_every(value)
        return value

    @property
    def interval(self) -> timedelta:
        return parse_every(self.every)

    def wants(self, path: str) -> bool:
        """Is the document at `path` (relative to the source) one to keep?"""
        return any(fnmatch.fnmatchcase(path, p) for p in self.include) and not any(
            fnmatch.fnmatchcase(path, p) for p in self.exclude
        )


class WebsiteSource(_Source):
    """Pages of a site: from its sitemaps and/or a crawl from start URLs, all under `prefix`."""

    kind: Literal["website"]
    prefix: str = Field(description="Only pages whose URL starts with this are synced (and crawled).")
    sitemaps: tuple[str, ...] = Field((), description="Sitemap (or sitemap index) URLs.")
    start_urls: tuple[str, ...] = Field((), description="Pages a crawl starts from (links are followed under prefix).")
    hosts: tuple[str, ...] = Field((), description="Other host names of the same site (a canonical link may name them).")
    skip_classes: tuple[str, ...] = Field(
        (), description="HTML classes of the site's own boilerplate (banners, menus) left out of every page; "
        "nav, header/footer-like blocks and scripts always are.",
    )
    max_pages: int = Field(5000, ge=1, le=1_000_000)
    user_agent: str = Field("teambot", description="Who the crawler says it is (robots.txt rules for it apply).")
    timeout: float = Field(30.0, gt=0, le=600)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("skip_classes")
    @classmethod
    def _classes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_matching(c, r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$", "an HTML class name") for c in value)

    @field_validator("sitemaps", "start_urls")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_http_url(v) for v in value)

    @model_validator(mode="after")
    def _somewhere_to_start(self) -> "WebsiteSource":
        if not self.sitemaps and not self.start_urls:
            raise ValueError("a website source needs `sitemaps` or `start_urls` (or both)")
        return self

    @property
    def location(self) -> str:
        return self.prefix


FORGES = {
    # Where a file at a commit or branch is shown; {web} is web_url without a trailing slash.
    "github": "{web}/blob/{ref}/{path}",
    "gitlab": "{web}/-/blob/{ref}/{path}",
    "gitea": "{web}/src/{ref_kind}/{ref}/{path}",
}


class GitSource(_Source):
    """Files of a git repository's branch (any URL git can fetch: https, ssh, file)."""

    kind: Literal["git"]
    repository: str = Field(description="What `git fetch` is given.")
    branch: str = Field("main")
    paths: tuple[str, ...] = Field((), description="Sub-paths synced (all of the repository when empty).")
    web_url: str = Field("", description="The repository's page, for links to each file; none when empty.")
    forge: Literal["github", "gitlab", "gitea"] = Field("github", description="How web_url links a file.")
    link_to: Literal["commit", "branch"] = Field("commit", description="Link a file at the synced commit or the branch.")

    @field_validator("web_url")
    @classmethod
    def _web(cls, value: str) -> str:
        return _http_url(value) if value else value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        # Passed to git: no option-looking or ref-walking names.
        return _matching(value.replace("..", "\0"), r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$", "a branch name", value)

    @property
    def public_repository(self) -> str:
        """The repository's URL without credentials (`https://user:token@host/…` → `https://host/…`):
        what chunks, logs and errors may show."""
        parts = urlsplit(self.repository)
        if parts.password is None and parts.username is None:
            return self.repository
        return parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()

    @property
    def location(self) -> str:
        return f"{self.public_repository}@{self.branch}"

    def link(self, path: str, commit: str) -> str:
        if not self.web_url:
            return ""
        ref = commit if self.link_to == "commit" else self.branch
        return FORGES[self.forge].format(web=self.web_url.rstrip("/"), ref=ref, path=path, ref_kind=self.link_to)


class ConfluenceSource(_Source):
    """Pages of a Confluence space (Cloud: REST API v2; Data Center: REST API), with their PDF
    attachments if asked."""

    kind: Literal["confluence"]
    deployment: Literal["cloud", "datacenter"] = Field("cloud", description="Confluence Cloud or Data Center.")
    base_url: str = Field(description="The wiki's address: https://acme.atlassian.net/wiki, https://wiki.acme.com")
    space: str = Field(description="The space key (ENG).")
    email: str = Field("", description="Cloud: the account the API token belongs to (Basic auth). Data Center: "
                       "empty, the token is a personal access token (Bearer).")
    token_env: EnvName = Field("TEAMBOT_CONFLUENCE_TOKEN", description="The environment variable holding the API token.")
    attachments: bool = Field(False, description="Also sync the pages' PDF attachments.")
    include_restricted: bool = Field(
        False, description="Sync pages with view restrictions (theirs or an ancestor's) too. Off: they would reach "
        "every channel that searches the collection.",
    )
    timeout: float = Field(30.0, gt=0, le=600)

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        return _http_url(value).rstrip("/")

    @field_validator("space")
    @classmethod
    def _space(cls, value: str) -> str:
        return _matching(value, r"^~?[A-Za-z0-9_]{1,255}$", "a space key")

    @model_validator(mode="after")
    def _account(self) -> "ConfluenceSource":
        if self.deployment == "cloud" and not self.email:
            raise ValueError("Confluence Cloud needs `email`: the account of the API token")
        return self

    @property
    def location(self) -> str:
        return f"{self.base_url} space {self.space}"


class _ExportSource(_Source):
    """An export a tool wrote (a zip file): no API, no token; synced again whenever the file is
    replaced by a newer export."""

    path: Path = Field(description="The export's zip file.")
    base_url: str = Field("", description="Where links to each page go (none when empty).")
    attachments: bool = Field(False, description="Also sync the PDF files in the export.")

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        return _http_url(value).rstrip("/") if value else value

    @property
    def location(self) -> str:
        return str(self.path)


class ConfluenceExportSource(_ExportSource):
    """A Confluence space's HTML export; `base_url` is the wiki's address."""

    kind: Literal["confluence-export"]


class NotionExportSource(_ExportSource):
    """A Notion export ("Markdown & CSV"): pages and database rows as Markdown; links go to
    <base_url>/<page id>."""

    kind: Literal["notion-export"]
    base_url: str = Field("https://www.notion.so", description="Links go to <base_url>/<page id> (none when empty).")


class GoogleDriveSource(_Source):
    """A Google Drive folder (in My Drive or a shared drive) and its subfolders, read by a service
    account: Docs, Sheets and Slides exported, PDFs, Markdown and text files. A file is taken only
    when it is shared with the whole `domain` (or with anyone with the link): one shared with a few
    people would otherwise reach every channel of the collection (`include_unshared` opts in)."""

    kind: Literal["google-drive"]
    folder: str = Field(description="The folder's id (from its address); a shared drive's id for the whole drive.")
    drive: str = Field("", description="The shared drive's id when the folder is in one.")
    domain: str = Field("", description="The Google Workspace domain (acme.com) whose members may see the collection.")
    include_unshared: bool = Field(False, description="Also take files not shared with the domain.")
    credentials_env: EnvName = Field(
        "GOOGLE_APPLICATION_CREDENTIALS", description="The environment variable naming the service account's key file.",
    )
    endpoint: str = Field("", description="Another address of the Drive API (a proxy); empty: Google's.")
    timeout: float = Field(30.0, gt=0, le=600)

    @field_validator("folder", "drive")
    @classmethod
    def _id(cls, value: str) -> str:
        return _matching(value, r"^[A-Za-z0-9_-]{0,200}$", "a Drive id") if value else value

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return _matching(value.lower(), r"^[a-z0-9.-]+\.[a-z]{2,}$", "a domain name") if value else value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return _http_url(value) if value else value

    @model_validator(mode="after")
    def _scope(self) -> "GoogleDriveSource":
        if not self.folder:
            raise ValueError("folder: the id of the folder (or shared drive) to sync is required")
        if not self.domain and not self.include_unshared:
            raise ValueError("domain: name the Workspace domain whose members may see what this source syncs "
                             "(or set include_unshared = true)")
        return self

    @property
    def location(self) -> str:
        return f"Google Drive folder {self.folder}"


AnySource = (WebsiteSource | GitSource | ConfluenceSource | ConfluenceExportSource | NotionExportSource
             | GoogleDriveSource)
Source = Annotated[AnySource, Field(discriminator="kind")]
_ADAPTER = TypeAdapter(Source)


def parse_sources(text: str, where: str = "sources file") -> dict[str, AnySource]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SourcesError(f"{where}: not valid TOML: {exc}") from None
    if unknown := set(data) - {"sources"}:
        raise SourcesError(f"{where}: unknown table [{sorted(unknown)[0]}] (sources go in [sources.<name>])")
    tables = data.get("sources", {})
    if not isinstance(tables, dict) or not tables:
        raise SourcesError(f"{where}: no [sources.<name>] table")
    sources = {}
    for name, table in tables.items():
        if not _NAME.match(name):
            raise SourcesError(f"{where}: [sources.{name}] a source name is lower case letters, digits, - and _")
        if not isinstance(table, dict):
            raise SourcesError(f"{where}: [sources.{name}] must be a table")
        try:
            sources[name] = _ADAPTER.validate_python({**table, "name": name})
        except ValidationError as exc:
            problems = "; ".join(_problem(err) for err in exc.errors())
            raise SourcesError(f"{where}: [sources.{name}] {problems}") from None
    names = list(sources)
    for i, name in enumerate(names):
        for other in names[:i]:
            a, b = sources[name], sources[other]
            # Two sources writing the same documents into one collection would replace each other's.
            if a.collection == b.collection and a.kind == b.kind and _overlap(a, b):
                raise SourcesError(f"{where}: [sources.{name}] syncs documents of {a.location} that [sources.{other}] "
                                   f"also syncs into {a.collection}")
    return sources


def _normal(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.netloc.lower()}{parts.path.rstrip('/')}/"


def _overlap(a: AnySource, b: AnySource) -> bool:
    if isinstance(a, WebsiteSource):
        x, y = _normal(a.prefix), _normal(b.prefix)
        return x.startswith(y) or y.startswith(x)
    if isinstance(a, GitSource):
        if _normal(a.repository) != _normal(b.repository) or a.branch != b.branch:
            return False
        x, y = a.paths or ("",), b.paths or ("",)
        return any(p.startswith(q) or q.startswith(p) for p in x for q in y)
    if isinstance(a, GoogleDriveSource):
        return a.folder == b.folder
    if isinstance(a, _ExportSource):
        return Path(a.path).resolve() == Path(b.path).resolve()
    return _normal(a.base_url) == _normal(b.base_url) and a.space == b.space


def _problem(err: dict) -> str:
    message = err["msg"].removeprefix("Value error, ")
    key = ".".join(str(p) for p in err["loc"][1:])  # loc[0] is the kind the table was read as
    if err["type"] == "union_tag_invalid":
        return f"kind: {message}"
    if err["type"] == "union_tag_not_found":
        return "kind: missing (website, git, confluence, google-drive, confluence-export or notion-export)"
    return f"{key}: {message}" if key else message


def load_sources(path: Path) -> dict[str, AnySource]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourcesError(f"cannot read the sources file {path}: {exc}") from None
    return parse_sources(text, str(path))
