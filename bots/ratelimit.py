"""Per-user and per-channel question limits (token buckets), shared by the Slack and Discord bots.

Every answer costs seconds of model time, so one person (or one busy channel, or a script)
must not be able to queue up work that delays everyone else. A bucket holds up to `rate`
questions and refills at `rate` per minute: short bursts pass, a sustained flood does not.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

USER_LIMITED = "You're asking faster than I can answer. Please wait a minute, then ask again."
CHANNEL_LIMITED = "This channel is asking more questions than I can answer right now. Please try again in a minute."
MAX_TRACKED = 10_000  # buckets kept per scope; the least recently used are forgotten (they were full anyway, mostly)


class TokenBucket:
    def __init__(self, rate_per_minute: float, now: float) -> None:
        self.capacity = max(1.0, rate_per_minute)
        self.refill_per_second = rate_per_minute / 60.0
        self.tokens = self.capacity
        self.updated = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.refill_per_second)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Buckets:
    def __init__(self, rate_per_minute: float) -> None:
        self.rate = rate_per_minute
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        bucket = self._buckets.pop(key, None) or TokenBucket(self.rate, now)
        self._buckets[key] = bucket
        if len(self._buckets) > MAX_TRACKED:
            self._buckets.popitem(last=False)
        return bucket.take(now)

    def give_back(self, key: str) -> None:
        if key in self._buckets:
            bucket = self._buckets[key]
            bucket.tokens = min(bucket.capacity, bucket.tokens + 1.0)


class RateLimiter:
    """`check(user, channel)` is None when the question may be answered, else the reply to send."""

    def __init__(
        self, user_per_minute: float, channel_per_minute: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._users = _Buckets(user_per_minute)
        self._channels = _Buckets(channel_per_minute)
        self._clock = clock
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> "RateLimiter":
        return cls(settings.user_questions_per_minute, settings.channel_questions_per_minute)

    def check(self, user: str | int | None, channel: str | int | None) -> str | None:
        now = self._clock()
        user_key, channel_key = f"{user}", f"{channel}"
        with self._lock:
            if user is not None and not self._users.take(user_key, now):
                return USER_LIMITED
            if channel is not None and not self._channels.take(channel_key, now):
                # The user's token was not used for an answer: a flood in the channel should
                # not also count against each person caught in it.
                if user is not None:
                    self._users.give_back(user_key)
                return CHANNEL_LIMITED
        return None
