"""Paying several invoices with one card charge (issue 16), from the page the account page
links to: one charge, split oldest first, each invoice's share recorded in Halo as its own
InvoicePayment exactly once (against the simulator over HTTP), refunds reversing the right
shares, and every bad input refused with a clear message and nothing charged."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from billing.accounts.links import make_token
from billing.models import Customer, Invoice
from billing.payments import outbox
from billing.payments.models import HaloOutbox, Payment, PaymentAllocation
from billing.payments.processors.test import DECLINE, SUCCESS
from integrations.invoice_sync.runner import run_sync
from tests import factories
from tests.payments.conftest import connect, open_invoice, pay_url, settings_for

pytestmark = pytest.mark.django_db(transaction=True)


# -- helpers --------------------------------------------------------------------------------


def several_url(customer):
    return reverse("payments:pay_several", args=[customer.tenant.slug, make_token(customer)])


def review(client, url, ids=None):
    """The review step: the whole balance (`ids` None) or the invoices ticked."""
    query = {"pay": "all"} if ids is None else {"pay": "chosen", "invoice": [str(i) for i in ids]}
    return client.get(url, query)


def pay_data(page, number=SUCCESS, **extra):
    """The review page's pay form as a browser posts it."""
    form = page.context["form"]
    data = {name: form[name].value() for name in ("attempt", "pay", "total", "form_token")}
    data["invoice"] = [str(i) for i in form["invoice"].value() or []]
    data["email"] = "payer@example.com"
    if "card_number" in form.fields:
        data |= {"card_name": "A Payer", "card_number": number, "card_expiry": "12/39"}
        data["card_cvc"] = "123"
    return data | extra


def pay(client, url, ids=None, **extra):
    page = review(client, url, ids)
    assert page.status_code == 200, page.content.decode()
    return client.post(url, pay_data(page, **extra))


def sync(tenant):
    run = run_sync(tenant, "initial", "cli")
    assert not run.error, run.error


def halo_payments(sim, thirdpartyid):
    return [
        p
        for p in sim.control.state("InvoicePayment")
        if p.get("thirdpartyid") == thirdpartyid and not p.get("_deleted")
    ]


def halo_invoice(sim, halo_id):
    return next(i for i in sim.control.state("Invoice") if i["id"] == halo_id)


def make_due():
    HaloOutbox.objects.filter(status="pending").update(next_attempt=timezone.now())


@pytest.fixture
def halo_tenant(personas, sim):
    tenant = personas.tenant_a
    connect(tenant, sim)
    sync(tenant)
    return tenant


def customer_with_open_invoices(tenant, count=3):
    """A synced customer with at least `count` unpaid invoices, and those invoices (oldest
    first)."""
    for customer in Customer.objects.filter(tenant=tenant):
        invoices = sorted(
            Invoice.objects.filter(customer=customer).unpaid(),
            key=lambda i: (i.invoice_date, i.pk),
        )
        if len(invoices) >= count:
            return customer, invoices
    raise AssertionError("the simulator's seed has no customer with enough open invoices")


@pytest.fixture
def account(tenant):
    """A customer of a tenant without Halo, with three open invoices of different ages."""
    customer = factories.customer(tenant)
    today = timezone.localdate()
    invoices = [
        open_invoice(tenant, amount, customer=customer, invoice_date=today - timedelta(days=age))
        for amount, age in (("50.00", 10), ("120.00", 40), ("30.00", 20))
    ]  # fmt: skip
    return customer, sorted(invoices, key=lambda i: i.invoice_date)


# -- one charge, three InvoicePayments in Halo ----------------------------------------------


