"""The account page: every invoice with its PDF, the statement (balance, ageing, payments,
refunds, credit notes), reached by the signed link only; bad links get a clear 404."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse

from billing.accounts import links
from billing.accounts.statement import BUCKETS, Statement, bucket_of
from billing.invoicing.pdfs import PdfUnavailable
from billing.models import Invoice
from billing.payments.models import Payment, PayPage
from tests import factories
from tests.accounts.conftest import account_url, invoice, paid

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer(personas):
    return factories.customer(personas.tenant_a, name="Northwind Traders")


def text(response):
    return re.sub(r"\s+", " ", response.content.decode())


@pytest.mark.parametrize(
    ("days", "bucket"),
    [(-10, 0), (0, 0), (1, 1), (30, 1), (31, 2), (60, 2), (61, 3), (90, 3), (91, 4), (400, 4)],
)
def test_ageing_buckets_cover_every_day(days, bucket):
    assert BUCKETS[bucket_of(days)][0] == BUCKETS[bucket][0]


def test_statement_ages_what_is_due_and_counts_payments_not_yet_in_halo(personas, customer, today):
    tenant = personas.tenant_a
    current = invoice(tenant, customer, days_overdue=-5, amount="10.00")
    invoice(tenant, customer, days_overdue=12, amount="20.00")
    invoice(tenant, customer, days_overdue=45, amount="40.00")
    invoice(tenant, customer, days_overdue=75, amount="80.00")
    invoice(tenant, customer, days_overdue=200, amount="160.00")
    paid(tenant, customer)
    invoice(tenant, customer, days_overdue=300, amount="999.00", voided=True)
    # Paid online, Halo not told yet: the payer owes nothing more on it.
    factories.payment(tenant, invoice=current, status="succeeded", amount=Decimal("4.00"))

    statement = Statement(customer, today)

    [totals] = statement.totals
    assert [b["amount"] for b in totals["buckets"]] == [
        "£6.00",
        "£20.00",
        "£40.00",
        "£80.00",
        "£160.00",
    ]
    assert totals["balance"] == "£306.00" and totals["overdue"] == "£300.00"
    assert len(statement.invoices) == 7 and len(statement.open) == 5
    assert {row.kind for row in statement.invoices} == {"open", "overdue", "paid", "voided"}


def test_page_lists_every_invoice_with_its_pdf_and_pay_link(personas, customer, client):
    tenant = personas.tenant_a
    due = invoice(tenant, customer, days_overdue=3, amount="120.00")
    done = paid(tenant, customer)
    voided = invoice(tenant, customer, voided=True)
    draft = factories.invoice(tenant, customer=customer, source="portal", posted=False)
    gone = invoice(tenant, customer, deleted_in_halo=True)

    response = client.get(account_url(customer))

    assert response.status_code == 200
    body = text(response)
    assert "Northwind Traders" in body and "£120.00" in body
    for shown in (due, done, voided):
        page = PayPage.objects.get(invoice=shown)
        assert reverse("payments:pdf", args=[tenant.slug, page.token]) in body
        assert f">{shown.display_number()}<" in body
    assert "Overdue" in body and "Paid" in body and "Voided" in body
    for hidden in (draft, gone):
        assert f">{hidden.display_number()}<" not in body
    assert body.count(">Pay<span") == 1  # only the open invoice offers to pay
    assert response["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers  # nothing depends on cookies


def test_the_pdf_link_serves_the_invoice_pdf(personas, customer, client, monkeypatch):
    """The account page reuses the pay page's PDF route and resolver."""
    due = invoice(personas.tenant_a, customer, days_overdue=3)
    client.get(account_url(customer))
    pdf_url = reverse("payments:pdf", args=[personas.tenant_a.slug, due.pay_page.token])

    response = client.get(pdf_url)

    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")

    def unavailable(*args, **kwargs):
        raise PdfUnavailable("no source")

    monkeypatch.setattr("billing.payments.views.resolve_pdf", unavailable)
    assert client.get(pdf_url).status_code == 503


def test_payments_refunds_and_credit_notes_are_on_the_statement(personas, customer, client):
    tenant = personas.tenant_a
    first = paid(tenant, customer, amount="50.00")
    factories.payment(
        tenant, invoice=first, status="succeeded", amount=Decimal("50.00"),
        card_brand="Visa", card_last4="4242",
    )  # fmt: skip
    second = paid(tenant, customer, amount="30.00")
    factories.payment(
        tenant, invoice=second, status="refunded", amount=Decimal("30.00"),
        refunded_amount=Decimal("30.00"),
    )  # fmt: skip
    factories.payment(tenant, invoice=second, status="failed", amount=Decimal("30.00"))
    organisation = factories.organisation(tenant)
    credited = factories.portal_invoice(tenant, organisation=organisation)
    Invoice.objects.filter(pk=credited.invoice_id).update(customer=customer)
    note = credited.credit()
    Invoice.objects.filter(pk=note.invoice_id).update(customer=customer)

    body = text(client.get(account_url(customer)))

    assert "Visa •••• 4242" in body and "£50.00" in body
    assert body.count("Receipt<span") == 2  # the failed attempt is no payment received
    assert "Refunded" in body and "£30.00" in body
    assert "Credit note" in body and f"Credits invoice {credited.number}" in body
    assert f"Cancelled by credit note {note.number}" in body


