"""How fast the Halo client goes against the simulator on loopback, and what it costs per
request over a bare `requests.Session` call.

    .venv/bin/python bench/halo_client.py [--requests 400]

Runs standalone: a temporary SQLite database (so the default database cache and the
`HaloRateWindow` rate budget are measured as deployed without Redis), plus the same client
on the local-memory cache (the atomic-incr path Redis takes). Rate limits are set far above
the load on both sides, so the figures are the client's own cost, not Halo's budget.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = tempfile.mkdtemp(prefix="halo-bench-")
os.environ.update(
    DJANGO_SETTINGS_MODULE="portal.settings",
    DATABASE_URL=f"sqlite:///{DATA}/bench.sqlite3",
    PORTAL_DATA_DIR=DATA,
    SECRET_KEY="bench-" + "x" * 50,
    FIELD_ENCRYPTION_KEY="",
    DEBUG="true",
    HALO_RATE_LIMIT="10000000/300",
    LOG_LEVEL="WARNING",
)

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.test import override_settings  # noqa: E402

from integrations.halo import HaloClient  # noqa: E402
from integrations.halo_sim.testing import run_simulator  # noqa: E402
from integrations.models import HaloConnection  # noqa: E402
from portal.models import Tenant  # noqa: E402

LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


def timed(call, count):
    """Mean seconds per call over `count` calls (after 5 warm-up calls)."""
    for _ in range(5):
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.fmean(samples)


def connection_for(sim):
    tenant, _ = Tenant.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    connection, _ = HaloConnection.objects.get_or_create(
        tenant=tenant,
        defaults={
            "auth_url": sim.auth_url,
            "resource_url": sim.api_url,
            "halo_tenant": sim.tenant,
            "client_id": sim.demo_app.client_id,
        },
    )
    connection.set_secret(sim.demo_app.client_secret)
    connection.save()
    return connection


def measure(sim, latency_ms, count):
    sim.control.config(latency_ms=latency_ms, rate_limit=None)
    connection = connection_for(sim)
    bare = sim.session()
    url = f"{sim.api_url}/Client/1"
    rows = [("bare requests.Session", timed(lambda: bare.get(url, timeout=30).json(), count))]
    client = HaloClient(connection)
    rows.append(("HaloClient, database cache", timed(lambda: client.get_client(1), count)))
    with override_settings(CACHES=LOCMEM):
        client = HaloClient(connection)
        rows.append(("HaloClient, atomic-incr cache", timed(lambda: client.get_client(1), count)))
    return [(name, latency_ms, count, mean, mean - rows[0][1]) for name, mean in rows]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="calls per row at 0 ms")
    args = parser.parse_args()
    call_command("migrate", verbosity=0, skip_checks=True)
    call_command("createcachetable", verbosity=0)
    with run_simulator(rate_limit=None) as sim:
        rows = measure(sim, 0, args.requests) + measure(sim, 20, max(100, args.requests // 4))
    print(f"{'client':<32}{'latency':>9}{'calls':>7}{'req/s':>9}{'ms/req':>9}{'overhead ms':>13}")
    for name, latency, count, mean, overhead in rows:
        print(
            f"{name:<32}{latency:>7} ms{count:>7}{1 / mean:>9.1f}{mean * 1000:>9.2f}"
            f"{overhead * 1000:>13.2f}"
        )


if __name__ == "__main__":
    main()
