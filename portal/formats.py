"""Locale-aware formatting of money, quantities, percentages and dates, for every page and
document the portal shows customers (PDF invoices, pay pages, receipts).

A small table-driven stand-in for Babel covering the locales partners bill in.
Each locale is one row of conventions; an unknown locale falls back to its
language ("de_AT" -> "de_DE") and then to en_GB, so a new tenant setting never
breaks a render.  Amounts must already be rounded by the caller (see
``billing.pdf.model.round_money``); this module only formats, it never rounds money
that is about to be totalled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

NBSP = "\u00a0"


@dataclass(frozen=True)
class LocaleConventions:
    group: str  # thousands separator
    decimal: str
    money: str  # how the currency symbol attaches: one of the *_SYMBOL patterns below
    percent: str
    date: str  # str.format fields: d, dd, mm, mon, y
    date_no_year: str  # start of a compact range: the "1 Jan" of "1 Jan - 31 Jan 2025"


SYMBOL_FIRST = "{symbol}{number}"  # £1,234.56
SYMBOL_FIRST_SPACED = "{symbol}" + NBSP + "{number}"  # € 1.234,56
SYMBOL_LAST = "{number}" + NBSP + "{symbol}"  # 1.234,56 €

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_EN_GB = LocaleConventions(",", ".", SYMBOL_FIRST, "{number}%", "{d} {mon} {y}", "{d} {mon}")
_EN_US = LocaleConventions(",", ".", SYMBOL_FIRST, "{number}%", "{mon} {d}, {y}", "{mon} {d}")
_EN_AU = LocaleConventions(",", ".", SYMBOL_FIRST, "{number}%", "{dd}/{mm}/{y}", "{dd}/{mm}")
_DE_DE = LocaleConventions(
    ".", ",", SYMBOL_LAST, "{number}" + NBSP + "%", "{dd}.{mm}.{y}", "{dd}.{mm}."
)
_FR_FR = LocaleConventions(
    "\u202f", ",", SYMBOL_LAST, "{number}" + NBSP + "%", "{dd}/{mm}/{y}", "{dd}/{mm}"
)
_NL_NL = LocaleConventions(".", ",", SYMBOL_FIRST_SPACED, "{number}%", "{dd}-{mm}-{y}", "{dd}-{mm}")

LOCALES: dict[str, LocaleConventions] = {
    "en_GB": _EN_GB,
    "en_IE": _EN_GB,
    "en_AU": _EN_AU,
    "en_US": _EN_US,
    "en_CA": _EN_US,
    "de_DE": _DE_DE,
    "de_AT": _DE_DE,
    "fr_FR": _FR_FR,
    "nl_NL": _NL_NL,
}
_LANGUAGE_DEFAULTS = {"en": "en_GB", "de": "de_DE", "fr": "fr_FR", "nl": "nl_NL"}

# Only currencies whose symbol is unambiguous to the customer; anything else is
# written with its ISO code after the number ("1,234.56 CHF").
CURRENCY_SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$", "AUD": "A$", "CAD": "CA$", "NZD": "NZ$"}


def conventions(locale: str) -> LocaleConventions:
    """Conventions for ``locale`` ("en_GB", "de-DE", "de"), never raising."""
    key = locale.replace("-", "_")
    if key in LOCALES:
        return LOCALES[key]
    return LOCALES[_LANGUAGE_DEFAULTS.get(key.split("_")[0].lower(), "en_GB")]


def _digits(value: Decimal, places: int | None, conv: LocaleConventions) -> str:
    """Group and punctuate ``abs(value)``; ``places=None`` keeps every significant decimal."""
    if places is not None:
        value = value.quantize(Decimal(1).scaleb(-places))
    whole, _, fraction = format(abs(value), "f").partition(".")
    if places is None:
        fraction = fraction.rstrip("0")
    number = f"{int(whole):,}".replace(",", conv.group)
    return number + conv.decimal + fraction if fraction else number


def _signed(value: Decimal, text: str) -> str:
    # "-0.00" must never appear on an invoice, hence the comparison, not is_signed().
    return "-" + text if value < 0 else text


def format_money(amount: Decimal, currency: str, locale: str, *, min_places: int = 2) -> str:
    """Format an amount: ``£1,234.56``, ``$1,234.56``, ``1.234,56 €``, ``1,234.56 XYZ``.

    At least two decimals (``min_places``: a chart's axis says ``£2,500``); further
    significant ones are kept, because unit prices such as £0.0125 per minute must show
    exactly.  The space before a trailing symbol or code is a no-break space, as in CLDR.
    """
    conv = conventions(locale)
    exponent = amount.normalize().as_tuple().exponent
    if not isinstance(exponent, int):  # "n", "N" or "F": NaN or infinity
        raise ValueError(f"not an amount of money: {amount}")
    places = max(min_places, -exponent)
    number = _digits(amount, places, conv)
    symbol = CURRENCY_SYMBOLS.get(currency)
    text = conv.money.format(symbol=symbol, number=number) if symbol else number + NBSP + currency
    return _signed(amount, text)


def format_quantity(quantity: Decimal, locale: str) -> str:
    """Quantity without trailing zeros: ``3``, ``1.5``, ``1,234.25`` / ``1.234,25``."""
    return _signed(quantity, _digits(quantity, None, conventions(locale)))


def format_percent(rate: Decimal, locale: str) -> str:
    conv = conventions(locale)
    return conv.percent.format(number=_signed(rate, _digits(rate, None, conv)))


def format_date(day: date, locale: str, *, with_year: bool = True) -> str:
    conv = conventions(locale)
    pattern = conv.date if with_year else conv.date_no_year
    return pattern.format(
        d=day.day,
        dd=f"{day.day:02d}",
        mm=f"{day.month:02d}",
        mon=_MONTHS[day.month - 1],
        y=day.year,
    )


def format_period(start: date, end: date, locale: str) -> str:
    """Compact inclusive range joined by an en dash: ``1 Jan \u2013 31 Jan 2025``.

    The year is written once unless the range spans two years."""
    if start == end:
        return format_date(start, locale)
    same_year = start.year == end.year
    return f"{format_date(start, locale, with_year=not same_year)} – {format_date(end, locale)}"
