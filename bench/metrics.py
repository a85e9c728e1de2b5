"""`/metrics` against a ledger the size of a big fleet's: how long one scrape takes.

    .venv/bin/python bench/metrics.py [--rows 5000000] [--tenants 2000] [--scrapes 5]

PostgreSQL (a fresh database `portal_metricsbench`) and Redis (db 12) as in production.
The ledger gets `--rows` finished runs (what 2,000 tenants' hourly invoice sync and daily
jobs leave over the 90 days kept, `ledger.KEEP_TENANT`), spread over the jobs and their
statuses, plus one queued and one running slot per tenant; the counters of finished runs
(`ledger.count_finished`) as the workers would have kept them. Rows are written with
PostgreSQL's `generate_series`, so building them takes a minute or two, not hours. Each
scrape is the view's own work: the collector through `prometheus_client.generate_latest`.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG_SERVER = os.environ.get("METRICS_BENCH_PG", "postgres://postgres@127.0.0.1:5432")
DB_NAME = "portal_metricsbench"
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": f"{PG_SERVER}/{DB_NAME}",
        "REDIS_URL": os.environ.get("METRICS_BENCH_REDIS", "redis://127.0.0.1:6379/12"),
        "SECRET_KEY": "bench-" + "x" * 50,
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
    }
)


def fresh_database():
    for sql in (f"DROP DATABASE IF EXISTS {DB_NAME}", f"CREATE DATABASE {DB_NAME}"):
        subprocess.run(["psql", PG_SERVER + "/postgres", "-qc", sql], check=True)


def build(rows, tenants):
    from django.core.cache import cache
    from django.core.management import call_command
    from django.db import connection

    from portal import ledger, metrics
    from portal.models import ScheduledRun, Tenant

    call_command("migrate", verbosity=0)
    cache.clear()
    Tenant.objects.bulk_create(Tenant(name=f"Tenant {n}", slug=f"t{n}") for n in range(tenants))
    jobs = sorted(ledger.jobs())
    table = ScheduledRun._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(id) FROM portal_tenant")
        first = cursor.fetchone()[0]
        # Finished rows: job and status by the row number, an hour apart per tenant.
        cursor.execute(
            f"""
            INSERT INTO {table} (tenant_id, job, slot, status, not_before, deadline, attempts,
                                 started, finished, heartbeat, worker, summary, error,
                                 checkpoint, notified, queued_at)
            SELECT %s + (n %% %s), (%s::text[])[1 + n %% %s], now() - n * interval '1 second',
                   (ARRAY['succeeded','succeeded','succeeded','failed','error'])[1 + n %% 5],
                   now() - n * interval '1 second', now(), 1,
                   now() - n * interval '1 second' - interval '3 seconds',
                   now() - n * interval '1 second', NULL, '', 'done', '', '{{}}', false, NULL
            FROM generate_series(1, %s) AS n
            """,
            [first, tenants, jobs, len(jobs), rows],
        )
        # One queued and one running slot per tenant.
        cursor.execute(
            f"""
            INSERT INTO {table} (tenant_id, job, slot, status, not_before, deadline, attempts,
                                 started, finished, heartbeat, worker, summary, error,
                                 checkpoint, notified, queued_at)
            SELECT id, job, now() + interval '1 hour', status, now() + interval '1 hour',
                   now() + interval '2 hours', 0, NULL, NULL, now(), '', '', '', '{{}}', false,
                   NULL
            FROM portal_tenant, (VALUES ('invoice_fetch_new', 'queued'),
                                     ('billing_sync', 'running')) AS s(job, status)
            """
        )
        cursor.execute(f"ANALYZE {table}")
    per = rows // (len(jobs) * 5)
    for job in jobs:
        for status, share in (("succeeded", 3), ("failed", 1), ("error", 1)):
            metrics.count(metrics.finished_key(job, status), per * share)
        metrics.count(metrics.timed_key(job), per * 5)
        metrics.count(metrics.duration_key(job), per * 5 * 3000)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--tenants", type=int, default=2000)
    parser.add_argument("--scrapes", type=int, default=5)
    args = parser.parse_args()
    fresh_database()
    import django

    django.setup()
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry

    from portal.metrics import PortalCollector
    from portal.models import ScheduledRun

    started = time.monotonic()
    build(args.rows, args.tenants)
    built = time.monotonic() - started
    kept = ScheduledRun.objects.count()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector())
    generate_latest(registry)  # warm
    times = []
    for _ in range(args.scrapes):
        began = time.perf_counter()
        text = generate_latest(registry)
        times.append(time.perf_counter() - began)
    print(f"ledger rows: {kept:,} ({args.tenants:,} tenants), built in {built:.0f} s")
    lines = text.count(b"\n")
    print(f"/metrics: {len(text):,} bytes, {lines:,} lines")
    print(
        f"scrape: median {statistics.median(times) * 1000:.0f} ms, "
        f"max {max(times) * 1000:.0f} ms over {args.scrapes} scrapes; "
        f"load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
