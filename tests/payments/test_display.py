"""Whatever accent colour a partner picks, text on pay pages stays readable (WCAG AA)."""

import pytest

from billing.payments import display
from tests import factories


@pytest.mark.parametrize("accent", ["#0B6E4F", "#FFD400", "#FFFFFF", "#777777", "#000000"])
def test_brand_colours_are_readable(db, accent):
    tenant = factories.tenant("acme")
    tenant.accent_colour = accent
    brand = display.brand(tenant)
    assert display.contrast(brand.accent, brand.on_accent) >= display.READABLE
    assert display.contrast(brand.accent_ink, display.WHITE) >= display.READABLE


def test_money_and_dates_follow_the_tenants_locale(db):
    from datetime import date
    from decimal import Decimal

    tenant = factories.tenant("acme")
    tenant.locale = "de_DE"
    assert display.money(Decimal("1234.5"), "EUR", tenant) == "1.234,50\u00a0€"
    assert display.day(date(2026, 3, 9), tenant) == "09.03.2026"
