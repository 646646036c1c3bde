"""The name a team's documents are searched under is a Weaviate alias; what it points to can change.

`Docs` is an alias of a physical collection such as `Docs_20261201183000a1b2`. A rebuild (a schema
repair, `teambot ingest --rebuild`) fills a new physical collection while the bots go on searching
the old one through the alias, then moves the alias in one step and drops the old collection.
Collections made before aliases existed in teambot are plain collections named `Docs`; the first
rebuild replaces one with an alias of the same name (a plain collection must be deleted before an
alias can take its name, so searches in those milliseconds fail and are retried).
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

from pipeline.embedders import embedder_spec
from pipeline.stores import COLLECTION_PROPERTIES, collection_settings, embedding_space


@dataclass(frozen=True)
class Layout:
    name: str  # what bots and users search
    target: str | None  # the physical collection behind it; None when there is none yet
    aliased: bool  # False: a plain collection (from before aliases, or made by hand)
    problems: tuple[str, ...] = ()  # why it must be rebuilt; empty when it is current

    @property
    def needs_rebuild(self) -> bool:
        return self.target is not None and bool(self.problems)


def schema_problems(config) -> tuple[str, ...]:
    """What makes a collection unfit for exact file bookkeeping: missing properties, and exact-match
    properties that Weaviate tokenizes into words."""
    have = {p.name: p for p in config.properties}
    problems = []
    for wanted in COLLECTION_PROPERTIES:
        got = have.get(wanted["name"])
        if got is None and wanted.get("tokenization"):
            problems.append(f"no `{wanted['name']}` property")
        elif wanted.get("tokenization") and got.tokenization is not None and got.tokenization.value != wanted["tokenization"]:
            problems.append(f"`{wanted['name']}` is {got.tokenization.value}-tokenized")
    return tuple(problems)


def add_missing_properties(client, target: str) -> None:
    """Give a collection the plain properties added since it was made (`updated`): Weaviate adds a
    property in place, so only a missing exact-match property needs a rebuild."""
    from weaviate.classes.config import DataType, Property

    collection = client.collections.use(target)
    have = {p.name for p in collection.config.get().properties}
    for wanted in COLLECTION_PROPERTIES:
        if wanted["name"] not in have and not wanted.get("tokenization"):
            collection.config.add_property(Property(name=wanted["name"], data_type=DataType(wanted["dataType"][0])))


def inspect(client, name: str, settings=None) -> Layout:
    """What `name` is; with `settings`, a collection embedded in another vector space than the
    configured embedder's must be rebuilt too."""
    alias = client.alias.get(alias_name=name)
    if alias is not None:
        target, aliased = alias.collection, True
    elif client.collections.exists(name):
        target, aliased = name, False
    else:
        return Layout(name, None, False)
    config = client.collections.use(target).config.get()
    problems = schema_problems(config)
    if settings is not None:
        have, wanted = embedding_space(config), embedder_spec(settings).space
        if have != wanted:
            problems += (f"its vectors are {have}'s, TEAMBOT_EMBEDDER={settings.embedder} embeds as {wanted}",)
    if not aliased:
        problems += ("a plain collection, not an alias",)
    return Layout(name, target, aliased, problems)


def new_target(client, name: str, settings=None) -> str:
    """A new, empty physical collection for `name`, with the current schema (replicated and
    sharded as `settings` say)."""
    target = f"{name}_{time.strftime('%Y%m%d%H%M%S', time.gmtime())}{secrets.token_hex(2)}"
    client.collections.create_from_dict(collection_settings(target, settings))
    return target


def create(client, name: str, settings=None) -> Layout:
    """A new collection `name`: an alias of a new physical collection."""
    target = new_target(client, name, settings)
    client.alias.create(alias_name=name, target_collection=target)
    return Layout(name, target, True)


def switch(client, layout: Layout, target: str) -> None:
    """Point `layout.name` at `target`, then drop what it pointed at before."""
    if layout.aliased:
        client.alias.update(alias_name=layout.name, new_target_collection=target)
        client.collections.delete(layout.target)
    else:
        if layout.target is not None:
            client.collections.delete(layout.target)
        client.alias.create(alias_name=layout.name, target_collection=target)


def drop_abandoned(client, layout: Layout) -> list[str]:
    """Delete physical collections of `name` that nothing points at (a rebuild killed half-way)."""
    pattern = re.compile(rf"^{re.escape(layout.name)}_\d{{14}}[0-9a-f]{{4}}$")
    names = [n for n in client.collections.list_all(simple=True) if pattern.match(n) and n != layout.target]
    for abandoned in names:
        client.collections.delete(abandoned)
    return names


def drop(client, name: str) -> None:
    """Delete the collection `name`: its alias and what it points at."""
    layout = inspect(client, name)
    if layout.aliased:
        client.alias.delete(alias_name=name)
    if layout.target is not None:
        client.collections.delete(layout.target)
