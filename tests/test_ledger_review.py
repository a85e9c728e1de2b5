"""The durable run ledger under failure (review of issue 14): a worker that keeps dying, a
slot retried very many times, a tick racing a continuation."""

from datetime import timedelta

import pytest

from portal import ledger
from portal.models import ScheduledRun
from tests import factories
from tests.test_ledger import T0, Clock, Recorder, hourly_job


@pytest.fixture
def clock(monkeypatch):
    clock = Clock(T0)
    monkeypatch.setattr(ledger, "clock", clock)
    return clock


@pytest.fixture
def only(monkeypatch):
    def use(*jobs):
        monkeypatch.setattr(ledger, "_jobs", {job.name: job for job in jobs})
        return jobs

    return use


@pytest.mark.django_db
def test_a_slot_retried_very_many_times_still_backs_off_at_the_cap(clock, only):
    """attempts grows with every claim (a worker that died counts one too): the backoff's
    doubling must stop at the cap, not overflow timedelta and leave the row running."""
    tenant = factories.tenant("alpha")
    only(hourly_job(Recorder(ledger.RetryLater("Halo answered 503.")), [tenant]))
    row = ScheduledRun.objects.create(
        tenant=tenant,
        job="test_hourly",
        slot=clock.now,
        not_before=clock.now,
        deadline=clock.now + timedelta(hours=12),
        attempts=60,
    )
    assert ledger.work(row.pk) == "queued"
    row.refresh_from_db()
    assert row.not_before == clock.now + ledger.RETRY_CAP and row.attempts == 61


@pytest.mark.django_db
def test_a_slot_whose_worker_keeps_dying_gives_up_and_tells_the_owners_once(
    clock, only, queued, settings
):
    """A slot that kills its worker every time (out of memory on one huge tenant, or past
    django-q's task timeout) is not resumed for ever, taking a worker down each time."""
    tenant = factories.tenant("alpha")
    told = []
    job = Recorder()
    only(hourly_job(job, [tenant], on_failure=lambda row, text: told.append(text)))
    ledger.tick()
    clock.move(hours=1)
    ledger.tick()
    for _ in range(ledger.MAX_UNEXPECTED):
        row = ledger.claim()  # a worker takes it ... and dies with it
        assert row is not None and row.slot == T0.replace(minute=0, second=0) + timedelta(hours=1)
        clock.move(seconds=settings.RUN_STALE_SECONDS + 1)
        ledger.tick()
    row.refresh_from_db()
    assert row.status == "error" and row.finished == clock.now
    assert f"stopped {ledger.MAX_UNEXPECTED} times" in row.error
    assert len(told) == 1 and "stopped" in told[0]
    assert ledger.claim() is None and job.calls == []  # nothing due: the next slot is at 11:00


@pytest.mark.django_db
def test_a_worker_that_died_once_is_still_resumed(clock, only, queued, settings):
    tenant = factories.tenant("alpha")
    only(hourly_job(Recorder(), [tenant]))
    ledger.tick()
    clock.move(hours=1)
    ledger.tick()
    for _ in range(ledger.MAX_UNEXPECTED - 1):
        ledger.claim()
        clock.move(seconds=settings.RUN_STALE_SECONDS + 1)
        ledger.tick()
    row = ledger.claim()
    assert row is not None and row.attempts == ledger.MAX_UNEXPECTED
    ledger.execute(row)
    assert row.status == "succeeded"


@pytest.mark.django_db
def test_a_tick_that_began_a_moment_earlier_keeps_a_new_continuation(clock, only):
    """Sync now paused for Halo's rate window while a tick was planning (its `now` taken a
    moment before): the continuation's row is not a planned slot to tidy away."""
    tenant = factories.tenant("alpha")
    job = only(hourly_job(Recorder(), [tenant]))[0]
    ticked = clock.now
    clock.move(seconds=2)
    row = ledger.continue_later(tenant.pk, job.name, clock.now + timedelta(minutes=5), {"run": 1})
    ledger.plan(job, ticked)
    assert ScheduledRun.objects.filter(pk=row.pk).exists()
    assert ScheduledRun.objects.count() == 2  # and the next slot is planned beside it


