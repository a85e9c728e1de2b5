"""One run per tenant at a time, whoever starts it: threads, and processes on PostgreSQL."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection, connections

from integrations.billing_sync import runner
from integrations.billing_sync.models import BillingSyncRun
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
    first, _ = BillingSyncRun.objects.claim(tenant, trigger=BillingSyncRun.Trigger.MANUAL)
    assert BillingSyncRun.objects.claim(tenant, trigger=BillingSyncRun.Trigger.SCHEDULE) == (
        None,
        first,
    )
    other, _ = BillingSyncRun.objects.claim(
        factories.tenant("bravo"), trigger=BillingSyncRun.Trigger.MANUAL
    )
    assert other is not None  # tenants do not block each other


def in_thread(target):
    """Run `target` in a thread with its own database connection."""

    def body():
        try:
            target()
        finally:
            connections.close_all()

    thread = threading.Thread(target=body)
    thread.start()
    return thread


def test_a_second_worker_is_refused_while_the_first_runs(slow_world, monkeypatch):
    """Deterministic on every database: the second claim comes while the first run waits on
    Halo (holding no database lock, so SQLite's in-memory test database does not object)."""
    running, refused = threading.Event(), threading.Event()
    real_refresh = runner.refresh_from_halo

    def refresh_then_wait(tenant, client):
        running.set()
        assert refused.wait(30)
        return real_refresh(tenant, client)

    monkeypatch.setattr(runner, "refresh_from_halo", refresh_then_wait)
    first = []
    thread = in_thread(
        lambda: first.append(runner.start(slow_world.tenant, BillingSyncRun.Trigger.COMMAND))
    )
    assert running.wait(30)
    second = runner.start(slow_world.tenant, BillingSyncRun.Trigger.MANUAL, background=True)
    refused.set()
    thread.join(timeout=60)
    [(run, _)] = first
    assert second == (None, run)
    run.refresh_from_db()
    assert run.status == BillingSyncRun.Status.SUCCEEDED
    assert BillingSyncRun.objects.filter(tenant=slow_world.tenant).count() == 1
    assert slow_world.halo_counts() == slow_world.wanted()


def skip_unless_postgres():
    if connection.vendor != "postgresql":
        pytest.skip(
            "needs PostgreSQL: SQLite's in-memory test database answers a simultaneous "
            "write with 'table is locked' instead of waiting (the claim itself is tested "
            "above on every database)"
        )


@pytest.mark.postgres
def test_two_threads_start_the_same_tenant_at_once_and_exactly_one_runs(slow_world):
    skip_unless_postgres()
    barrier = threading.Barrier(2)
    outcomes = []

    def worker():
        barrier.wait()
        outcomes.append(runner.start(slow_world.tenant, BillingSyncRun.Trigger.COMMAND))

    for thread in [in_thread(worker), in_thread(worker)]:
        thread.join(timeout=60)
    ran = [run for run, _ in outcomes if run is not None]
    refused = [active for run, active in outcomes if run is None]
    assert len(ran) == 1 and len(refused) == 1
    assert refused[0].pk == ran[0].pk
    assert BillingSyncRun.objects.filter(tenant=slow_world.tenant).count() == 1
    assert slow_world.halo_counts() == slow_world.wanted()


@pytest.mark.postgres
def test_two_worker_processes_start_the_same_tenant_and_exactly_one_runs(slow_world):
    skip_unless_postgres()
    db = connection.settings_dict
    server = f"{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}"
    url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{server}/{db['NAME']}"
    # DEBUG: a fresh checkout has no .env, and the child only needs the test's own keys.
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "true"}
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
    assert BillingSyncRun.objects.filter(tenant=slow_world.tenant).count() == 1
    assert slow_world.halo_counts() == slow_world.wanted()
