"""`portal.counters`: one count for every process, atomic, and forgotten after its time."""

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from django.core.cache import cache
from django.db import connection

from portal import counters
from portal.models import SharedCounter

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_increments_answer_the_running_total():
    assert [counters.incr("c", now=T0) for _ in range(3)] == [1, 2, 3]
    assert counters.incr("c", 5, now=T0) == 8
    assert counters.incr("other", now=T0) == 1


def test_an_expired_counter_starts_again_and_is_purged(settings):
    if settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        pytest.skip("Redis expires keys by its own clock")
    assert counters.incr("c", ttl=60, now=T0) == 1
    assert counters.incr("c", ttl=60, now=T0 + timedelta(seconds=59)) == 2
    assert counters.incr("c", ttl=60, now=T0 + timedelta(seconds=60)) == 1
    counters.incr("old", ttl=10, now=T0)
    assert counters.purge(now=T0 + timedelta(seconds=30)) == 1
    assert list(SharedCounter.objects.values_list("key", flat=True)) == ["c"]


def test_long_keys_are_shortened_without_colliding():
    first, second = "k" * 300 + "1", "k" * 300 + "2"
    assert counters.incr(first, now=T0) == 1
    assert counters.incr(second, now=T0) == 1
    assert counters.incr(first, now=T0) == 2


CHILD = """
import sys
import django
django.setup()
from portal import counters
print(sum(counters.incr(sys.argv[1]) <= int(sys.argv[2]) for _ in range(int(sys.argv[3]))))
"""


def child_environment(tmp_path):
    """Environment of a process using this test's storage: the test database on PostgreSQL
    (committed: transactional test), else a scratch SQLite file with the counter table."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"DJANGO_SETTINGS_MODULE": "portal.settings"}
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{db['NAME']}"
        )
    else:
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'counters.sqlite3'}"
        setup = (
            "import django; django.setup()\n"
            "from django.db import connection\nfrom portal.models import SharedCounter\n"
            "with connection.schema_editor() as editor: editor.create_model(SharedCounter)\n"
        )
        subprocess.run([sys.executable, "-c", setup], env=env, check=True, timeout=60)
    return env


@pytest.mark.django_db(transaction=True)
def test_two_processes_share_one_count(tmp_path):
    """Two processes count 200 each against a limit of 150: exactly 150 get in."""
    env = child_environment(tmp_path)
    key = f"two-processes:{tmp_path.name}"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, key, "150", "200"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    under_limit = [int(child.communicate(timeout=120)[0]) for child in children]
    assert all(child.returncode == 0 for child in children)
    assert sum(under_limit) == 150
    if env["DATABASE_URL"].startswith("sqlite"):
        return
    assert counters.incr(key, 0) == 400
    cache.delete(key)