@pytest.mark.parametrize("fault", [None, "drop_after", "500"])
def test_one_charge_for_three_invoices_lands_in_halo_as_three_payments_once(
    client, halo_tenant, sim, fault, settings
):
    settings.HALO_RETRY_BUDGET_SECONDS = 0.3
    customer, invoices = customer_with_open_invoices(halo_tenant)
    chosen = invoices[:3]
    dues = {i.pk: i.amount_due for i in chosen}
    if fault == "drop_after":  # Halo saves the second share but its answer is lost
        sim.control.add_fault("drop_after", path="InvoicePayment", method="POST", after=1)
    elif fault == "500":  # Halo is down for the first tries of the first share
        sim.control.add_fault("500", path="InvoicePayment", method="POST", times=50)

    response = pay(client, several_url(customer), [i.pk for i in reversed(chosen)])

    payment = Payment.objects.get()
    assert response.status_code == 302 and response["Location"] == payment.get_absolute_url()
    assert (payment.kind, payment.status, payment.amount) == (
        "several",
        "succeeded",
        sum(dues.values()),
    )
    if fault == "500":
        sim.control.clear_faults()
        make_due()
        outbox.deliver()
    # Allocated oldest first, whatever order they were ticked in.
    shares = list(payment.allocations.order_by("position"))
    assert [a.invoice_id for a in shares] == [i.pk for i in chosen]
    assert [a.amount for a in shares] == [dues[i.pk] for i in chosen]
    rows = HaloOutbox.objects.filter(payment=payment, kind="payment")
    assert sorted(r.allocation_id for r in rows) == sorted(a.pk for a in shares)
    assert {r.status for r in rows} == {"delivered"}
    recorded = halo_payments(sim, payment.reference)
    assert sorted((p["invoice_id"], Decimal(str(p["amount"]))) for p in recorded) == sorted(
        (i.halo_id, dues[i.pk]) for i in chosen
    )
    for invoice in chosen:
        assert halo_invoice(sim, invoice.halo_id)["paymentstatus"] == 2
        invoice.refresh_from_db()
        assert invoice.payment_status == "paid"
    payment.refresh_from_db()
    assert payment.recorded is not None
    assert all(a.recorded for a in payment.allocations.all())
    # Delivering again changes nothing.
    make_due()
    assert outbox.deliver() == 0
    assert len(halo_payments(sim, payment.reference)) == 3
    # The receipt lists each invoice with what it got; so does the email.
    receipt = client.get(payment.get_absolute_url()).content.decode()
    assert "Payment received" in receipt
    for invoice in chosen:
        assert f"Invoice {invoice.display_number()}" in receipt
    [email] = [m for m in mail.outbox if "Receipt" in m.subject]
    assert email.to == ["payer@example.com"] and "invoices" in email.subject
    for invoice in chosen:
        assert f"Invoice {invoice.display_number()}:" in email.body


def test_a_full_refund_reverses_every_share_in_halo(client, personas, halo_tenant, sim):
    customer, invoices = customer_with_open_invoices(halo_tenant)
    chosen = invoices[:3]
    dues = {i.pk: i.amount_due for i in chosen}
    pay(client, several_url(customer), [i.pk for i in chosen])
    payment = Payment.objects.get()
    assert len(halo_payments(sim, payment.reference)) == 3
    staff = personas.client(personas.owner_a)
    changelist = reverse("admin:payments_payment_changelist")
    selected = {"action": "refund", "_selected_action": [payment.pk]}

    # Staff see the allocations on the payment, then a confirmation with amount and effect.
    change = staff.get(reverse("admin:payments_payment_change", args=[payment.pk])).content
    for invoice in chosen:
        assert f">{invoice}<" in change.decode() or invoice.display_number() in change.decode()
    confirm = staff.post(changelist, selected).content.decode()
    total = sum(dues.values())
    assert "Refund payments in full?" in confirm and "Refund £" in confirm
    assert f"{total:,.2f}" in confirm and "every share is reversed" in confirm
    for invoice in chosen:
        assert f"Invoice {invoice.display_number()}:" in confirm
    payment.refresh_from_db()
    assert payment.status == "succeeded"  # nothing happens before the confirmation

    done = staff.post(changelist, selected | {"post": "yes"}, follow=True).content.decode()

    assert "1 payment(s) refunded" in done
    payment.refresh_from_db()
    assert (payment.status, payment.refunded_amount) == ("refunded", total)
    assert [a.refunded_amount for a in payment.allocations.all()] == [dues[i.pk] for i in chosen]
    refunds = HaloOutbox.objects.filter(payment=payment, kind="refund")
    assert refunds.count() == 3 and {r.status for r in refunds} == {"delivered"}
    assert halo_payments(sim, payment.reference) == []
    for invoice in chosen:
        record = halo_invoice(sim, invoice.halo_id)
        assert Decimal(str(record["amountdue"])) == dues[invoice.pk]
        invoice.refresh_from_db()
        assert (invoice.amount_due, invoice.payment_status) == (dues[invoice.pk], "unpaid")
    # Payable again, from the single pay pages too.
    assert 'type="submit"' in client.get(pay_url(chosen[0])).content.decode()
    assert "Payment refunded" in client.get(payment.get_absolute_url()).content.decode()


