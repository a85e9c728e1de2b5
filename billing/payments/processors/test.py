"""The built-in test processor: a card form for demos and tests; no money moves.

Only the documented cards are accepted (any expiry in the future, any three-digit CVC):

    4242 4242 4242 4242   succeeds
    4000 0000 0000 0002   declined
    4000 0000 0000 9995   declined: insufficient funds

It is refused on servers without `PAYMENTS_TEST_PROCESSOR=true`, so a production tenant
left on the default cannot mark real invoices paid with a demo card.
"""

import secrets

from django.conf import settings as django_settings

from billing.payments.processors.base import Outcome, Processor, SavedMethod

SUCCESS = "4242424242424242"
DECLINE = "4000000000000002"
INSUFFICIENT_FUNDS = "4000000000009995"

#: Card number -> (failure code, message for the customer); None succeeds.
TEST_CARDS = {
    SUCCESS: None,
    DECLINE: (
        "card_declined",
        "Your card was declined. Nothing was charged. Try another card, or ask your bank why.",
    ),
    INSUFFICIENT_FUNDS: (
        "insufficient_funds",
        "Your card has insufficient funds. Nothing was charged. Try another card.",
    ),
}
UNKNOWN_CARD = (
    "unknown_test_card",
    "This is a test payment page: use one of the test cards listed below the form.",
)


class TestProcessor(Processor):
    name = "test"
    collects_card = True
    takes_real_money = False

    def unavailable_reason(self):
        if not django_settings.PAYMENTS_TEST_PROCESSOR:
            return (
                "The test processor is switched off on this server (PAYMENTS_TEST_PROCESSOR): "
                "choose Stripe in the payment settings."
            )
        return ""

    def start(self, payment, *, card=None, return_url="", cancel_url=""):
        return self._charge(payment, card.number, saving=payment.save_method)

    def charge_saved(self, payment, method):
        number = next((n for n in TEST_CARDS if n.endswith(method.last4)), "")
        return self._charge(payment, number, saving=False)

    def start_setup(self, setup, *, card=None, return_url="", cancel_url=""):
        number = card.number if card else ""
        if failure := TEST_CARDS.get(number, UNKNOWN_CARD):
            code, message = failure
            return Outcome("failed", failure_code=code, failure_message=message, detail=code)
        saved = SavedMethod(
            f"test_pm_{number[-4:]}_{secrets.token_hex(8)}", brand=brand(number), last4=number[-4:]
        )
        return Outcome(
            "succeeded",
            reference=f"test_seti_{secrets.token_hex(12)}",
            detail="test card checked and saved",
            method=saved,
        )

    def refund(self, payment, amount):
        total = payment.refunded_amount + amount
        return Outcome("refunded", refunded=total, detail=f"{amount} refunded (test processor)")

    def _charge(self, payment, number, saving):
        card = {"card_brand": brand(number), "card_last4": number[-4:]}
        failure = TEST_CARDS.get(number, UNKNOWN_CARD)
        if failure:
            code, message = failure
            return Outcome(
                "failed", failure_code=code, failure_message=message, detail=code, **card
            )
        method = None
        if saving:
            token = f"test_pm_{number[-4:]}_{secrets.token_hex(8)}"
            method = SavedMethod(token, brand=card["card_brand"], last4=card["card_last4"])
        return Outcome(
            "succeeded",
            reference=f"test_ch_{secrets.token_hex(12)}",
            detail="test card accepted",
            method=method,
            **card,
        )


def brand(number):
    if number.startswith("4"):
        return "Visa"
    if number[:2] in {"51", "52", "53", "54", "55"} or number[:2] == "22":
        return "Mastercard"
    if number[:2] in {"34", "37"}:
        return "Amex"
    return "Card"
