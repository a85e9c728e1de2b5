"""Emails: the payer's receipt, a failed auto-pay charge (to staff and to the customer), a
card saved for auto-pay, and the tenant's notice of pay links that look walked."""

from email.utils import formataddr, parseaddr

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from billing.accounts.links import account_url
from billing.payments import display
from billing.payments.models import Balance, PaymentSettings, PayPage


def _send(tenant, to, subject, template, context):
    """Mail in the tenant's name; `template` is a name under payments/email/, or a path
    (`accounts/email/link`) for other customer mail, without its .txt/.html."""
    context |= {"tenant": tenant, "brand": display.brand(tenant)}
    template = template if "/" in template else f"payments/email/{template}"
    message = EmailMultiAlternatives(
        subject=" ".join(subject.split()),  # names from Halo may hold line breaks
        body=render_to_string(f"{template}.txt", context),
        from_email=formataddr((tenant.brand_name, parseaddr(settings.DEFAULT_FROM_EMAIL)[1])),
        to=to,
        reply_to=[tenant.support_email] if tenant.support_email else None,
    )
    message.attach_alternative(render_to_string(f"{template}.html", context), "text/html")
    message.send()


def send_receipt(payment):
    """To the payer's address, else the invoice's billing contact; nowhere when neither."""
    if payment.kind == payment.Kind.SEVERAL:
        return send_several_receipt(payment)
    invoice = payment.invoice
    customer = invoice.customer if invoice else None
    to = payment.payer_email or (customer.billing_email if customer else "")
    if not to:
        return False
    tenant = payment.tenant
    due = Balance(invoice).due if invoice else None
    _send(
        tenant,
        [to],
        f"Receipt: invoice {payment.invoice_ref} paid – {tenant.brand_name}",
        "receipt",
        {
            "payment": payment,
            "amount": display.money(payment.amount, payment.currency, tenant),
            "when": display.moment(payment.succeeded_at or payment.created, tenant),
            "still_due": display.money(due, payment.currency, tenant) if due else "",
            "invoice_total": display.invoice_total(invoice, display.figures(invoice))
            if invoice
            else "",
            "url": payment.public_url(),
        },
    )
    return True


def send_several_receipt(payment):
    """A payment for several invoices: the receipt lists each invoice's share."""
    from billing.payments.several import shares_of

    shares = shares_of(payment)
    customer = shares[0]["invoice"].customer if shares else None
    to = payment.payer_email or (customer.billing_email if customer else "")
    if not to:
        return False
    tenant = payment.tenant
    _send(
        tenant,
        [to],
        f"Receipt: invoices {payment.invoice_ref} paid – {tenant.brand_name}",
        "receipt_several",
        {
            "payment": payment,
            "shares": shares,
            "amount": display.money(payment.amount, payment.currency, tenant),
            "when": display.moment(payment.succeeded_at or payment.created, tenant),
            "url": payment.public_url(),
        },
    )
    return True


def send_autopay_failure(payment):
    """To the tenant's owners and support address: a customer's card was not charged; and
    to the customer's billing contact, with the invoice's pay page and their account page
    (where *Replace this card* saves another card). Answers whether anyone was told."""
    tenant = payment.tenant
    invoice = payment.invoice
    customer = invoice.customer if invoice else None
    context = {
        "payment": payment,
        "invoice": invoice,
        "amount": display.money(payment.amount, payment.currency, tenant),
        "retry_days": tenant.payment_settings.autopay_retry_days,
        "max_attempts": tenant.payment_settings.autopay_max_attempts,
        "account_url": account_url(customer) if customer else "",
        "pay_url": PayPage.for_invoice(invoice).public_url() if invoice else "",
        "customer_told": bool(customer and customer.billing_email),
    }
    staff = set(tenant.owner_emails())
    if tenant.support_email:
        staff.add(tenant.support_email)
    if staff:
        _send(
            tenant,
            sorted(staff),
            f"Auto-pay failed: invoice {payment.invoice_ref} ({customer or 'no customer'})",
            "autopay_failed",
            context,
        )
    if context["customer_told"]:
        _send(
            tenant,
            [customer.billing_email],
            f"We could not charge your card for invoice {payment.invoice_ref} – "
            f"{tenant.brand_name}",
            "autopay_failed_customer",
            context,
        )
    return bool(staff) or context["customer_told"]


def send_card_saved(setup):
    """To the customer: the card auto-pay charges changed (or was set up), from their
    account page. Sent to whoever agreed and to the billing contact, so a card saved by
    someone else with a forwarded link does not go unnoticed."""
    to = sorted({a for a in (setup.consent_email, setup.customer.billing_email) if a})
    if not to or setup.saved is None:
        return False
    tenant = setup.tenant
    setup.customer.tenant = tenant
    _send(
        tenant,
        to,
        f"Your card for auto-pay was saved – {tenant.brand_name}",
        "card_saved",
        {
            "setup": setup,
            "card": setup.saved,
            "when": display.moment(setup.finished or setup.created, tenant),
            "account_url": account_url(setup.customer),
        },
    )
    return True


def send_pay_link_alert(alert):
    """One email to each owner of the tenant: its pay links look walked. Answers how many
    were sent."""
    tenant = alert.tenant
    owners = sorted(set(tenant.owner_emails()))
    options = PaymentSettings.objects.filter(tenant=tenant).first()
    context = {
        "alert": alert,
        "started": display.moment(alert.started, tenant),
        "addresses": sorted(alert.addresses.items(), key=lambda item: -item[1]),
        "asking": options is not None and options.link_check != PaymentSettings.LinkCheck.OFF,
        "alerts_url": settings.PORTAL_BASE_URL + reverse("admin:payments_paylinkalert_changelist"),
        "window_minutes": round(settings.PAYMENTS_ALERT_WINDOW / 60),
    }
    for owner in owners:
        _send(
            tenant,
            [owner],
            f"Pay links of {tenant.brand_name}: someone may be guessing invoice numbers",
            "pay_link_alert",
            dict(context),
        )
    return len(owners)
