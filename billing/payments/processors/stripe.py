"""Stripe through its official SDK: Checkout Sessions on the pay page, off-session
PaymentIntents for auto-pay.

A Checkout payment is believed complete only from a webhook whose signature checks with
the tenant's signing secret, never from the customer's browser coming back. Every create
carries an idempotency key derived from the payment's own key, so a retried request (by the
SDK or by a double click) can never open a second session or make a second charge.
"""

import contextlib
import time
from decimal import Decimal

import stripe
from django.conf import settings as django_settings
from django.views.decorators.debug import sensitive_variables

from billing.payments.processors.base import (
    InvalidWebhook,
    MalformedWebhook,
    Outcome,
    Processor,
    ProcessorError,
    SavedMethod,
    WebhookEvent,
)
from portal.input_checks import InvalidInput, parse_json

UNREACHABLE = "We could not reach the card processor. Nothing was charged: try again shortly."


class StripeProcessor(Processor):
    name = "stripe"

    def unavailable_reason(self):
        if not self.settings.stripe_secret_key_encrypted:
            return "Enter the Stripe secret key in the payment settings."
        if not self.settings.stripe_webhook_secret_encrypted:
            return (
                "Enter the Stripe webhook signing secret in the payment settings: without it "
                "no payment can be confirmed."
            )
        return ""

    @property
    def is_live(self):
        return self.settings.stripe_secret_key.startswith(("sk_live_", "rk_live_"))

    @sensitive_variables()
    def client(self):
        return stripe.StripeClient(
            self.settings.stripe_secret_key,
            http_client=stripe.RequestsClient(),
            max_network_retries=2,
        )

    # -- pay page ------------------------------------------------------------------------
    def start(self, payment, *, card=None, return_url="", cancel_url=""):
        metadata = _metadata(payment)
        intent = {"metadata": metadata, "description": _description(payment)}
        params = {
            "mode": "payment",
            "line_items": _line_items(payment),
            "client_reference_id": payment.public_id,
            "metadata": metadata,
            "payment_intent_data": intent,
            "success_url": return_url,
            "cancel_url": cancel_url,
            "expires_at": int(time.time()) + 60 * django_settings.PAYMENTS_STRIPE_SESSION_MINUTES,
        }
        if payment.payer_email:
            params["customer_email"] = payment.payer_email
        if payment.save_method:
            params["customer_creation"] = "always"
            intent["setup_future_usage"] = "off_session"
        try:
            session = self.client().v1.checkout.sessions.create(
                params, {"idempotency_key": f"checkout-{payment.idempotency_key}"}
            )
        except stripe.StripeError as error:
            raise ProcessorError(f"Stripe refused the Checkout Session: {error}") from error
        return _opened(session)

    def cancel(self, payment):
        # Fails when it was paid or expired meanwhile: the session then says which.
        with contextlib.suppress(stripe.StripeError):
            self.client().v1.checkout.sessions.expire(payment.checkout_session)
        return self.refresh(payment)

    def refresh(self, payment):
        """Stripe's own answer over its API (authenticated with the secret key), so a lost
        or misconfigured webhook can neither lose a payment nor block the invoice."""
        try:
            session = self.client().v1.checkout.sessions.retrieve(payment.checkout_session)
        except stripe.StripeError:
            return None
        if session.status == "expired":
            message = "The checkout was closed before payment. Nothing was charged."
            return Outcome("failed", failure_code="expired", failure_message=message)
        if session.status == "complete" and session.payment_status == "paid":
            return Outcome(
                "succeeded",
                reference=session.payment_intent or session.id,
                detail="confirmed with Stripe's API (no webhook came)",
            )
        return None

    # -- auto-pay ------------------------------------------------------------------------
    def charge_saved(self, payment, method):
        client = self.client()
        params = {
            "amount": minor_units(payment.amount),
            "currency": payment.currency.lower(),
            "customer": method.processor_customer,
            "payment_method": method.reference or self._method_of(client, method),
            "off_session": True,
            "confirm": True,
            "metadata": _metadata(payment),
            "description": _description(payment),
        }
        try:
            intent = client.v1.payment_intents.create(
                params, {"idempotency_key": f"autopay-{payment.idempotency_key}"}
            )
        except stripe.CardError as error:
            return Outcome(
                "failed",
                failure_code=error.code or "card_error",
                failure_message=error.user_message or "The card was declined.",
                detail=str(error),
            )
        except stripe.StripeError as error:
            raise ProcessorError(f"Stripe refused the charge: {error}") from error
        card = {"card_brand": method.brand, "card_last4": method.last4}
        if intent.status == "succeeded":
            return Outcome("succeeded", reference=intent.id, detail="charged off-session", **card)
        if intent.status == "processing":
            return Outcome("pending", reference=intent.id, detail="Stripe is processing it")
        return Outcome(
            "failed",
            reference=intent.id,
            failure_code=intent.status,
            failure_message="The bank asked the customer to approve this charge: they must "
            "pay on the pay page.",
            detail=f"PaymentIntent {intent.status}",
        )

    def _method_of(self, client, method):
        """The card a Checkout payment saved (Stripe names it on the PaymentIntent)."""
        try:
            intent = client.v1.payment_intents.retrieve(method.details["payment_intent"])
        except (KeyError, stripe.StripeError) as error:
            raise ProcessorError(f"Cannot find the saved card at Stripe: {error}") from error
        method.reference = intent.payment_method
        method.save(update_fields=["reference"])
        return method.reference

    # -- saving a card without paying ----------------------------------------------------
    def start_setup(self, setup, *, card=None, return_url="", cancel_url=""):
        """Checkout in setup mode: Stripe checks the card and attaches it to a Stripe
        customer (the one of the card it replaces, or a new one) for off-session charges.
        A replaced card's customer Stripe no longer has (the tenant moved to another Stripe
        account) is replaced by a new one, not reported as Stripe being unreachable."""
        client = self.client()
        metadata = _setup_metadata(setup)
        urls = (return_url, cancel_url)
        try:
            if reused := setup_customer(setup):
                try:
                    session = self._setup_session(client, setup, reused, metadata, urls, "")
                except stripe.InvalidRequestError as error:
                    if error.code != "resource_missing" or error.param != "customer":
                        raise
                    reused = ""
            if not reused:
                customer = self._new_customer(client, setup, metadata)
                session = self._setup_session(client, setup, customer, metadata, urls, "-new")
        except stripe.StripeError as error:
            raise ProcessorError(f"Stripe refused the setup Checkout Session: {error}") from error
        return _opened(session, "setup")

    def _setup_session(self, client, setup, customer, metadata, urls, key_suffix):
        return client.v1.checkout.sessions.create(
            {
                "mode": "setup",
                "payment_method_types": ["card"],
                "currency": (setup.customer.tenant.currency or "GBP").lower(),
                "customer": customer,
                "client_reference_id": setup.public_id,
                "metadata": metadata,
                "setup_intent_data": {
                    "metadata": metadata,
                    "description": f"{setup.tenant.brand_name}: card for auto-pay",
                },
                "success_url": urls[0],
                "cancel_url": urls[1],
                "expires_at": int(time.time())
                + 60 * django_settings.PAYMENTS_STRIPE_SESSION_MINUTES,
            },
            {"idempotency_key": f"setup-{setup.idempotency_key}{key_suffix}"},
        )

    def _new_customer(self, client, setup, metadata):
        params = {"name": setup.customer.name[:256], "metadata": metadata}
        if setup.consent_email:
            params["email"] = setup.consent_email
        found = client.v1.customers.create(
            params, {"idempotency_key": f"setup-customer-{setup.idempotency_key}"}
        )
        return found.id

    def refresh_setup(self, setup):
        try:
            session = self.client().v1.checkout.sessions.retrieve(
                setup.checkout_session, {"expand": ["setup_intent.payment_method"]}
            )
        except stripe.StripeError:
            return None
        session = session.to_dict()  # nested objects as dicts: any of them may be absent
        if session.get("status") == "expired":
            message = "The card form was closed before the card was saved. Nothing changed."
            return Outcome("failed", failure_code="expired", failure_message=message)
        intent = session.get("setup_intent")
        if session.get("status") != "complete" or not isinstance(intent, dict):
            return None
        method = intent.get("payment_method") or {}
        method = {"id": method} if isinstance(method, str) else method  # not expanded
        if intent.get("status") != "succeeded" or not method.get("id"):
            return None
        card = method.get("card") or {}
        return Outcome(
            "succeeded",
            reference=intent.get("id", ""),
            detail=f"SetupIntent {intent.get('id')} succeeded",
            method=SavedMethod(
                reference=method.get("id", ""),
                processor_customer=session.get("customer") or intent.get("customer") or "",
                brand=(card.get("brand") or "").title()[:20],
                last4=(card.get("last4") or "")[:4],
                details={"setup_intent": intent.get("id", "")},
            ),
        )

    def cancel_setup(self, setup):
        with contextlib.suppress(stripe.StripeError):
            self.client().v1.checkout.sessions.expire(setup.checkout_session)
        return self.refresh_setup(setup)

    # -- after payment -------------------------------------------------------------------
    def refund(self, payment, amount):
        """Stripe refunds asynchronously: its `charge.refunded` webhook reports the total.
        The key names the total after this refund, so a repeated click refunds once."""
        total = minor_units(payment.refunded_amount + amount)
        try:
            self.client().v1.refunds.create(
                {"payment_intent": payment.reference, "amount": minor_units(amount)},
                {"idempotency_key": f"refund-{payment.idempotency_key}-{total}"},
            )
        except stripe.StripeError as error:
            raise ProcessorError(f"Stripe refused the refund: {error}") from error
        return None

    def card(self, payment):
        """The card's brand and last 4 digits (Checkout does not say them in its events)."""
        try:
            intent = self.client().v1.payment_intents.retrieve(
                payment.reference, {"expand": ["latest_charge"]}
            )
            card = intent.latest_charge.payment_method_details.card
        except (stripe.StripeError, AttributeError, TypeError):
            return None
        return card.brand, card.last4

    # -- webhooks ------------------------------------------------------------------------
    @sensitive_variables("secret")
    def parse_webhook(self, body, headers):
        """The verified event; `InvalidWebhook` when the signature does not check,
        `MalformedWebhook` for a signed event the portal cannot read."""
        secret = self.settings.stripe_webhook_secret
        if not secret:
            raise InvalidWebhook("no signing secret is configured")
        try:
            stripe.WebhookSignature.verify_header(
                body,
                headers.get("Stripe-Signature", ""),
                secret,
                tolerance=stripe.Webhook.DEFAULT_TOLERANCE,
            )
        except (ValueError, stripe.SignatureVerificationError) as error:
            raise InvalidWebhook(str(error)) from error
        return read_event(body)


