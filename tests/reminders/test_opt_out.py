"""The opt-out link in every reminder, over HTTP through a real WSGI server: no login; a GET
only asks, a POST (the page's button or a mail provider's one-click) decides; another
tenant's code or a forged token finds nothing."""

import pytest
import requests

from billing.reminders import dunning
from billing.reminders.links import make_token, opt_out_url
from billing.reminders.models import Reminder, ReminderOptOut
from tests import factories
from tests.reminders.conftest import BASE_URL, at, open_invoice


@pytest.fixture
def served(validated_server, settings):
    """Links made for the test server (the emails' base URL is the portal's)."""
    settings.PORTAL_BASE_URL = validated_server
    return validated_server


def test_get_asks_and_post_stops_reminders(tenant, served):
    invoice = open_invoice(tenant)
    url = opt_out_url(invoice.customer)
    assert url.startswith(served + "/reminders/acme/opt-out/")

    page = requests.get(url, timeout=10)
    assert page.status_code == 200
    assert "Stop payment reminders?" in page.text and invoice.customer.name in page.text
    assert invoice.customer.billing_email not in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert not ReminderOptOut.objects.exists()  # mail scanners open links: GET changes nothing

    stopped = requests.post(url, data={"do": "stop"}, timeout=10, allow_redirects=False)
    assert stopped.status_code == 302
    opt_out = ReminderOptOut.objects.get(customer=invoice.customer)
    assert opt_out.source == ReminderOptOut.Source.LINK and opt_out.tenant == tenant
    again = requests.get(url, timeout=10)
    assert "Payment reminders are off" in again.text

    assert dunning.send_due_reminders(tenant, at(1)) == []
    assert not Reminder.objects.exists()

    requests.post(url, data={"do": "resume"}, timeout=10, allow_redirects=False)
    assert not ReminderOptOut.objects.exists()
    assert len(dunning.send_due_reminders(tenant, at(1))) == 1


def test_one_click_unsubscribe(tenant, served):
    """RFC 8058: the mail provider POSTs `List-Unsubscribe=One-Click`, without any cookie
    or CSRF token, to the List-Unsubscribe URL."""
    customer = factories.customer(tenant)
    response = requests.post(
        opt_out_url(customer),
        data={"List-Unsubscribe": "One-Click"},
        timeout=10,
        allow_redirects=False,
    )
    assert response.status_code == 302
    assert ReminderOptOut.objects.filter(customer=customer).exists()
    # Twice is fine (the provider may retry).
    again = requests.post(opt_out_url(customer), timeout=10, allow_redirects=False)
    assert again.status_code == 302
    assert ReminderOptOut.objects.filter(customer=customer).count() == 1


def test_forged_or_other_tenants_tokens_find_nothing(tenant, served):
    other = factories.tenant("globex")
    theirs = factories.customer(other)
    token = make_token(theirs)
    for path in (
        f"/reminders/acme/opt-out/{token}",  # their customer under our code
        f"/reminders/acme/opt-out/{token[:-2]}xx",  # tampered
        "/reminders/acme/opt-out/not-a-token",
        f"/reminders/nope/opt-out/{token}",
    ):
        for method in ("get", "post"):
            response = getattr(requests, method)(served + path, timeout=10)
            assert response.status_code == 404, (method, path)
            assert theirs.name not in response.text
    assert not ReminderOptOut.objects.exists()


def test_links_in_emails_use_the_portals_address(tenant, settings):
    settings.PORTAL_BASE_URL = BASE_URL
    customer = factories.customer(tenant)
    assert opt_out_url(customer).startswith(f"{BASE_URL}/reminders/acme/opt-out/")
