"""The page where a customer pays several of their open invoices with one card charge,
reached from their account page (`billing.accounts`).

Authentication and CSRF without cookies. The account page may be shown in a cross-site
frame inside Halo's self-service portal, where browsers withhold the portal's cookies
(third-party cookie blocking, SameSite). So nothing here reads a cookie or sets one:

* The customer is whoever the signed account token in the URL names
  (`billing.accounts.links.customer_for_token`); a bad, expired or other tenant's token is
  a 404, like an unknown pay page.
* Django's CSRF protection needs its cookie, so the view is `csrf_exempt` and protects
  its POST itself. There is no ambient credential a forged request could ride on: a POST
  must name the account token, which only the customer's links carry. On top of that the
  form carries a signed, expiring form token bound to that account token and to the form's
  action (`links.form_token`, the account page's own), so only a form the portal rendered
  for this account within `links.FORM_MAX_AGE` is accepted; and a
  browser's `Origin` header, when sent, must be the portal's own origin (what a form in
  the portal's own page sends, framed or not), so a cross-site page posting to this URL is
  refused even if it learnt the token.
* Framing is allowed only by the Halo portal origins the tenant lists for its account
  page (`AccountSettings.frame_ancestors`); Stripe Checkout refuses to be framed, so a
  Stripe form opens it in the top window.

Choosing and paying are two steps, both at the same URL: the list of open invoices
(ticked by default) and, once chosen (a GET, harmless to reload), the review of how the
payment is split, with the card form. The POST re-checks everything under the invoices'
row locks and charges nothing if the amounts due changed since the review.
"""

from decimal import Decimal
from urllib.parse import urlencode

from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from billing.accounts import links
from billing.accounts.links import account_path, customer_for_token, make_token
from billing.models import Invoice
from billing.payments import card_setup, checkout, display
from billing.payments.forms import (
    PaySeveralForm,
    SelectionForm,
)
from billing.payments.models import Balance, Payment, PaymentAllocation, PaymentSettings
from billing.payments.views import after_start, customer_page, not_found_at, page
from portal.http import client_address, from_another_site

CROSS_SITE = (
    "This payment form was sent from another website, so it was refused. Nothing was "
    "charged: open the page from your account link and pay there."
)


def frame_ancestors(tenant):
    from billing.accounts.models import AccountSettings

    return AccountSettings.for_tenant(tenant).frame_ancestors()


def allow_framing(response, tenant):
    """The account page's framing rules on this page: `frame-ancestors` are the tenant's
    Halo portal origins (else 'none', see `views.harden`); X-Frame-Options defers to it."""
    response.frame_ancestors = frame_ancestors(tenant)
    response.xframe_options_exempt = True
    return response


class Account:
    """A customer's open invoices as the page shows them: each with its balance."""

    def __init__(self, customer):
        self.customer = customer
        self.tenant = customer.tenant
        rows = [(invoice, Balance(invoice)) for invoice in checkout.payable_invoices(customer)]
        self.rows = [(i, b) for i, b in rows if b.due > 0 or b.in_flight is not None]
        self.payable = {i.pk: i for i, b in self.rows if b.in_flight is None}
        self.dues = {i.pk: b.due for i, b in self.rows}

    def money(self, amount, currency=""):
        return display.money(amount, currency or self.currency, self.tenant)

    @property
    def currency(self):
        return next((i.currency for i, _ in self.rows if i.currency), self.tenant.currency)

    def balance(self):
        return sum((self.dues[pk] for pk in self.payable), Decimal(0))

    def listing(self, ticked=None):
        """Rows for the chooser: every open invoice, ticked unless `ticked` says otherwise."""
        return [
            {
                "id": invoice.pk,
                "number": invoice.display_number(),
                "invoice_date": display.day(invoice.invoice_date, self.tenant),
                "due_date": display.day(invoice.due_date, self.tenant),
                "overdue": invoice.status_label == Invoice.PaymentStatus.OVERDUE.label,
                "due": self.money(balance.due, invoice.currency),
                "in_flight": balance.in_flight is not None,
                "ticked": balance.in_flight is None and (ticked is None or invoice.pk in ticked),
            }
            for invoice, balance in self.rows
        ]

    def split(self, invoices):
        """How paying `invoices` in full splits (oldest first), for the review."""
        dues = [(invoice, self.dues[invoice.pk]) for invoice in invoices]
        shares = PaymentAllocation.plan(dues)
        return sum((share for _, share in shares), Decimal(0)), [
            {
                "number": invoice.display_number(),
                "due_date": display.day(invoice.due_date, self.tenant),
                "amount": self.money(share, invoice.currency),
            }
            for invoice, share in shares
        ]


