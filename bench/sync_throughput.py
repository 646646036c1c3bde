"""Website sync at scale: `teambot sync` of a real documentation site against fetching its pages and
ingesting them as files.

    python -m bench.sync_throughput [--pages 0] [--out FILE]

The site: Debian's sqlite3-doc (SQLite's documentation, 767 HTML pages; `--pages N` takes the first
N of them in the sitemap) served on 127.0.0.1 by the standard library's HTTP server, with a
sitemap. Ours: `pipeline.sources.engine.sync` of a website source, twice: the first run downloads,
converts, embeds and writes every page; the second only asks whether each page changed. Raw: GET
every page of the sitemap with httpx into a folder, then `Indexer.ingest` it (the same ingest path;
the second time every page is downloaded again and found unchanged by its content hash). Reported:
pages/s, requests per page and seconds for both runs, and the ratios ours/raw. Every run writes
into a scratch collection; all are deleted at the end. Needs the real Weaviate.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from bench.harness import drop_collections, load, ratio, scratch_name, table, timed, write_result
from core.settings import load_settings
from testing.doc_site import DocSite

SITE = Path("/usr/share/doc/sqlite3")


def fetch_as_files(site: DocSite, urls: list[str], folder: Path) -> int:
    """GET every page into `folder` (its path under the site's root); the number of requests."""
    import httpx

    with httpx.Client(timeout=30) as client:
        for url in urls:
            response = client.get(url)
            response.raise_for_status()
            target = folder / urlsplit(url).path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(response.content)
    return len(urls)


def run(pages: int, tmp: Path) -> dict:
    from feedback.store import FeedbackStore
    from feedback.sync_state import SyncState
    from pipeline.indexing import Indexer
    from pipeline.sources import engine
    from pipeline.sources.config import parse_sources

    if not SITE.is_dir():
        raise SystemExit("the site is Debian's documentation package: apt-get install sqlite3-doc")
    settings = load_settings(data_dir=tmp / "data", feedback_db_url=f"sqlite:///{tmp / 'feedback.db'}")
    site = DocSite.copy_of(SITE, tmp / "www", folder="sqlite")
    chosen = site.pages()[:pages] if pages else site.pages()
    site.write_sitemap(chosen)
    ours_collection, raw_collection = scratch_name("Sync"), scratch_name("SyncRaw")
    source = parse_sources(
        f'[sources.bench]\nkind = "website"\ncollection = "{ours_collection}"\nsitemaps = ["{site.sitemap}"]\n'
        f'prefix = "{site.url}/sqlite/"\nskip_classes = ["tagline"]\nmax_pages = 100000\n'
    )["bench"]
    state = SyncState(FeedbackStore.from_settings(settings))
    load_before = load()
    try:
        ours: dict = {}
        our_indexer = Indexer(settings, ours_collection)
        for run_name in ("first", "second"):
            before = len(site.requests)
            seconds, report = timed(lambda: engine.sync(source, state, settings, indexer=our_indexer))
            assert not report.error, report.error
            ours[run_name] = {"seconds": seconds, "requests": len(site.requests) - before, "changed": report.changed,
                              "not_modified": report.not_modified, "pages": report.seen}
        raw: dict = {}
        indexer = Indexer(settings, raw_collection)
        urls = [site.page_url(p) for p in chosen]
        for run_name in ("first", "second"):
            def fetch_and_ingest():
                requests = fetch_as_files(site, urls, tmp / "files")
                return requests, indexer.ingest([tmp / "files"])

            seconds, (requests, ingested) = timed(fetch_and_ingest)
            raw[run_name] = {"seconds": seconds, "requests": requests, "changed": len(ingested.indexed),
                             "pages": ingested.files_seen}
    finally:
        site.stop()
        drop_collections(settings, [ours_collection, raw_collection])
    n = len(chosen)
    return {
        "pages": n, "ours": ours, "raw": raw, "load_before": load_before, "load_after": load(),
        "ours_pages_per_s": n / ours["first"]["seconds"], "raw_pages_per_s": n / raw["first"]["seconds"],
        "ours_requests_per_page": {k: v["requests"] / n for k, v in ours.items()},
        "ratio_first": ratio(ours["first"]["seconds"], raw["first"]["seconds"]),
        "ratio_second": ratio(ours["second"]["seconds"], raw["second"]["seconds"]),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=0, help="Pages of the site to sync (0: all).")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="teambot-bench-") as tmp:
        result = run(args.pages, Path(tmp))
    ours, raw = result["ours"], result["raw"]
    print(f"sync of {result['pages']} pages of SQLite's documentation on 127.0.0.1, "
          f"load {result['load_before']} → {result['load_after']}")
    rows = [
        ["ours (teambot sync), first", ours["first"]["seconds"], result["pages"] / ours["first"]["seconds"],
         ours["first"]["requests"] / result["pages"], ours["first"]["changed"]],
        ["raw (GET + ingest), first", raw["first"]["seconds"], result["pages"] / raw["first"]["seconds"],
         raw["first"]["requests"] / result["pages"], raw["first"]["changed"]],
        ["ours, second (unchanged)", ours["second"]["seconds"], result["pages"] / ours["second"]["seconds"],
         ours["second"]["requests"] / result["pages"], ours["second"]["changed"]],
        ["raw, second (unchanged)", raw["second"]["seconds"], result["pages"] / raw["second"]["seconds"],
         raw["second"]["requests"] / result["pages"], raw["second"]["changed"]],
    ]
    print(table(["path", "s", "pages/s", "requests/page", "pages embedded"], rows))
    print(f"ratio ours/raw (time): first {result['ratio_first']:.2f}, second {result['ratio_second']:.2f}; "
          f"second run: {ours['second']['not_modified']} of {result['pages']} pages answered 304")
    write_result("sync_throughput", result, args.out)
    return result


if __name__ == "__main__":
    main()
