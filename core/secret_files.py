"""Secrets a deployment need not configure: made at random by the first process that needs one and
kept in the data directory, readable by its owner only, the same for every process after.

The data directory holds more than these (the feedback database, exported training data): the
helpers below make the folders teambot creates there 0700 and its files 0600, without a umask that
would change every file the process writes.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path


def private_dir(path: Path) -> Path:
    """`path`, made owner-only (0700) if it is missing (its parents as usual). A folder that is there
    already is left as its owner set it."""
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another process made it first, private too
    return path


def private_opener(path: str, flags: int) -> int:
    """For open(…, opener=private_opener): a file it creates is 0600."""
    return os.open(path, flags, 0o600)


def make_private(tree: Path) -> None:
    """Every folder under `tree` (and itself) 0700 and every file 0600: for files a library wrote."""
    for path in [tree, *tree.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o700 if path.is_dir() else 0o600)


def read_or_create(path: Path) -> tuple[str, bool]:
    """(the secret in `path`, whether this call made it)."""
    try:
        return path.read_text().strip(), False
    except FileNotFoundError:
        pass
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    try:
        os.link(tmp, path)  # whole or not at all, and never over one another process made first
    except FileExistsError:
        return path.read_text().strip(), False
    finally:
        os.unlink(tmp)
    return path.read_text().strip(), True