#: Longest unreadable body kept for staff.
KEPT_BODY = 20_000


def read_event(body):
    """The `WebhookEvent` in a verified body. Raises `MalformedWebhook` saying what is wrong
    when it is not JSON any database stores (`portal.input_checks.parse_json`), or lacks the shape
    of a Stripe event in any part the portal reads."""
    try:
        payload = parse_json(body)
    except InvalidInput as error:
        raise MalformedWebhook(str(error.detail), payload=_as_text(body)) from None
    if not isinstance(payload, dict):
        reason = "Expected a Stripe event: a JSON object with id, type and data."
        raise MalformedWebhook(reason, payload=_as_text(body))
    event_id, kind = payload.get("id"), payload.get("type")
    readable = {
        "event_id": event_id if _is_text(event_id, 255) and event_id else "",
        "type": kind if _is_text(kind, 100) else "",
    }
    if problem := _event_problem(payload):
        raise MalformedWebhook(problem, payload=payload, **readable)
    obj = payload["data"]["object"]
    metadata = obj.get("metadata") or {}
    if metadata.get("kind") == "card_setup":
        # Saving a card, not a payment: finished from Stripe's API (`CardSetup`).
        return WebhookEvent(
            id=event_id,
            type=kind,
            payload=payload,
            card_setup_id=metadata.get("card_setup") or obj.get("client_reference_id") or "",
        )
    try:
        outcome = _outcome(kind, obj, metadata)
    except (TypeError, ValueError, KeyError) as error:  # a shape _event_problem missed
        reason = f"The event's data.object cannot be read: {type(error).__name__}."
        raise MalformedWebhook(reason, payload=payload, **readable) from None
    return WebhookEvent(
        id=event_id,
        type=kind,
        payload=payload,
        payment_id=obj.get("client_reference_id") or metadata.get("payment") or "",
        reference=obj.get("payment_intent") or "",
        outcome=outcome,
    )


