"""What customers see: the pay link, pay pages, receipts; and the Stripe webhook.

Nothing here needs a login. Pay pages and receipts live at unguessable URLs under the tenant
code, and a token of one tenant under another's code is not found. Every page is rendered on
the server (no JavaScript), sent with `Cache-Control: no-store`, no referrer to other sites
(the URL is the secret) and a strict Content-Security-Policy.
"""

import hashlib
import json
import logging
import re
import secrets
from functools import wraps

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import (
    FileResponse,
    Http404,
    HttpResponse,
    HttpResponseNotModified,
    HttpResponseRedirect,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header, http_date
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from rest_framework.exceptions import Throttled
from rest_framework.permissions import AllowAny
from rest_framework.renderers import TemplateHTMLRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.invoicing.pdfs import PdfUnavailable, resolve_pdf
from billing.models import Invoice
from billing.payments import card_setup, checkout, display, enumeration
from billing.payments.forms import LinkCheckForm, PayForm, UnlistedPayForm
from billing.payments.models import (
    Balance,
    Payment,
    PaymentEvent,
    PaymentSettings,
    PayPage,
    ProcessorEvent,
    invoice_for_ref,
    is_issued,
)
from billing.payments.processors import InvalidWebhook, MalformedWebhook, StripeProcessor
from billing.payments.schema import pay_link_schema
from portal.api import WindowThrottle
from portal.http import client_address
from portal.models import Tenant

log = logging.getLogger(__name__)

#: A Halo template variable left in the link: Halo did not substitute it.
UNSUBSTITUTED = re.compile(r"^\$[A-Za-z_]+$")
CSP = (
    "default-src 'none'; style-src 'self' 'nonce-{nonce}'; img-src 'self'; "
    "form-action 'self' https://checkout.stripe.com; frame-ancestors {ancestors}; "
    "base-uri 'none'"
)


def harden(request, response):
    response.setdefault("Cache-Control", "no-store")
    response["Referrer-Policy"] = "same-origin"  # "no-referrer" makes forms post Origin: null
    response["X-Robots-Tag"] = "noindex, nofollow"
    if response.get("Content-Type", "").startswith("text/html"):
        # Not on PDFs: a strict policy stops browsers' built-in PDF viewers.
        # No framing, unless the page allowed its tenant's Halo portal (`several.allow_framing`).
        ancestors = getattr(response, "frame_ancestors", "'none'")
        response["Content-Security-Policy"] = CSP.format(
            nonce=request.csp_nonce, ancestors=ancestors
        )
    return response


def customer_page(view):
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        request.csp_nonce = secrets.token_urlsafe(16)
        return harden(request, view(request, *args, **kwargs))

    return wrapped


def page(request, template, tenant, status=200, **context):
    context |= {"tenant": tenant, "brand": display.brand(tenant), "csp_nonce": request.csp_nonce}
    return render(request, template, context, status=status)


def not_found(request, tenant=None):
    return page(request, "payments/not_found.html", tenant, status=404)


def not_found_at(request, tenant_code):
    """The 404 page, in the brand of the tenant the URL names (when there is one)."""
    return not_found(request, Tenant.objects.filter(slug=tenant_code).first())


# -- the link in Halo's invoice email -----------------------------------------------------------


class PayLinkThrottle(WindowThrottle):
    """Per client address: Halo invoice ids are sequential, so slow down anyone walking them.
    Counted once for every process on every machine (`WindowThrottle`, `portal.counters`)."""

    scope = "pay_link"

    def get_rate(self):
        return settings.PAYMENTS_LINK_RATE or None

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def get_ident(self, request):
        return client_address(request)  # DRF's would trust any X-Forwarded-For


class PayLinkView(APIView):
    """`GET /pay/<tenant code>/<ref>`: the invoice a Halo id or third-party number names,
    per the tenant's setting, redirected to its pay page (which shows paid and voided
    invoices' status). Redirects only ever go to a URL the portal built."""

    authentication_classes = []
    permission_classes = [AllowAny]  # anyone with the link: customers, from Halo's emails
    renderer_classes = [TemplateHTMLRenderer]
    throttle_classes = [PayLinkThrottle]
    # Not OPTIONS: DRF answers it with API metadata, which no template renders (a 500).
    http_method_names = ["get", "head"]
    in_api_schema = True  # the link partners put in Halo (portal.api.api_paths_only)

    def initial(self, request, *args, **kwargs):
        request.csp_nonce = secrets.token_urlsafe(16)
        super().initial(request, *args, **kwargs)

    @pay_link_schema
    def get(self, request, tenant_code, ref):
        tenant = (
            Tenant.objects.select_related("invoice_sync_settings", "payment_settings")
            .filter(slug=tenant_code)
            .first()
        )
        if tenant is None:
            return self.show("payments/link_unknown.html", None, status=404)
        if UNSUBSTITUTED.match(ref):
            pay_link = PaymentSettings.for_tenant(tenant).pay_link_template()
            return self.show(
                "payments/link_unsubstituted.html", tenant, status=404, ref=ref, pay_link=pay_link
            )
        options = PaymentSettings.for_tenant(tenant)
        invoice = invoice_for_ref(tenant, ref)
        if invoice is not None:
            pay_page = PayPage.for_invoice(invoice)
            if options.link_check == options.LinkCheck.OFF or answered(request, pay_page):
                return HttpResponseRedirect(pay_page.get_absolute_url())
        elif options.pay_unknown_invoices:
            form = UnlistedPayForm(collects_card=_collects_card(tenant))
            return self.show("payments/unlisted.html", tenant, ref=ref, form=form)
        else:
            enumeration.record_miss(tenant, client_address(request))
            if options.link_check == options.LinkCheck.OFF:
                return self.show("payments/link_unknown.html", tenant, status=404)
        # The question, asked alike whether the invoice exists or not: a guessed number
        # shows nothing.
        form = LinkCheckForm(question=question_for(options, invoice))
        return self.show("payments/link_check.html", tenant, ref=ref, form=form)

    def show(self, template, tenant, status=200, **context):
        context |= {"tenant": tenant, "brand": display.brand(tenant)}
        context["csp_nonce"] = self.request.csp_nonce
        return Response(context, status=status, template_name=template)

    def handle_exception(self, exc):
        if isinstance(exc, Throttled):
            return self.show("payments/throttled.html", None, status=429)
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        return harden(request, response)


# -- the pay-link question (PaymentSettings.link_check) -----------------------------------------

#: Session key: the pay pages this browser answered the question for (the latest few).
ANSWERED = "payments_answered"
ANSWERED_KEPT = 20


class LinkCheckThrottle(WindowThrottle):
    """Answers to the pay-link question per invoice (or per number, when none has it), from
    any address: many addresses together cannot guess one invoice's total."""

    scope = "pay_link_check"

    def __init__(self, tenant, ref):
        self.ident = hashlib.sha256(f"{tenant.pk}:{ref}".encode()).hexdigest()[:32]
        super().__init__()

    def get_rate(self):
        return settings.PAYMENTS_LINK_CHECK_RATE or None

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.ident}


