"""Payments collected per month as a chart (`portal.charts`): what customers paid through
the portal in each of the last twelve months, less what was refunded of it, per currency."""

from decimal import Decimal

from billing.payments.models import Payment
from portal import charts

MONTHS = 12


def collected(tenant, now=None):
    months = charts.months_back(tenant, MONTHS, now)
    rows = Payment.objects.filter(tenant=tenant).collected_by_month(
        charts.start_of(months[0], tenant), tenant.tz
    )
    index = {month: i for i, month in enumerate(months)}
    by_currency = {}
    for row in rows:
        month = charts.month_of(row["month"], tenant)
        if month not in index:  # a payment dated ahead of this server's clock
            continue
        currency = row["currency"] or tenant.currency
        collected_, refunded = by_currency.setdefault(
            currency, ([Decimal(0)] * MONTHS, [Decimal(0)] * MONTHS)
        )
        collected_[index[month]] += row["collected"]
        refunded[index[month]] += row["refunded"]
    by_currency.setdefault(tenant.currency, ([Decimal(0)] * MONTHS, [Decimal(0)] * MONTHS))
    several = len(by_currency) > 1
    currencies = sorted(by_currency, key=lambda code: (code != tenant.currency, code))
    return [
        _chart(tenant, currency, months, *by_currency[currency], several) for currency in currencies
    ]


def _chart(tenant, currency, months, collected_, refunded, several):
    money = charts.money_format(currency, tenant)
    net = [c - r for c, r in zip(collected_, refunded, strict=True)]
    summary = (
        f"{money(sum(net))} collected in the last {MONTHS} months after "
        f"{money(sum(refunded))} refunded; {money(net[-1])} so far this month."
    )
    return charts.Chart(
        key=f"payments-{currency.lower()}",
        title="Payments collected per month, less refunds" + (f" ({currency})" if several else ""),
        kind="bar",
        categories=[charts.month_label(month) for month in months],
        series=[charts.Series("Collected, less refunds", net)],
        table_series=[
            charts.Series("Collected", collected_),
            charts.Series("Refunded", refunded),
            charts.Series("Collected, less refunds", net),
        ],
        format_value=money,
        format_tick=charts.money_tick_format(currency, tenant),
        summary=summary,
        empty=f"No payment was taken in the last {MONTHS} months.",
    )
