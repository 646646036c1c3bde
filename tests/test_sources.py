"""Synced sources against real servers: SQLite's C interface documentation (120 pages of Debian's
sqlite3-doc) served over HTTP on 127.0.0.1, and a git repository with history over file://, each
synced into the real Weaviate; a sync killed with SIGKILL, edits, deletions, renames, a mass
deletion, a rate-limited, locked-out and unreachable site; the answers cite the pages' own links.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import HANDBOOK, drop_collection, unique_collection
from tests.doc_trees import chunks_by_source
from testing.doc_site import SQLITE_DOCS, DocSite

pytestmark = pytest.mark.skipif(not SQLITE_DOCS.is_dir(), reason="needs Debian's sqlite3-doc (scripts/bootstrap.sh)")
SITE_PAGES = 120
SYNC_WAIT = 600.0  # a whole first sync of the site under the suite's load, with margin


def _cli_env(settings, feedback_url: str) -> dict:
    return {**os.environ, "TEAMBOT_WEAVIATE_URL": settings.weaviate_url, "TEAMBOT_DATA_DIR": str(settings.data_dir),
            "TEAMBOT_WEAVIATE_GRPC_PORT": str(settings.weaviate_grpc_port), "TEAMBOT_FEEDBACK_DB_URL": feedback_url}


def _website_file(path: Path, site: DocSite, collection: str, **extra) -> Path:
    lines = ['[sources.sqlite-docs]', 'kind = "website"', f'collection = "{collection}"', 'every = "1h"',
             f'sitemaps = ["{site.sitemap}"]', f'prefix = "{site.url}/docs/"', 'skip_classes = ["tagline"]']
    lines += [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _chunks(settings, collection: str) -> dict[str, list[dict]]:
    """Every chunk of the collection, all of its properties, grouped by document."""
    from pipeline.stores import admin_client

    client = admin_client(settings)
    try:
        out: dict[str, list[dict]] = {}
        for obj in client.collections.use(collection).iterator():
            out.setdefault(obj.properties["source"], []).append(obj.properties)
        return out
    finally:
        client.close()


def _state(tmp_path: Path):
    """A source state store in a fresh SQLite feedback database."""
    from feedback.store import FeedbackStore
    from feedback.sync_state import SyncState

    return SyncState(FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}"))


def _complete(settings, collection: str) -> dict[str, list[dict]]:
    """The collection's documents; each must hold exactly its chunk_count chunks of one version."""
    stored = _chunks(settings, collection)
    for source, chunks in stored.items():
        versions = {c["content_hash"] for c in chunks}
        assert len(versions) == 1 and len(chunks) == chunks[0]["chunk_count"], source
    return stored