def question_for(options, invoice):
    """ "email" or "amount": what the link asks before the pay page of `invoice` (None: an
    unknown number, asked the tenant's question all the same)."""
    if options.link_check != options.LinkCheck.EMAIL:
        return "amount"
    if invoice is not None and not (invoice.customer and invoice.customer.billing_email):
        return "amount"
    return "email"


def answered(request, pay_page):
    return pay_page.token in request.session.get(ANSWERED, [])


def remember_answer(request, pay_page):
    kept = [t for t in request.session.get(ANSWERED, []) if t != pay_page.token]
    request.session[ANSWERED] = [*kept, pay_page.token][-ANSWERED_KEPT:]


@customer_page
@require_POST
def check_link(request, tenant_code):
    """The answer to the pay-link question: right, the pay page (and the session remembers
    it); wrong, the question again, counted as a miss. Every answer counts toward the
    client's pay-link lookups, and toward the invoice's own limit."""
    if not PayLinkThrottle().allow_request(request, None):
        return page(request, "payments/throttled.html", None, status=429)
    tenant = Tenant.objects.select_related("payment_settings").filter(slug=tenant_code).first()
    ref = request.POST.get("ref", "")[:64].strip()
    if tenant is None or not ref:
        return not_found(request, tenant)
    options = PaymentSettings.for_tenant(tenant)
    if options.link_check == options.LinkCheck.OFF:
        return redirect(reverse("payments:link", args=[tenant.slug, ref]))
    invoice = invoice_for_ref(tenant, ref)
    form = LinkCheckForm(request.POST, question=question_for(options, invoice))
    if not LinkCheckThrottle(tenant, ref).allow_request(request, None):
        return page(request, "payments/throttled.html", tenant, status=429, per_invoice=True)
    if form.is_valid():
        if invoice is not None and form.matches(invoice):
            pay_page = PayPage.for_invoice(invoice)
            remember_answer(request, pay_page)
            return redirect(pay_page.get_absolute_url())
        enumeration.record_miss(tenant, client_address(request))
        form.add_error("answer", _wrong_answer(form.question))
    return page(request, "payments/link_check.html", tenant, status=400, ref=ref, form=form)


