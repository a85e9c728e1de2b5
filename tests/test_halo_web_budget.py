"""Halo calls made inside web requests never hold a web worker past the web budget
(pentest #12 finding 4): with Halo hanging, every admin action that calls Halo answers with
a clear message, never a 500, within `HALO_WEB_BUDGET_SECONDS`; the long ones run on the
worker; /healthz does not call Halo at all.

The budget is measured on an injected clock, never on the wall: it moves only by what the
Halo calls could have cost, each request that timed out by the whole time it was given
(connect and read together, the worst case) and each backoff by its sleep. Halo is the
simulator over HTTP, made to hang with its `timeout` fault.
"""

import json
import socket
import subprocess
import sys

import pytest
import requests
from django.urls import reverse
from urllib3.util import Timeout

from billing.invoicing.pdfs import resolve_pdf
from integrations.billing_sync import tasks as billing_tasks
from integrations.billing_sync.models import HaloClientRecord
from integrations.halo import HaloClient, egress
from integrations.halo.ratelimit import Deadline
from integrations.invoice_sync.models import InvoiceSyncSettings
from portal.access import ALL_TENANTS
from portal.models import WorkerHeartbeat
from tests.billing_sync.conftest import take_queued
from tests.halo.conftest import make_connection
from tests.halo.test_connection_admin import run_url
from tests.invoicing.conftest import branded_tenant, halo_invoice
from tests.test_deploy_settings import ROOT, example_environment

pytestmark = pytest.mark.usefixtures("requests_commit")
BUDGET = 0.5
#: How long the simulator hangs: longer than the budget, shorter than the timeouts.
HANG = 2.0
REFRESH_TASK = "integrations.billing_sync.tasks.refresh_halo"


class BudgetClock:
    """The web budget's clock (`Deadline.clock`/`Deadline.sleep`) and the record of every
    request the Halo client sent: the timeouts it gave requests."""

    def __init__(self):
        self.now = 0.0
        self.slept = []
        self.timeouts = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds

    def worst_case(self, timeout):
        """The longest a request given `timeout` can take (no answer at all)."""
        if isinstance(timeout, Timeout):
            return timeout.total
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        return connect + read


@pytest.fixture
def budget(settings, monkeypatch):
    """A 0.5 s web budget on the injected clock, production timeouts and retry budget (the
    budget must cap them), and every Halo request's timeouts recorded."""
    settings.HALO_WEB_BUDGET_SECONDS = BUDGET
    settings.HALO_CONNECT_TIMEOUT = 5
    settings.HALO_READ_TIMEOUT = 30
    settings.HALO_RETRY_BUDGET_SECONDS = 120
    settings.HALO_BACKOFF_BASE = 0.01
    settings.HALO_BACKOFF_CAP = 0.05
    clock = BudgetClock()
    monkeypatch.setattr(Deadline, "clock", clock)
    monkeypatch.setattr(Deadline, "sleep", clock.sleep)
    real_session = egress.session

    def session():
        http = real_session()
        send = http.request

        def request(method, url, **kwargs):
            clock.timeouts.append(kwargs.get("timeout"))
            try:
                return send(method, url, **kwargs)
            except requests.Timeout:
                clock.now += clock.worst_case(kwargs.get("timeout"))
                raise

        http.request = request
        return http

    monkeypatch.setattr(egress, "session", session)
    return clock


def assert_within_budget(clock):
    assert clock.timeouts, "no request reached Halo"
    for timeout in clock.timeouts:
        assert isinstance(timeout, Timeout), f"{timeout!r}: not capped by the web budget"
        assert timeout.total <= BUDGET
        assert timeout.connect_timeout <= BUDGET and timeout.read_timeout <= BUDGET
    assert clock.now <= BUDGET  # what the calls could have cost, at worst


def hang(sim, path, method=None):
    sim.control.add_fault("timeout", path=path, method=method, seconds=HANG)


TIMED_OUT = f"Halo did not answer within {BUDGET:g} s, the longest a page waits for it"


# -- Test connection ------------------------------------------------------------------------


