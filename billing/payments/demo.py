"""Demo step: payments with the test processor, and pay buttons written into Halo."""

from billing.payments.models import PaymentSettings
from billing.payments.processors.test import DECLINE, INSUFFICIENT_FUNDS, SUCCESS
from portal.demo import register


@register
def payments(context):
    settings = PaymentSettings.for_tenant(context.tenant)
    if not settings.halo_pay_buttons:
        settings.halo_pay_buttons = True
        settings.save(update_fields=["halo_pay_buttons"])
    context.notes.append(
        f"Payments: test processor; Halo email link {settings.pay_link_template()}"
    )
    cards = ", ".join(
        f"{' '.join(n[i : i + 4] for i in range(0, 16, 4))} {what}"
        for n, what in ((SUCCESS, "pays"), (DECLINE, "declines"), (INSUFFICIENT_FUNDS, "no funds"))
    )
    context.notes.append(f"Test cards: {cards} (any future expiry, any CVC)")