@pytest.mark.parametrize(
    "url", ["/account/alpha/x", "/account/alpha/" + "A" * 3000, "/account/alpha/%E2%98%83:1:2"]
)
def test_garbage_tokens_get_the_clear_404(personas, client, url):
    response = client.get(url)
    assert response.status_code == 404
    assert "This link does not work" in response.content.decode()
    assert "Email me a link" in response.content.decode()


def test_tampered_expired_and_foreign_links_are_refused(personas, customer, client, monkeypatch):
    tenant_b = personas.tenant_b
    token = links.make_token(customer)
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert client.get(f"/account/{personas.tenant_a.slug}/{tampered}").status_code == 404
    # A's customer under B's code, and B's customer under A's code.
    assert client.get(f"/account/{tenant_b.slug}/{token}").status_code == 404
    other = factories.customer(tenant_b, halo_id=customer.halo_id)
    response = client.get(f"/account/{personas.tenant_a.slug}/{links.make_token(other)}")
    assert response.status_code == 404
    assert "Northwind" not in response.content.decode()
    # Unknown tenant code: no form (nowhere to send it).
    response = client.get(f"/account/nobody/{token}")
    assert response.status_code == 404 and "Email me a link" not in response.content.decode()
    # Signed 31 days ago: expired, and the page says so.
    old = signing.b62_encode(int(signing.time.time()) - 31 * 86400)
    monkeypatch.setattr(signing.TimestampSigner, "timestamp", lambda self: old)
    expired = links.make_token(customer)
    monkeypatch.undo()
    response = client.get(f"/account/{personas.tenant_a.slug}/{expired}")
    assert response.status_code == 404
    assert "This link has expired" in response.content.decode()
    assert client.get(account_url(customer)).status_code == 200


def test_a_customer_sees_only_its_own_invoices(personas, customer, client):
    neighbour = factories.customer(personas.tenant_a, name="Contoso")
    invoice(personas.tenant_a, customer, amount="11.11")
    theirs = invoice(personas.tenant_a, neighbour, amount="22.22")
    foreign = invoice(personas.tenant_b, factories.customer(personas.tenant_b), amount="33.33")

    body = text(client.get(account_url(customer)))

    assert "£11.11" in body
    assert "£22.22" not in body and "£33.33" not in body
    for other in (theirs, foreign):
        assert f">{other.display_number()}<" not in body


def test_queries_do_not_grow_with_invoices(
    personas, customer, client, django_assert_max_num_queries
):
    tenant = personas.tenant_a
    for n in range(3):
        invoice(tenant, customer, days_overdue=n * 20)
        paid(tenant, customer)
    client.get(account_url(customer))  # pay pages made once
    # The customer (with tenant and settings), invoices (with pay pages and credit notes),
    # which open ones have payments under way, payments received, saved cards, and how many
    # older invoices are not listed.
    with django_assert_max_num_queries(6):
        client.get(account_url(customer))
    for _ in range(40):
        paid(tenant, customer)
    client.get(account_url(customer))
    with django_assert_max_num_queries(6):
        client.get(account_url(customer))
    with django_assert_max_num_queries(5):
        client.get(account_url(customer) + "?invoices=all")


def test_through_a_real_wsgi_server(validated_server, personas, customer):
    import requests

    invoice(personas.tenant_a, customer, days_overdue=3, amount="64.00")
    response = requests.get(validated_server + account_url(customer), timeout=10)
    assert response.status_code == 200 and "£64.00" in response.text
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    bad = requests.get(f"{validated_server}/account/alpha/nonsense", timeout=10)
    assert bad.status_code == 404 and "This link does not work" in bad.text
    assert requests.get(f"{validated_server}/account/alpha/", timeout=10).status_code == 200


def test_pay_pages_and_receipts_link_to_the_account(personas, customer):
    due = invoice(personas.tenant_a, customer, days_overdue=3)
    receipt = factories.payment(personas.tenant_a, invoice=due, status="succeeded")
    client = Client()
    for url in (PayPage.for_invoice(due).get_absolute_url(), receipt.get_absolute_url()):
        body = client.get(url).content.decode()
        found = re.search(r'href="(/account/alpha/[^"]+)">See all your invoices', body)
        assert found, url
        assert client.get(found[1]).status_code == 200
    # An unknown invoice's pay link offers the "email me a link" page.
    assert "/account/alpha/" in client.get("/pay/alpha/999999").content.decode()


