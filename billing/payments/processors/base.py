"""The one interface every payment processor implements (like healthchecks' transports).

A processor turns a `Payment` the portal created into an `Outcome`; it never decides the
amount (the payment carries what the server computed) and never moves the payment itself:
the caller applies the outcome, so every path records status moves the same way.
"""

from dataclasses import dataclass, field
from decimal import Decimal


class ProcessorError(Exception):
    """The processor could not be asked (network, configuration): nothing was charged."""


class InvalidWebhook(Exception):
    """A webhook that is not provably from the processor (bad or missing signature)."""


class MalformedWebhook(Exception):
    """A webhook from the processor (its signature checks) that the portal cannot read:
    kept for staff with `reason`. `payload` is what can be stored of it (JSON any database
    takes); `event_id` and `type` are the event's own when they were readable."""

    def __init__(self, reason, *, payload, event_id="", type=""):
        super().__init__(reason)
        self.reason, self.payload, self.event_id, self.type = reason, payload, event_id, type


@dataclass(frozen=True)
class SavedMethod:
    """What the processor lets the portal keep to charge a card again later."""

    reference: str = ""  # the processor's payment method token
    processor_customer: str = ""
    brand: str = ""
    last4: str = ""
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    status: str  # a Payment.Status: pending, succeeded, failed or refunded
    reference: str = ""  # the processor's id of the charge
    checkout_session: str = ""
    checkout_url: str = ""  # where the customer completes the payment (hosted checkout)
    failure_code: str = ""
    failure_message: str = ""  # shown to the customer
    card_brand: str = ""
    card_last4: str = ""
    detail: str = ""  # for the payment's history
    method: SavedMethod | None = None
    refunded: Decimal | None = None  # a refund: how much is refunded so far, in all

    def fields(self):
        names = (
            "reference",
            "checkout_session",
            "checkout_url",
            "failure_code",
            "failure_message",
            "card_brand",
            "card_last4",
        )
        return {name: getattr(self, name) for name in names if getattr(self, name)}


@dataclass(frozen=True)
class WebhookEvent:
    """A verified processor event, reduced to what the portal acts on."""

    id: str
    type: str
    payload: dict
    payment_id: str = ""  # the Payment's public_id, from the metadata the portal sent
    reference: str = ""  # or the processor's charge id, for events about an earlier charge
    outcome: Outcome | None = None  # None: nothing to do for this type
    card_setup_id: str = ""  # a card saved without paying: the CardSetup's public_id


@dataclass(frozen=True)
class CardDetails:
    """A card typed into the built-in form (the test processor only)."""

    number: str
    exp_month: int
    exp_year: int
    cvc: str
    name: str = ""


class Processor:
    name = ""
    #: The pay page shows the portal's own card form (else the processor hosts checkout).
    collects_card = False
    takes_real_money = True

    def __init__(self, settings):
        self.settings = settings

    def unavailable_reason(self):
        """Why this processor cannot take payments now (for staff), or ''."""
        return ""

    def start(self, payment, *, card=None, return_url="", cancel_url=""):
        """Ask for the payment: an Outcome (succeeded/failed at once, or pending with a
        `checkout_url` to send the customer to)."""
        raise NotImplementedError

    def charge_saved(self, payment, method):
        """Charge a saved method without the customer present (auto-pay)."""
        raise NotImplementedError

    def cancel(self, payment):
        """Close a hosted checkout (the customer left it, or it outlived its expiry); answers
        how the payment then stands, as `refresh` does."""
        return None

    def refresh(self, payment):
        """Ask the processor's API how a pending hosted checkout stands: an Outcome once it
        is paid or expired, else None. Normally the webhook says so first."""
        return None

    def refund(self, payment, amount):
        """Refund `amount` of a succeeded payment: an Outcome with the refunded total when
        the processor answers at once, else None (its webhook reports it)."""
        raise ProcessorError(f"Refunds through the {self.name} processor are not supported.")

    def card(self, payment):
        """`(brand, last 4 digits)` of the card that paid, when the outcome did not say."""
        return None

    def parse_webhook(self, body, headers):
        """Verify and read a webhook delivery; raises InvalidWebhook."""
        raise InvalidWebhook(f"{self.name} sends no webhooks")

    # -- saving a card without paying (`billing.payments.card_setup`) --------------------
    def start_setup(self, setup, *, card=None, return_url="", cancel_url=""):
        """Check a card for later charges without charging it: an Outcome, succeeded with
        the `method` to keep, failed, or pending with a `checkout_url` (hosted form)."""
        raise ProcessorError(f"The {self.name} processor cannot save a card on its own.")

    def refresh_setup(self, setup):
        """How a pending hosted setup stands, from the processor's API: an Outcome once it
        is complete or expired, else None."""
        return None

    def cancel_setup(self, setup):
        """Close a hosted setup the customer backed out of; answers as `refresh_setup`."""
        return None
