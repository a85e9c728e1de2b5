"""Real `manage.py worker` processes on PostgreSQL and Redis: a worker SIGKILLed mid-run, a
message the broker lost, and a worker started before its broker lose nothing.

These need a database other processes can share (PostgreSQL; SQLite's in-memory test
database is the test process's own) and Redis: CI's second pass. Each waits on a condition
with a deadline (the processes' own pace), never a fixed sleep.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from integrations.billing_sync import schedules
from integrations.billing_sync.models import BillingSyncRun
from portal import ledger
from portal.models import ScheduledRun
from tests import factories
from tests.billing_sync.conftest import World

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.postgres


@pytest.fixture
def shared(transactional_db, settings):
    if connection.vendor != "postgresql" or not os.environ.get("REDIS_URL"):
        pytest.skip("needs PostgreSQL and Redis shared with other processes (CI's second pass)")
    settings.RUN_STALE_SECONDS = 6
    settings.LEDGER_REQUEUE_IDLE_SECONDS = 0


def database_url():
    db = connection.settings_dict
    server = f"{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}"
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{server}/{db['NAME']}"


def child_env(**extra):
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DEBUG": "true",
        "RUN_HEARTBEAT_SECONDS": "1",
        "RUN_STALE_SECONDS": "6",
        "Q_LOG_LEVEL": "ERROR",
        **extra,
    }


@contextmanager
def workers(count=1, **env):
    """`manage.py worker` processes, each in its own process group (the cluster's children
    die with it when it is killed)."""
    started = [
        subprocess.Popen(
            [sys.executable, "manage.py", "worker"],
            cwd=ROOT,
            env=child_env(**env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for _ in range(count)
    ]
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def kill(process):
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def wait_for(condition, timeout=90, what="the condition"):
    """Poll `condition` (which may also move the system on, e.g. tick the ledger)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def due_slot(tenant):
    now = timezone.now()
    return ScheduledRun.objects.create(
        tenant=tenant,
        job=schedules.JOB,
        slot=now,
        not_before=now,
        deadline=now + timedelta(hours=1),
    )


@pytest.fixture
def slow_world(shared, sim):
    world = World.build(factories.tenant("alpha"), sim).map_all()
    world.set_counts(world.every_pair())
    sim.control.config(latency_ms=700)  # a run lasts a few seconds: time to kill its worker
    return world


def test_a_worker_killed_mid_run_loses_nothing(slow_world):
    row = due_slot(slow_world.tenant)
    with workers(2) as (first, second):
        ledger.tick()

        def running():
            row.refresh_from_db()
            return row.status == "running" and row.worker

        holder = ledger.pid_of(wait_for(running, what="a worker to claim the slot"))
        # The run is in one of the cluster's worker processes, in its master's group.
        victim = first if os.getpgid(holder) == first.pid else second
        kill(victim)  # SIGKILL mid-run: no finish, no goodbye

        def done():
            ledger.tick()  # the sweeper, as the schedule runs it every minute
            row.refresh_from_db()
            return row.status == "succeeded"

        wait_for(done, what="the slot to complete on the other worker")
    assert row.attempts == 2  # the killed attempt, then the one that finished it
    assert slow_world.halo_counts() == slow_world.wanted()  # exactly one licence per pair
    runs = BillingSyncRun.objects.filter(tenant=slow_world.tenant).order_by("pk")
    assert [r.status for r in runs][-1] == BillingSyncRun.Status.SUCCEEDED
    assert all(r.status != BillingSyncRun.Status.RUNNING for r in runs)  # none left hanging


def test_a_message_the_broker_lost_still_runs_its_slot(shared, sim):
    from django_q.brokers import get_broker

    world = World.build(factories.tenant("alpha"), sim).map_all()
    world.set_counts(world.every_pair())
    row = due_slot(world.tenant)
    ledger.tick()
    get_broker().purge_queue()  # the message is gone, as with a worker that prefetched it

    with workers(1):

        def done():
            ledger.tick()
            row.refresh_from_db()
            return row.status == "succeeded"

        wait_for(done, what="the lost slot to be sent again and run")
    assert row.attempts == 1
    assert world.halo_counts() == world.wanted()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def redis_server(port):
    process = subprocess.Popen(
        [
            shutil.which("redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_worker_started_before_its_broker_waits_for_it_then_works(shared, sim):
    if not shutil.which("redis-server"):
        pytest.skip("needs the redis-server program to start a broker of its own")
    world = World.build(factories.tenant("alpha"), sim).map_all()
    world.set_counts(world.every_pair())
    row = due_slot(world.tenant)
    port = free_port()
    broker = {"REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    with workers(1, **broker) as (worker,):
        assert worker.poll() is None  # no broker yet: it waits instead of exiting
        with redis_server(port):
            tick = [
                sys.executable,
                "manage.py",
                "shell",
                "-c",
                "from portal import ledger; ledger.tick()",
            ]

            def done():
                subprocess.run(tick, cwd=ROOT, env=child_env(**broker), check=True,
                               capture_output=True)  # fmt: skip
                row.refresh_from_db()
                return row.status == "succeeded"

            wait_for(done, timeout=120, what="the worker to come up once its broker did")
    assert world.halo_counts() == world.wanted()
