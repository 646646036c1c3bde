"""A value read from the feedback database in the background, so that answering never waits on it.

Readers get the last value read (`initial` before the first read has finished); a stale value
starts one background read. A read that fails is logged and the last value stays: a database that
is slow or down costs the bots the freshness of their boosts and reviewed answers, nothing more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger("teambot.answer")
T = TypeVar("T")


class Refreshed(Generic[T]):
    def __init__(self, load: Callable[[], T], every: float, initial: T, what: str) -> None:
        self.load, self.every, self.initial, self.what = load, every, initial, what
        self._value: T = initial
        self._read_at = float("-inf")
        self._reading = False
        self._generation = 0  # forget() starts a new one: a read begun before it is dropped
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if not self._reading and time.monotonic() - self._read_at >= self.every:
                self._reading = True
                threading.Thread(target=self._read, args=(self._generation,), name=f"teambot-read-{self.what}",
                                 daemon=True).start()
            return self._value

    def _read(self, generation: int) -> None:
        try:
            value, failed = self.load(), None
        except Exception as exc:  # noqa: BLE001 - the last value read stays in use
            value, failed = None, exc
            log.warning("%s could not be read: %s", self.what, exc)
        with self._lock:
            self._reading = False
            if generation != self._generation:
                return
            self._read_at = time.monotonic()
            if failed is None:
                self._value = value

    def forget(self) -> None:
        """Back to `initial`; read again on the next `get`."""
        with self._lock:
            self._value, self._read_at, self._generation = self.initial, float("-inf"), self._generation + 1
