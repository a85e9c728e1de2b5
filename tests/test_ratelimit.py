"""The shared fixed-window rate limit (`portal.api.WindowThrottle`)."""

from unittest import mock

import pytest
from django.core.cache.backends.db import DatabaseCache

from portal import counters
from portal.api import WindowThrottle

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def throttle_class(rate, clock):
    class Throttle(WindowThrottle):
        scope = "test"
        timer = clock

        def get_rate(self):
            return rate

        def get_cache_key(self, request, view):
            return "throttle_test_client"

    return Throttle


def allowed(throttle_cls, n):
    return sum(throttle_cls().allow_request(None, None) for _ in range(n))


def test_small_rates_are_exact_and_say_when_to_retry():
    clock = Clock(600.0)  # the start of a one-minute window
    throttle = throttle_class("3/min", clock)
    assert [throttle().allow_request(None, None) for _ in range(4)] == [True] * 3 + [False]
    clock.now = 615.0
    refused = throttle()
    assert refused.allow_request(None, None) is False
    assert refused.wait() == 45.0
    clock.now = 660.0  # the next window
    assert allowed(throttle, 4) == 3


def test_workers_together_never_exceed_the_rate():
    throttle = throttle_class("100/min", Clock(600.0))  # blocks of 2
    first = allowed(throttle, 61)
    WindowThrottle.forget_claims()  # another process: its own claims, the same counter
    second = allowed(throttle, 100)
    assert first == 61
    assert first + second <= 100
    assert second >= 100 - first - 2  # at most the first process's unspent block is lost


def test_the_shared_counter_is_updated_once_per_block():
    throttle = throttle_class("1000/min", Clock(600.0))  # blocks of 20
    with mock.patch.object(counters, "incr", wraps=counters.incr) as incr:
        assert allowed(throttle, 100) == 100
    assert incr.call_count == 5


def test_claims_are_counted_atomically_in_the_shared_counter():
    """Two processes' claims land on one counter: the database cache's own `incr` (a read
    then a write) let two racing claims both see the same count."""
    throttle = throttle_class("3/min", Clock(600.0))
    assert allowed(throttle, 2) == 2
    assert counters.incr("throttle_test_client:10", 0) == 2
    with mock.patch.object(DatabaseCache, "incr", side_effect=AssertionError("not atomic")):
        WindowThrottle.forget_claims()
        assert allowed(throttle, 3) == 1
