"""What a reminder says and links to: plain text and HTML, the tenant's branding, absolute
links to the pay page, the account page and the opt-out, and nothing of anyone else."""

import re
from datetime import timedelta

from django.core import mail

from billing.accounts.links import customer_for_token as account_customer
from billing.payments.models import PayPage
from billing.reminders import dunning
from billing.reminders.links import customer_for_token as opt_out_customer
from billing.reminders.models import ReminderSettings
from tests import factories
from tests.reminders.conftest import BASE_URL, DUE, at, open_invoice


def links(text):
    return re.findall(r"https?://[^\s\"'<>]+", text)


def html_of(message):
    (html, mimetype) = message.alternatives[0]
    assert mimetype == "text/html"
    return html


def test_reminder_has_text_html_and_absolute_links(tenant, mailoutbox):
    invoice = open_invoice(tenant, reference="PO-7781")
    dunning.send_due_reminders(tenant, at(7))
    (message,) = mailoutbox
    html = html_of(message)

    pay = PayPage.objects.get(invoice=invoice).public_url()
    assert pay.startswith(BASE_URL + "/pay/acme/invoice/")
    for body in (message.body, html):
        assert pay in body
        assert "£120.00" in body and "PO-7781" in body
        assert "7 days overdue" in body
        assert all(link.startswith(BASE_URL) for link in links(body) if "example.com" in link)
    account = next(link for link in links(message.body) if "/account/" in link)
    assert account_customer("acme", account.rsplit("/", 1)[1]) == invoice.customer
    opt_out = next(link for link in links(message.body) if "/opt-out/" in link)
    assert opt_out_customer("acme", opt_out.rsplit("/", 1)[1]) == invoice.customer
    assert message.extra_headers["List-Unsubscribe"] == f"<{opt_out}>"
    assert message.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Dear Dana Lee" in message.body


def test_branding_sender_and_reply_to(tenant, mailoutbox):
    open_invoice(tenant)
    dunning.send_due_reminders(tenant, at(-3))
    (message,) = mailoutbox
    assert message.from_email == "Acme IT <portal@example.com>"
    assert message.reply_to == ["billing@acme.example"]
    assert "#7A1FA2" in html_of(message)  # the tenant's accent colour
    assert "3 days" in message.body and "due on" in message.body

    ReminderSettings.objects.filter(tenant=tenant).update(
        from_name="Acme Accounts", reply_to="ar@acme.example"
    )
    open_invoice(tenant, due=DUE + timedelta(days=1))
    dunning.send_due_reminders(tenant, at(-2))
    assert mailoutbox[1].from_email == "Acme Accounts <portal@example.com>"
    assert mailoutbox[1].reply_to == ["ar@acme.example"]


def test_logo_is_an_absolute_link(tenant, mailoutbox, settings, tmp_path):
    from django.core.files.base import ContentFile

    settings.MEDIA_ROOT = tmp_path
    tenant.logo.save("logo.png", ContentFile(b"\x89PNG\r\n\x1a\n"))
    open_invoice(tenant)
    dunning.send_due_reminders(tenant, at(1))
    assert f'src="{BASE_URL}/pay/acme/-/logo"' in html_of(mailoutbox[0])


def test_names_from_halo_are_escaped_in_html(tenant, mailoutbox):
    customer = factories.customer(tenant, name="<b>Evil</b> & Co", billing_first_name="<i>")
    open_invoice(tenant, customer=customer)
    dunning.send_due_reminders(tenant, at(1))
    html = html_of(mailoutbox[0])
    assert "<b>Evil</b>" not in html and "&lt;b&gt;Evil&lt;/b&gt; &amp; Co" in html


def test_each_email_holds_only_its_own_customers_data(tenant, mailoutbox):
    mine = open_invoice(tenant, reference="PO-MINE")
    other = open_invoice(
        tenant,
        customer=factories.customer(tenant, name="Globex Ltd", billing_first_name="Hank"),
        reference="PO-OTHER",
    )
    dunning.send_due_reminders(tenant, at(1))
    by_address = {m.to[0]: m for m in mailoutbox}
    assert len(by_address) == 2
    for invoice, stranger in ((mine, other), (other, mine)):
        message = by_address[invoice.customer.billing_email]
        whole = message.subject + message.body + html_of(message) + str(message.extra_headers)
        assert stranger.customer.name not in whole
        assert stranger.customer.billing_email not in whole
        assert stranger.reference not in whole
        assert PayPage.objects.get(invoice=stranger).token not in whole
        assert f"invoice {stranger.display_number()}" not in whole.lower()


def test_the_final_step_says_so(tenant, mailoutbox):
    open_invoice(tenant)
    dunning.send_due_reminders(tenant, at(14))
    (message,) = mail.outbox
    assert message.subject.startswith("Final reminder:")
    assert "final reminder" in message.body