def test_a_partial_refund_reverses_the_newest_shares_first(client, halo_tenant, sim):
    customer, invoices = customer_with_open_invoices(halo_tenant)
    chosen = invoices[:3]
    pay(client, several_url(customer), [i.pk for i in chosen])
    payment = Payment.objects.get()
    oldest, middle, newest = payment.allocations.order_by("position")
    refund = newest.amount + Decimal("0.50")  # all of the newest and a little of the next

    assert payment.refund(refund, source="webhook", event_id="evt_r1") is True
    assert payment.refund(refund, source="webhook", event_id="evt_r1") is False  # repeated

    for allocation in (oldest, middle, newest):
        allocation.refresh_from_db()
    assert (oldest.refunded_amount, middle.refunded_amount) == (0, Decimal("0.50"))
    assert newest.refunded_amount == newest.amount
    in_halo = {
        p["invoice_id"]: Decimal(str(p["amount"])) for p in halo_payments(sim, payment.reference)
    }
    assert in_halo == {
        oldest.invoice.halo_id: oldest.amount,
        middle.invoice.halo_id: middle.amount - Decimal("0.50"),
    }  # the newest invoice's payment is gone, the middle one lowered, the oldest untouched
    newest.invoice.refresh_from_db()
    assert newest.invoice.amount_due == newest.amount
    assert halo_invoice(sim, oldest.invoice.halo_id)["paymentstatus"] == 2


# -- exactly one charge ------------------------------------------------------------------------


def test_a_double_submit_charges_once(client, account):
    customer, invoices = account
    url = several_url(customer)
    page = review(client, url, [i.pk for i in invoices])
    data = pay_data(page)

    first = client.post(url, data)
    again = client.post(url, data)

    payment = Payment.objects.get()
    assert first["Location"] == again["Location"] == payment.get_absolute_url()
    assert payment.amount == Decimal("200.00") and payment.allocations.count() == 3
    assert payment.events.filter(to_status="succeeded").count() == 1
    # Paid: the next visit lists nothing to pay, and the single pay pages agree.
    assert "You have no open invoices" in client.get(url).content.decode()
    assert "This invoice is paid in full" in client.get(pay_url(invoices[0])).content.decode()


def test_a_payment_in_progress_blocks_the_same_invoices_elsewhere(client, account):
    customer, invoices = account
    stuck = factories.payment(customer.tenant, invoice=None, kind="several", status="pending")
    stuck.allocations.create(invoice=invoices[0], position=0, amount=invoices[0].amount_due)
    url = several_url(customer)

    page = client.get(url).content.decode()
    assert "A payment for it is in progress" in page
    single = client.get(pay_url(invoices[0])).content.decode()
    assert "Payment in progress" in single
    refused = review(client, url, [invoices[0].pk])
    assert refused.status_code == 400
    assert "a payment for it is in progress" in refused.content.decode()
    # The others can still be paid, and the whole balance leaves the busy one out.
    assert pay(client, url).status_code == 302
    paid = Payment.objects.get(status="succeeded")
    assert sorted(a.invoice_id for a in paid.allocations.all()) == sorted(
        i.pk for i in invoices[1:]
    )


