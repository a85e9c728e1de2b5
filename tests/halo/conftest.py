"""A Halo simulator over real HTTP for the client tests, reset before each test."""

import pytest

from integrations.halo import HaloClient
from integrations.models import HaloConnection
from tests import factories


@pytest.fixture(autouse=True)
def _fast_retries(settings):
    """Backoff scaled down so retry tests take milliseconds; timeouts short."""
    settings.HALO_BACKOFF_BASE = 0.01
    settings.HALO_BACKOFF_CAP = 0.05
    settings.HALO_RETRY_BUDGET_SECONDS = 5
    settings.HALO_CONNECT_TIMEOUT = 2
    settings.HALO_READ_TIMEOUT = 1


def make_connection(sim, tenant=None, *, client_id=None, secret=None, **fields):
    tenant = tenant or factories.tenant(f"halo-{HaloConnection.objects.count() + 1}")
    defaults = {
        "name": "Simulator",
        "auth_url": sim.auth_url,
        "resource_url": sim.api_url,
        "halo_tenant": sim.tenant,
        "client_id": client_id or sim.demo_app.client_id,
    }
    connection = HaloConnection(tenant=tenant, **(defaults | fields))
    connection.set_secret(secret or sim.demo_app.client_secret)
    connection.save()
    return connection


class HandClock:
    """The Halo client's clock (`HaloClient(..., clock=, sleep=)`), moved only by the test:
    its `sleep` moves it at once instead of waiting, and moves the simulator's clock with it
    (rate windows and token expiry in Halo run on Halo's clock). `slept` lists the waits."""

    def __init__(self, sim, now=1_800_000_000.0):
        self.sim, self.now, self.slept = sim, now, []

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds
        self.sim.control.move_clock(seconds)

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.advance(seconds)


@pytest.fixture
def halo_clock(sim):
    return HandClock(sim)


@pytest.fixture
def connection(db, sim):
    return make_connection(sim)


@pytest.fixture
def halo(connection):
    return HaloClient(connection)