def test_unlisted_payment_receipt_has_no_account_link(personas):
    payment = Payment.objects.create(
        tenant=personas.tenant_a, invoice=None, invoice_ref="X-1", idempotency_key="k-unlisted",
        processor="test", amount=Decimal("5.00"), currency="GBP", status="succeeded",
        succeeded_at=None,
    )  # fmt: skip
    response = Client().get(payment.get_absolute_url())
    assert response.status_code == 200
    assert "See all your invoices" not in response.content.decode()


def test_staff_see_the_statement_in_each_currency(personas, customer, today):
    invoice(personas.tenant_a, customer, days_overdue=5, amount="10.00", currency="EUR")
    invoice(personas.tenant_a, customer, days_overdue=5, amount="20.00")
    totals = Statement(customer, today).totals
    assert [(t["currency"], t["balance"]) for t in totals] == [("EUR", "€10.00"), ("GBP", "£20.00")]


def test_old_payments_fall_off_the_twelve_months(personas, customer, today):
    from django.utils import timezone

    done = paid(personas.tenant_a, customer)
    old = factories.payment(personas.tenant_a, invoice=done, status="succeeded")
    Payment.objects.filter(pk=old.pk).update(succeeded_at=timezone.now() - timedelta(days=400))
    assert Statement(customer, today).payments == []


def test_payments_for_several_invoices_count_on_each(personas, customer, today):
    """A checkout for several invoices (payments:pay_several): its shares count like a
    payment of one invoice; while it is in flight, the invoices show it in progress."""
    from billing.payments.models import PaymentAllocation

    tenant = personas.tenant_a
    first = invoice(tenant, customer, days_overdue=10, amount="30.00")
    second = invoice(tenant, customer, days_overdue=5, amount="20.00")
    several = Payment.objects.create(
        tenant=tenant, invoice=None, kind=Payment.Kind.SEVERAL, status="created",
        invoice_ref=f"{first.display_number()}, {second.display_number()}",
        idempotency_key="several-1", processor="test", amount=Decimal("50.00"), currency="GBP",
    )  # fmt: skip
    for position, target in enumerate((first, second)):
        PaymentAllocation.objects.create(
            payment=several, invoice=target, position=position, amount=target.amount_due
        )
    statement = Statement(customer, today)
    assert [row.in_flight for row in statement.open] == [True, True]
    assert statement.pay_several_url(links.make_token(customer)) == ""  # nothing left to pick

    Payment.objects.filter(pk=several.pk).update(status="succeeded", succeeded_at=several.created)
    PaymentAllocation.objects.filter(payment=several).update(in_flight=False)
    statement = Statement(customer, today)
    assert statement.open == []  # paid, Halo not told yet: nothing more to pay
    [received] = statement.payments
    assert received["amount"] == "£50.00"


def test_the_whole_balance_button_opens_the_several_invoices_checkout(personas, customer, client):
    invoice(personas.tenant_a, customer, days_overdue=10, amount="30.00")
    body = client.get(account_url(customer)).content.decode()
    assert "Pay the whole balance" not in body  # one invoice: its own Pay button
    invoice(personas.tenant_a, customer, days_overdue=5, amount="20.00")
    url = account_url(customer)  # links are signed with the time: use this one throughout
    body = client.get(url).content.decode()
    several = reverse("payments:pay_several", args=[personas.tenant_a.slug, url.rsplit("/")[-1]])
    assert f'href="{several}"' in body and "Pay the whole balance" in body
    assert client.get(several).status_code == 200


def test_old_settled_invoices_are_listed_on_request(personas, customer, client, today):
    tenant = personas.tenant_a
    old_paid = paid(tenant, customer, invoice_date=today - timedelta(days=700))
    old_open = invoice(tenant, customer, days_overdue=600, amount="12.34")
    recent = paid(tenant, customer)
    url = account_url(customer)

    body = text(client.get(url))

    assert f">{old_open.display_number()}<" in body and "£12.34" in body  # open: always
    assert f">{recent.display_number()}<" in body
    assert f">{old_paid.display_number()}<" not in body
    assert 'Show older invoices too</a> <span class="muted">(1 more)' in body
    everything = text(client.get(url + "?invoices=all"))
    assert f">{old_paid.display_number()}<" in everything
    assert "Show only the last 12 months" in everything
    assert (
        Statement(customer, today).totals == Statement(customer, today, every_invoice=True).totals
    )


def test_the_receipt_email_links_to_the_account(personas, customer, mailoutbox):
    from billing.payments.emails import send_receipt

    due = invoice(personas.tenant_a, customer, days_overdue=3)
    receipt = factories.payment(personas.tenant_a, invoice=due, status="succeeded")
    assert send_receipt(receipt)
    [mail] = mailoutbox
    link = re.search(
        r"All your invoices and your statement: https://portal\.example\.com(\S+)", mail.body
    )
    assert Client().get(link[1]).status_code == 200
    assert link[1] in mail.alternatives[0][0]