def _wrong_answer(question):
    what = "email address" if question == "email" else "total"
    return (
        f"This {what} does not match the invoice. Check your invoice email and try again; "
        "a new invoice can take a few minutes to appear here."
    )


def _collects_card(tenant):
    return PaymentSettings.for_tenant(tenant).processor_impl().collects_card


@customer_page
@require_POST
def pay_unlisted(request, tenant_code):
    """The form for an invoice the portal does not know (only when the tenant allows it)."""
    tenant = Tenant.objects.filter(slug=tenant_code).first()
    options = tenant and PaymentSettings.for_tenant(tenant)
    if options is None or not options.pay_unknown_invoices:
        return not_found(request, tenant)
    ref = request.POST.get("ref", "")[:64].strip()
    if known := invoice_for_ref(tenant, ref):  # synced since the form was shown
        return redirect(PayPage.for_invoice(known).get_absolute_url())
    form = UnlistedPayForm(request.POST, collects_card=_collects_card(tenant))
    error = ""
    if ref and form.is_valid():
        try:
            payment = checkout.pay(
                tenant,
                None,
                key=form.cleaned_data["attempt"],
                kind=Payment.Kind.UNLISTED,
                requested=form.cleaned_data["amount"],
                card=form.card(),
                invoice_ref=ref,
                **form.payment_details(client_address(request)),
            )
        except checkout.CannotPay as refusal:
            error = refusal.message
        else:
            return after_start(payment)
    return page(request, "payments/unlisted.html", tenant, ref=ref, form=form, error=error)


# -- pay page ------------------------------------------------------------------------------------


def _pay_page(tenant_code, token):
    pages = PayPage.objects.select_related(
        "invoice__tenant__invoice_sync_settings",
        "invoice__tenant__payment_settings",
        "invoice__tenant__invoicing_settings",
        "invoice__customer",
    )
    try:
        return pages.get(token=token, invoice__tenant__slug=tenant_code)
    except PayPage.DoesNotExist:
        return None


def _issued_pay_page(tenant_code, token):
    """The pay page, or None (answer `not_found`) for a missing one, an invoice deleted in
    Halo or a portal draft."""
    pay_page = _pay_page(tenant_code, token)
    if pay_page is None or pay_page.invoice.deleted_in_halo or not is_issued(pay_page.invoice):
        return None
    return pay_page


@customer_page
@require_http_methods(["GET", "POST"])
def pay(request, tenant_code, token):
    pay_page = _issued_pay_page(tenant_code, token)
    if pay_page is None:
        return not_found_at(request, tenant_code)
    invoice = pay_page.invoice
    tenant = invoice.tenant
    options = PaymentSettings.for_tenant(tenant)
    processor = options.processor_impl()
    if cancelled := request.GET.get("cancelled"):
        return _back_from_checkout(pay_page, cancelled)
    balance = Balance(invoice)
    form = PayForm(
        request.POST or None,
        partial_up_to=balance.due if options.allow_partial else None,
        collects_card=processor.collects_card,
        consent=consent_text(invoice) if invoice.autopay_rule_id else "",
    )
    error = ""
    if request.method == "POST" and form.is_valid():
        try:
            payment = checkout.pay(
                tenant,
                invoice,
                key=form.cleaned_data["attempt"],
                requested=form.cleaned_data.get("amount"),
                card=form.card(),
                **form.payment_details(client_address(request)),
            )
        except checkout.CannotPay as refusal:
            error = refusal.message
            balance = Balance(invoice)
        else:
            return after_start(payment, pay_page)
    failed = None
    if failed_id := request.GET.get("failed"):
        failed = invoice.payments.filter(public_id=failed_id, status=Payment.Status.FAILED).first()
    status = 400 if request.method == "POST" else 200
    return page(
        request,
        "payments/pay.html",
        tenant,
        status=status,
        pay_page=pay_page,
        invoice=_invoice_view(invoice, balance),
        balance=balance,
        form=form,
        error=error,
        failed=failed,
        unavailable=processor.unavailable_reason(),
        test_mode=not processor.takes_real_money,
        receipts=invoice.payments.filter(status=Payment.Status.SUCCEEDED)[:5],
        pdf_url=reverse("payments:pdf", args=[tenant.slug, pay_page.token]),
    )


def after_start(payment, pay_page=None):
    """Where a started (or replayed) payment sends the customer: the processor's hosted
    checkout, the pay page again with the decline (so a refresh retries nothing), or the
    payment's page (receipt, or "confirming" while pending)."""
    if payment.status == Payment.Status.PENDING and payment.checkout_url:
        return HttpResponseRedirect(payment.checkout_url)  # the processor's own URL
    if payment.status == Payment.Status.FAILED and pay_page is not None:
        return redirect(failed_url(pay_page, payment))
    return redirect(payment.get_absolute_url())


