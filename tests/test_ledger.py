"""The durable run ledger (portal.ledger): slots as rows, claimed once, resumed after a
worker dies, re-sent when the broker lost them, retried until their deadline."""

from datetime import UTC, datetime, timedelta

import pytest

from portal import ledger
from portal.models import ScheduledRun
from tests import factories

T0 = datetime(2026, 12, 1, 9, 0, 30, tzinfo=UTC)


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now

    def move(self, **delta):
        self.now += timedelta(**delta)


@pytest.fixture(autouse=True)
def _sent_at_once(monkeypatch):
    """On Redis (CI's second pass) `enqueue` sends once the transaction commits, which a
    test's transaction never does: the tick's sends are made at once, as on the database
    broker, so `queued` sees them."""
    from django.db import transaction

    monkeypatch.setattr(transaction, "on_commit", lambda send, robust=False: send())


@pytest.fixture
def clock(monkeypatch):
    clock = Clock(T0)
    monkeypatch.setattr(ledger, "clock", clock)
    return clock


@pytest.fixture
def only(monkeypatch):
    """Run the tick over the given jobs only (the product's own stay registered)."""

    def use(*jobs):
        monkeypatch.setattr(ledger, "_jobs", {job.name: job for job in jobs})
        return jobs

    return use


class Recorder:
    """A job's run function: records its calls, and answers or raises what it is told."""

    def __init__(self, *answers):
        self.calls, self.answers = [], list(answers)

    def __call__(self, row):
        self.calls.append((row.tenant_id, row.slot, row.attempts))
        answer = self.answers.pop(0) if self.answers else "done"
        if isinstance(answer, Exception):
            raise answer
        return answer


def hourly_job(run, tenants, **options):
    return ledger.Job(
        name="test_hourly",
        label="Test",
        run=run,
        next_slot=lambda subject, after: ledger.every(60)(subject, after),
        subjects=lambda: [(t.pk, t) for t in tenants],
        **options,
    )


def work_everything(queued):
    """What the workers do with what the tick sent: run each queued task once."""
    sent = [args for path, *args in queued if path == "portal.ledger.work"]
    queued.clear()
    return [ledger.work(*args) for args in sent]


@pytest.mark.django_db
def test_the_tick_plans_one_row_per_tenant_and_slot_idempotently(clock, only, queued):
    alpha, bravo = factories.tenant("alpha"), factories.tenant("bravo")
    only(hourly_job(Recorder(), [alpha, bravo]))
    ledger.tick()
    ledger.tick()
    rows = ScheduledRun.objects.order_by("tenant__slug")
    assert [(r.tenant.slug, r.slot) for r in rows] == [
        ("alpha", datetime(2026, 12, 1, 10, tzinfo=UTC)),
        ("bravo", datetime(2026, 12, 1, 10, tzinfo=UTC)),
    ]
    assert all(r.status == "queued" and r.deadline == r.slot + timedelta(hours=1) for r in rows)
    assert queued == []  # nothing is due yet


@pytest.mark.django_db
def test_a_due_slot_runs_once_and_the_next_one_is_planned(clock, only, queued):
    tenant = factories.tenant("alpha")
    job = Recorder()
    only(hourly_job(job, [tenant]))
    ledger.tick()
    clock.move(hours=1)
    ledger.tick()
    assert work_everything(queued) == ["succeeded"]
    ledger.tick()
    assert work_everything(queued) == []
    assert job.calls == [(tenant.pk, datetime(2026, 12, 1, 10, tzinfo=UTC), 1)]
    done = ScheduledRun.objects.get(slot=datetime(2026, 12, 1, 10, tzinfo=UTC))
    assert done.status == "succeeded" and done.summary == "done" and done.finished == clock.now
    assert ScheduledRun.objects.filter(status="queued").get().slot == datetime(
        2026, 12, 1, 11, tzinfo=UTC
    )


