"""Issue 16's "done means", end to end in headless Chromium against the Halo simulator: a
customer opens the account link in an emailed reminder, sees all their invoices, pays two
of them in one checkout, and Halo holds exactly one payment on each; on a phone.

`PAY_SCREENSHOTS=/some/dir` saves each page on the way for a look.
"""

import re
from datetime import datetime, time, timedelta

import pytest
import requests

from billing.payments.models import HaloOutbox, Payment
from billing.reminders import dunning
from billing.reminders.models import ReminderSettings
from tests.browser import test_pay_several as several
from tests.browser.test_pay_several import customer_with_open_invoices, pay_two, shot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
sim, tenant = several.sim, several.tenant  # the same simulator and synced tenant


def test_from_a_reminder_to_two_invoices_paid_in_halo_once(browser, tenant, sim, mailoutbox):
    customer, invoices = customer_with_open_invoices(tenant)
    customer.billing_email = "ap@northwind.example"
    customer.save(update_fields=["billing_email"])
    ReminderSettings.objects.create(tenant=tenant, enabled=True)
    oldest = invoices[0]
    # The day after the oldest invoice's due date, at the tenant's send hour: step "1 day".
    send_at = datetime.combine(oldest.due_date + timedelta(days=1), time(12), tzinfo=tenant.tz)
    dunning.send_due_reminders(tenant, send_at)
    email = next(m for m in mailoutbox if m.to == ["ap@northwind.example"])
    account_link = re.search(r"https?://\S+/account/[^\s\"<>]+", email.body)[0]

    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.goto(account_link)
    assert page.get_by_role("heading", name=customer.name).is_visible()
    for invoice in invoices:  # every open invoice is listed, each with its Pay button
        number = invoice.display_number()
        assert page.get_by_role("link", name=f"Pay invoice {number}").count() == 1
    shot(page, "reminder-account")
    page.get_by_role("link", name="Pay the whole balance").click()
    page.wait_for_load_state()
    pay_two(page, invoices)
    page.get_by_role("button", name="Pay").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Payment received").is_visible()
    shot(page, "reminder-receipt")

    payment = Payment.objects.get()
    assert payment.allocations.count() == 2
    assert not HaloOutbox.objects.exclude(status=HaloOutbox.Status.DELIVERED).exists()
    recorded = requests.get(f"{sim.base_url}/_sim/state/InvoicePayment", timeout=10).json()
    mine = [p for p in recorded if p.get("thirdpartyid") == payment.reference]
    assert sorted(p["invoice_id"] for p in mine) == sorted(i.halo_id for i in invoices[:2])
    # Back on the account page: the two are paid, the third still open.
    page.goto(account_link)
    assert page.get_by_role("link", name=f"Pay invoice {invoices[2].display_number()}").count()
    for invoice in invoices[:2]:
        assert page.get_by_role("link", name=f"Pay invoice {invoice.display_number()}").count() == 0
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    context.close()
