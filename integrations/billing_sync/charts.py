"""Licence counts over time as a chart (`portal.charts`): each product's count at the end of
each of the last twelve months, for the whole tenant or one organisation (organisation x
product), from the usage change history.

Cheap whatever the history holds: the counts now (one grouped query) less how far they moved
after each month (one grouped query over the changes) give every month's count, so no
change is read one by one."""

from django.db.models import Sum

from portal import charts
from portal.models import Product

from .models import UsageChange, UsageCount

MONTHS = 12
#: Lines a chart draws; the products beyond are added up as one more.
MOST_LINES = 8


def licences(tenant, organisation=None, product=None, now=None):
    months = charts.months_back(tenant, MONTHS, now)
    counts = UsageCount.objects.filter(tenant=tenant)
    changes = UsageChange.objects.of_tenant(tenant)
    if organisation is not None:
        counts, changes = (
            counts.filter(organisation=organisation),
            changes.filter(organisation=organisation),
        )
    if product is not None:
        counts, changes = counts.filter(product=product), changes.filter(product=product)
    now_by_product = {
        row["product_id"]: row["total"]
        for row in counts.order_by().values("product_id").annotate(total=Sum("quantity"))
    }
    # Moves in months[1:] take each month's end back to the one before.
    index = {month: i for i, month in enumerate(months)}
    moved = {}
    for row in changes.net_by_month(charts.start_of(months[1], tenant), tenant.tz, "product_id"):
        month = charts.month_of(row["month"], tenant)
        if month in index:
            moved.setdefault(row["product_id"], [0] * MONTHS)[index[month]] += row["moved"]
    lines = {}
    for product_id, total in now_by_product.items():
        values, count = [0] * MONTHS, total
        steps = moved.get(product_id, [0] * MONTHS)
        for i in range(MONTHS - 1, -1, -1):
            values[i] = max(count, 0)
            count -= steps[i]
        if any(values):
            lines[product_id] = values
    names = dict(Product.objects.filter(pk__in=lines).values_list("pk", "name"))
    return [_chart(tenant, months, lines, names, organisation, product)]


def _chart(tenant, months, lines, names, organisation, product):
    count = charts.count_format(tenant)
    ranked = sorted(lines, key=lambda pk: (-lines[pk][-1], names.get(pk, "")))
    shown, rest = (
        (ranked, [])
        if len(ranked) <= MOST_LINES
        else (ranked[: MOST_LINES - 1], ranked[MOST_LINES - 1 :])
    )
    series = [charts.Series(names.get(pk, "?"), lines[pk]) for pk in shown]
    if rest:
        others = [sum(lines[pk][i] for pk in rest) for i in range(MONTHS)]
        series.append(charts.Series(f"{len(rest)} other products", others))
    now_total = sum(values[-1] for values in lines.values())
    then_total = sum(values[0] for values in lines.values())
    whose = f" of {organisation.name}" if organisation is not None else ""
    summary = (
        f"{count(now_total)} licence(s){whose} now across {len(lines)} product(s); "
        f"{count(then_total)} at the end of {charts.month_label(months[0])}."
    )
    key = "licences" + (f"-org-{organisation.pk}" if organisation is not None else "")
    key += f"-product-{product.pk}" if product is not None else ""
    return charts.Chart(
        key=key,
        title=f"Licences{whose} per product, month by month",
        kind="line",
        categories=[charts.month_label(month) for month in months],
        category_heading="End of month",
        series=series,
        format_value=count,
        summary=summary,
        empty="No usage yet: counts appear here once usage arrives.",
        total_label="All products" if len(series) > 1 else "",
    )
