"""A Halo simulator over HTTP for invoice sync, a tenant connected to it, and a clock."""

from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.invoice_sync.runner import run_sync
from tests import factories
from tests.halo.conftest import make_connection


@pytest.fixture(autouse=True)
def _fast_retries(settings):
    settings.HALO_BACKOFF_BASE = 0.01
    settings.HALO_BACKOFF_CAP = 0.05
    settings.HALO_RETRY_BUDGET_SECONDS = 2
    settings.HALO_READ_TIMEOUT = 5


@pytest.fixture
def tenant(db, sim):
    tenant = factories.tenant("northwind-msp")
    make_connection(sim, tenant)
    return tenant


def sync(tenant, kind="new"):
    """One run through the real engine; fails the test if the run did not succeed."""
    run = run_sync(tenant, kind, "cli")
    assert run.status == "succeeded", run.error
    return run


class Clock:
    """`timezone.now` under the test's control (limits and locks read it)."""

    def __init__(self, monkeypatch):
        self.now = timezone.now()
        monkeypatch.setattr(timezone, "now", lambda: self.now)

    def advance(self, **delta):
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)
