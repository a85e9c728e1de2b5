"""Charts in the partner's console: the figures worked out on the server, drawn by Chart.js.

A builder (one per chart, in the app that owns the data: `BUILDERS`) reads aggregates in a
fixed handful of queries and answers `Chart`s. A chart carries its figures already
formatted in the tenant's locale and currency (`portal.formats`), including the value
axis's ticks, so the browser never formats money: `portal/static/portal/charts.js` only
draws what the page's `json_script` element holds (the CSP allows no inline script), and
the same figures are in a visually hidden table for screen readers and in the canvas's
accessible summary. Templates show one with `{% load charts %}{% chart "ageing" tenant %}`.

Chart.js 4 is vendored under `portal/static/portal/vendor/chartjs/` (MIT, its licence beside
it), served by WhiteNoise like every static file: no CDN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from django.utils import timezone
from django.utils.module_loading import import_string

from portal.formats import format_money, format_quantity

#: Every chart the console shows, by name: dotted paths of builders `(tenant, **options)`
#: answering a list of `Chart`s (several when figures come in several currencies).
BUILDERS = {
    "licences": "integrations.billing_sync.charts.licences",
    "payments": "billing.payments.charts.collected",
    "ageing": "billing.charts.ageing",
}

#: Okabe and Ito's palette: told apart with every common colour blindness, and readable
#: on the admin's light and dark themes.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
)
#: Steps of a value axis, times a power of ten.
NICE = (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10))
#: The ageing buckets from fine to alarming.
SEVERITY = ("#009E73", "#F0E442", "#E69F00", "#D55E00", "#A3122A")

Number = Decimal | int
CENT = Decimal("0.01")


def build(name: str, tenant, **options) -> list[Chart]:
    return import_string(BUILDERS[name])(tenant, **options)


# -- time ------------------------------------------------------------------------------------


def months_back(tenant, count: int, now: datetime | None = None) -> list[date]:
    """The first days of the last `count` months in the tenant's time zone, oldest first,
    this month last."""
    today = timezone.localdate(now or timezone.now(), tenant.tz)
    year, month = today.year, today.month
    months = []
    for _ in range(count):
        months.append(date(year, month, 1))
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return months[::-1]


def start_of(day: date, tenant) -> datetime:
    """Midnight at the start of `day` in the tenant's time zone."""
    return datetime.combine(day, time.min, tzinfo=tenant.tz)


def month_of(value: date | datetime, tenant) -> date:
    """The first day of the month `value` falls in (database month truncations answer a
    date or an aware datetime, depending on the backend)."""
    if isinstance(value, datetime):
        value = timezone.localtime(value, tenant.tz).date() if timezone.is_aware(value) else value
        value = value.date() if isinstance(value, datetime) else value
    return value.replace(day=1)


def month_label(month: date) -> str:
    """'Jan 2026': the same in every locale the portal formats (portal.formats' months)."""
    return f"{month:%b %Y}"


# -- the chart -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[Number]
    colour: str = ""
    #: One colour per value (bars coloured by what they stand for), instead of `colour`.
    colours: Sequence[str] = ()