def _as_text(body):
    """An unreadable body as JSON any database stores, for staff to read."""
    text = body.decode("utf-8", "replace").replace("\x00", "\ufffd")
    return {"unreadable_body": text[:KEPT_BODY]}


def _is_text(value, max_length):
    return isinstance(value, str) and len(value) <= max_length


def _event_problem(payload):
    """What in `payload` the portal cannot read as a Stripe event, or ''."""
    if not (_is_text(payload.get("id"), 255) and payload.get("id")):
        return "The event's id must be text of 1 to 255 characters."
    if not _is_text(payload.get("type"), 100):
        return "The event's type must be text of at most 100 characters."
    data = payload.get("data")
    if not isinstance(data, dict):
        return "The event's data must be an object."
    obj = data.get("object")
    if not isinstance(obj, dict):
        return "The event's data.object must be an object."
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return "The event's data.object.metadata must be an object."
    texts = {
        "data.object.id": obj.get("id"),
        "data.object.client_reference_id": obj.get("client_reference_id"),
        "data.object.payment_intent": obj.get("payment_intent"),
        "data.object.customer": obj.get("customer"),
        "data.object.metadata.payment": (metadata or {}).get("payment"),
        "data.object.metadata.kind": (metadata or {}).get("kind"),
        "data.object.metadata.card_setup": (metadata or {}).get("card_setup"),
    }
    error = obj.get("last_payment_error")
    if error is not None and not isinstance(error, dict):
        return "The event's data.object.last_payment_error must be an object."
    texts |= {
        "data.object.last_payment_error.code": (error or {}).get("code"),
        "data.object.last_payment_error.message": (error or {}).get("message"),
    }
    for path, value in texts.items():
        limit = 5000 if path.endswith("message") else 255
        if value is not None and not _is_text(value, limit):
            return f"The event's {path} must be text of at most {limit} characters."
    if payload["type"] == "charge.refunded":
        refunded = obj.get("amount_refunded")
        if isinstance(refunded, bool) or not isinstance(refunded, int) or refunded < 0:
            return "The event's data.object.amount_refunded must be a whole number, 0 or more."
    return ""