@pytest.mark.django_db
def test_the_fleet_survey_picks_each_tenant_jobs_latest_and_next_slot_among_its_history():
    from django.utils import timezone

    from portal import fleet

    now = timezone.now()

    def row(tenant, job, hours, **fields):
        slot = now + timedelta(hours=hours)
        return ScheduledRun.objects.create(
            tenant=tenant, job=job, slot=slot, not_before=slot, deadline=slot, **fields
        )

    alpha, bravo = factories.tenant("alpha"), factories.tenant("bravo")
    factories.tenant("idle")  # nothing on the ledger: not listed
    for hours in (-50, -26, -2):
        row(alpha, "billing_sync", hours, status="succeeded")
    alpha_last = row(alpha, "invoice_fetch_new", -1, status="error", error="Halo refused.")
    row(alpha, "invoice_fetch_new", -3, status="succeeded")
    alpha_next = row(alpha, "billing_sync", 22)
    row(alpha, "billing_sync", 46)
    row(alpha, "billing_sync", 21, attempts=1)  # a retry is not the next slot
    bravo_last = row(
        bravo, "billing_sync", -5, status="running", started=now, heartbeat=now, worker="w:1"
    )
    row(None, "halo_outbox", -1, status="succeeded")
    fleet_last = row(None, "halo_outbox", -0.01, status="succeeded")

    found = {(j.tenant, j.job): j for j in fleet.survey(now).jobs}
    assert set(found) == {
        ("alpha", "billing_sync"),
        ("alpha", "invoice_fetch_new"),
        ("bravo", "billing_sync"),
        ("(fleet)", "halo_outbox"),
    }
    assert found["alpha", "billing_sync"].last.slot == now - timedelta(hours=2)
    assert found["alpha", "billing_sync"].next == alpha_next
    assert found["alpha", "invoice_fetch_new"].last == alpha_last
    assert found["alpha", "invoice_fetch_new"].state == "failed"
    assert found["bravo", "billing_sync"].last == bravo_last
    assert found["bravo", "billing_sync"].state == "running"
    assert found["(fleet)", "halo_outbox"].last == fleet_last
    only_billing = fleet.survey(now, job="billing_sync").jobs
    assert {(j.tenant, j.job) for j in only_billing} == {
        ("alpha", "billing_sync"),
        ("bravo", "billing_sync"),
    }


@pytest.mark.django_db
def test_ended_runs_are_counted_for_metrics_as_they_end(clock, only, queued, settings):
    """`/metrics` reads counters kept as runs end (a succeeded slot, a failed one, a slot
    given up by the sweeper), not a count of millions of kept rows."""
    from portal import counters, metrics

    tenant = factories.tenant("alpha")
    only(hourly_job(Recorder("done", ("failed", "2 pairs failed")), [tenant]))
    for _ in range(2):
        ledger.tick()
        clock.move(hours=1)
        ledger.tick()
        ledger.execute(ledger.claim())
    ledger.tick()
    clock.move(hours=1)
    ledger.tick()
    for _ in range(ledger.MAX_UNEXPECTED):  # a third slot whose worker keeps dying
        ledger.claim()
        clock.move(seconds=settings.RUN_STALE_SECONDS + 1)
        ledger.sweep(clock.now)
    keys = [metrics.finished_key("test_hourly", s) for s in ("succeeded", "failed", "error")]
    assert list(counters.values(keys).values()) == [1, 1, 1]
    assert counters.value(metrics.timed_key("test_hourly")) == 3


def test_two_processes_never_share_a_worker_name(monkeypatch):
    """Containers often share a hostname and a pid: the claim's `worker`, which proves a
    run is still its claimer's, must still tell them apart."""
    import socket

    monkeypatch.setattr(socket, "gethostname", lambda: "portal-worker")
    monkeypatch.setattr(ledger.os, "getpid", lambda: 7)
    monkeypatch.setattr(ledger, "_process_tokens", {})
    here = ledger.worker_name()
    assert here.startswith("portal-worker:7:") and ledger.worker_name() == here
    assert ledger.pid_of(here) == 7 and ledger.pid_of("web-2:4242") is None
    monkeypatch.setattr(ledger, "_process_tokens", {})  # another container, same host and pid
    assert ledger.worker_name() != here