@pytest.mark.django_db
def test_after_downtime_a_missed_slot_runs_once_not_once_per_missed_slot(clock, only, queued):
    tenant = factories.tenant("alpha")
    job = Recorder()
    only(hourly_job(job, [tenant]))
    ledger.tick()
    clock.move(days=3)  # everything was down for three days
    ledger.tick()
    assert work_everything(queued) == ["succeeded"]
    assert len(job.calls) == 1
    assert ScheduledRun.objects.count() == 2  # the missed slot, and the next future one


@pytest.mark.django_db
def test_changed_settings_move_the_planned_slot_and_off_removes_it(clock, only):
    alpha = factories.tenant("alpha")
    tenants = [alpha]
    offset = {"minutes": 0}
    job = ledger.Job(
        name="test_moving",
        label="Test",
        run=Recorder(),
        next_slot=lambda t, after: ledger.every(60)(t, after) + timedelta(**offset),
        subjects=lambda: [(t.pk, t) for t in tenants],
    )
    only(job)
    ledger.tick()
    offset["minutes"] = 30
    ledger.tick()
    assert list(ScheduledRun.objects.values_list("slot", flat=True)) == [
        datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    ]
    tenants.clear()
    ledger.tick()
    assert not ScheduledRun.objects.exists()


@pytest.mark.django_db
def test_a_worker_that_died_mid_run_is_resumed_by_the_sweeper(clock, only, queued, settings):
    tenant = factories.tenant("alpha")
    job = Recorder()
    only(hourly_job(job, [tenant]))
    ledger.tick()
    clock.move(hours=1)
    ledger.tick()
    queued.clear()
    row = ledger.claim()  # a worker took it ... and was SIGKILLed: no finish, no beats
    assert row.status == "running" and row.worker
    clock.move(seconds=settings.RUN_STALE_SECONDS - 1)
    assert ledger.tick()["resumed"] == 0
    clock.move(seconds=2)
    assert ledger.tick()["resumed"] == 1
    row.refresh_from_db()
    assert row.status == "queued" and "stopped beating" in row.error
    assert work_everything(queued) == ["succeeded"]
    assert job.calls == [(tenant.pk, row.slot, 2)]  # the second attempt ran it, once


@pytest.mark.django_db
def test_a_message_the_broker_lost_is_sent_again_once_the_queue_is_idle(
    clock, only, queued, monkeypatch, settings
):
    tenant = factories.tenant("alpha")
    only(hourly_job(Recorder(), [tenant]))
    ledger.tick()
    clock.move(hours=1)
    waiting = {"size": 0}
    monkeypatch.setattr(ledger, "broker_queue_size", lambda: waiting["size"])
    assert ledger.tick()["sent"] == 1
    queued.clear()  # ... prefetched by a worker that died: lost
    waiting["size"] = 40  # other tasks still wait: what was sent may be among them
    clock.move(seconds=settings.LEDGER_REQUEUE_IDLE_SECONDS + 1)
    assert ledger.tick()["sent"] == 0
    waiting["size"] = 0  # the queue drained and the row is still due: it was lost
    assert ledger.tick()["sent"] == 1
    assert work_everything(queued) == ["succeeded"]


@pytest.mark.django_db
def test_a_row_is_claimed_by_one_worker_only(clock, only):
    tenant = factories.tenant("alpha")
    only(hourly_job(Recorder(), [tenant]))
    ledger.tick()
    clock.move(hours=1)
    row = ScheduledRun.objects.get()
    first, second = ledger.claim(row.pk), ledger.claim(row.pk)
    assert first.pk == row.pk and second is None
    assert ledger.work(row.pk) is None  # its task arrives late: nothing else is due