@pytest.fixture(scope="module")
def synced_site(weaviate, tmp_path_factory):
    """The site synced once by `teambot sync --once`, killed with SIGKILL partway, then resumed."""
    from feedback.store import FeedbackStore
    from feedback.sync_state import SyncState
    from pipeline.sources import engine
    from pipeline.sources.config import load_sources

    tmp = tmp_path_factory.mktemp("site")
    site = DocSite.copy_of(SQLITE_DOCS, tmp / "www")
    for page in site.pages()[SITE_PAGES:]:  # a site of SITE_PAGES real pages: enough to show scale, quick to embed
        page.unlink()
    site.write_sitemap()
    collection = unique_collection("Site")
    feedback_url = f"sqlite:///{tmp / 'feedback.db'}"
    settings = weaviate.model_copy(update={"data_dir": tmp / "data"})
    sources_file = _website_file(tmp / "sources.toml", site, collection)
    state = SyncState(FeedbackStore(feedback_url))
    process = subprocess.Popen(
        [sys.executable, "-m", "teambot.cli", "sync", "--once", "--sources", str(sources_file), "--no-progress"],
        env=_cli_env(settings, feedback_url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + SYNC_WAIT
        saved = 0
        while process.poll() is None and time.monotonic() < deadline:
            if (saved := sum(s.documents for s in state.status())) > 0:
                break
            time.sleep(0.05)
        assert process.poll() is None, process.stdout.read().decode()[-2000:]
        assert saved, "nothing was synced in time"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        saved = sum(s.documents for s in state.status())
        before = len(site.requests)
        source = load_sources(sources_file)["sqlite-docs"]
        resumed = engine.sync(source, state, settings)
        yield SimpleNamespace(site=site, source=source, state=state, settings=settings, collection=collection,
                              saved=saved, resumed=resumed, resumed_statuses=site.statuses(before), tmp=tmp)
    finally:
        if process.poll() is None:
            process.kill()
        site.stop()
        drop_collection(weaviate, collection)


def test_a_killed_sync_resumes_without_fetching_what_it_had_finished(synced_site):
    s = synced_site
    pages = len(s.site.pages())
    assert pages == SITE_PAGES
    assert 0 < s.saved < pages
    assert s.resumed.error == "" and s.resumed.seen == pages
    # What the killed run had finished cost a 304 each; only the rest was downloaded again.
    assert s.resumed_statuses[304] >= s.saved
    assert s.resumed_statuses[200] <= pages - s.saved
    stored = _complete(s.settings, s.collection)
    assert set(stored) == {s.site.page_url(p) for p in s.site.pages()}
    assert not any("Choose any three" in c["content"] for chunks in stored.values() for c in chunks)  # skip_classes
    status = {r.name: r for r in s.state.status()}["sqlite-docs"]
    assert status.documents == pages and status.last_error is None and not status.running


def test_a_second_run_only_asks_whether_pages_changed(synced_site):
    from pipeline.sources import engine

    s = synced_site
    before = len(s.site.requests)
    report = engine.sync(s.source, s.state, s.settings)
    assert (report.changed, report.deleted, report.error) == (0, 0, "")
    assert s.site.statuses(before) == {304: len(s.site.pages())}  # conditional requests only, all 304
    from core import metrics  # what `teambot sync` serves at /metrics

    exposed = metrics.exposition().decode()
    assert 'teambot_sync_documents_total{source="sqlite-docs",what="not_modified"}' in exposed
    assert 'teambot_sync_last_success_timestamp_seconds{source="sqlite-docs"}' in exposed


def test_an_edit_a_deletion_and_a_rename_reach_the_collection(synced_site):
    from pipeline.sources import engine

    s = synced_site
    docs = s.site.root / "docs"
    edited, deleted, renamed = docs / "blob_open.html", docs / "blob_close.html", docs / "busy_timeout.html"
    edited.write_text(edited.read_text() + "<p>Our team wraps this as quasarblob.</p>\n")
    deleted.unlink()
    moved = renamed.rename(docs / "busy-timeout-renamed.html")
    s.site.write_sitemap()
    before = len(s.site.requests)
    report = engine.sync(s.source, s.state, s.settings)
    assert (report.changed, report.deleted, report.error) == (2, 2, "")
    assert s.site.statuses(before) == {304: len(s.site.pages()) - 2, 200: 2}
    stored = _complete(s.settings, s.collection)
    url = s.site.page_url
    assert url(deleted) not in stored and url(docs / "busy_timeout.html") not in stored
    assert url(moved) in stored  # a renamed page is one page
    assert any("quasarblob" in c["content"] for c in stored[url(edited)])
    assert len(stored) == len(s.site.pages())


def test_a_mass_deletion_is_refused_and_nothing_is_removed(synced_site):
    from typer.testing import CliRunner

    from teambot.cli import app

    s = synced_site
    pages = s.site.pages()
    kept = len(pages) // 3
    s.site.write_sitemap(pages[:kept])  # a broken sitemap generator: two thirds of the pages vanish from it
    try:
        env = _cli_env(s.settings, str(s.state.engine.url))
        sources_file = _website_file(s.tmp / "sources.toml", s.site, s.collection)
        result = CliRunner().invoke(app, ["sync", "--once", "--sources", str(sources_file), "--no-progress"], env=env)
        assert result.exit_code == 3, result.output
        assert f"{len(pages) - kept} documents are gone at the origin" in result.output
        assert "none removed" in result.output
        assert len(_complete(s.settings, s.collection)) == len(pages)
        status = CliRunner().invoke(app, ["sources", "status"], env=env)
        assert "deletions refused by the mass-deletion guard" in status.output
    finally:
        s.site.write_sitemap()


@pytest.mark.parametrize("fault, says", [
    ("429", "keeps answering 429"), ("401", "the site wants credentials"), ("robots500", "robots.txt: HTTP 500"),
    ("sso", "redirected off the site"),  # every page now redirects to a login page on another host
])
def test_a_failing_site_keeps_its_documents_and_says_why(synced_site, fault, says):
    from pipeline.sources import engine

    s = synced_site
    pages = len(s.site.pages())
    s.site.fault = fault
    try:
        report = engine.sync(s.source, s.state, s.settings)
    finally:
        s.site.fault = ""
    assert says in report.summary() and report.deleted == 0 and report.refused_deletions == 0
    assert len(_complete(s.settings, s.collection)) == pages
    if report.error:
        status = {r.name: r for r in s.state.status()}["sqlite-docs"]
        assert says in status.last_error and status.failures >= 1
    recovered = engine.sync(s.source, s.state, s.settings)
    assert (recovered.error, recovered.changed, recovered.errors) == ("", 0, [])  # and nothing to redo


def test_an_unreachable_site_fails_the_run_and_deletes_nothing(synced_site):
    import socket

    from pipeline.sources import engine
    from pipeline.sources.config import parse_sources

    s = synced_site
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        gone = parse_sources(
            f'[sources.sqlite-docs]\nkind = "website"\ncollection = "{s.collection}"\n'
            f'sitemaps = ["http://127.0.0.1:{port}/sitemap.xml"]\nprefix = "http://127.0.0.1:{port}/docs/"\n'
        )["sqlite-docs"]
        report = engine.sync(gone, s.state, s.settings)
    assert "cannot reach" in report.error and report.deleted == 0
    assert len(_complete(s.settings, s.collection)) == len(s.site.pages())


def test_the_bot_answers_from_the_site_with_a_link_to_the_page(synced_site, services):
    from pipeline.querying import AnswerService

    s = synced_site
    service = AnswerService(services)
    try:
        answer = service.ask("Which function opens a BLOB for incremental I/O?", collection=s.collection)
    finally:
        service.close()
    assert any(src.url.startswith(f"{s.site.url}/docs/blob_open.html") for src in answer.sources), answer.sources


def test_a_page_cannot_claim_another_sites_address_and_robots_txt_is_obeyed(weaviate, tmp_path):
    """Crawled from a start page: a canonical link to another host is ignored, a canonical link to
    another page of the site makes the two one page, a folder robots.txt disallows is not fetched."""
    from pipeline.sources import engine
    from pipeline.sources.config import parse_sources

    root = tmp_path / "www"
    (root / "docs" / "private").mkdir(parents=True)
    (root / "robots.txt").write_text("User-agent: *\nDisallow: /docs/private/\n")
    page = "<html><head><title>{t}</title>{head}</head><body><h1>{t}</h1><p>{body}</p>{links}</body></html>"
    (root / "docs" / "index.html").write_text(page.format(
        t="Index", head="", body="Start here.",
        links='<a href="poisoned.html">p</a> <a href="copy.html">c</a> <a href="private/secret.html">s</a>'))
    (root / "docs" / "poisoned.html").write_text(page.format(
        t="Poisoned", head='<link rel="canonical" href="https://evil.example/login">', body="Harmless text.", links=""))
    (root / "docs" / "copy.html").write_text(page.format(
        t="Index", head='<link rel="canonical" href="index.html">', body="Start here.", links=""))
    (root / "docs" / "private" / "secret.html").write_text(page.format(t="Secret", head="", body="Do not crawl.", links=""))
    site = DocSite(root)
    collection = unique_collection("Crawl")
    try:
        source = parse_sources(
            f'[sources.crawl]\nkind = "website"\ncollection = "{collection}"\n'
            f'start_urls = ["{site.url}/docs/index.html"]\nprefix = "{site.url}/docs/"\n'
        )["crawl"]
        state = _state(tmp_path)
        report = engine.sync(source, state, weaviate)
        assert report.error == ""
        stored = chunks_by_source(weaviate, collection)
        assert set(stored) == {f"{site.url}/docs/index.html", f"{site.url}/docs/poisoned.html"}
        assert not any(path.startswith("/docs/private/") for path, _ in site.requests)
        assert report.seen == 2
    finally:
        site.stop()
        drop_collection(weaviate, collection)


# ---------------------------------------------------------------- git


def _git(repo: Path, *args: str, when: str = "2024-01-02T03:04:05+00:00") -> str:
    env = {**os.environ, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when, "GIT_AUTHOR_NAME": "Docs",
           "GIT_AUTHOR_EMAIL": "docs@example.com", "GIT_COMMITTER_NAME": "Docs", "GIT_COMMITTER_EMAIL": "docs@example.com"}
    return subprocess.run(["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True).stdout


def test_a_git_repository_syncs_by_commit_with_links_to_its_forge(services, tmp_path):
    from pipeline.querying import AnswerService
    from pipeline.sources import engine
    from pipeline.sources.config import parse_sources

    repo = tmp_path / "handbook"
    (repo / "docs").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    for page in HANDBOOK.iterdir():
        shutil.copy(page, repo / "docs" / page.name)
    (repo / "README.md").write_text("# Not synced\n\nOutside docs/.\n")
    os.symlink("/etc/passwd", repo / "docs" / "passwd.md")  # a link leading out of the repository
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "handbook")
    first = _git(repo, "rev-parse", "HEAD").strip()
    collection = unique_collection("Git")
    source = parse_sources(
        f'[sources.handbook]\nkind = "git"\ncollection = "{collection}"\nrepository = "file://{repo}"\n'
        f'branch = "main"\npaths = ["docs/"]\nweb_url = "https://git.example.com/team/handbook"\nforge = "gitlab"\n'
        f'max_delete_min = 3\n'
    )["handbook"]
    state = _state(tmp_path)
    settings = services.model_copy(update={"data_dir": tmp_path / "data"})
    files = sorted(p.name for p in HANDBOOK.iterdir())
    link = "https://git.example.com/team/handbook/-/blob/{sha}/docs/{name}"
    try:
        report = engine.sync(source, state, settings)
        assert (report.changed, report.error) == (len(files), "")
        stored = _complete(settings, collection)
        assert len(stored) == len(files)  # not README.md, not the symlink
        chunk = stored[f"file://{repo}#main:docs/expenses.md"][0]
        assert chunk["url"].startswith(link.format(sha=first, name="expenses.md"))
        assert chunk["updated"] == "2024-01-02T03:04:05+00:00"  # the date of the commit that last changed it

        assert (engine.sync(source, state, settings).changed, state.cursor("handbook")) == (0, first)

        expenses = repo / "docs" / "expenses.md"
        expenses.write_text(expenses.read_text() + "\n## Taxis\n\nTaxis after 22:00 are paid from the zorbly budget.\n")
        _git(repo, "rm", "-q", "docs/office.txt")
        _git(repo, "mv", "docs/security.md", "docs/security-policy.md")
        _git(repo, "commit", "-qam", "edit, delete, rename", when="2025-06-07T08:09:10+00:00")
        second = _git(repo, "rev-parse", "HEAD").strip()
        report = engine.sync(source, state, settings)
        assert (report.changed, report.deleted) == (2, 2)
        stored = _complete(settings, collection)
        key = f"file://{repo}#main:docs/"
        assert f"{key}office.txt" not in stored and f"{key}security.md" not in stored
        assert f"{key}security-policy.md" in stored
        edited = stored[f"{key}expenses.md"]
        assert any("zorbly" in c["content"] for c in edited) and edited[0]["updated"] == "2025-06-07T08:09:10+00:00"
        assert edited[0]["url"].startswith(link.format(sha=second, name="expenses.md"))

        service = AnswerService(settings)
        try:
            answer = service.ask("Which budget pays for taxis after 22:00?", collection=collection)
        finally:
            service.close()
        assert any(src.url.startswith(link.format(sha=second, name="expenses.md")) for src in answer.sources), ([s.url for s in answer.sources], answer.text, answer.outcome)

        _git(repo, "rm", "-q", *[f"docs/{p}" for p in ("deploys.html", "on-call.md", "onboarding.md", "time-off.md",
                                                       "benefits.pdf")])
        _git(repo, "commit", "-qm", "oops")
        refused = engine.sync(source, state, settings)
        assert (refused.refused_deletions, refused.deleted) == (5, 0)
        assert len(chunks_by_source(settings, collection)) == len(files) - 1
        assert state.cursor("handbook") == _git(repo, "rev-parse", "HEAD").strip()
        allowed = engine.sync(source, state, settings, allow_mass_delete=True)
        assert allowed.deleted == 5 and len(chunks_by_source(settings, collection)) == len(files) - 6

        drop_collection(settings, collection)  # lost (a restore, a mistake): the next sync writes it again
        assert engine.sync(source, state, settings).changed == len(files) - 6
        assert len(_complete(settings, collection)) == len(files) - 6
    finally:
        drop_collection(settings, collection)


# ---------------------------------------------------------------- the lock and the file


def test_one_sync_of_a_source_at_a_time_and_a_dead_holder_does_not_block_it(store_url):
    import socket

    from feedback.store import FeedbackStore
    from feedback.sync_state import SyncState, SyncSourceRecord
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    store = FeedbackStore(store_url)
    first, second = SyncState(store), SyncState(store)
    assert first.lock("docs", "website", "Docs")
    assert not second.lock("docs", "website", "Docs")  # held by a live process
    assert [r.running for r in second.status()] == [True]
    first.unlock("docs")
    assert second.lock("docs", "website", "Docs")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with Session(store.engine) as session, session.begin():
        session.execute(update(SyncSourceRecord).values(lock_owner=f"{socket.gethostname()}:{dead.stdout.strip()}:x"))
    assert first.lock("docs", "website", "Docs")  # its holder was killed: taken over at once
    with Session(store.engine) as session, session.begin():
        session.execute(update(SyncSourceRecord).values(lock_owner="another-host:1:x"))
    assert not first.lock("docs", "website", "Docs")  # another host's, not expired: left alone


@pytest.mark.parametrize("text, says", [
    ('[sources.a]\nkind = "website"\ncollection = "Docs"\nprefix = "https://x.example/"\n',
     "[sources.a] a website source needs `sitemaps` or `start_urls`"),
    ('[sources.a]\nkind = "ftp"\ncollection = "Docs"\n', "[sources.a] kind: Input tag 'ftp'"),
    ('[sources.a]\ncollection = "Docs"\n', "[sources.a] kind: missing"),
    ('[sources.a]\nkind = "git"\ncollection = "Docs"\nrepository = "x"\nbranchh = "main"\n',
     "[sources.a] branchh: Extra inputs are not permitted"),
    ('[sources.a]\nkind = "git"\ncollection = "docs"\nrepository = "x"\n', "[sources.a] collection:"),
    ('[sources.a]\nkind = "git"\ncollection = "Docs"\nrepository = "x"\nevery = "5 parsecs"\n', "[sources.a] every:"),
    ('[sources.a]\nkind = "git"\ncollection = "Docs"\nrepository = "x"\nbranch = "--upload-pack=sh"\n',
     "[sources.a] branch:"),
    ('[sources.a]\nkind = "git"\ncollection = "Docs"\nrepository = "x"\npaths = ["docs/"]\n[sources.b]\nkind = "git"\n'
     'collection = "Docs"\nrepository = "x"\n', "[sources.b] syncs documents of x@main that [sources.a] also syncs"),
    ('[sources.a]\nkind = "website"\ncollection = "Docs"\nprefix = "https://docs.example.com/api/"\n'
     'start_urls = ["https://docs.example.com/api/"]\n[sources.b]\nkind = "website"\ncollection = "Docs"\n'
     'prefix = "https://DOCS.example.com"\nstart_urls = ["https://docs.example.com/"]\n',
     "[sources.b] syncs documents of https://DOCS.example.com that [sources.a] also syncs into Docs"),
    ('[sources.a]\nkind = "google-drive"\ncollection = "Docs"\nfolder = "1AbC"\n',
     "[sources.a] domain: name the Workspace domain whose members may see what this source syncs"),
    ('[sources.a]\nkind = "google-drive"\ncollection = "Docs"\nfolder = "1AbC\' or \'x\' in parents"\ndomain = "a.com"\n',
     "[sources.a] folder: \"1AbC' or 'x' in parents\" is not a Drive id"),
    ('[sources.a]\nkind = "confluence"\ncollection = "Docs"\nbase_url = "https://w.example/wiki"\nspace = "ENG"\n',
     "[sources.a] Confluence Cloud needs `email`"),
])
def test_a_bad_sources_file_names_the_table_and_key(tmp_path, text, says):
    from typer.testing import CliRunner

    from teambot.cli import app

    path = tmp_path / "sources.toml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["sources", "check", str(path)], env={"TEAMBOT_DATA_DIR": str(tmp_path / "d")})
    assert result.exit_code == 2
    assert str(path) in result.output and says in result.output, result.output


def test_the_readme_example_sources_file_is_valid():
    import re

    from pipeline.sources.config import parse_sources

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = re.findall(r"```toml\n(.*?)```", readme[readme.index("## Sources"):], re.S)[0]
    kinds = {source.kind for source in parse_sources(example, "README").values()}
    assert kinds == {"website", "git", "confluence", "confluence-export", "google-drive", "notion-export"}


# ---------------------------------------------------------------- freshness


def test_sources_say_how_fresh_a_synced_page_is_on_both_platforms():
    from datetime import datetime, timedelta, timezone

    from bots.discord.reply import source_line as discord_line
    from bots.slack.blocks import source_line as slack_line
    from core.answer import Source

    now = datetime.now(timezone.utc)
    page = Source(number=1, title="Backups", path="https://docs.example.com/backups", snippet="…", chunk_id="c",
                  score=0.8, url="https://docs.example.com/backups", updated=(now - timedelta(days=3)).isoformat())
    assert "updated 3 days ago" in slack_line(page) and "updated 3 days ago" in discord_line(page)
    old = Source(**{**vars(page), "updated": (now - timedelta(days=800)).isoformat()})
    assert "updated 2 years ago" in slack_line(old)
    file = Source(**{**vars(page), "updated": ""})  # an ingested file: its origin gave no date
    assert "updated" not in slack_line(file) and "updated" not in discord_line(file)


def test_a_recency_weight_ranks_an_old_page_below_a_new_one_only_when_set():
    from datetime import datetime, timedelta, timezone

    from haystack import Document

    from pipeline.boosts import FeedbackBoost

    now = datetime.now(timezone.utc)
    old = Document(content="old", score=0.80, meta={"source": "a", "updated": (now - timedelta(days=720)).isoformat()})
    new = Document(content="new", score=0.75, meta={"source": "b", "updated": now.isoformat()})
    undated = Document(content="file", score=0.78, meta={"source": "c"})
    off = FeedbackBoost("C", 3, 2.0).run(documents=[old, new, undated])["documents"]
    assert [d.content for d in off] == ["old", "new", "file"]  # as the search ranked them
    on = FeedbackBoost("C", 3, 2.0, recency_weight=0.2, half_life_days=180).run(documents=[old, new, undated])
    assert [d.content for d in on["documents"]] == ["file", "new", "old"]
    assert on["documents"][2].score >= 0.80 * 0.8  # bounded: never below 1 - weight


# ---------------------------------------------------------------- Confluence


EXPENSES_STORAGE = (
    "<h2>Submitting a claim</h2><p>Submit expense claims in Expensify within 30 days of purchase.</p>"
    '<ac:structured-macro ac:name="info" ac:schema-version="1"><ac:rich-text-body>'
    "<p>Claims over 250 EUR need your manager's approval first.</p></ac:rich-text-body></ac:structured-macro>"
    "<h2>Taxis</h2><p>Taxis after 22:00 are paid from the quillon travel budget.</p>"
)


@pytest.mark.parametrize("deployment", ["cloud", "datacenter"])
def test_a_confluence_space_syncs_by_page_version_and_leaves_restricted_pages_out(services, tmp_path, monkeypatch,
                                                                                   deployment):
    from pipeline.querying import AnswerService
    from pipeline.sources import engine
    from pipeline.sources.config import parse_sources
    from testing.confluence_standin import ConfluenceStandin

    wiki = ConfluenceStandin(deployment=deployment)
    wiki.page_size = 2  # fewer results than asked for (Cloud may, Data Center caps): the client must follow `next`
    expenses = wiki.add_page("Expenses", EXPENSES_STORAGE)
    on_call = wiki.add_page("On-call", "<h2>Handover</h2><p>The on-call rotation hands over on Mondays at 10:00.</p>")
    office = wiki.add_page("Office", "<p>The office is open from 8:00 to 19:00.</p>")
    salaries = wiki.add_page("Salaries", "<p>Salary review notes: plinthar.</p>", readers=["557058:hr-lead"])
    wiki.add_page("Salary bands", "<p>Band figures: plinthar.</p>", parent=salaries.id)  # restricted by its parent
    wiki.attach(on_call, "benefits.pdf", (HANDBOOK / "benefits.pdf").read_bytes())
    monkeypatch.setenv("TEAMBOT_CONFLUENCE_TOKEN", wiki.token)
    collection = unique_collection("Wiki")
    source = parse_sources(
        f'[sources.wiki]\nkind = "confluence"\ncollection = "{collection}"\nbase_url = "{wiki.base_url}"\n'
        f'deployment = "{deployment}"\nspace = "ENG"\nattachments = true\nmax_delete_min = 1\nmax_delete_share = 0.9\n'
        + (f'email = "{wiki.email}"\n' if deployment == "cloud" else "")  # Data Center: a personal access token
    )["wiki"]
    link = (f"{wiki.base_url}/spaces/ENG/pages/{expenses.id}/" if deployment == "cloud"
            else f"{wiki.base_url}/display/ENG/Expenses")
    state = _state(tmp_path)
    body_fetches = lambda: sum(1 for path, _ in wiki.calls if path.rstrip("/").split("/")[-1].isdigit()
                               and ("/api/v2/pages/" in path or "/rest/api/content/" in path))  # noqa: E731
    try:
        report = engine.sync(source, state, services)
        assert (report.changed, report.error) == (4, "")  # three pages and the PDF
        stored = _complete(services, collection)
        assert not any("plinthar" in c["content"] for chunks in stored.values() for c in chunks)
        page_key = f"{wiki.base_url}/pages/viewpage.action?pageId={expenses.id}"
        assert stored[page_key][0]["url"].startswith(link)
        assert any("250 EUR" in c["content"] for c in stored[page_key])  # macro bodies are text too

        fetched = body_fetches()
        assert engine.sync(source, state, services).changed == 0 and body_fetches() == fetched  # by version only

        wiki.edit(expenses, body=EXPENSES_STORAGE.replace("22:00", "23:00"))
        wiki.edit(office, title="Office hours")  # a rename is a new version of the same page
        del wiki.pages[on_call.id]
        report = engine.sync(source, state, services)
        assert (report.changed, report.deleted, report.error) == (2, 2, "")  # the page and its attachment went
        assert body_fetches() == fetched + 2
        stored = _complete(services, collection)
        assert len(stored) == 2
        assert stored[f"{wiki.base_url}/pages/viewpage.action?pageId={office.id}"][0]["title"] == "Office hours"

        service = AnswerService(services)
        try:
            answer = service.ask("Which budget pays for taxis late at night?", collection=collection)
        finally:
            service.close()
        assert any(s.url.startswith(link) for s in answer.sources), \
            ([s.url for s in answer.sources], answer.text)

        monkeypatch.setenv("TEAMBOT_CONFLUENCE_TOKEN", "revoked")
        refused = engine.sync(source, state, services)
        assert "HTTP 401" in refused.error and refused.deleted == 0 and len(_complete(services, collection)) == 2
        monkeypatch.setenv("TEAMBOT_CONFLUENCE_TOKEN", wiki.token)
        wiki.budget = 1  # the space lookup passes, the page list is rate limited
        limited = engine.sync(source, state, services)
        assert "429" in limited.error and limited.deleted == 0 and len(_complete(services, collection)) == 2
        wiki.budget = None
        office.readers = ["557058:facilities"]  # restricted now, with no new version
        report = engine.sync(source, state, services)
        assert (report.withdrawn, report.deleted, report.error) == (1, 0, "")
        assert list(_complete(services, collection)) == [page_key]
    finally:
        wiki.stop()
        drop_collection(services, collection)


def test_a_repository_token_never_shows_in_what_the_sync_says(weaviate, tmp_path):
    from pipeline.sources import engine
    from pipeline.sources.config import parse_sources

    source = parse_sources(
        '[sources.repo]\nkind = "git"\ncollection = "Docs"\n'
        'repository = "http://bot:s3cret-token@127.0.0.1:9/ops/handbook.git"\n'
    )["repo"]
    assert "s3cret" not in source.location
    settings = weaviate.model_copy(update={"data_dir": tmp_path / "data"})
    state = _state(tmp_path)
    report = engine.sync(source, state, settings)  # nothing listens on port 9: the fetch fails
    assert report.error.startswith("cannot fetch main of http://127.0.0.1:9/ops/handbook.git")
    assert "s3cret" not in report.summary() and "s3cret" not in str(state.status())


def _export(path: Path, pages: dict[str, str], pdf: bytes | None = None) -> None:
    """A Confluence HTML export as Confluence writes one: ENG/<Title>_<id>.html with breadcrumbs,
    the page in div#main-content and a footer; ENG/attachments/<page id>/<attachment id>.pdf."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ENG/index.html", "<html><head><title>ENG : Engineering</title></head><body>Index</body></html>")
        for name, body in pages.items():
            title = name.rsplit("_", 1)[0].replace("-", " ") if "_" in name else "Q&amp;A"  # <id>.html: any title
            archive.writestr(f"ENG/{name}", (
                f"<html><head><title>ENG : {title}</title></head><body><div id='page'><div id='main-header'>"
                f"<ol id='breadcrumbs'><li><a href='index.html'>Engineering</a></li></ol></div>"
                f"<div id='content' class='view'><div id='main-content' class='wiki-content group'>{body}</div></div>"
                f"<div id='footer'><section class='footer-body'><p>Document generated by Confluence</p></section></div>"
                f"</div></body></html>"))
        if pdf is not None:
            archive.writestr("ENG/attachments/98307/98310.pdf", pdf)


def test_a_confluence_html_export_syncs_without_an_api(weaviate, tmp_path):
    from pipeline.sources import engine
    from pipeline.sources.config import parse_sources

    zipped = tmp_path / "ENG-export.zip"
    pages = {"Expenses_98306.html": EXPENSES_STORAGE,
             "On-call_98307.html": "<h2>Handover</h2><p>The rotation hands over on Mondays at 10:00.</p>",
             "Office_98308.html": "<p>The office is open from 8:00 to 19:00.</p>",
             "98309.html": "<p>Q&amp;A: the canteen opens at noon.</p>"}  # a title a file name cannot spell
    _export(zipped, pages, pdf=(HANDBOOK / "benefits.pdf").read_bytes())
    collection = unique_collection("Export")
    source = parse_sources(
        f'[sources.export]\nkind = "confluence-export"\ncollection = "{collection}"\npath = "{zipped}"\n'
        f'base_url = "https://wiki.example.com"\nattachments = true\nmax_delete_min = 1\n'
    )["export"]
    state = _state(tmp_path)
    try:
        report = engine.sync(source, state, weaviate)
        assert (report.changed, report.error) == (5, "")
        stored = _complete(weaviate, collection)
        assert stored[f"{zipped}#ENG/98309.html"][0]["url"].startswith(
            "https://wiki.example.com/pages/viewpage.action?pageId=98309")
        expenses = stored[f"{zipped}#ENG/Expenses_98306.html"]
        assert expenses[0]["title"] == "Expenses"
        assert expenses[0]["url"].startswith("https://wiki.example.com/pages/viewpage.action?pageId=98306")
        text = " ".join(c["content"] for chunks in stored.values() for c in chunks)
        assert "250 EUR" in text and "Document generated by Confluence" not in text and "Engineering" not in text
        pdf = stored[f"{zipped}#ENG/attachments/98307/98310.pdf"]
        assert pdf[0]["url"].startswith("https://wiki.example.com/pages/viewpage.action?pageId=98307#page=")  # its page
        assert engine.sync(source, state, weaviate).changed == 0  # the same export again
        pages["Expenses_98306.html"] = EXPENSES_STORAGE.replace("22:00", "23:00")
        del pages["Office_98308.html"]
        _export(zipped, pages, pdf=(HANDBOOK / "benefits.pdf").read_bytes())  # a newer export
        report = engine.sync(source, state, weaviate)
        assert (report.changed, report.deleted) == (1, 1)
        assert len(_complete(weaviate, collection)) == 4
    finally:
        drop_collection(weaviate, collection)


HANDBOOK_ID, EXPENSES_ID, VENDORS_ID, TAXI_ID = ("8f3a" * 8, "1b2c" * 8, "9a8b" * 8, "4d5e" * 8)


def _zipped(files: dict) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _notion_export(path: Path, expenses_title: str = "Expenses", expenses_folder: str = "",
                   parts: bool = False) -> None:
    """A Notion "Markdown & CSV" export as Notion writes one: `<Title> <id>.md` pages, subpages in
    `<Title> <id>/`, a database as a CSV beside a folder of its rows; large ones as zips of parts.
    A page's uploaded zip holds a page claiming the Expenses page's id: it must not be read."""
    top = f"Engineering Handbook {HANDBOOK_ID}"
    files = {
        f"{top}.md": "# Engineering Handbook\n\nHow the engineering team works.\n\n"
                     f"[Expenses]({expenses_title.replace(' ', '%20')}%20{EXPENSES_ID}.md)\n",
        f"{expenses_folder or top}/{expenses_title} {EXPENSES_ID}.md":
            f"# {expenses_title}\n\nOwner: Finance\nTags: travel\n\n## Taxis\n\n"
            "A taxi after 22:00 is paid by the team's travel budget, up to 60 EUR a ride.\n",
        f"{top}/Vendors {VENDORS_ID}.csv": "Name,Contact\nAcme Taxi,dispatch@acme-taxi.example\n",
        f"{top}/Vendors {VENDORS_ID}/Acme Taxi {TAXI_ID}.md":
            "# Acme Taxi\n\nContact: dispatch@acme-taxi.example\n\nBook night rides through the dispatch address.\n",
        f"{top}/diagram.png": b"\x89PNG\r\n\x1a\n" + bytes(64),
        f"{top}/uploads.zip": _zipped({f"Payroll {EXPENSES_ID}.md": "# Payroll\n\nSalaries: plinthar.\n"}),
    }
    export = _zipped(files)
    path.write_bytes(_zipped({"ExportBlock-5b1d0c2e-Part-1.zip": export}) if parts else export)


def test_a_notion_export_syncs_pages_and_database_rows_and_a_renamed_page_is_one_page(weaviate, tmp_path):
    from pipeline.sources import engine
    from pipeline.sources.config import parse_sources

    zipped = tmp_path / "Export-notion.zip"
    _notion_export(zipped)
    collection = unique_collection("Notion")
    source = parse_sources(f'[sources.notion]\nkind = "notion-export"\ncollection = "{collection}"\n'
                           f'path = "{zipped}"\nmax_delete_min = 1\n')["notion"]
    state = _state(tmp_path)
    try:
        report = engine.sync(source, state, weaviate)
        assert (report.changed, report.error) == (3, "")  # two pages and a database row; no CSV, no image
        stored = _complete(weaviate, collection)
        expenses = next(chunks for key, chunks in stored.items() if EXPENSES_ID in key)
        assert expenses[0]["title"] == "Expenses"
        assert not any("plinthar" in c["content"] for chunks in stored.values() for c in chunks)
        assert expenses[0]["url"].startswith(f"https://www.notion.so/{EXPENSES_ID}")
        assert engine.sync(source, state, weaviate).changed == 0

        # Renamed and moved under another page, in a newer export that comes in parts.
        _notion_export(zipped, "Travel expenses", f"Engineering Handbook {HANDBOOK_ID}/Travel {'77aa' * 8}",
                       parts=True)
        report = engine.sync(source, state, weaviate)
        assert (report.changed, report.deleted, report.error) == (2, 0, "")  # it, and the page linking to it
        stored = _complete(weaviate, collection)
        assert len(stored) == 3  # the renamed page replaced itself
        titles = {chunks[0]["title"] for chunks in stored.values()}
        assert titles == {"Engineering Handbook", "Travel expenses", "Acme Taxi"}
    finally:
        drop_collection(weaviate, collection)


def _content_reads(drive) -> int:
    """Exports and downloads: calls to /drive/v3/files/<id>/export or /drive/v3/files/<id> (alt=media)."""
    return sum(1 for path, _ in drive.calls if path.endswith("/export") or
               (path.startswith("/drive/v3/files/") and path.count("/") == 4))


def test_a_drive_folder_syncs_what_the_domain_may_see_by_file_version(services, tmp_path, monkeypatch):
    from pipeline.querying import AnswerService
    from pipeline.sources import engine
    from pipeline.sources.config import parse_sources
    from testing.drive_standin import DOC, FOLDER, SHEET, SLIDES, DriveStandin

    drive = DriveStandin()
    drive.page_size = 2  # the client must follow nextPageToken
    handbook = drive.add("Handbook", FOLDER)
    policies = drive.add("Policies", FOLDER, parent=handbook.id)
    travel = drive.add("Travel policy", DOC, b"<h1 class='c3'><span>Taxis</span></h1><p class='c1'><span>A taxi after "
                       b"22:00 is paid by the team's travel budget, up to 60 EUR a ride.</span></p>", parent=policies.id)
    drive.add("On-call rota", SHEET, {"March": [["Week", "Engineer"], ["10", "Ada"]],
                                      "April": [["Week", "Engineer"], ["14", "Grace Quornet"]]}, parent=handbook.id)
    slides = drive.add("All-hands", SLIDES, b"Quarterly all-hands\n\nThe office moves to Dock 5 in June.",
                       parent=handbook.id)
    pdf = drive.add("benefits.pdf", "application/pdf", (HANDBOOK / "benefits.pdf").read_bytes(), parent=handbook.id,
                    shared_with="anyone")
    drive.add("Salary review", DOC, b"<p>Review notes: plinthar.</p>", parent=handbook.id,
              shared_with="user:hr-lead@acme.com")  # a few people only
    drive.add("Partner notes", DOC, b"<p>Partner notes: plinthar.</p>", parent=handbook.id,
              shared_with="domain:partner.example")  # another company's domain
    drive.add("logo.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(64), parent=handbook.id)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(drive.key_file(tmp_path)))
    collection = unique_collection("Drive")
    source = parse_sources(
        f'[sources.drive]\nkind = "google-drive"\ncollection = "{collection}"\nfolder = "{handbook.id}"\n'
        f'domain = "acme.com"\nendpoint = "{drive.api_endpoint}"\nmax_delete_min = 1\nmax_delete_share = 0.9\n'
    )["drive"]
    state = _state(tmp_path)
    key = f"https://drive.google.com/open?id={travel.id}"
    try:
        report = engine.sync(source, state, services)
        assert (report.changed, report.errors, report.error) == (4, [], "")  # the Doc, Sheet, Slides and PDF
        stored = _complete(services, collection)
        text = " ".join(c["content"] for chunks in stored.values() for c in chunks)
        assert "plinthar" not in text and "Grace Quornet" in text  # every sheet, not only the first
        assert stored[key][0]["title"] == "Travel policy"
        assert stored[key][0]["url"].startswith(f"https://docs.google.com/document/d/{travel.id}/edit")

        reads = _content_reads(drive)
        assert engine.sync(source, state, services).changed == 0 and _content_reads(drive) == reads  # by version

        drive.edit(travel, travel.content.replace(b"22:00", b"21:00"))
        travel.name = "Travel and taxis"  # renamed too: still one file
        drive.share(slides, "user:ceo@acme.com", bump=False)  # narrowed as a folder's would: no new version
        drive.remove(pdf)
        report = engine.sync(source, state, services)
        assert (report.changed, report.deleted, report.withdrawn, report.error) == (1, 1, 1, "")
        stored = _complete(services, collection)
        assert len(stored) == 2 and stored[key][0]["title"] == "Travel and taxis"

        service = AnswerService(services)
        try:
            answer = service.ask("Which budget pays for taxis late at night?", collection=collection)
        finally:
            service.close()
        assert any(s.url.startswith(f"https://docs.google.com/document/d/{travel.id}/") for s in answer.sources), \
            ([s.url for s in answer.sources], answer.text)

        drive.revoked = True  # the key was deleted in the Cloud console
        refused = engine.sync(source, state, services)
        assert "refused the service account's key" in refused.error and refused.deleted == 0
        drive.revoked = False
        drive.budget = 0
        monkeypatch.setattr("googleapiclient.http.time.sleep", lambda seconds: None)  # the client's own backoff
        limited = engine.sync(source, state, services)
        assert "rate limit" in limited.error and limited.deleted == 0 and len(_complete(services, collection)) == 2
        drive.budget = None
        for file in drive.files.values():  # the folder is no longer shared with the domain
            if file.mime_type != FOLDER:
                drive.share(file, "user:ada@acme.com", bump=False)
        report = engine.sync(source, state, services)  # emptying the source: the guard would refuse a deletion
        assert (report.withdrawn, report.refused_deletions, report.error) == (2, 0, "")
        assert _complete(services, collection) == {}
        assert next(r for r in state.status() if r.name == "drive").counts["withdrawn"] == 2  # sources status
    finally:
        drive.stop()
        drop_collection(services, collection)


def test_a_shared_drive_is_read_with_its_own_corpus(weaviate, tmp_path, monkeypatch):
    from pipeline.sources import engine
    from pipeline.sources.config import parse_sources
    from testing.drive_standin import DOC, DriveStandin

    drive = DriveStandin()
    shared = "0AHq3nWjW2kxRUk9PVA"  # a shared drive's id is its root folder's too
    drive.add("Runbook", DOC, b"<p>Restart the queue with the drain command first.</p>", parent=shared, drive=shared)
    monkeypatch.setenv("DRIVE_KEY", str(drive.key_file(tmp_path)))
    collection = unique_collection("Drive")
    source = parse_sources(
        f'[sources.ops]\nkind = "google-drive"\ncollection = "{collection}"\nfolder = "{shared}"\ndrive = "{shared}"\n'
        f'domain = "acme.com"\ncredentials_env = "DRIVE_KEY"\nendpoint = "{drive.api_endpoint}"\n'
    )["ops"]
    state = _state(tmp_path)
    try:
        report = engine.sync(source, state, weaviate)
        assert (report.changed, report.errors, report.error) == (1, [], "")
        assert "drain command" in " ".join(c["content"] for chunks in _complete(weaviate, collection).values()
                                           for c in chunks)
    finally:
        drive.stop()
        drop_collection(weaviate, collection)
