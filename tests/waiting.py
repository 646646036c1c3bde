"""Waiting in tests for what happens in other threads and processes (a bot's reply, a vote stored,
feedback read in the background)."""

from __future__ import annotations

import time


def wait_until(check, timeout: float = 60.0, poll: float = 0.05):
    """`check()`'s first truthy result; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s"
        time.sleep(poll)
    return result
