"""`manage.py halo_test_connection` and `manage.py halo_refresh` (issue 15), run the way
manage.py runs them (argument parsing and exit codes included) against the Halo simulator
over HTTP: 0 done, 1 a check or the refresh failed, 2 usage error, no such tenant or no
connection."""

import pytest
from django.core.management import ManagementUtility

from integrations.billing_sync import refresh
from integrations.billing_sync.models import HaloClientRecord, HaloItemRecord
from integrations.models import HaloConnection
from tests import factories
from tests.halo.conftest import make_connection

# manage.py closes the database connections when a command ends: committed data only.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fast_halo(settings):
    settings.HALO_BACKOFF_BASE = 0.01
    settings.HALO_BACKOFF_CAP = 0.05
    settings.HALO_RETRY_BUDGET_SECONDS = 2


def manage(capsys, *argv):
    """`manage.py *argv`: (exit code, stdout, stderr). Without the system checks, which
    refuse the tests' settings (no production secrets) before any command runs."""
    if argv[1:]:
        argv = (*argv, "--skip-checks")
    try:
        ManagementUtility(["manage.py", *argv]).execute()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    else:
        code = 0
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def tenant(db):
    return factories.tenant("acme")


# -- halo_test_connection -------------------------------------------------------------------


def test_test_connection_prints_each_check_and_exits_0_when_all_pass(capsys, tenant, sim):
    connection = make_connection(sim, tenant, payments=True, webhooks=True)

    code, out, err = manage(capsys, "halo_test_connection", "acme")

    assert code == 0, err
    for permission in ("read:customers", "edit:softwarelicensing", "read:invoices"):
        assert any(line.split()[:2] == ["ok", permission] for line in out.splitlines()), out
    assert "admin:webhooks" in out and "OK: Credentials accepted" in out
    assert sim.demo_app.client_secret not in out + err
    connection.refresh_from_db()  # recorded as the admin's button records it
    assert connection.test_status == HaloConnection.TestStatus.OK and connection.tested_at


def test_test_connection_exits_1_naming_what_is_missing(capsys, tenant, sim):
    app = sim.control.add_application(
        name="Portal", permissions="read:customers edit:customers read:items"
    )
    make_connection(
        sim, tenant, client_id=app["client_id"], secret=app["client_secret"], invoice_sync=False
    )

    code, out, err = manage(capsys, "halo_test_connection", "acme")

    assert code == 1
    missing = [line.split()[1] for line in out.splitlines() if line.split()[:1] == ["MISSING"]]
    assert missing == ["read:softwarelicensing", "edit:softwarelicensing", "read:contracts"]
    granted = [line.split()[1] for line in out.splitlines() if line.split()[:1] == ["ok"]]
    assert granted == ["read:customers", "edit:customers", "read:items"]
    assert "tick 'read:contracts'" in out
    assert "Missing permissions: read:softwarelicensing" in err
    assert HaloConnection.objects.get().test_status == HaloConnection.TestStatus.FAILED


def test_test_connection_exits_1_when_halo_refuses_the_credentials(capsys, tenant, sim):
    make_connection(sim, tenant, secret="not-the-secret")

    code, out, err = manage(capsys, "halo_test_connection", "acme")

    assert code == 1 and "Test failed" in err
    assert "not-the-secret" not in out + err


@pytest.mark.parametrize("command", ["halo_test_connection", "halo_refresh"])
def test_usage_errors_unknown_tenants_and_missing_connections_exit_2(capsys, tenant, command):
    assert manage(capsys, command)[0] == 2  # no tenant given
    code, _, err = manage(capsys, command, "nobody")
    assert code == 2 and "No tenant with the slug “nobody”" in err
    code, _, err = manage(capsys, command, "acme")
    assert code == 2 and "no active Halo connection" in err


# -- halo_refresh ---------------------------------------------------------------------------


def test_refresh_reads_every_client_and_item_and_prints_the_counts(capsys, tenant, sim):
    make_connection(sim, tenant)
    clients, items = len(sim.control.state("Client")), len(sim.control.state("Item"))

    code, out, err = manage(capsys, "halo_refresh", "acme")

    assert code == 0, err
    assert HaloClientRecord.objects.filter(tenant=tenant).count() == clients
    assert HaloItemRecord.objects.filter(tenant=tenant).count() == items
    assert f"Refreshed from Halo: {clients} clients and {items} items" in out
    assert out.split("\n")[0].split()[:5] == ["Clients", str(clients), "in", "Halo,", str(clients)]
    # The admin's lists show the outcome, as after the button.
    assert refresh.status(tenant).state == refresh.DONE

    code, out, _ = manage(capsys, "halo_refresh", "acme")  # again: nothing new
    assert code == 0 and f"({0} new, 0 changed)" in out


def test_refresh_exits_1_when_halo_refuses_and_notes_why(capsys, tenant, sim):
    app = sim.control.add_application(name="Portal", permissions="read:customers")
    make_connection(sim, tenant, client_id=app["client_id"], secret=app["client_secret"])

    code, _, err = manage(capsys, "halo_refresh", "acme")

    assert code == 1 and "Refresh from Halo failed" in err and "read:items" in err
    assert refresh.status(tenant).state == refresh.FAILED
    assert manage(capsys, "halo_refresh", "acme")[0] == 1  # the claim was released


def test_refresh_exits_1_while_another_refresh_is_under_way(capsys, tenant, sim, queued):
    make_connection(sim, tenant)
    assert refresh.queue(tenant)[0]  # the button's, not yet run by a worker

    code, _, err = manage(capsys, "halo_refresh", "acme")

    assert code == 1 and "already under way" in err
    assert not HaloClientRecord.objects.filter(tenant=tenant).exists()


def test_refresh_exits_2_when_billing_sync_is_off_on_the_connection(capsys, tenant, sim):
    make_connection(sim, tenant, billing_sync=False)
    code, _, err = manage(capsys, "halo_refresh", "acme")
    assert code == 2 and "Billing sync is switched off" in err