@csrf_exempt
@customer_page
@require_http_methods(["GET", "POST"])
def pay_several(request, tenant_code, token):
    customer = customer_for_token(tenant_code, token)
    if customer is None:
        return not_found_at(request, tenant_code)
    account = Account(customer)
    options = PaymentSettings.for_tenant(customer.tenant)
    processor = options.processor_impl()
    context = {
        "account": account,
        "customer": customer,
        "account_url": account_path(customer),
        "unavailable": processor.unavailable_reason(),
        "test_mode": not processor.takes_real_money,
        "collects_card": processor.collects_card,
    }
    if request.method == "POST":
        return _pay(request, token, account, options, processor, context)
    if "pay" not in request.GET:
        context["listing"] = account.listing(_ticked(request.GET.getlist("invoice")) or None)
        return _show(request, account, "payments/pay_several.html", context)
    selection = SelectionForm(request.GET, customer=customer, payable=account.payable)
    if not selection.is_valid():
        ticked = _ticked(request.GET.getlist("invoice"))
        context |= {"listing": account.listing(ticked), "errors": _errors(selection)}
        return _show(request, account, "payments/pay_several.html", context, status=400)
    form = _pay_form(None, token, account, options, processor, selection)
    failed = None
    if failed_id := request.GET.get("failed"):
        failed = Payment.objects.filter(
            public_id=failed_id,
            tenant=customer.tenant,
            kind=Payment.Kind.SEVERAL,
            status=Payment.Status.FAILED,
        ).first()
    return _review(request, account, selection, form, context, failed=failed)


def _pay(request, token, account, options, processor, context):
    if from_another_site(request):
        return _refuse(request, account, context, CROSS_SITE, status=403)
    if (replay := _replayed(request, token, account)) is not None:
        # The same form again (a double click, a reload): the payment it made, before the
        # selection is checked (its invoices are no longer open once it succeeded).
        if replay.status == Payment.Status.FAILED:
            return redirect(_review_url(account, token, replay))
        return after_start(replay)
    form = _pay_form(request.POST, token, account, options, processor)
    if not form.is_valid():
        if not {"pay", "invoice", "total"}.isdisjoint(form.errors) or not form.is_bound:
            return _refuse(request, account, context, _errors(form))
        return _review(request, account, form, _fresh(form, token), context, status=400)
    try:
        payment = checkout.pay_several(
            account.tenant,
            account.customer,
            form.invoice_ids(),
            key=form.cleaned_data["attempt"],
            requested=form.cleaned_data.get("amount"),
            expected_total=form.cleaned_data["total"],
            card=form.card(),
            **form.payment_details(client_address(request)),
        )
    except checkout.CannotPay as refusal:
        fresh = Account(account.customer)
        selection = SelectionForm(request.POST, customer=account.customer, payable=fresh.payable)
        if not selection.is_valid():
            return _refuse(request, fresh, context, [refusal.message])
        form = _pay_form(None, token, fresh, options, processor, selection)
        return _review(request, fresh, selection, form, context, error=refusal.message, status=400)
    if payment.status == Payment.Status.FAILED:
        return redirect(_review_url(account, token, payment))
    return after_start(payment)


def _replayed(request, token, account):
    """The payment this posted form already made, if its form token is good."""
    key = request.POST.get("attempt", "")
    form_token = request.POST.get("form_token", "")
    if not key or not links.form_token_ok(form_token, token, PaySeveralForm.action):
        return None
    return (
        Payment.objects.filter(
            idempotency_key=key[:64],
            tenant=account.tenant,
            kind=Payment.Kind.SEVERAL,
            allocations__invoice__customer=account.customer,
        )
        .distinct()
        .first()
    )


