"""A git repository's branch as a source, through the git command line (what every host has and
every forge speaks; no library re-implements its transports and credential helpers as well).

The repository is fetched into a bare copy of our own (data_dir/sync/git/<name>), one branch, and
its tree is compared with the blob ids synced last time: a file is fetched only when its blob id
changed, a file renamed without change keeps its chunks' text (written again under its new path,
the old path's removed), a file no longer in the tree is gone. Symlinks and submodules are not
followed (a link's target may be outside the repository). Each file links to the forge's page for
it at the synced commit (or the branch), and knows the date of the last commit that changed it.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path, PurePosixPath

from pipeline.indexing import MAX_FILE_BYTES, SUPPORTED, RemoteDocument
from pipeline.sources.config import GitSource
from pipeline.sources.engine import Fetched, Listing, SourceError

log = logging.getLogger("teambot.sync.git")
GIT_TIMEOUT = 600.0
REGULAR_FILES = {"100644", "100755"}


class GitConnector:
    def __init__(self, source: GitSource, workdir: Path, cursor: str | None) -> None:
        self.source = source
        self.workdir = workdir
        self.cursor = cursor

    def close(self) -> None:
        pass

    def documents(self, known: dict, listing: Listing) -> Iterator[Fetched]:
        commit = self._fetch()
        listing.cursor = commit
        tree = self._tree(commit)
        listing.total = len(tree)
        changed = [path for path, blob in tree.items() if (before := known.get(path)) is None or before.version != blob]
        listing.present.update(tree)
        dates = self._last_changed(commit, changed)
        for path in changed:
            data = self._git("cat-file", "blob", tree[path], text=False)
            if len(data) > MAX_FILE_BYTES:
                listing.errors.append(f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
                if path not in known:
                    listing.present.discard(path)
                continue
            when = dates.get(path) or datetime.fromisoformat(self._git("show", "-s", "--format=%cI", commit).strip())
            document = RemoteDocument(
                source=f"{self.source.public_repository}#{self.source.branch}:{path}", data=data, name=path,
                kind=SUPPORTED[PurePosixPath(path).suffix.lower()], url=self.source.link(path, commit),
                root=f"sync:{self.source.name}", updated=when.isoformat(), url_base=self.source.web_url,
            )
            yield Fetched(path, document, when, version=tree[path])

    # ------------------------------------------------------------------ git

    def _fetch(self) -> str:
        if not (self.workdir / "HEAD").exists():
            self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._git("init", "--bare", "-q", ".")
        branch = self.source.branch
        try:
            self._git("fetch", "--quiet", "--no-tags", "--", self.source.repository,
                      f"+refs/heads/{branch}:refs/heads/{branch}")
        except SourceError as exc:
            raise SourceError(f"cannot fetch {branch} of {self.source.public_repository}: "
                              f"{str(exc).replace(self.source.repository, self.source.public_repository)}") from None
        return self._git("rev-parse", "--verify", f"refs/heads/{branch}^{{commit}}").strip()

    def _tree(self, commit: str) -> dict[str, str]:
        """path → blob id of each supported regular file under the source's paths."""
        out = self._git("ls-tree", "-r", "-z", "--full-tree", commit, "--", *self.source.paths)
        tree = {}
        for entry in filter(None, out.split("\0")):
            meta, path = entry.split("\t", 1)
            mode, kind, blob = meta.split()
            if kind != "blob" or mode not in REGULAR_FILES:
                continue  # symlinks (120000), submodules (commit)
            if PurePosixPath(path).suffix.lower() in SUPPORTED and self.source.wants(path) \
                    and not any(part.startswith(".") for part in PurePosixPath(path).parts):
                tree[path] = blob
        return tree

    def _last_changed(self, commit: str, paths: list[str]) -> dict[str, datetime]:
        """When each path last changed, from one walk of the history (newest first)."""
        wanted, found = set(paths), {}
        if not wanted:
            return found
        out = self._git("log", "--format=%x00%cI", "--name-only", "-z", "--no-renames", commit, "--",
                        *self.source.paths)
        when = None
        for field in out.split("\0"):
            field = field.strip("\n")
            if not field:
                continue
            try:
                when = datetime.fromisoformat(field)
                continue
            except ValueError:
                pass
            if field in wanted and field not in found and when is not None:
                found[field] = when
                if len(found) == len(wanted):
                    break
        return found

    def _git(self, *args: str, text: bool = True):
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_DIR": str(self.workdir)}
        try:
            result = subprocess.run(["git", *args], cwd=self.workdir, env=env, capture_output=True,
                                    timeout=GIT_TIMEOUT, check=False)
        except FileNotFoundError:
            raise SourceError("git is not installed") from None
        except subprocess.TimeoutExpired:
            raise SourceError(f"git {args[0]} took over {GIT_TIMEOUT:.0f}s") from None
        if result.returncode != 0:
            raise SourceError(result.stderr.decode(errors="replace").strip().splitlines()[-1:][0]
                              if result.stderr.strip() else f"git {args[0]} failed ({result.returncode})")
        return result.stdout.decode(errors="replace") if text else result.stdout
