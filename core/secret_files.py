"""Secrets a deployment need not configure: made at random by the first process that needs one and
kept in the data directory, readable by its owner only, the same for every process after."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path


def read_or_create(path: Path) -> tuple[str, bool]:
    """(the secret in `path`, whether this call made it)."""
    try:
        return path.read_text().strip(), False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
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
