"""Staying under Halo's request budget, and backing off when Halo pushes back.

Halo allows 300 requests in any rolling 5 minutes per application. `RateLimiter` keeps one
connection under `HALO_RATE_LIMIT` (default 280/300) across every worker process with a
sliding window of `BUCKETS` sub-windows kept in shared storage:

* on a cache with an atomic `incr` (Redis, or the per-process local-memory cache in tests)
  one key per bucket, incremented then checked (and given back when over), no locks;
* on the database cache, whose `incr` is a read-then-write race, one `HaloRateWindow` row
  per connection locked with `select_for_update` (SQLite: the IMMEDIATE transaction). That
  is one small write transaction per Halo request, serialising the connection's workers;
  fine at Halo's ~1 request/second, and the reason to prefer Redis when scaling out.

Counting the current bucket plus the `BUCKETS` before it covers at least the last full
window, so the rolling count never exceeds the limit (at the price of the window being up
to one bucket longer than needed).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.core.cache import cache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.db import transaction

if TYPE_CHECKING:
    from integrations.halo.errors import HaloError

BUCKETS = 10


def parse_rate(text: str) -> tuple[int, float]:
    """'280/300' -> (280, 300.0): requests per seconds."""
    requests_text, _, seconds_text = str(text).partition("/")
    requests, seconds = int(requests_text), float(seconds_text or 300)
    if requests < 1 or seconds <= 0:
        raise ValueError(f"HALO_RATE_LIMIT must look like 280/300, not {text!r}")
    return requests, seconds


def _slot_wait(counts: dict[int, int], current: int, limit: int, now: float, width: float) -> float:
    """Seconds until a slot frees up given {bucket: count}; 0 when one is free now."""
    oldest = current - BUCKETS
    total = sum(n for bucket, n in counts.items() if bucket >= oldest)
    if total < limit:
        return 0.0
    for bucket in range(oldest, current + 1):
        total -= counts.get(bucket, 0)
        if total < limit:
            return (bucket + BUCKETS + 1) * width - now
    return (current + BUCKETS + 1) * width - now  # limit hit within the current bucket alone


class _CacheStore:
    def __init__(self, connection_id: int) -> None:
        self.prefix = f"halo:rate:{connection_id}:"

    def take(self, current: int, limit: int, now: float, width: float) -> float:
        keys = {bucket: f"{self.prefix}{bucket}" for bucket in range(current - BUCKETS, current)}
        key = f"{self.prefix}{current}"
        cache.add(key, 0, timeout=math.ceil(width * (BUCKETS + 2)))
        mine = cache.incr(key)
        counts = {b: n for b, n in ((b, cache.get(k)) for b, k in keys.items()) if n}
        counts[current] = mine - 1
        wait = _slot_wait(counts, current, limit, now, width)
        if wait:
            cache.decr(key)
        return wait


class _DatabaseStore:
    def __init__(self, connection_id: int) -> None:
        self.connection_id = connection_id

    def take(self, current: int, limit: int, now: float, width: float) -> float:
        from integrations.models import HaloRateWindow

        with transaction.atomic():
            window, _ = HaloRateWindow.objects.select_for_update().get_or_create(
                connection_id=self.connection_id
            )
            counts = {int(b): n for b, n in window.buckets.items() if int(b) >= current - BUCKETS}
            wait = _slot_wait(counts, current, limit, now, width)
            if not wait:
                counts[current] = counts.get(current, 0) + 1
                window.buckets = counts
                window.save(update_fields=["buckets"])
        return wait


class RateLimiter:
    def __init__(
        self,
        connection_id: int,
        rate: str,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit, self.window = parse_rate(rate)
        self.width = self.window / BUCKETS
        atomic_incr = isinstance(caches["default"], (RedisCache, LocMemCache))
        self.store: _CacheStore | _DatabaseStore = (
            _CacheStore(connection_id) if atomic_incr else _DatabaseStore(connection_id)
        )
        self.clock, self.sleep = clock, sleep

    def acquire(self, max_wait: float) -> float | None:
        """Take a slot, sleeping while the budget is spent; returns the seconds waited.

        Returns None, without a slot, when the next one is further away than `max_wait`;
        `next_free` then says in how many seconds one frees (a run can come back then).
        """
        waited = 0.0
        while True:
            now = self.clock()
            wait = self.store.take(int(now // self.width), self.limit, now, self.width)
            if not wait:
                return waited
            wait = max(wait, 0.001)
            if waited + wait > max_wait:
                self.next_free = wait
                return None
            self.sleep(wait)
            waited += wait


class RetryBudget:
    """Exponential backoff with full jitter, all retries of one call within `seconds`.

    Without Retry-After the n-th wait is uniform in [0, min(cap, base * 2**n)] (Halo's advice:
    5 s doubling to 60 s; tests scale `base` and `cap` down through settings).
    """

    def __init__(
        self,
        seconds: float,
        base: float,
        cap: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.seconds, self.base, self.cap = seconds, base, cap
        self.clock, self.sleep = clock, sleep
        self.started = clock()
        self.attempts = 0  # retries made so far

    def remaining(self) -> float:
        return max(0.0, self.seconds - (self.clock() - self.started))

    def backoff(self, error: HaloError) -> float:
        """Sleep before the next attempt, or raise `error` when that would overrun the budget."""
        retry_after: float | None = getattr(error, "retry_after", None)
        if retry_after is not None:
            delay = retry_after
        else:
            delay = random.uniform(0, min(self.cap, self.base * 2**self.attempts))
        self.pause(delay, error)
        self.attempts += 1
        return delay

    def pause(self, delay: float, error: HaloError) -> float:
        """Sleep `delay` seconds if the budget allows, else raise `error` saying so."""
        if delay > self.remaining():
            tries = self.attempts + 1
            raise error.note(
                f"The portal gave up after {tries} attempt{'s' * (tries > 1)} in "
                f"{self.clock() - self.started:.1f} s (retry budget {self.seconds:g} s)."
            )
        self.sleep(delay)
        return delay


class Deadline:
    """All the time one web request may spend on Halo: `seconds` from now, shared by every
    call (and every client) given it. The client caps its retry budget, its connect and
    read timeouts and its rate-budget waits by `remaining()`, so a Halo that hangs costs
    the page `seconds` at most. Backoff sleeps and the time left are measured by `clock`
    and `sleep`: by default the class's, which tests replace."""

    clock: Callable[[], float] = staticmethod(time.monotonic)
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    def __init__(
        self,
        seconds: float,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.seconds = float(seconds)
        self.clock = clock or type(self).clock
        self.sleep = sleep or type(self).sleep
        self.ends = self.clock() + self.seconds

    def remaining(self) -> float:
        return max(0.0, self.ends - self.clock())

    def __repr__(self) -> str:
        return f"<Deadline {self.remaining():.2f} of {self.seconds:g} s left>"
