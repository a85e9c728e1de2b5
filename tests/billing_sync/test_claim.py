"""One run per tenant at a time, whoever starts it: threads here, processes on PostgreSQL."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection, connections

from integrations.billing_sync import runner
from integrations.billing_sync.models import SyncRun
from tests import factories
from tests.billing_sync.conftest import World

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def slow_world(transactional_db, sim):
    """Committed data (other threads and processes see it) and a Halo slow enough that a
    run is still going when the second worker arrives."""
    world = World.build(factories.tenant("alpha"), sim).map_all()
    world.set_counts(world.every_pair())
    sim.control.config(latency_ms=300)
    return world


def test_claim_refuses_a_second_run_and_names_the_first(db):
    tenant = factories.tenant("alpha")
    first, _ = SyncRun.objects.claim(tenant, SyncRun.Trigger.MANUAL)
    assert SyncRun.objects.claim(tenant, SyncRun.Trigger.SCHEDULE) == (None, first)
    other, _ = SyncRun.objects.claim(factories.tenant("bravo"), SyncRun.Trigger.MANUAL)
    assert other is not None  # tenants do not block each other


def test_two_threads_start_the_same_tenant_and_exactly_one_runs(slow_world):
    barrier = threading.Barrier(2)
    outcomes = []

    def worker():
        try:
            barrier.wait()
            outcomes.append(runner.start(slow_world.tenant, SyncRun.Trigger.COMMAND))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    ran = [run for run, _ in outcomes if run is not None]
    refused = [active for run, active in outcomes if run is None]
    assert len(ran) == 1 and len(refused) == 1
    assert refused[0].pk == ran[0].pk
    assert SyncRun.objects.filter(tenant=slow_world.tenant).count() == 1
    assert slow_world.halo_counts() == slow_world.wanted()


@pytest.mark.postgres
def test_two_worker_processes_start_the_same_tenant_and_exactly_one_runs(slow_world):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite's in-memory test database is per process")
    db = connection.settings_dict
    server = f"{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}"
    url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{server}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url}
    command = [sys.executable, "manage.py", "sync_billing", slow_world.tenant.slug]
    workers = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    results = [
        (w.wait(timeout=120), w.stdout.read().decode(), w.stderr.read().decode()) for w in workers
    ]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    assert "already" in refused
    assert SyncRun.objects.filter(tenant=slow_world.tenant).count() == 1
    assert slow_world.halo_counts() == slow_world.wanted()