def test_test_connection_button_answers_within_the_budget(budget, personas, sim):
    connection = make_connection(sim, personas.tenant_a)
    hang(sim, "token")
    page = personas.client(personas.owner_a).post(run_url(connection))
    assert page.status_code == 200
    [result] = page.context["results"]
    assert not result.ok
    assert result.summary.startswith(f"{TIMED_OUT}, so the portal stopped trying to get an")
    assert sim.control.requests()["by_endpoint"]["POST /auth/token"] == 1
    assert_within_budget(budget)


def test_test_connection_action_shares_one_budget_between_connections(budget, personas, sim):
    """A superuser may select many connections: all of them together get one budget."""
    first = make_connection(sim, personas.tenant_a)
    second = make_connection(sim, personas.tenant_b)
    personas.owner_a.is_superuser = True
    personas.owner_a.save()
    hang(sim, "Client", "GET")
    admin = personas.client(personas.owner_a)
    admin.post(reverse("admin:switch_tenant"), {"tenant": ALL_TENANTS})
    page = admin.post(
        reverse("admin:integrations_haloconnection_changelist"),
        {"action": "test_connection", "_selected_action": [first.pk, second.pk]},
    )
    assert page.status_code == 200
    results = page.context["results"]
    assert [r.connection for r in results] == [first, second]
    assert not any(r.ok for r in results)
    assert "Could not check: read:customers" in results[0].summary
    assert results[1].summary.startswith(
        f"The portal did not get an access token: this page's {BUDGET:g} s for Halo were spent"
    )
    assert_within_budget(budget)


def test_a_failing_halo_gets_its_retries_inside_the_budget(budget, personas, sim):
    connection = make_connection(sim, personas.tenant_a)
    sim.control.add_fault("500", path="token", times=1000)
    page = personas.client(personas.owner_a).post(run_url(connection))
    [result] = page.context["results"]
    assert "internal error" in result.summary and "The portal gave up after" in result.summary
    assert sum(budget.slept) <= BUDGET
    assert_within_budget(budget)


# -- Register webhook -------------------------------------------------------------------------


