"""A real PostgreSQL for the feedback store's tests: Debian's server binaries, run as an
unprivileged cluster in a temporary directory, on a free loopback port, with a password.

`scripts/bootstrap.sh` installs the `postgresql` package; its own cluster is never used (nor
started). Running as root, the cluster runs as the package's `postgres` user, since PostgreSQL
refuses to run as root.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from bench.harness import free_port_block
from core.readiness import wait_until_ready


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        pytest.fail("PostgreSQL is not installed: apt-get install postgresql (scripts/bootstrap.sh does)",
                    pytrace=False)
    return found[-1].parent


@contextmanager
def postgres_server() -> Iterator[str]:
    """A running server; yields the SQLAlchemy URL of its `postgres` database, as `teambot`."""
    bin_dir = _bin_dir()
    # A folder of its own under /tmp: pytest's are private to root, and the server runs as postgres.
    folder = Path(tempfile.mkdtemp(prefix="teambot-pg-"))
    data, run = folder / "data", folder / "run"
    run.mkdir(parents=True)
    password = secrets.token_urlsafe(16)
    (folder / "pw").write_text(password)
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
        for path in (run, folder / "pw"):
            shutil.chown(path, "postgres")
    port = free_port_block(1)

    def pg(*args: str) -> None:
        proc = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {proc.stderr[-1500:] or proc.stdout[-1500:]}")

    pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "teambot", "--auth=scram-sha-256",
       f"--pwfile={folder / 'pw'}", "--no-sync", "-E", "UTF8")
    pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "server.log"), "start",
       "-o", f"-h 127.0.0.1 -p {port} -k {run} -c fsync=off")
    url = f"postgresql+psycopg://teambot:{password}@127.0.0.1:{port}/postgres"
    try:
        # pg_ctl -w waits for the postmaster; the tests need the TCP port to take a login and a query.
        wait_until_ready(lambda: _answers(url), what=f"PostgreSQL on 127.0.0.1:{port} (log {folder / 'server.log'})",
                         timeout=60)
        yield url
    finally:
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def _answers(url: str) -> bool:
    engine = create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT 1")).scalar() == 1
    except OperationalError:
        return False
    finally:
        engine.dispose()


def fresh_database(server_url: str) -> str:
    """A new, empty database on the server; its URL."""
    name = f"t_{secrets.token_hex(6)}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
    finally:
        engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"
