"""Counters every web and worker process shares, incremented atomically.

`incr(key, amount, ttl)` adds to a counter and answers its new value, the same count for
every process on every machine: on Redis with `INCRBY` (the shared cache), otherwise in the
database with one `INSERT ... ON CONFLICT DO UPDATE ... RETURNING` statement (SQLite 3.35+
and PostgreSQL), which needs no lock held across statements. Django's database cache cannot
do this: its `incr` reads and then writes, so two processes racing both get the same value,
and a local-memory cache is one process's own.

A counter lives for `ttl` seconds after it was made, then starts again from zero; callers
put their time window in the key. Expired rows are deleted by a schedule
(`portal.counters.purge`, every hour).
"""

import hashlib
from datetime import timedelta

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.db import connection
from django.utils import timezone

from portal.models import SharedCounter

KEY_LENGTH = SharedCounter._meta.get_field("key").max_length


def _on_redis():
    return isinstance(caches["default"], RedisCache)


def incr(key, amount=1, ttl=60, now=None):
    """Add `amount` to counter `key` (made with `ttl` seconds to live); its new value."""
    if len(key) > KEY_LENGTH:
        key = key[: KEY_LENGTH - 65] + ":" + hashlib.sha256(key.encode()).hexdigest()
    if _on_redis():
        return _redis_incr(key, amount, ttl)
    return _database_incr(key, amount, ttl, now or timezone.now())


def _redis_incr(key, amount, ttl):
    cache.add(key, 0, ttl)
    try:
        return cache.incr(key, amount)
    except ValueError:  # evicted between add and incr: it starts again
        cache.add(key, 0, ttl)
        return cache.incr(key, amount)


def _database_incr(key, amount, ttl, now):
    expires = now + timedelta(seconds=ttl)
    quote = connection.ops.quote_name
    table = quote(SharedCounter._meta.db_table)
    key_col, value, until = (quote(name) for name in ("key", "value", "expires"))
    # Names are the model's own, quoted; every value is a parameter.
    sql = (
        f"INSERT INTO {table} ({key_col}, {value}, {until}) VALUES (%s, %s, %s) "  # noqa: S608
        f"ON CONFLICT ({key_col}) DO UPDATE SET "
        f"{value} = CASE WHEN {table}.{until} <= %s THEN EXCLUDED.{value} "
        f"ELSE {table}.{value} + EXCLUDED.{value} END, "
        f"{until} = CASE WHEN {table}.{until} <= %s THEN EXCLUDED.{until} "
        f"ELSE {table}.{until} END "
        f"RETURNING {value}"
    )
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(sql, [key, amount, adapt(expires), adapt(now), adapt(now)])
        return cursor.fetchone()[0]


def purge(now=None):
    """Delete expired database counters (they would only start again from zero)."""
    return SharedCounter.objects.filter(expires__lte=now or timezone.now()).delete()[0]


def _stored(key):
    if len(key) > KEY_LENGTH:
        return key[: KEY_LENGTH - 65] + ":" + hashlib.sha256(key.encode()).hexdigest()
    return key


def values(keys, now=None):
    """Several counters' current values at once ({key: value}, 0 when unset or expired):
    one Redis MGET or one query."""
    stored = {_stored(key): key for key in keys}
    if _on_redis():
        found = cache.get_many(list(stored))
    else:
        rows = SharedCounter.objects.filter(key__in=list(stored), expires__gt=now or timezone.now())
        found = dict(rows.values_list("key", "value"))
    return {key: found.get(name) or 0 for name, key in stored.items()}


def value(key, now=None):
    """A counter's current value (0 when unset or expired), without changing it."""
    if len(key) > KEY_LENGTH:
        key = key[: KEY_LENGTH - 65] + ":" + hashlib.sha256(key.encode()).hexdigest()
    if _on_redis():
        return cache.get(key) or 0
    found = SharedCounter.objects.filter(key=key, expires__gt=now or timezone.now())
    return found.values_list("value", flat=True).first() or 0