def test_a_declined_card_charges_nothing_and_offers_the_same_invoices_again(client, account):
    customer, invoices = account
    url = several_url(customer)
    response = pay(client, url, [invoices[0].pk, invoices[1].pk], number=DECLINE)

    payment = Payment.objects.get()
    assert payment.status == "failed"
    assert not PaymentAllocation.objects.filter(in_flight=True).exists()
    again = client.get(response["Location"])
    body = again.content.decode()
    assert again.status_code == 200 and "Your card was declined" in body
    assert again.context["form"]["invoice"].value() == [invoices[0].pk, invoices[1].pk]
    assert pay(client, url, [invoices[0].pk, invoices[1].pk]).status_code == 302
    assert Payment.objects.filter(status="succeeded").count() == 1


def test_amounts_changed_since_the_review_charge_nothing(client, account):
    customer, invoices = account
    url = several_url(customer)
    page = review(client, url)
    Invoice.objects.filter(pk=invoices[0].pk).update(amount_due=Decimal("10.00"))

    response = client.post(url, pay_data(page))

    assert response.status_code == 400 and not Payment.objects.exists()
    body = response.content.decode()
    assert "The amounts due have changed" in body and "£90.00" in body  # the new total


# -- partial allocation ------------------------------------------------------------------------


def test_paying_part_pays_the_oldest_first_and_leaves_the_rest_due(client, halo_tenant, sim):
    settings_for(halo_tenant, allow_partial=True)
    customer, invoices = customer_with_open_invoices(halo_tenant)
    first, second, third = invoices[:3]
    amount = first.amount_due + second.amount_due / 2
    amount = amount.quantize(Decimal("0.01"))

    response = pay(
        client, several_url(customer), [third.pk, first.pk, second.pk], amount=str(amount)
    )

    assert response.status_code == 302
    payment = Payment.objects.get()
    assert (payment.status, payment.amount) == ("succeeded", amount)
    shares = {a.invoice_id: a.amount for a in payment.allocations.all()}
    assert shares == {first.pk: first.amount_due, second.pk: amount - first.amount_due}
    second_left = second.amount_due - (amount - first.amount_due)
    record = halo_invoice(sim, second.halo_id)
    assert Decimal(str(record["amountdue"])) == second_left and record["paymentstatus"] in (1, -1)
    assert halo_invoice(sim, third.halo_id)["amountdue"] == float(third.amount_due)
    second.refresh_from_db()
    assert second.amount_due == second_left
    # The page now offers what is left: the rest of the second invoice and the third.
    listing = client.get(several_url(customer)).context["listing"]
    dues = {row["id"]: row["due"] for row in listing}
    assert first.pk not in dues and second.pk in dues and third.pk in dues
    receipt = client.get(payment.get_absolute_url()).content.decode()
    assert "still due" in receipt.lower()


def test_a_partial_amount_above_the_total_is_refused(client, tenant, account):
    settings_for(tenant, allow_partial=True)
    customer, _ = account
    response = pay(client, several_url(customer), amount="250.00")
    assert response.status_code == 400 and not Payment.objects.exists()
    assert "You cannot pay more than the amount due." in response.content.decode()


# -- refused input: clear errors, nothing charged, never a 500 ----------------------------------


