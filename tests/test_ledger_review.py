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
