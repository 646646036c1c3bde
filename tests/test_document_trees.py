"""Real document trees against the real Weaviate: every file keeps exactly its own chunks.

Paths that share words, nested folders, the same name in two folders, spaces and non-ASCII
names, a big file: ingested, changed, partly deleted and re-ingested, over random trees too.
Collections from before exact-match properties are repaired, and `--rebuild` re-indexes, while
questions go on being answered.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from pipeline import collection_aliases
from pipeline.stores import admin_client, exact_filter
from tests.conftest import HANDBOOK, drop_collection, unique_collection
from tests.doc_trees import BIG, TRICKY, assert_mirrors, chunks_by_source, write


def _ids(settings, collection: str) -> dict[str, set[str]]:
    return {s: {c["_original_id"] for c in chunks} for s, chunks in chunks_by_source(settings, collection).items()}


def test_file_identity_is_compared_whole_in_the_schema_weaviate_holds(weaviate, tmp_path):
    from pipeline.indexing import Indexer

    (tmp_path / "a.md").write_text("# A\n\nSome text about the office kitchen rota.\n")
    collection = unique_collection("Schema")
    try:
        Indexer(weaviate, collection).ingest([tmp_path])
        client = admin_client(weaviate)
        try:
            layout = collection_aliases.inspect(client, collection)
            config = client.collections.use(layout.target).config.get()
        finally:
            client.close()
        assert layout.aliased and layout.target != collection and layout.problems == ()
        tokenization = {p.name: p.tokenization.value for p in config.properties if p.tokenization}
        for name in ("source", "content_hash", "root", "url", "url_base", "file_type", "_original_id"):
            assert tokenization[name] == "field", name
        assert tokenization["content"] == tokenization["title"] == tokenization["section"] == "word"
    finally:
        drop_collection(weaviate, collection)
    with pytest.raises(ValueError, match="word-tokenized"):
        exact_filter("title", "Deploys")  # a filter that would match by words is refused


def test_a_real_tree_keeps_every_file_through_changes_deletions_and_reruns(weaviate, tmp_path):
    from pipeline.indexing import FLUSH_CHUNKS, Indexer

    docs = tmp_path / "docs"
    versions: dict[str, int | None] = {rel: 0 for rel in [*TRICKY, BIG]}
    big_sections = FLUSH_CHUNKS + 40  # one section a chunk: the big file spans two flushes
    write(docs, versions, big_sections)
    collection = unique_collection("Tree")
    seen: list = []
    try:
        indexer = Indexer(weaviate, collection)
        first = indexer.ingest([docs], on_progress=seen.append)
        assert len(first.indexed) == len(versions) and not first.skipped and not first.removed
        assert_mirrors(weaviate, collection, docs, versions)
        # Progress counts chunks as they are embedded, not only files.
        big_total = first.chunks_written
        assert seen[-1].chunks_done == big_total and seen[-1].files_done == len(versions)
        assert len({p.chunks_done for p in seen}) > 3
        before = _ids(weaviate, collection)

        changed = {"git.html": 1, "api/auth.md": 1, BIG: 1, "git-push-all-tags.html": 0}
        deleted = {"git-push.html": None, "api.md": None, "on call/runbook notes.md": None}
        versions |= changed | deleted
        write(docs, changed | deleted, big_sections)
        second = indexer.ingest([docs])
        assert sorted(Path(p).relative_to(docs.resolve()).as_posix() for p in second.indexed) == sorted(changed)
        assert sorted(Path(p).relative_to(docs.resolve()).as_posix() for p in second.removed) == sorted(deleted)
        assert_mirrors(weaviate, collection, docs, versions)
        after = _ids(weaviate, collection)
        for rel, version in versions.items():
            source = str((docs / rel).resolve())
            if version is not None and rel not in changed:
                assert after[source] == before[source], f"{rel} was re-indexed without a change"

        # A file named again on its own, and through a symlink (as git-doc's index.html → git.html): once.
        (tmp_path / "index.html").symlink_to(docs / "git.html")
        third = indexer.ingest([docs, docs / "git.html", tmp_path / "index.html"])
        assert (third.indexed, third.removed, third.chunks_written, third.chunks_deleted) == ([], [], 0, 0)
        assert third.files_seen == len(third.unchanged) == sum(v is not None for v in versions.values())
    finally:
        drop_collection(weaviate, collection)


# Random trees: any path made of a few shared words, in folders made of the same words.
WORDS = ["git", "push", "api", "café"]
_name = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map("-".join)
_rel = st.tuples(st.lists(st.sampled_from(WORDS), max_size=2), _name, st.sampled_from([".md", ".html", ".txt"])).map(
    lambda t: "/".join([*t[0], t[1] + t[2]])
)


@st.composite
def _histories(draw) -> list[dict[str, bool]]:
    """A tree of a few such files, then two or three rounds of changes (True) and deletions (False)."""
    pool = draw(st.lists(_rel, min_size=3, max_size=8, unique=True))
    changes = st.dictionaries(st.sampled_from(pool), st.booleans(), min_size=1)
    return [dict.fromkeys(pool, True), *draw(st.lists(changes, min_size=2, max_size=3))]


@hypothesis_settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_histories())
def test_chunks_in_weaviate_are_the_chunks_of_the_files_on_disk(weaviate, steps):
    """After every ingest of a random tree, changed at random: the invariant of the index."""
    from pipeline.indexing import Indexer

    collection = unique_collection("Prop")
    versions: dict[str, int | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        try:
            indexer = Indexer(weaviate, collection)
            for step in steps:
                change = {
                    rel: (versions.get(rel) or 0) + 1 if keep else None
                    for rel, keep in step.items()
                }
                versions |= change
                write(docs, change)
                indexer.ingest([docs])
                assert_mirrors(weaviate, collection, docs, versions)
        finally:
            drop_collection(weaviate, collection)


# ---------------------------------------------------------------------- repair and rebuild

# The collection definition teambot used before exact-match properties: all text word-tokenized.
LEGACY_PROPERTIES = [
    {"name": "_original_id", "dataType": ["text"]}, {"name": "content", "dataType": ["text"]},
    {"name": "blob_data", "dataType": ["blob"]}, {"name": "blob_mime_type", "dataType": ["text"]},
    {"name": "score", "dataType": ["number"]},
    *({"name": n, "dataType": ["text"]} for n in ("source", "url", "title", "section", "file_type", "content_hash")),
    *({"name": n, "dataType": ["int"]} for n in ("position", "page_number", "chunk_count")),
]
QUESTION = "How many days of paid vacation do full-time employees get?"


def _legacy_collection(settings, name: str, files: list[Path]) -> None:
    """A plain collection with the old schema, holding what the old ingest left of `files`."""
    from weaviate.classes.data import DataObject
    from weaviate.util import generate_uuid5

    from pipeline.indexing import Indexer, SourceFile, _sha256

    indexer = Indexer(settings, name)
    client = admin_client(settings)
    try:
        client.collections.create_from_dict(
            {"class": name, "invertedIndexConfig": {"indexNullState": True}, "properties": LEGACY_PROPERTIES}
        )
        legacy = {p["name"] for p in LEGACY_PROPERTIES}
        for path in files:
            chunks = indexer.chunk(indexer.convert(SourceFile(path, path.parent), _sha256(path)))
            indexer.embedder.warm_up()
            chunks = indexer.embedder.run(documents=chunks)["documents"]
            client.collections.use(name).data.insert_many([
                DataObject(properties={k: v for k, v in {"_original_id": c.id, "content": c.content, **c.meta}.items()
                                       if k in legacy},
                           uuid=generate_uuid5(c.id), vector=c.embedding)
                for c in chunks
            ])
    finally:
        client.close()


class Asker(threading.Thread):
    """Asks the same question over and over until stopped, keeping every error and every miss."""

    def __init__(self, service, collection: str, expected: str) -> None:
        super().__init__(daemon=True)
        self.service, self.collection, self.expected = service, collection, expected
        self.stop, self.asked, self.errors, self.misses = threading.Event(), 0, [], []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                docs, _, _ = self.service.retrieve(QUESTION, self.collection)
                if self.expected not in [Path(d.meta["source"]).name for d in docs[:3]]:
                    self.misses.append([d.meta["source"] for d in docs])
            except Exception as exc:  # noqa: BLE001 - every failure a user would have seen
                self.errors.append(repr(exc))
            self.asked += 1

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=60)


def test_an_old_collection_is_repaired_and_rebuilt_while_questions_are_answered(weaviate, tmp_path):
    from pipeline.indexing import Indexer
    from pipeline.querying import AnswerService

    docs = tmp_path / "docs"
    shutil.copytree(HANDBOOK, docs)
    versions = {rel: 0 for rel in TRICKY}
    write(docs, versions)
    collection = unique_collection("Legacy")
    # The old ingest lost the files whose paths share words; the handbook's pages survived.
    _legacy_collection(weaviate, collection, sorted(docs.glob("*.*")))
    service = AnswerService(weaviate)
    client = admin_client(weaviate)
    asker = Asker(service, collection, "time-off.md")
    try:
        assert collection_aliases.inspect(client, collection).problems  # word-tokenized: found out
        asker.start()
        repaired = Indexer(weaviate, collection).ingest([docs])
        assert "word-tokenized" in repaired.rebuilt and not repaired.skipped
        layout = collection_aliases.inspect(client, collection)
        assert layout.aliased and layout.problems == ()
        assert_mirrors(weaviate, collection, docs, versions)  # the lost files are back

        # A rebuild with other chunking: a new index behind the same name, the old one dropped.
        smaller = weaviate.model_copy(update={"chunk_words": 60, "chunk_overlap": 10})
        rebuilt = Indexer(smaller, collection).ingest([docs], rebuild=True)
        assert rebuilt.rebuilt == "asked for" and len(rebuilt.indexed) == len(list(docs.rglob("*.*")))
        after = collection_aliases.inspect(client, collection)
        assert after.target != layout.target and layout.target not in client.collections.list_all(simple=True)
        assert_mirrors(weaviate, collection, docs, versions)
        assert max(len(c["content"].split()) for cs in chunks_by_source(weaviate, collection).values() for c in cs) <= 80
        asker.finish()
        assert asker.asked >= 5 and asker.errors == [] and asker.misses == []

        again = Indexer(smaller, collection).ingest([docs])
        assert again.indexed == [] and again.chunks_written == 0 and not again.rebuilt
    finally:
        asker.finish()
        client.close()
        service.close()
        drop_collection(weaviate, collection)


# ---------------------------------------------------------------------- sources as links


def test_sources_link_to_their_section_and_the_address_is_kept_per_folder(weaviate, tmp_path):
    from typer.testing import CliRunner

    from teambot.cli import app

    docs = tmp_path / "hand book"
    shutil.copytree(HANDBOOK, docs)
    (docs / "runbooks").mkdir()
    (docs / "runbooks" / "db failover.md").write_text(
        "# Database failover\n\n## Promote the replica\n\nRun `pgctl promote` on the replica host within five minutes.\n"
    )
    (docs / "release.html").write_text(
        '<html><head><title>Release train</title><link rel="canonical" href="https://intranet.example.com/release">'
        '</head><body><nav>Home | Teams</nav><h1>Release train</h1><h2 id="cutoff">Cut-off</h2>'
        "<p>The release train leaves every Tuesday at 14:00; merge before noon.</p></body></html>"
    )
    collection = unique_collection("Links")
    base = "https://git.example.com/acme/handbook/blob/main"
    runner = CliRunner()

    def ingest(*extra: str) -> str:
        result = runner.invoke(app, ["ingest", str(docs), "-c", collection, "--no-progress", *extra],
                               env={"TEAMBOT_DATA_DIR": str(weaviate.data_dir)})
        assert result.exit_code == 0, result.output
        return result.output

    def urls() -> dict[str, set[str]]:
        from pipeline.stores import admin_client

        client = admin_client(weaviate)
        try:
            out: dict[str, set[str]] = {}
            for obj in client.collections.use(collection).iterator(return_properties=["source", "url", "section"]):
                out.setdefault(Path(obj.properties["source"]).name, set()).add(obj.properties["url"])
            return out
        finally:
            client.close()

    try:
        assert "10 indexed" in ingest("--url-base", base)
        links = urls()
        assert links["db failover.md"] == {f"{base}/runbooks/db%20failover.md#promote-the-replica"}
        assert f"{base}/time-off.md#vacation-and-time-off" in links["time-off.md"]
        assert all(u.startswith(f"{base}/benefits.pdf#page=") for u in links["benefits.pdf"])
        assert links["release.html"] == {"https://intranet.example.com/release#cutoff"}  # its canonical link wins
        assert {u.split("#")[0] for u in links["office.txt"]} == {f"{base}/office.txt"}

        assert "0 indexed, 10 unchanged" in ingest()  # the address is kept for the folder
        assert urls() == links
        moved = "https://docs.example.com/handbook"
        assert "10 indexed" in ingest("--url-base", moved)  # a new address re-links every file
        assert all(u.startswith((moved, "https://intranet.example.com/")) for us in urls().values() for u in us)

        other = tmp_path / "other"
        other.mkdir()
        refused = runner.invoke(app, ["ingest", str(docs), str(other), "-c", collection, "--url-base", moved],
                                env={"TEAMBOT_DATA_DIR": str(weaviate.data_dir)})
        assert refused.exit_code == 2 and "one folder" in refused.output
    finally:
        drop_collection(weaviate, collection)


def test_ingest_shows_its_own_progress_and_nothing_that_means_nothing_to_the_user(weaviate, tmp_path):
    """What a person sees on the terminal: teambot's progress in chunks and its summary; no
    library's model-loading bar, no warnings about connections left open."""
    import os
    import subprocess
    import sys

    docs = tmp_path / "docs"
    write(docs, {"guide/intro.md": 0, "api.md": 0})
    collection = unique_collection("Terminal")
    env = {**os.environ, "TEAMBOT_WEAVIATE_URL": weaviate.weaviate_url, "TEAMBOT_DATA_DIR": str(weaviate.data_dir),
           "TEAMBOT_WEAVIATE_GRPC_PORT": str(weaviate.weaviate_grpc_port)}
    try:
        run = subprocess.run([sys.executable, "-m", "teambot.cli", "ingest", str(docs), "-c", collection],
                             env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        assert f"{collection}: 2 files — 2 indexed" in run.stdout
        assert "file 2/2" in run.stderr and "chunk" in run.stderr  # teambot's own bar
        for noise in ("Loading weights", "Warning", "unclosed", "Traceback"):
            assert noise not in run.stderr, run.stderr[-2000:]
    finally:
        drop_collection(weaviate, collection)