def test_another_tenants_invoices_are_refused_and_nothing_is_charged(client, account):
    customer, invoices = account
    other = factories.tenant("bravo")
    theirs = open_invoice(other, "75.00")
    url = several_url(customer)
    page = review(client, url, [invoices[0].pk])
    data = pay_data(page) | {"invoice": [str(invoices[0].pk), str(theirs.pk)]}

    response = client.post(url, data)

    assert response.status_code == 400 and not Payment.objects.exists()
    body = response.content.decode()
    assert "not an open invoice on this account" in body and "Nothing was charged" in body
    assert f"Invoice {theirs.display_number()}" not in body
    assert review(client, url, [theirs.pk]).status_code == 400
    # Another tenant's account link under this tenant's code finds no one.
    their_customer = factories.customer(other)
    foreign = reverse(
        "payments:pay_several", args=[customer.tenant.slug, make_token(their_customer)]
    )
    assert client.get(foreign).status_code == 404


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"invoice": ["abc"]}, "could not be read"),
        ({"invoice": ["1e3"]}, "could not be read"),
        ({"invoice": ["99999999999999999999999"]}, "could not be read"),
        ({"invoice": ["\u0661\u0662"]}, "could not be read"),
        ({"pay": "chosen", "invoice": []}, "Choose at least one invoice to pay."),
        ({"pay": "everything"}, "Choose what to pay."),
        ({"form_token": "forged"}, "This payment form has expired"),
        ({"form_token": ""}, "This payment form has expired"),
        ({"total": "lots"}, "Enter a number."),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(client, account, change, message):
    customer, _ = account
    url = several_url(customer)
    page = review(client, url)

    response = client.post(url, pay_data(page) | change)

    assert response.status_code == 400 and not Payment.objects.exists()
    assert message in response.content.decode()


def test_closed_invoices_are_refused(client, account):
    customer, invoices = account
    url = several_url(customer)
    page = review(client, url, [invoices[0].pk, invoices[1].pk])
    Invoice.objects.filter(pk=invoices[1].pk).update(payment_status="paid", amount_due=0)

    response = client.post(url, pay_data(page))

    assert response.status_code == 400 and not Payment.objects.exists()
    assert (
        f"Invoice {invoices[1].display_number()} cannot be paid here" in response.content.decode()
    )
    voided = review(client, url, [invoices[1].pk])
    assert voided.status_code == 400


def test_a_form_posted_from_another_site_is_refused(client, account):
    customer, _ = account
    url = several_url(customer)
    page = review(client, url)
    response = client.post(url, pay_data(page), HTTP_ORIGIN="https://evil.example")
    assert response.status_code == 403 and not Payment.objects.exists()
    assert "sent from another website" in response.content.decode()
    same = client.post(url, pay_data(page), HTTP_ORIGIN="http://testserver")
    assert same.status_code == 302


def test_a_form_token_of_another_account_is_refused(client, tenant, account):
    customer, _ = account
    other = factories.customer(tenant)
    open_invoice(tenant, customer=other)
    theirs = pay_data(review(client, several_url(other)))
    url = several_url(customer)
    mine = pay_data(review(client, url))
    response = client.post(url, mine | {"form_token": theirs["form_token"]})
    assert response.status_code == 400 and "expired" in response.content.decode()
    assert not Payment.objects.exists()


@pytest.mark.parametrize("token", ["nonsense", "a" * 300, "%00"])
def test_bad_account_links_are_not_found(client, tenant, token):
    response = client.get(f"/pay/{tenant.slug}/-/account/{token}/pay")
    assert response.status_code == 404


def test_the_page_sets_no_cookie_and_may_be_framed_only_by_the_tenants_halo_portal(
    client, tenant, account
):
    from billing.accounts.models import AccountSettings

    options = AccountSettings.for_tenant(tenant)
    options.halo_portal_origins = "https://support.acme.example"
    options.save()
    customer, _ = account
    url = several_url(customer)
    for response in (client.get(url), review(client, url)):
        assert response.status_code == 200 and not response.cookies
        policy = response["Content-Security-Policy"]
        assert "frame-ancestors https://support.acme.example" in policy
        assert "script-src" not in policy and "X-Frame-Options" not in response
        assert response["Cache-Control"] == "no-store"
    assert not client.post(url, pay_data(review(client, url))).cookies


def test_staff_see_the_allocations_on_the_payment(personas, client):
    tenant = personas.tenant_a
    customer = factories.customer(tenant)
    invoices = [open_invoice(tenant, "40.00", customer=customer) for _ in range(2)]
    pay(client, several_url(customer), [i.pk for i in invoices])
    payment = Payment.objects.get()
    staff = personas.client(personas.owner_a)
    page = staff.get(reverse("admin:payments_payment_change", args=[payment.pk])).content.decode()
    assert "invoices paid (allocated oldest first" in page.lower()
    for invoice in invoices:
        assert str(invoice) in page
    other = personas.client(personas.owner_b)
    assert other.get(reverse("admin:payments_payment_change", args=[payment.pk])).status_code in (
        302,
        404,
    )


