"""The invoice renderer's input: plain frozen dataclasses, no Django.

The billing app maps its models onto an ``InvoiceDocument`` and hands it to
``render_invoice_pdf``.  All arithmetic lives here so the PDF, the API and any
e-mail agree to the penny: each line's net amount is rounded once, its tax is
rounded once from that net, and every total is a plain sum of those rounded
figures -- so the totals always equal the sum of the lines the customer sees.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import cached_property
from types import MappingProxyType

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
_HEX_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")
_CURRENCY_CODE = re.compile(r"[A-Z]{3}")


def round_money(value: Decimal) -> Decimal:
    """Round to whole cents, half away from zero (what customers expect from a calculator)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _require_decimal(owner: object, *names: str) -> None:
    # A float here would silently turn 0.1 into 0.1000000000000000055...
    for name in names:
        if not isinstance(getattr(owner, name), Decimal):
            raise TypeError(f"{type(owner).__name__}.{name} must be a Decimal")


class Category(enum.StrEnum):
    RECURRING = "recurring"
    USAGE = "usage"
    ONE_OFF = "one_off"
    CREDIT = "credit"


@dataclass(frozen=True)
class Period:
    """An inclusive date range."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"period ends ({self.end}) before it starts ({self.start})")


@dataclass(frozen=True)
class Branding:
    """How the partner (tenant) presents itself on its invoices."""

    display_name: str
    accent_colour: str = "#1F4E79"  # "#RRGGBB"
    logo: bytes | None = None  # PNG or JPEG
    address_lines: tuple[str, ...] = ()
    support_email: str | None = None
    support_phone: str | None = None

    def __post_init__(self) -> None:
        if not _HEX_COLOUR.fullmatch(self.accent_colour):
            raise ValueError(f"accent_colour must look like #1F4E79, got {self.accent_colour!r}")
        if self.logo is not None and not self.logo.startswith(
            (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
        ):
            raise ValueError("logo must be PNG or JPEG bytes")
        object.__setattr__(self, "address_lines", tuple(self.address_lines))


@dataclass(frozen=True)
class Customer:
    billing_name: str
    account_reference: str  # "" when there is none: the PDF leaves the row out
    address_lines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "address_lines", tuple(self.address_lines))


@dataclass(frozen=True)
class Payment:
    """How to pay.  ``pay_link`` is printed with a QR code; the caller decides
    whether to offer one (e.g. only when the tenant has online payments)."""

    instructions: str  # free text, may span lines: bank details, references...
    pay_link: str | None = None


@dataclass(frozen=True)
class InvoiceLine:
    """One charge.  Credits carry a negative unit price (or quantity)."""

    description: str
    product_name: str
    sku: str
    category: Category
    quantity: Decimal
    unit_price: Decimal
    tax_rate: Decimal  # percent: Decimal("20") is 20 % VAT
    period: Period | None = None
    site_name: str | None = None

    def __post_init__(self) -> None:
        _require_decimal(self, "quantity", "unit_price", "tax_rate")
        object.__setattr__(self, "category", Category(self.category))
        if self.category is Category.CREDIT and self.net > 0:
            raise ValueError(f"credit line {self.description!r} must not be positive")

    @cached_property
    def net(self) -> Decimal:
        return round_money(self.quantity * self.unit_price)

    @cached_property
    def tax(self) -> Decimal:
        return round_money(self.net * self.tax_rate / 100)


@dataclass(frozen=True)
class TaxBand:
    """Lines sharing one tax rate, for the "VAT at 20 % on £X" rows."""

    rate: Decimal
    net: Decimal
    tax: Decimal


@dataclass(frozen=True)
class InvoiceDocument:
    """Everything printed on one invoice; totals are computed, never passed in."""

    branding: Branding
    customer: Customer
    invoice_number: str  # already allocated by the caller per the tenant's scheme
    invoice_date: date
    due_date: date
    billing_period: Period
    currency: str  # ISO 4217, e.g. "GBP"
    locale: str  # e.g. "en_GB", "en_US", "de_DE"
    lines: tuple[InvoiceLine, ...]
    payment: Payment
    amount_paid: Decimal = ZERO
    tax_label: str = "Tax"  # "VAT", "GST", "MwSt." ...
    version_label: str | None = None  # e.g. "Revised v2"

    def __post_init__(self) -> None:
        _require_decimal(self, "amount_paid")
        if self.amount_paid != round_money(self.amount_paid):
            raise ValueError(f"amount_paid must be whole cents, got {self.amount_paid}")
        if not _CURRENCY_CODE.fullmatch(self.currency):
            raise ValueError(f"currency must be an ISO 4217 code, got {self.currency!r}")
        object.__setattr__(self, "lines", tuple(self.lines))

    @cached_property
    def subtotals(self) -> Mapping[Category, Decimal]:
        """Net total per category, every category present (zero when unused)."""
        totals = dict.fromkeys(Category, ZERO)
        for line in self.lines:
            totals[line.category] += line.net
        return MappingProxyType(totals)

    @cached_property
    def tax_bands(self) -> tuple[TaxBand, ...]:
        """Per-rate sums of the lines' (already rounded) net and tax, lowest rate first."""
        bands: dict[Decimal, tuple[Decimal, Decimal]] = {}
        for line in self.lines:
            net, tax = bands.get(line.tax_rate, (ZERO, ZERO))
            bands[line.tax_rate] = (net + line.net, tax + line.tax)
        return tuple(TaxBand(rate, net, tax) for rate, (net, tax) in sorted(bands.items()))

    @cached_property
    def net_total(self) -> Decimal:
        return sum((line.net for line in self.lines), ZERO)

    @cached_property
    def tax_total(self) -> Decimal:
        return sum((line.tax for line in self.lines), ZERO)

    @property
    def total_due(self) -> Decimal:
        return self.net_total + self.tax_total

    @property
    def amount_due(self) -> Decimal:
        return self.total_due - self.amount_paid
