"""Document trees shaped like real ones, and the check that a collection mirrors one exactly.

Real trees have paths made of the same words (`git.html`, `git-push.html`), nested folders, the
same file name in two folders, spaces and non-ASCII names, and big files. Every page carries a
marker word unique to its path and version, so the check can tell whose text a chunk holds.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from pipeline.indexing import SUPPORTED

# Each path's words are all in a longer path's words: with word-tokenized filters, deleting one
# file's old chunks deleted the others'.
TRICKY = [
    "git.html", "git-push.html", "git-push-all.html",
    "api.md", "api/auth.md", "api/auth/tokens.md",
    "setup.md", "setup-linux.md",
    "guide/intro.md", "manual/intro.md",
    "on call/runbook notes.md",
    "café/menü.md", "文档/说明.txt",
]
BIG = "manuals/big manual.html"  # spans several embedding flushes


def marker(rel: str, version: int) -> str:
    return f"mk{hashlib.sha1(rel.encode()).hexdigest()[:10]}v{version}"


def page(rel: str, version: int, sections: int = 3) -> str:
    """A page in the format its name says, whose every section carries the page's marker."""
    mark = marker(rel, version)
    words = " ".join(f"{w}{n}" for n in range(20) for w in ("policy", "step"))
    bodies = [
        (f"Part {n}", f"This part of {rel} explains step {n} of version {version}: {mark}. {words}")
        for n in range(sections)
    ]
    if rel.endswith(".html"):
        parts = "".join(f'<h2 id="part-{n}">{head}</h2><p>{body}</p>' for n, (head, body) in enumerate(bodies))
        return f"<html><head><title>{rel}</title></head><body><h1>{rel}</h1>{parts}</body></html>"
    if rel.endswith(".md"):
        return f"# {rel}\n\n" + "\n\n".join(f"## {head}\n\n{body}" for head, body in bodies) + "\n"
    return f"{rel}\n\n" + "\n\n".join(body for _, body in bodies) + "\n"


def write(folder: Path, versions: dict[str, int | None], big_sections: int = 0) -> None:
    """Write each `rel: version` page; a version of None deletes the file."""
    for rel, version in versions.items():
        path = folder / rel
        if version is None:
            path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page(rel, version, big_sections if rel == BIG else 3), encoding="utf-8")


def chunks_by_source(settings, collection: str) -> dict[str, list[dict]]:
    """Every chunk in the collection (through its alias), grouped by file."""
    from pipeline.stores import admin_client

    client = admin_client(settings)
    try:
        out: dict[str, list[dict]] = defaultdict(list)
        names = ["source", "content_hash", "position", "chunk_count", "content", "_original_id"]
        for obj in client.collections.use(collection).iterator(return_properties=names):
            out[obj.properties["source"]].append(obj.properties)
        return out
    finally:
        client.close()


def assert_mirrors(settings, collection: str, folder: Path, versions: dict[str, int | None]) -> None:
    """The collection holds exactly the files on disk under `folder`, each with exactly the chunks of
    its current version: no file missing, none left over, no chunk twice, no old text."""
    stored = chunks_by_source(settings, collection)
    on_disk = {
        str(p) for p in folder.resolve().rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED
    }
    assert set(stored) == on_disk, (
        f"missing: {sorted(on_disk - set(stored))}; left over: {sorted(set(stored) - on_disk)}"
    )
    for rel, version in versions.items():
        if version is None:
            continue
        chunks = stored[str((folder / rel).resolve())]
        count = chunks[0]["chunk_count"]
        assert sorted(c["position"] for c in chunks) == list(range(count)), f"{rel}: positions wrong"
        assert len({c["content_hash"] for c in chunks}) == 1, f"{rel}: chunks of two versions"
        text = " ".join(c["content"] for c in chunks)
        assert marker(rel, version) in text, f"{rel}: version {version} is not what is indexed"
        stale = [v for v in range(version) if marker(rel, v) in text]
        assert not stale, f"{rel}: text of versions {stale} still indexed"