def _pay_form(data, token, account, options, processor, selection=None):
    initial = {}
    if selection is not None:
        total, _ = account.split(selection.chosen())
        initial = {
            "pay": selection.cleaned_data["pay"],
            "invoice": selection.cleaned_data["invoice"],
            "total": total,
        }
    return PaySeveralForm(
        data,
        initial=initial,
        account_token=token,
        customer=account.customer,
        payable=account.payable,
        # A bound form takes the amount posted; the initial amount is the review's total.
        partial_up_to=initial.get("total", Decimal(0)) if options.allow_partial else None,
        collects_card=processor.collects_card,
        # As on a pay page: the consent box when auto-pay could use the card.
        consent=card_setup.consent_text(account.tenant, account.customer)
        if any(invoice.autopay_rule_id for invoice in account.payable.values())
        else "",
    )


def _fresh(form, token):
    """A form shown again carries a new form token (the one posted may have expired)."""
    form.data = form.data.copy()
    form.data["form_token"] = links.form_token(token, form.action)
    return form


def _review(request, account, selection, form, context, status=200, error="", failed=None):
    total, shares = account.split(selection.chosen())
    context |= {
        "form": form,
        "shares": shares,
        "total": account.money(total),
        "error": error,
        "failed": failed,
        "change_url": "?" + urlencode({"invoice": selection.cleaned_data["invoice"]}, doseq=True),
    }
    return _show(request, account, "payments/pay_several_review.html", context, status=status)


def _refuse(request, account, context, errors, status=400):
    """The chooser again, saying why nothing was charged."""
    errors = [errors] if isinstance(errors, str) else errors
    context |= {"listing": account.listing(), "errors": errors}
    return _show(request, account, "payments/pay_several.html", context, status=status)


def _show(request, account, template, context, status=200):
    context.setdefault("listing", account.listing())
    context |= {"balance": account.money(account.balance())}
    response = page(request, template, account.tenant, status=status, **context)
    return allow_framing(response, account.tenant)


def _errors(form):
    return [error for errors in form.errors.values() for error in errors]


def _ticked(values):
    return {int(v) for v in values if v.isascii() and v.isdigit() and len(v) <= 18}


def _review_url(account, token, payment):
    """The review of the same invoices, saying why `payment` did not go through."""
    ids = list(payment.allocations.values_list("invoice_id", flat=True))
    query = urlencode({"pay": "chosen", "invoice": ids, "failed": payment.public_id}, doseq=True)
    url = reverse("payments:pay_several", args=[account.tenant.slug, token])
    return f"{url}?{query}#payment-failed"


# -- the receipt of a payment for several invoices ---------------------------------------------


def shares_of(payment):
    """Each invoice's share of `payment`, as the receipt and its email show them."""
    tenant = payment.tenant
    shares = []
    for allocation in payment.allocations.select_related("invoice__customer", "invoice__tenant"):
        invoice = allocation.invoice
        due = Balance(invoice).due
        shares.append(
            {
                "invoice": invoice,
                "number": invoice.display_number(),
                "amount": display.money(allocation.amount, payment.currency, tenant),
                "refunded": display.money(allocation.refunded_amount, payment.currency, tenant)
                if allocation.refunded_amount
                else "",
                "still_due": display.money(due, payment.currency, tenant) if due else "",
                "in_part": due > 0,
            }
        )
    return shares


def receipt(request, payment):
    """`payments:payment` for a payment of several invoices. `?cancelled=1` is where Stripe
    Checkout sends a customer who backs out: the checkout is closed, so the invoices can
    be paid again, and the page says nothing was charged."""
    if request.GET.get("cancelled") and payment.is_in_flight:
        checkout.close_checkout(payment)
        return redirect(payment.get_absolute_url())
    tenant = payment.tenant
    shares = shares_of(payment)
    customer = shares[0]["invoice"].customer if shares else None
    retry_url = ""
    if customer is not None:
        query = urlencode({"pay": "chosen", "invoice": [s["invoice"].pk for s in shares]}, True)
        retry_url = pay_url(customer) + "?" + query
    response = page(
        request,
        "payments/payment_several.html",
        tenant,
        payment=payment,
        shares=shares,
        amount=display.money(payment.amount, payment.currency, tenant),
        refunded=display.money(payment.refunded_amount, payment.currency, tenant),
        when=display.moment(payment.succeeded_at or payment.created, tenant),
        retry_url=retry_url,
        account_url=account_path(customer) if customer else "",
    )
    return allow_framing(response, tenant)


def pay_url(customer):
    """The customer's pay-several page under a fresh account link."""
    return reverse("payments:pay_several", args=[customer.tenant.slug, make_token(customer)])