def _outcome(kind, obj, metadata):
    """What a Stripe event means for the payment it names (None: nothing)."""
    paid = Outcome(
        "succeeded",
        reference=obj.get("payment_intent") or obj.get("id", ""),
        detail=f"{kind}: {obj.get('amount_total')} {obj.get('currency', '')}".strip(),
        method=_saved_method(obj),
    )
    if kind == "checkout.session.completed":
        if obj.get("payment_status") == "paid":
            return paid
        return Outcome("pending", reference=obj.get("payment_intent") or "", detail=kind)
    if kind == "checkout.session.async_payment_succeeded":
        return paid
    if kind == "checkout.session.async_payment_failed":
        message = "Your bank payment did not go through. Nothing was taken: please pay again."
        return Outcome("failed", failure_code="async_payment_failed", failure_message=message)
    if kind == "checkout.session.expired":
        message = "The checkout expired before payment. Nothing was charged."
        return Outcome("failed", failure_code="expired", failure_message=message, detail=kind)
    if kind.startswith("payment_intent.") and metadata.get("kind") == "autopay":
        if kind == "payment_intent.succeeded":
            return Outcome("succeeded", reference=obj["id"], detail=kind)
        if kind == "payment_intent.payment_failed":
            error = obj.get("last_payment_error") or {}
            return Outcome(
                "failed",
                reference=obj["id"],
                failure_code=error.get("code") or "payment_failed",
                failure_message=error.get("message") or "The card was declined.",
                detail=kind,
            )
    if kind == "charge.refunded":
        # A Charge: `amount_refunded` is the running total of its refunds.
        refunded = from_minor_units(obj.get("amount_refunded"))
        whole = "in full" if obj.get("refunded") else "in part"
        return Outcome("refunded", refunded=refunded, detail=f"refunded {whole} at Stripe")
    return None


def _line_items(payment):
    """What Checkout lists: the invoice, or each invoice's share of a payment for several
    (they add up to the payment's amount, which Stripe charges once)."""
    if payment.kind == payment.Kind.SEVERAL:
        shares = [
            (f"Invoice {a.invoice.display_number()}", a.amount)
            for a in payment.allocations.select_related("invoice__tenant")
        ]
    else:
        shares = [(f"Invoice {payment.invoice_ref}", payment.amount)]
    return [
        {
            "quantity": 1,
            "price_data": {
                "currency": payment.currency.lower(),
                "unit_amount": minor_units(amount),
                "product_data": {"name": name},
            },
        }
        for name, amount in shares
    ]


def _saved_method(session):
    """A card Checkout saved for later (only when the portal asked it to, with consent)."""
    if not session.get("customer") or not session.get("payment_intent"):
        return None
    return SavedMethod(
        processor_customer=session["customer"],
        details={"payment_intent": session["payment_intent"]},
    )


def _opened(session, mode=""):
    """A Checkout Session created: pending, the customer goes to its page."""
    what = f"{session.id} ({mode})" if mode else session.id
    return Outcome(
        "pending",
        checkout_session=session.id,
        checkout_url=session.url,
        detail=f"Checkout Session {what} created",
    )


def _setup_metadata(setup):
    return {"card_setup": setup.public_id, "kind": "card_setup", "tenant": setup.tenant.slug}


def setup_customer(setup):
    """The Stripe customer of the card a setup replaces, so the new card joins it."""
    current = setup.customer.saved_payment_methods.active().filter(processor="stripe").first()
    return current.processor_customer if current is not None else ""


def _metadata(payment):
    return {"payment": payment.public_id, "kind": payment.kind, "tenant": payment.tenant.slug}


def _description(payment):
    invoices = "invoices" if payment.kind == payment.Kind.SEVERAL else "invoice"
    return f"{payment.tenant.brand_name}: {invoices} {payment.invoice_ref}"


def minor_units(amount):
    """Pence or cents (every currency the portal offers has two decimals)."""
    return int((Decimal(amount) * 100).to_integral_value())


def from_minor_units(value):
    return (Decimal(int(value or 0)) / 100).quantize(Decimal("0.01"))
