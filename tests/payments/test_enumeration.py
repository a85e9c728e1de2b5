"""Walking pay links by sequential Halo id (pentest #12, finding 6): the lookup limit is one
count for every process, enumeration patterns alert the tenant's owners, and a tenant may
ask for the invoice's amount or billing email before a pay page reached by number alone."""

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from billing.payments import enumeration
from billing.payments.forms import parse_amount
from billing.payments.models import PayLinkAlert, PaymentSettings
from billing.payments.views import PayLinkThrottle
from portal.models import Membership
from tests import factories
from tests.payments.conftest import open_invoice, pay_url, settings_for
from tests.test_counters import child_environment


def link(tenant, ref):
    return reverse("payments:link", args=[tenant.slug, ref])


CHILD = """
import sys
import django
django.setup()
from django.test import RequestFactory
from billing.payments.views import PayLinkThrottle

class Throttle(PayLinkThrottle):
    timer = staticmethod(lambda: 6000.0)  # one fixed minute: no window ends mid-test

request = RequestFactory().get("/pay/acme/1001", REMOTE_ADDR="203.0.113.9")
print(sum(Throttle().allow_request(request, None) for _ in range(int(sys.argv[1]))))
"""


@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_share_one_lookup_count(tmp_path):
    """The pentest: 300 lookups on 2 workers got 118 answers at 60/min. Two processes
    trying 150 each now get 60 between them."""
    env = child_environment(tmp_path) | {"PAYMENTS_LINK_RATE": "60/min", "PAYMENTS_PROXIES": "0"}
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, "150"], env=env, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    answered = [int(child.communicate(timeout=120)[0]) for child in children]
    assert all(child.returncode == 0 for child in children)
    assert sum(answered) == 60