def test_register_webhook_answers_within_the_budget(budget, personas, sim):
    make_connection(sim, personas.tenant_a)
    settings_row = InvoiceSyncSettings.for_tenant(personas.tenant_a)
    hang(sim, "Webhook", "GET")
    response = personas.client(personas.owner_a).post(
        reverse("admin:invoice_sync_invoicesyncsettings_changelist"),
        {"action": "register_webhook", "_selected_action": [settings_row.pk]},
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert f"{TIMED_OUT}, so the portal stopped trying to list webhooks" in page
    assert "Try again in a moment." in page
    assert InvoiceSyncSettings.objects.get(pk=settings_row.pk).webhook_registered is None
    assert_within_budget(budget)


# -- Refresh from Halo: on the worker ---------------------------------------------------------


def test_refresh_from_halo_runs_on_the_worker_and_shows_its_outcome(budget, personas, sim):
    make_connection(sim, personas.tenant_a)
    hang(sim, None)  # whatever the page might ask Halo, it would hang
    admin = personas.client(personas.owner_a)
    changelist = reverse("admin:billing_sync_haloclientrecord_changelist")
    take_queued(REFRESH_TASK)
    response = admin.post(reverse("admin:billing_sync_refresh"), HTTP_REFERER=changelist)
    assert response.status_code == 302 and response.url == changelist
    assert sim.control.requests()["total"] == 0  # the page did not call Halo
    page = admin.get(changelist).content.decode()
    assert "Refreshing from Halo on the worker" in page
    again = admin.post(reverse("admin:billing_sync_refresh"), follow=True).content.decode()
    assert "already under way" in again
    [task] = take_queued(REFRESH_TASK)  # one task, however often the button is pressed
    sim.control.clear_faults()
    billing_tasks.refresh_halo(*task["args"])
    page = admin.get(changelist).content.decode()
    clients = HaloClientRecord.objects.filter(tenant=personas.tenant_a).count()
    assert clients and f"Refreshed from Halo: {clients} clients and" in page


def test_a_refresh_that_fails_on_the_worker_says_why_on_the_page(budget, personas, sim):
    make_connection(sim, personas.tenant_a, secret="not-the-secret")
    admin = personas.client(personas.owner_a)
    take_queued(REFRESH_TASK)
    admin.post(reverse("admin:billing_sync_refresh"))
    [task] = take_queued(REFRESH_TASK)
    billing_tasks.refresh_halo(*task["args"])
    page = admin.get(reverse("admin:billing_sync_organisationmapping_changelist"))
    text = page.content.decode()
    assert "Refresh from Halo failed" in text and "invalid_client" in text
    # and it can be started again at once
    admin.post(reverse("admin:billing_sync_refresh"))
    assert len(take_queued(REFRESH_TASK)) == 1


# -- PDFs from Halo (pay pages, the PDF API, the admin) ---------------------------------------


HALO_PDF = b"%PDF-1.7\n% Halo's own invoice PDF\n%%EOF\n"


@pytest.fixture
def halo_pdf_invoice(db, sim):
    """A synced invoice whose PDF is attached in Halo."""
    tenant = branded_tenant("alpha")
    connection = make_connection(sim, tenant)
    halo_id = sim.control.state("Invoice")[0]["id"]
    HaloClient(connection).create_attachment(f"Invoice {halo_id}.pdf", HALO_PDF, 3, halo_id)
    return halo_invoice(tenant, halo_id=halo_id)


def test_a_hanging_halo_costs_a_pay_page_pdf_the_budget_and_the_portal_pdf_is_served(
    budget, halo_pdf_invoice, sim
):
    hang(sim, "Invoice", "GET")
    budget.timeouts.clear()
    resolved = resolve_pdf(halo_pdf_invoice, "pay_page", prefer="halo")
    assert resolved.source == "portal" and resolved.content != HALO_PDF
    assert TIMED_OUT in resolved.fallback_reason
    assert_within_budget(budget)


# -- /healthz ---------------------------------------------------------------------------------


def test_healthz_does_not_call_or_wait_on_halo(budget, personas, sim, live_server):
    make_connection(sim, personas.tenant_a)
    hang(sim, None)
    WorkerHeartbeat.beat("portal")
    response = requests.get(f"{live_server.url}/healthz", timeout=30)
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert sim.control.requests()["total"] == 0
    assert budget.timeouts == []


# -- the worker keeps its own budgets ---------------------------------------------------------


def test_clients_without_a_budget_keep_the_configured_timeouts(budget, personas, sim):
    connection = make_connection(sim, personas.tenant_a)
    HaloClient(connection).get_client(1)
    assert budget.timeouts == [(5, 30), (5, 30)]  # the token, then the read


def _settings_shown(**overrides):
    """The broker, cache and database settings a process reads from this environment."""
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.Q_CLUSTER['redis'], s.CACHES['default'].get('OPTIONS', {}), "
        "s.DATABASES['default'].get('OPTIONS', {})]))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=example_environment(**overrides) | {"DJANGO_SETTINGS_MODULE": "portal.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_healthz_waits_on_redis_and_postgresql_a_few_seconds_at_most():
    """What /healthz (and every request) waits on besides Halo: Redis for the broker and the
    cache, and the database, each with a timeout (a hung server is unhealthy, not a hang)."""
    broker, cache_options, database_options = _settings_shown(
        REDIS_URL="redis://:secret@redis.internal:6379/0"
    )
    assert broker == (
        "redis://:secret@redis.internal:6379/0?socket_timeout=5&socket_connect_timeout=5"
    )
    assert cache_options == {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}
    assert database_options["connect_timeout"] == 5
    broker, *_ = _settings_shown(
        REDIS_URL="redis://redis.internal/1?socket_timeout=2", REDIS_SOCKET_TIMEOUT="3"
    )
    assert broker == "redis://redis.internal/1?socket_timeout=2&socket_connect_timeout=3"


@pytest.mark.django_db
def test_healthz_answers_when_redis_accepts_but_never_answers(client, monkeypatch):
    from django_q.brokers import redis_broker
    from django_q.conf import Conf

    from portal.settings import redis_url_with_timeouts

    WorkerHeartbeat.beat("portal")
    silent = socket.create_server(("127.0.0.1", 0))  # listens, never says a word
    try:
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        monkeypatch.setattr(Conf, "REDIS", redis_url_with_timeouts(url, 0.2))
        monkeypatch.setattr("portal.health_checks.get_broker", lambda: redis_broker.Redis("x"))
        response = client.get(reverse("healthz"))
    finally:
        silent.close()
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == {
        "ok": False,
        "detail": "unreachable: TimeoutError",
    }
