"""Receivables ageing as a chart (`portal.charts`): what open invoices still owe, by how far
past their due date they are, one chart per currency; each bar opens the invoice list
filtered to its bucket."""

from decimal import Decimal

from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from billing.models import AGEING_BUCKETS, Invoice
from portal import charts


def ageing(tenant, today=None):
    today = today or timezone.localdate(timezone=tenant.tz)
    by_currency = {}
    for currency, buckets in Invoice.objects.filter(tenant=tenant).ageing(today).items():
        merged = by_currency.setdefault(
            currency or tenant.currency, [(Decimal(0), 0)] * len(AGEING_BUCKETS)
        )
        by_currency[currency or tenant.currency] = [
            (a + b, n + m) for (a, n), (b, m) in zip(merged, buckets, strict=True)
        ]
    by_currency.setdefault(tenant.currency, [(Decimal(0), 0)] * len(AGEING_BUCKETS))
    invoices = reverse("admin:billing_invoice_changelist")
    several = len(by_currency) > 1
    currencies = sorted(by_currency, key=lambda code: (code != tenant.currency, code))
    return [
        _chart(tenant, currency, by_currency[currency], invoices, several)
        for currency in currencies
    ]


def _chart(tenant, currency, buckets, invoices_url, several):
    money = charts.money_format(currency, tenant)
    amounts = [amount for amount, _count in buckets]
    owed, overdue = sum(amounts), sum(amounts[1:])
    open_invoices = sum(count for _amount, count in buckets)
    worst = amounts[-1]
    summary = (
        f"{money(owed)} owed on {open_invoices} open invoice(s); {money(overdue)} of it "
        f"overdue, {money(worst)} by more than 90 days."
    )
    # With several currencies, the list's currency filter too: a bar opens what it counts.
    links = [
        f"{invoices_url}?"
        + urlencode({"ageing": bucket.key} | ({"currency__exact": currency} if several else {}))
        for bucket in AGEING_BUCKETS
    ]
    return charts.Chart(
        key=f"ageing-{currency.lower()}",
        title="Receivables ageing" + (f" ({currency})" if several else ""),
        kind="bar",
        categories=[bucket.label for bucket in AGEING_BUCKETS],
        category_heading="Days overdue",
        series=[charts.Series("Amount due", amounts, colours=charts.SEVERITY)],
        format_value=money,
        format_tick=charts.money_tick_format(currency, tenant),
        summary=summary,
        empty="Nothing is owed: no open invoice has an amount due.",
        links=links,
        every_label=True,
    )