@dataclass
class Chart:
    """One chart: categories along the bottom (months, ageing buckets), one or more series
    of values over them, and how a value reads (`format_value`)."""

    key: str  # unique on a page: the element ids derive from it
    title: str
    kind: str  # Chart.js type: "line" or "bar"
    categories: Sequence[str]
    series: Sequence[Series]
    format_value: Callable[[Number], str]
    format_tick: Callable[[Number], str] | None = None  # the value axis; else format_value
    category_heading: str = "Month"
    summary: str = ""  # one sentence with the figures that matter, for the canvas's label
    empty: str = ""  # said instead of a chart when there is nothing to draw
    stacked: bool = False
    #: Where each category leads when clicked (an ageing bucket's filtered list), or ().
    links: Sequence[str] = ()
    total_label: str = ""  # a table column adding the series up, e.g. "Total"
    #: Show every category's label (ageing buckets); months may skip some on narrow charts.
    every_label: bool = False
    #: The table's columns when it shows more than is drawn (collected and refunded beside
    #: the net that is drawn); else `series`.
    table_series: Sequence[Series] = ()
    palette: Sequence[str] = field(default=PALETTE)

    @property
    def data_id(self) -> str:
        return f"chart-{self.key}-data"

    @property
    def has_data(self) -> bool:
        return any(value for series in self.series for value in series.values)

    @property
    def top(self) -> Number:
        if self.stacked:
            return max((sum(column) for column in zip(*self._values(), strict=True)), default=0)
        return max((max(values, default=0) for values in self._values()), default=0)

    def _values(self) -> list[Sequence[Number]]:
        return [series.values for series in self.series]

    def ticks(self) -> list[tuple[Number, str]]:
        """The value axis: 0 up to a round number at or above the highest value, in round
        steps (1, 2, 2.5 or 5 times a power of ten; whole steps for counts)."""
        top = self.top
        steps = 5
        if top <= 0:
            step: Number = 1
        else:
            raw = Decimal(top) / steps
            power = Decimal(10) ** math.floor(math.log10(raw))
            step = next(m * power for m in NICE if m * power >= raw)
            if all(isinstance(v, int) for values in self._values() for v in values):
                step = max(math.ceil(step), 1)
        count = math.ceil(Decimal(top) / Decimal(step)) if top > 0 else steps
        label = self.format_tick or self.format_value
        return [(_normal(step * i), label(_normal(step * i))) for i in range(count + 1)]

    @property
    def columns(self) -> Sequence[Series]:
        return self.table_series or self.series

    def rows(self) -> list[tuple[str, list[str], str]]:
        """The table: each category's label, its formatted values, and their total."""
        rows = []
        for index, category in enumerate(self.categories):
            values = [series.values[index] for series in self.columns]
            total = self.format_value(sum(values)) if self.total_label else ""
            rows.append((category, [self.format_value(v) for v in values], total))
        return rows

    def data(self) -> dict[str, Any]:
        """What charts.js draws (fed through `json_script`): plain numbers to plot, and the
        texts to show for them."""
        return {
            "kind": self.kind,
            "stacked": self.stacked,
            "everyLabel": self.every_label,
            "categories": list(self.categories),
            "links": list(self.links),
            "ticks": [{"value": float(value), "label": label} for value, label in self.ticks()],
            "series": [
                {
                    "name": series.name,
                    "colour": series.colour or self.palette[index % len(self.palette)],
                    "colours": list(series.colours),
                    "values": [float(value) for value in series.values],
                    "labels": [self.format_value(value) for value in series.values],
                }
                for index, series in enumerate(self.series)
            ],
        }


def _normal(value: Number) -> Number:
    """2.50 -> 2.5, 100.0 -> 100: ticks read as round numbers."""
    if isinstance(value, Decimal):
        value = value.normalize()
        return value.quantize(Decimal(1)) if value == value.to_integral() else value
    return value


# -- how values read -------------------------------------------------------------------------


def money_format(currency: str, tenant) -> Callable[[Number], str]:
    """Amounts as the tenant's customers read them: '£1,234.50', '1.234,50 €'."""
    return lambda value: format_money(Decimal(value).quantize(CENT), currency, tenant.locale)


def money_tick_format(currency: str, tenant) -> Callable[[Number], str]:
    """Axis ticks in whole units where they are whole ('£2,500', '2.500 €')."""

    def tick(value: Number) -> str:
        amount = Decimal(value)
        whole = amount == amount.to_integral_value()
        places = 0 if whole else 2
        return format_money(amount.quantize(CENT), currency, tenant.locale, min_places=places)

    return tick


def count_format(tenant) -> Callable[[Number], str]:
    """Counts with the tenant's digit grouping: '1,234' or '1.234'."""
    return lambda value: format_quantity(Decimal(value), tenant.locale)
