"""`teambot sync` without --once: each source runs on its `every`, one after another; a source whose
last run failed is tried again sooner, backing off (1, 2, 4 … minutes, never longer than `every`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from pipeline.sources.config import AnySource
from pipeline.sources.engine import SyncReport

log = logging.getLogger("teambot.sync")
FIRST_RETRY = timedelta(minutes=1)


def next_run(source: AnySource, last_finished: datetime | None, failures: int) -> datetime:
    if last_finished is None:
        return datetime.min.replace(tzinfo=timezone.utc)
    wait = source.interval if not failures else min(source.interval, FIRST_RETRY * 2 ** min(failures - 1, 20))
    return last_finished + wait


def run_schedule(
    sources: list[AnySource], state, run_one: Callable[[AnySource], SyncReport],
    stop: threading.Event,
) -> None:
    """Run each source when it is due until `stop` is set; `state.status()` says when each last ran."""
    busy_until: dict[str, datetime] = {}  # being synced by another process: looked at again later
    while not stop.is_set():
        try:
            known = {s.name: s for s in state.status()}
        except Exception:  # noqa: BLE001 - the database is down: look again in a minute
            log.warning("cannot read the sources' state; trying again in a minute", exc_info=True)
            stop.wait(FIRST_RETRY.total_seconds())
            continue
        now = datetime.now(timezone.utc)
        when = {
            source.name: next_run(source, getattr(known.get(source.name), "last_finished", None),
                                  getattr(known.get(source.name), "failures", 0))
            for source in sources
        }
        when.update({name: moment for name, moment in busy_until.items() if moment > when[name]})
        due = [source for source in sources if when[source.name] <= now]
        for source in due:
            if stop.is_set():
                return
            if run_one(source).busy:
                busy_until[source.name] = datetime.now(timezone.utc) + FIRST_RETRY
        if not due:
            wait = min(when.values()) - now
            stop.wait(min(max(wait.total_seconds(), 1.0), 60.0))
