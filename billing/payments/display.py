"""How a tenant looks to its customers on pay pages and in emails: branding with readable
colours, and money and dates in the tenant's locale."""

from dataclasses import dataclass
from decimal import Decimal

from django.urls import reverse

from billing.invoicing import document_builder
from billing.invoicing.models import InvoicingSettings
from portal.formats import format_date, format_money, format_quantity

WHITE, BLACK = "#FFFFFF", "#000000"
#: WCAG AA for normal text.
READABLE = 4.5


@dataclass(frozen=True)
class Brand:
    name: str
    accent: str  # buttons and bars
    on_accent: str  # text on the accent colour
    accent_ink: str  # the accent, darkened if needed, for links and text on white
    logo_url: str = ""
    address_lines: tuple = ()
    support_email: str = ""
    support_phone: str = ""


NEUTRAL = Brand("Invoice payment", "#1F4E79", WHITE, "#1F4E79")


def brand(tenant):
    if tenant is None:
        return NEUTRAL
    accent = tenant.accent_colour.upper()
    return Brand(
        name=tenant.brand_name,
        accent=accent,
        on_accent=max((WHITE, BLACK), key=lambda text: contrast(accent, text)),
        accent_ink=readable_on_white(accent),
        logo_url=reverse("payments:logo", args=[tenant.slug]) if tenant.logo else "",
        address_lines=tuple(tenant.address_lines()),
        support_email=tenant.support_email,
        support_phone=tenant.support_phone,
    )


def money(amount, currency, tenant):
    return format_money(Decimal(amount), currency or tenant.currency, tenant.locale)


def figures(invoice):
    """The invoice's lines and totals, exactly as its PDF prints them."""
    return document_builder.figures(invoice, InvoicingSettings.for_tenant(invoice.tenant))


def invoice_total(invoice, figures):
    """The invoice's total and the tax in it, for receipts: "£478.80 (including VAT £79.80)"."""
    total = money(figures.total, invoice.currency, invoice.tenant)
    tax = money(figures.tax, invoice.currency, invoice.tenant)
    return f"{total} (including {figures.tax_label} {tax})"


def quantity(value, tenant):
    """A line's quantity as written on its invoice: "26", "2.5" (no trailing zeros)."""
    return format_quantity(Decimal(value), tenant.locale)


def day(value, tenant):
    return format_date(value, tenant.locale) if value else ""


def moment(value, tenant):
    """An instant as the tenant's customers read it: "12 Mar 2026, 14:05"."""
    local = value.astimezone(tenant.tz)
    return f"{format_date(local.date(), tenant.locale)}, {local:%H:%M}"


# -- colour contrast (WCAG 2.x) ---------------------------------------------------------------


def _channels(colour):
    return [int(colour[i : i + 2], 16) for i in (1, 3, 5)]


def _luminance(colour):
    def linear(channel):
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = map(linear, _channels(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a, b):
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def readable_on_white(colour):
    """`colour`, darkened in steps until text in it is readable on white."""
    channels = _channels(colour)
    while contrast("#{:02X}{:02X}{:02X}".format(*channels), WHITE) < READABLE:
        channels = [int(c * 0.9) for c in channels]
    return "#{:02X}{:02X}{:02X}".format(*channels)
