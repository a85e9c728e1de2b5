"""The reminder a customer gets, and the staff email when a payment lands.

Plain text and HTML, branded as the receipts are (`billing.payments.display`). A reminder
names one invoice of one customer and nothing else; its links are absolute: the invoice's pay
page, the customer's account page and the opt-out page (also in `List-Unsubscribe`, with
one-click unsubscribe, RFC 8058).
"""

from dataclasses import dataclass
from email.utils import formataddr, parseaddr

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from billing.accounts.links import account_url
from billing.payments import display
from billing.payments.models import Balance, PayPage
from billing.reminders.links import opt_out_url
from billing.reminders.models import ReminderSettings


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    headers: dict


def _context(tenant):
    brand = display.brand(tenant)
    logo = settings.PORTAL_BASE_URL + brand.logo_url if brand.logo_url else ""
    return {"tenant": tenant, "brand": brand, "logo_url": logo}


def subject_for(due, number, when):
    brand = due.invoice.tenant.brand_name
    if due.offset < 0:
        text = f"Invoice {number} from {brand} is due on {when}"
    elif due.offset == 0:
        text = f"Invoice {number} from {brand} is due today"
    elif due.final:
        text = f"Final reminder: invoice {number} from {brand} is overdue"
    else:
        text = f"Reminder: invoice {number} from {brand} is overdue"
    return " ".join(text.split())  # names from Halo may hold line breaks


def render_reminder(due):
    invoice, tenant, customer = due.invoice, due.invoice.tenant, due.invoice.customer
    balance = Balance(invoice)
    currency = invoice.currency or tenant.currency
    number = invoice.display_number()
    when = display.day(invoice.due_date, tenant)
    context = _context(tenant) | {
        "due": due,
        "invoice": invoice,
        "number": number,
        "customer": customer,
        "greeting": customer.billing_contact or customer.name,
        "amount": display.money(balance.due, currency, tenant),
        "total": display.money(invoice.total, currency, tenant),
        "partly_paid": balance.due < invoice.total,
        "due_date": when,
        "invoice_date": display.day(invoice.invoice_date, tenant),
        "days": abs(due.offset),
        "pay_url": PayPage.for_invoice(invoice).public_url(),
        "account_url": account_url(customer),
        "opt_out_url": opt_out_url(customer),
    }
    return Rendered(
        subject=subject_for(due, number, when),
        text=render_to_string("reminders/email/reminder.txt", context),
        html=render_to_string("reminders/email/reminder.html", context),
        headers={
            "List-Unsubscribe": f"<{context['opt_out_url']}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "Auto-Submitted": "auto-generated",
        },
    )


def sender(tenant, options):
    address = parseaddr(settings.DEFAULT_FROM_EMAIL)[1]
    reply_to = options.reply_to or tenant.support_email
    return formataddr((options.from_name or tenant.brand_name, address)), reply_to


def send_reminder(due, reminder=None):
    """To the customer's billing email (the caller checked there is one)."""
    tenant = due.invoice.tenant
    rendered = render_reminder(due)
    from_email, reply_to = sender(tenant, ReminderSettings.for_tenant(tenant))
    message = EmailMultiAlternatives(
        subject=rendered.subject,
        body=rendered.text,
        from_email=from_email,
        to=[due.to],
        reply_to=[reply_to] if reply_to else None,
        headers=rendered.headers,
    )
    message.attach_alternative(rendered.html, "text/html")
    message.send()


def send_payment_notice(payment, to):
    """To the tenant's staff: which invoice of which customer was paid, how much, how."""
    tenant = payment.tenant
    invoice = payment.invoice
    customer = invoice.customer if invoice else _customer_of_several(payment)
    currency = payment.currency or tenant.currency
    due = Balance(invoice).due if invoice else None
    admin_path = reverse("admin:payments_payment_change", args=[payment.pk])
    context = _context(tenant) | {
        "payment": payment,
        "customer": customer,
        "amount": display.money(payment.amount, currency, tenant),
        "when": display.moment(payment.succeeded_at or payment.created, tenant),
        "still_due": display.money(due, currency, tenant) if due else "",
        "admin_url": settings.PORTAL_BASE_URL + admin_path,
        "settings_url": settings.PORTAL_BASE_URL
        + reverse("admin:reminders_remindersettings_changelist"),
    }
    who = f" from {customer}" if customer else ""
    subject = f"Payment received: {context['amount']}{who} for invoice {payment.invoice_ref}"
    options = ReminderSettings.for_tenant(tenant)
    message = EmailMultiAlternatives(
        subject=" ".join(subject.split()),
        body=render_to_string("reminders/email/payment_notice.txt", context),
        from_email=sender(tenant, options)[0],
        to=to,
        headers={"Auto-Submitted": "auto-generated"},
    )
    message.attach_alternative(
        render_to_string("reminders/email/payment_notice.html", context), "text/html"
    )
    message.send()


def _customer_of_several(payment):
    """A payment of several invoices names no one invoice: its first share's customer."""
    allocations = getattr(payment, "allocations", None)
    first = allocations.select_related("invoice__customer").first() if allocations else None
    return first.invoice.customer if first else None