def failed_url(pay_page, payment):
    """The pay page showing why `payment` failed, scrolled to the message."""
    return f"{pay_page.get_absolute_url()}?failed={payment.public_id}#payment-failed"


def _back_from_checkout(pay_page, public_id):
    """The customer backed out of the hosted checkout: close it, so the invoice can be paid
    again, and show that nothing was charged."""
    payment = pay_page.invoice.payments.in_flight().filter(public_id=public_id).first()
    if payment is not None and checkout.close_checkout(payment):
        if payment.status == Payment.Status.FAILED:
            return redirect(failed_url(pay_page, payment))
        return redirect(payment.get_absolute_url())
    return redirect(pay_page.get_absolute_url())


def consent_text(invoice):
    return card_setup.consent_text(invoice.tenant, invoice.customer)


def _invoice_view(invoice, balance):
    """The invoice's figures as the customer reads them (the tenant's locale): the lines net
    and the tax and total of them, the very figures of the invoice's PDF."""
    tenant = invoice.tenant
    figures = display.figures(invoice)

    def money(amount):
        return display.money(amount, invoice.currency, tenant)

    return {
        "number": invoice.display_number(),
        "customer": invoice.customer.name if invoice.customer else "",
        "reference": invoice.reference,
        "invoice_date": display.day(invoice.invoice_date, tenant),
        "due_date": display.day(invoice.due_date, tenant),
        "status": invoice.status_label,
        "overdue": invoice.status_label == Invoice.PaymentStatus.OVERDUE.label,
        "voided": invoice.voided,
        "total": money(figures.total),
        "tax_label": figures.tax_label,
        "tax": money(figures.tax),
        "net": money(figures.net),
        "paid": money(figures.total - balance.due) if figures.total > balance.due else "",
        "due": money(balance.due),
        "lines": [
            {
                "description": printed.product_name,
                "detail": line.long_description,
                "quantity": display.quantity(printed.quantity, tenant),
                "net": money(printed.net),
            }
            for line, printed in figures.lines
        ],
    }


def invoice_total(invoice):
    """The receipt's "Invoice total" (the figures of the pay page and PDF), or ''."""
    return display.invoice_total(invoice, display.figures(invoice)) if invoice else ""


# -- a payment's own page: receipt, confirming, failed -------------------------------------------


@customer_page
@require_GET
def payment(request, tenant_code, public_id):
    found = (
        Payment.objects.select_related("tenant", "invoice__pay_page", "invoice__customer")
        .filter(public_id=public_id, tenant__slug=tenant_code)
        .first()
    )
    if found is None:
        return not_found_at(request, tenant_code)
    if found.kind == Payment.Kind.SEVERAL:
        from billing.payments import several

        return several.receipt(request, found)
    tenant = found.tenant
    pay_page = getattr(found.invoice, "pay_page", None) if found.invoice else None
    if found.status == Payment.Status.FAILED and pay_page is not None:
        return redirect(failed_url(pay_page, found))
    balance = Balance(found.invoice) if found.invoice else None
    return page(
        request,
        "payments/payment.html",
        tenant,
        payment=found,
        pay_page=pay_page,
        amount=display.money(found.amount, found.currency, tenant),
        refunded=display.money(found.refunded_amount, found.currency, tenant),
        when=display.moment(found.succeeded_at or found.created, tenant),
        still_due=display.money(balance.due, found.currency, tenant) if balance else "",
        invoice_total=invoice_total(found.invoice),
        balance=balance,
        retry_url=reverse("payments:link", args=[tenant.slug, found.invoice_ref]),
    )


# -- files ---------------------------------------------------------------------------------------


@customer_page
@require_GET
def invoice_pdf(request, tenant_code, token):
    """The invoice's PDF, inline or (`?download=1`) as a download, from the source the tenant
    chose, falling back to the other when allowed."""
    pay_page = _issued_pay_page(tenant_code, token)
    if pay_page is None:
        return not_found_at(request, tenant_code)
    invoice = pay_page.invoice
    options = PaymentSettings.for_tenant(invoice.tenant)
    try:
        pdf = resolve_pdf(
            invoice,
            channel="pay_page",
            prefer="halo" if options.use_halo_pdf else "portal",
            fallback=options.pdf_fallback,
        )
    except PdfUnavailable:
        back = pay_page.get_absolute_url()
        return page(request, "payments/pdf_unavailable.html", invoice.tenant, status=503, back=back)
    if request.headers.get("If-None-Match") == pdf.etag:
        response = HttpResponseNotModified()
    else:
        response = HttpResponse(pdf.content, content_type="application/pdf")
        response["Content-Disposition"] = content_disposition_header(
            bool(request.GET.get("download")), pdf.filename
        )
    response["ETag"] = pdf.etag
    response["Last-Modified"] = http_date(pdf.last_modified.timestamp())
    response["Cache-Control"] = "private, no-cache"
    return response