@pytest.mark.django_db
def test_transient_failures_retry_with_backoff_until_the_deadline_and_email_once(
    clock, only, queued
):
    tenant = factories.tenant("alpha")
    told = []
    failing = Recorder(*[ledger.RetryLater("Halo answered 503.")] * 20)
    only(hourly_job(failing, [tenant], on_failure=lambda row, text: told.append(text)))
    ledger.tick()
    clock.move(hours=1)
    ledger.tick()
    work_everything(queued)
    row = ScheduledRun.objects.get(slot=datetime(2026, 12, 1, 10, tzinfo=UTC))
    assert row.status == "queued" and row.will_retry == clock.now + timedelta(minutes=1)
    assert "Will retry at" in row.error
    waits = []
    while row.status == "queued":
        clock.now = row.not_before
        ledger.tick()
        work_everything(queued)
        previous = row.not_before
        row.refresh_from_db()
        waits.append(row.not_before - previous)
    assert waits[:4] == [timedelta(minutes=m) for m in (2, 4, 8, 16)]  # then capped
    assert row.status == "error" and "Gave up after" in row.error
    assert row.finished <= row.deadline
    assert len(told) == 1  # one email per incident, not one per attempt


@pytest.mark.django_db
def test_a_continuation_waits_for_its_time_without_counting_as_a_failure(clock, only, queued):
    tenant = factories.tenant("alpha")
    resume_at = T0 + timedelta(hours=1, minutes=5)
    job = Recorder(ledger.ContinueAt(resume_at, {"written": 2700}, "Paused"), "finished")
    only(hourly_job(job, [tenant]))
    ledger.tick()
    clock.move(hours=1)
    ledger.tick()
    work_everything(queued)
    row = ScheduledRun.objects.get(slot=datetime(2026, 12, 1, 10, tzinfo=UTC))
    assert (row.status, row.not_before, row.attempts) == ("queued", resume_at, 0)
    assert row.checkpoint == {"written": 2700, "continuations": 1}
    ledger.tick()
    assert work_everything(queued) == []  # not before its time
    clock.now = resume_at
    ledger.tick()
    assert work_everything(queued) == ["succeeded"]
    row.refresh_from_db()
    assert row.summary == "finished" and row.attempts == 1


@pytest.mark.django_db
def test_every_product_job_is_registered_and_the_tick_is_scheduled():
    from django_q.models import Schedule

    from portal.schedules import ensure_schedules

    assert {
        "billing_sync",
        "invoice_fetch_new",
        "invoice_fetch_unpaid",
        "halo_outbox",
        "autopay",
        "pay_links",
    } <= set(ledger.jobs())
    Schedule.objects.create(name="billing_sync.tenant.7", func="gone", next_run=T0)
    ensure_schedules()
    assert Schedule.objects.get(name="portal.ledger_tick").minutes == 1
    assert not Schedule.objects.filter(name__startswith="billing_sync.").exists()


@pytest.mark.django_db
def test_fleet_jobs_have_one_row_per_slot(clock, only, queued):
    job = ledger.Job(name="test_fleet", label="Fleet", run=Recorder(), next_slot=ledger.every(5))
    only(job)
    ledger.tick()
    ledger.tick()
    [row] = ScheduledRun.objects.all()
    assert row.tenant is None and row.slot == datetime(2026, 12, 1, 9, 5, tzinfo=UTC)


def test_daily_slots_keep_local_time_across_daylight_saving():
    from zoneinfo import ZoneInfo

    new_york = ZoneInfo("America/New_York")
    first = ledger.daily_at(2, new_york, datetime(2026, 3, 7, 12, tzinfo=UTC))
    second = ledger.daily_at(2, new_york, first)
    third = ledger.daily_at(2, new_york, second)
    assert first == datetime(2026, 3, 8, 7, tzinfo=UTC)  # 02:00 EST (then 03:00 EDT)
    assert second == datetime(2026, 3, 9, 6, tzinfo=UTC)  # 02:00 EDT
    assert third - second == timedelta(days=1)


@pytest.mark.django_db
def test_one_job_failing_to_plan_does_not_stop_the_others(clock, only, queued):
    tenant = factories.tenant("alpha")

    def broken(subject, after):
        raise RuntimeError("a bug in one job's settings")

    bad = ledger.Job(name="test_broken", label="Broken", run=Recorder(), next_slot=broken,
                     subjects=lambda: [(tenant.pk, tenant)])  # fmt: skip
    only(bad, hourly_job(Recorder(), [tenant]))
    assert ledger.tick()["planned"] == 1
    assert list(ScheduledRun.objects.values_list("job", flat=True)) == ["test_hourly"]