# -- alerts ---------------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch):
    """The alerts' clock, and a lookup limit that never rolls into a new window mid-test."""
    moment = Clock(datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
    monkeypatch.setattr(enumeration, "now", moment)
    monkeypatch.setattr(PayLinkThrottle, "timer", staticmethod(lambda: 6000.0))
    return moment


class Clock:
    def __init__(self, moment):
        self.moment = moment

    def __call__(self):
        return self.moment

    def advance(self, **delta):
        self.moment += timedelta(**delta)


@pytest.fixture
def owners(tenant):
    emails = ["owner1@acme.example", "owner2@acme.example"]
    for email in emails:
        user = User.objects.create_user(username=email, email=email, is_staff=True)
        Membership.objects.create(user=user, tenant=tenant, role=Membership.Role.OWNER)
    viewer = User.objects.create_user(username="v", email="viewer@acme.example", is_staff=True)
    Membership.objects.create(user=viewer, tenant=tenant, role=Membership.Role.VIEWER)
    return emails


@pytest.fixture
def thresholds(settings):
    settings.PAYMENTS_ALERT_WINDOW = 600
    settings.PAYMENTS_ALERT_ADDRESS_MISSES = 5
    settings.PAYMENTS_ALERT_TENANT_MISSES = 12
    settings.PAYMENTS_ALERT_QUIET = 3600


def walk(client, tenant, numbers, address="203.0.113.9"):
    return [client.get(link(tenant, number), REMOTE_ADDR=address).status_code for number in numbers]


def test_misses_from_one_address_raise_one_alert_and_mail_each_owner_once(
    client, tenant, owners, thresholds, clock, mailoutbox, django_capture_on_commit_callbacks
):
    open_invoice(tenant, halo_id=1000)
    with django_capture_on_commit_callbacks(execute=True):
        assert set(walk(client, tenant, range(1001, 1005))) == {404}  # 4 misses: nothing
        assert not PayLinkAlert.objects.exists() and not mailoutbox
        walk(client, tenant, [1005])
    with django_capture_on_commit_callbacks(execute=True):
        clock.advance(minutes=1)
        walk(client, tenant, range(1006, 1011))  # 10 misses from this address

    alert = PayLinkAlert.objects.get()
    assert alert.tenant == tenant and alert.is_open
    assert alert.addresses == {"203.0.113.9": 10}
    assert alert.reason == "5 pay-link misses from 203.0.113.9 within 10 minutes"
    assert alert.last_seen == clock.moment
    assert sorted(m.to for m in mailoutbox) == [[owners[0]], [owners[1]]]  # not the viewer
    body = mailoutbox[0].body
    assert "someone may be guessing invoice numbers" in mailoutbox[0].subject
    assert "203.0.113.9: 10" not in body  # mailed when it opened, at 5
    assert "203.0.113.9: 5" in body and "Ask before showing a pay page" in body
    assert alert.emailed is not None and alert.emailed_to == 2


def test_misses_spread_over_many_addresses_raise_the_tenant_alert(
    client, tenant, owners, thresholds, clock, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(12):  # 12 addresses, 1 miss each: no address reaches 5
            walk(client, tenant, [2000 + n], address=f"198.51.100.{n}")
    alert = PayLinkAlert.objects.get()
    assert alert.reason == "12 pay-link misses across the tenant within 10 minutes"
    assert alert.tenant_misses == 12 and alert.addresses == {}
    assert len(mailoutbox) == 2


def test_an_incident_mails_once_however_long_it_goes_on_then_a_new_one_mails_again(
    client, tenant, owners, thresholds, clock, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(30):  # 30 addresses, 5 misses each: 30 address alerts, 12 tenant ones
            walk(client, tenant, range(5), address=f"198.51.100.{n}")
            clock.advance(seconds=20)  # 10 minutes in all: one window
    alert = PayLinkAlert.objects.get()
    assert len(alert.addresses) == PayLinkAlert.MAX_ADDRESSES
    assert alert.tenant_misses == 144  # 150 misses: the last rise at a multiple of 12
    assert len(mailoutbox) == 2

    clock.advance(minutes=59)  # still within an hour of the last rise: the same incident
    with django_capture_on_commit_callbacks(execute=True):
        walk(client, tenant, range(5), address="192.0.2.1")
    assert PayLinkAlert.objects.count() == 1 and len(mailoutbox) == 2

    clock.advance(minutes=61)  # an hour's quiet ended it; misses now open a new one
    with django_capture_on_commit_callbacks(execute=True):
        walk(client, tenant, range(5), address="192.0.2.1")
    ended, new = PayLinkAlert.objects.order_by("started")
    assert not ended.is_open and new.is_open and new.addresses == {"192.0.2.1": 5}
    assert len(mailoutbox) == 4


def test_a_repeated_mail_task_sends_nothing_more(tenant, owners, mailoutbox):
    alert = factories.pay_link_alert(tenant)
    assert enumeration.email_owners(alert.pk) == 2
    assert enumeration.email_owners(alert.pk) == 0
    assert len(mailoutbox) == 2


def test_an_unknown_tenant_code_raises_nothing(client, thresholds, clock, db):
    assert set(walk(client, type("T", (), {"slug": "nobody"}), range(20))) == {404}
    assert not PayLinkAlert.objects.exists()


def test_staff_see_the_incident_on_the_admin_home_and_in_the_log(personas, thresholds):
    factories.pay_link_alert(personas.tenant_a)
    home = personas.client(personas.viewer_a).get(reverse("admin:index")).content.decode()
    assert "Someone may be guessing invoice numbers" in home
    assert reverse("admin:payments_paylinkalert_changelist") in home
    log = personas.client(personas.viewer_a).get(reverse("admin:payments_paylinkalert_changelist"))
    assert "203.0.113.9 (20)" in log.content.decode()
    other = personas.client(personas.owner_b)
    assert "Someone may be guessing" not in other.get(reverse("admin:index")).content.decode()
    assert (
        not other.get(reverse("admin:payments_paylinkalert_changelist")).context["cl"].result_list
    )


# -- the pay-link question ------------------------------------------------------------------


def test_links_open_the_pay_page_at_once_by_default(client, tenant):
    """Halo's $INVOICEID links keep working as they are unless the tenant asks for more."""
    invoice = open_invoice(tenant)
    assert PaymentSettings.for_tenant(tenant).link_check == "off"
    assert client.get(link(tenant, invoice.halo_id))["Location"] == pay_url(invoice)


def ask(client, tenant, ref, answer, **extra):
    return client.post(
        reverse("payments:check", args=[tenant.slug]), {"ref": ref, "answer": answer}, **extra
    )


def test_the_total_is_asked_before_a_pay_page_reached_by_number(client, tenant, clock):
    settings_for(tenant, link_check="amount")
    invoice = open_invoice(tenant, amount="1234.50")
    question = client.get(link(tenant, invoice.halo_id))
    body = question.content.decode()
    assert question.status_code == 200 and "Invoice total" in body
    assert pay_url(invoice) not in body and "1,234.50" not in body and "Customer" not in body

    wrong = ask(client, tenant, str(invoice.halo_id), "1234.00")
    assert wrong.status_code == 400 and pay_url(invoice) not in wrong.content.decode()
    assert "does not match the invoice" in wrong.content.decode()
    assert ask(client, tenant, str(invoice.halo_id), "not a number").status_code == 400

    right = ask(client, tenant, str(invoice.halo_id), "£1,234.50")
    assert right.status_code == 302 and right["Location"] == pay_url(invoice)
    # Remembered for this browser session; another browser is asked again.
    assert client.get(link(tenant, invoice.halo_id))["Location"] == pay_url(invoice)
    assert Client().get(link(tenant, invoice.halo_id)).status_code == 200


def test_the_billing_email_is_asked_when_the_tenant_chooses_it(client, tenant, clock):
    settings_for(tenant, link_check="email")
    invoice = open_invoice(tenant)
    email = invoice.customer.billing_email
    assert "Billing email address" in client.get(link(tenant, invoice.halo_id)).content.decode()
    assert ask(client, tenant, str(invoice.halo_id), "someone@else.example").status_code == 400
    right = ask(client, tenant, str(invoice.halo_id), f"  {email.upper()} ")
    assert right["Location"] == pay_url(invoice)
    # A customer without a billing email is asked for the total instead.
    no_email = open_invoice(tenant, customer=factories.customer(tenant, billing_email=""))
    assert "Invoice total" in client.get(link(tenant, no_email.halo_id)).content.decode()
    assert ask(client, tenant, str(no_email.halo_id), "120.00")["Location"] == pay_url(no_email)


def same_page(response, ref):
    """The page without what differs on every render (CSRF token, nonce) and the number."""
    text = re.sub(r'(value|nonce)="[^"]+"', "", response.content.decode())
    return text.replace(str(ref), "N")


def test_an_unknown_number_is_asked_the_same_question_and_every_answer_is_a_miss(
    client, tenant, thresholds, clock
):
    settings_for(tenant, link_check="amount")
    known = client.get(link(tenant, open_invoice(tenant, halo_id=4141).halo_id))
    unknown = client.get(link(tenant, 4242))
    assert unknown.status_code == known.status_code == 200
    assert same_page(unknown, "4242") == same_page(known, "4141")
    for _ in range(4):
        assert ask(client, tenant, "4242", "120.00").status_code == 400
    assert PayLinkAlert.objects.get().addresses == {"127.0.0.1": 5}  # 1 lookup + 4 answers


def test_wrong_answers_count_toward_the_lookup_limit(client, tenant, settings, clock):
    settings.PAYMENTS_LINK_RATE = "3/min"
    settings_for(tenant, link_check="amount")
    invoice = open_invoice(tenant)
    assert client.get(link(tenant, invoice.halo_id)).status_code == 200
    assert ask(client, tenant, str(invoice.halo_id), "1.00").status_code == 400
    assert ask(client, tenant, str(invoice.halo_id), "2.00").status_code == 400
    refused = ask(client, tenant, str(invoice.halo_id), "120.00")
    assert refused.status_code == 429 and "Too many attempts" in refused.content.decode()
    assert client.get(link(tenant, invoice.halo_id)).status_code == 429


def test_answers_for_one_invoice_are_limited_whichever_addresses_send_them(
    client, tenant, settings, clock
):
    settings.PAYMENTS_LINK_CHECK_RATE = "3/hour"
    settings_for(tenant, link_check="amount")
    invoice = open_invoice(tenant)
    for n in range(3):
        ask(client, tenant, str(invoice.halo_id), "1.00", REMOTE_ADDR=f"198.51.100.{n}")
    refused = ask(client, tenant, str(invoice.halo_id), "120.00", REMOTE_ADDR="192.0.2.7")
    assert refused.status_code == 429 and "asked for too many times" in refused.content.decode()
    other = open_invoice(tenant)
    assert ask(client, tenant, str(other.halo_id), "120.00").status_code == 302


def test_the_pay_pages_secret_address_is_never_asked(client, tenant):
    settings_for(tenant, link_check="email")
    invoice = open_invoice(tenant)
    page = client.get(pay_url(invoice))  # Halo's pay button and the PDF's link carry it
    assert page.status_code == 200 and "Billing email address" not in page.content.decode()


def test_the_answer_form_is_csrf_protected(browser_client, tenant, clock):
    settings_for(tenant, link_check="amount")
    invoice = open_invoice(tenant)
    assert ask(browser_client, tenant, str(invoice.halo_id), "120.00").status_code == 403
    question = browser_client.get(link(tenant, invoice.halo_id))
    token = str(question.context["csrf_token"])
    right = ask(browser_client, tenant, str(invoice.halo_id), "120.00", HTTP_X_CSRFTOKEN=token)
    assert right.status_code == 302


@pytest.mark.parametrize(
    ("typed", "amount"),
    [
        ("120", "120.00"),
        ("£1,234.50", "1234.50"),
        ("1.234,50 €", "1234.50"),
        ("1234,5", "1234.50"),
        ("1,234", "1234.00"),
        ("$ 12.3", "12.30"),
        ("abc", None),
        ("", None),
    ],
)
def test_totals_are_read_as_customers_type_them(typed, amount):
    assert parse_amount(typed) == (Decimal(amount) if amount else None)