@require_GET
def logo(request, tenant_code):
    tenant = Tenant.objects.filter(slug=tenant_code).exclude(logo="").first()
    if tenant is None:
        raise Http404
    response = FileResponse(tenant.logo.open("rb"))
    response["Cache-Control"] = "public, max-age=3600"
    return response


# -- Stripe webhook ------------------------------------------------------------------------------


@csrf_exempt
@require_POST
def stripe_webhook(request, tenant_code):
    """Verified with the tenant's signing secret, stored once per event id, applied in the
    same transaction (a crash makes Stripe deliver again; a repeat changes nothing). Every
    refusal of the signature looks the same, whether the tenant exists or not. A signed
    event the portal cannot read answers 400 with what is wrong, logged and kept for staff
    (Stripe shows the answer and retries; processor events in the admin, state failed)."""
    options = (
        PaymentSettings.objects.select_related("tenant").filter(tenant__slug=tenant_code).first()
    )
    try:
        if options is None:
            raise InvalidWebhook("unknown tenant")
        event = StripeProcessor(options).parse_webhook(request.body, request.headers)
    except InvalidWebhook:
        return HttpResponse("Invalid signature", status=400, content_type="text/plain")
    except MalformedWebhook as malformed:
        record = ProcessorEvent.keep_malformed(
            options.tenant, StripeProcessor.name, malformed, request.body
        )
        log.warning(
            "Signed Stripe event %s of tenant %s refused: %s",
            record.event_id,
            options.tenant.slug,
            malformed.reason,
        )
        return HttpResponse(
            json.dumps({"error": "invalid", "detail": malformed.reason}),
            status=400,
            content_type="application/json",
        )
    result = receive_event(options.tenant, StripeProcessor.name, event)
    return HttpResponse(json.dumps({"result": result}), content_type="application/json")


def receive_event(tenant, processor, event):
    """Apply a verified processor event once; answers what happened, for the record. A
    refund reported before its payment succeeded is kept (state deferred) and applied by
    the move to succeeded (`Payment.refund_or_wait`)."""
    State = ProcessorEvent.State
    outcome = event.outcome
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = ProcessorEvent.objects.create(
                    tenant=tenant,
                    processor=processor,
                    event_id=event.id,
                    type=event.type,
                    payload=event.payload,
                    reference=event.reference,
                    refunded_total=outcome.refunded if outcome else None,
                )
        except IntegrityError:
            return "duplicate: already received"
        if event.card_setup_id:
            record.state, record.outcome = card_setup.received(tenant, processor, event)
            record.save(update_fields=["state", "outcome"])
            return record.outcome
        record.payment = payment = _payment_of(tenant, processor, event)
        if outcome is None:
            record.state, record.outcome = State.IGNORED, "ignored: not an event the portal acts on"
        elif payment is None:
            record.state = State.IGNORED
            record.outcome = "ignored: no payment of this tenant matches"
        else:
            before = payment.status
            source = PaymentEvent.Source.WEBHOOK
            if outcome.refunded is not None:
                moved = payment.refund_or_wait(
                    outcome.refunded, source=source, detail=outcome.detail, event_id=event.id
                )
            else:
                moved = payment.apply(outcome, source=source, event_id=event.id)
            record.state = State.APPLIED
            if moved is None:
                record.state = State.DEFERRED
                record.outcome = (
                    f"deferred: {outcome.refunded} refunded while the payment is "
                    f"{payment.status}; waits for the payment to succeed, then taken off"
                )
            elif not moved:
                record.state = State.NO_CHANGE
                record.outcome = f"no change: the payment is already {payment.status}"
            elif payment.status == before:
                record.outcome = f"{payment.refunded_amount} of {payment.amount} refunded so far"
            else:
                record.outcome = f"{before} → {payment.status}"
        record.save(update_fields=["payment", "state", "outcome"])
        return record.outcome


def _payment_of(tenant, processor, event):
    payments = Payment.objects.filter(tenant=tenant, processor=processor)
    if event.payment_id:
        return payments.filter(public_id=event.payment_id).first()
    if event.reference:
        return payments.filter(reference=event.reference).first()
    return None