# -- over a real WSGI server ----------------------------------------------------------------------


def test_through_a_real_wsgi_server(validated_server, account):
    customer, invoices = account
    url = validated_server + several_url(customer)
    http = requests.Session()

    chooser = http.get(url)
    assert chooser.status_code == 200 and not chooser.cookies
    assert all(f'value="{i.pk}"' in chooser.text for i in invoices)
    bad = http.get(url, params={"pay": "chosen", "invoice": "x"})
    assert bad.status_code == 400 and "could not be read" in bad.text
    review_page = http.get(
        url, params={"pay": "chosen", "invoice": [invoices[0].pk, invoices[2].pk]}
    )
    assert review_page.status_code == 200
    fields = dict(
        re.findall(r'<input type="hidden" name="(\w+)"[^>]*value="([^"]*)"', review_page.text)
    )
    data = {
        "attempt": fields["attempt"],
        "pay": "chosen",
        "invoice": [str(invoices[0].pk), str(invoices[2].pk)],
        "total": fields["total"],
        "form_token": fields["form_token"],
        "card_number": SUCCESS,
        "card_expiry": "12/39",
        "card_cvc": "123",
        "email": "payer@example.com",
    }

    paid = http.post(url, data, allow_redirects=False, headers={"Origin": validated_server})

    assert paid.status_code == 302
    receipt = http.get(validated_server + paid.headers["Location"])
    assert receipt.status_code == 200 and "Payment received" in receipt.text
    payment = Payment.objects.get()
    assert payment.amount == invoices[0].amount_due + invoices[2].amount_due
    again = http.post(url, data, allow_redirects=False, headers={"Origin": validated_server})
    assert again.headers["Location"] == paid.headers["Location"] and Payment.objects.count() == 1
    forged = http.post(url, data | {"form_token": "x"}, headers={"Origin": validated_server})
    assert forged.status_code == 400


# -- saving the card for auto-pay from one payment for several ------------------------------


def test_paying_several_can_save_the_card_for_auto_pay(client, tenant, account):
    """As on a pay page: when auto-pay could use the card, the review offers the consent
    box; ticked, the card that paid is saved for the customer (not for one invoice)."""
    from billing.payments.models import SavedPaymentMethod

    customer, invoices = account
    url = several_url(customer)
    assert "save_method" not in review(client, url).context["form"].fields  # no auto-pay yet
    rule = factories.autopay_rule(tenant)
    Invoice.objects.filter(pk=invoices[0].pk).update(autopay_rule=rule)
    page = review(client, url)
    body = page.content.decode()
    assert "Save this card to pay future invoices automatically" in body
    consent = page.context["form"].consent
    assert f"charge this card for {customer.name}'s invoices dated from today" in consent

    client.post(url, pay_data(page, save_method="on"))

    payment = Payment.objects.get(kind=Payment.Kind.SEVERAL)
    assert payment.status == "succeeded" and payment.save_method
    card = SavedPaymentMethod.objects.get(customer=customer, active=True)
    assert (card.source_payment, card.last4) == (payment, "4242")
    assert card.consent_text == payment.consent_text and "dated from today" in card.consent_text


def test_paying_several_without_ticking_saves_no_card(client, tenant, account):
    from billing.payments.models import SavedPaymentMethod

    customer, invoices = account
    Invoice.objects.filter(pk=invoices[0].pk).update(autopay_rule=factories.autopay_rule(tenant))
    pay(client, several_url(customer))
    assert Payment.objects.get(kind=Payment.Kind.SEVERAL).status == "succeeded"
    assert not SavedPaymentMethod.objects.filter(customer=customer).exists()
