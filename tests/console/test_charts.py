"""Charts in the console (issue 15): receivables ageing, payments per month and licence counts
over time, their figures, their text alternatives, tenant isolation and their query cost;
and the invoice list's source, status, pay link, PDF and ageing filter."""

import json
import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from html import unescape
from zoneinfo import ZoneInfo

import pytest
import requests
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing.charts import ageing
from billing.models import AGEING_BUCKETS, Invoice, ageing_bucket_of
from billing.payments.charts import collected
from billing.payments.models import Payment, PayPage
from integrations.billing_sync.charts import licences
from integrations.billing_sync.models import UsageSubmission
from portal import charts
from tests import factories

TODAY = date(2026, 6, 15)
UTC = ZoneInfo("UTC")


def owed(tenant, days_overdue, amount="100.00", **fields):
    due = None if days_overdue is None else TODAY - timedelta(days=days_overdue)
    return factories.invoice(
        tenant, due_date=due, amount_due=Decimal(amount), total=Decimal(amount), **fields
    )


def figures(chart):
    """A chart's table as {category: [cells]}: what screen readers get."""
    return {category: values for category, values, _total in chart.rows()}


# -- receivables ageing --------------------------------------------------------------------

BOUNDARIES = [
    (None, "current"),  # no due date: nothing is late
    (-5, "current"),  # due in five days
    (0, "current"),  # due today
    (1, "1-30"),
    (30, "1-30"),
    (31, "31-60"),
    (60, "31-60"),
    (61, "61-90"),
    (90, "61-90"),
    (91, "over-90"),
    (400, "over-90"),
]


@pytest.mark.parametrize(("days", "key"), BOUNDARIES)
def test_an_invoice_falls_in_one_ageing_bucket_at_the_boundaries(personas, days, key):
    invoice = owed(personas.tenant_a, days)
    invoices = Invoice.objects.filter(tenant=personas.tenant_a)
    holding = [b.key for b in AGEING_BUCKETS if invoices.in_ageing_bucket(b.key, TODAY).exists()]
    assert holding == [key]
    if days is not None:  # customers' statements put it in the same bucket
        assert AGEING_BUCKETS[ageing_bucket_of(days)].key == key
    amounts = invoices.ageing(TODAY)[""]
    assert [amount for amount, _n in amounts] == [
        invoice.amount_due if b.key == key else 0 for b in AGEING_BUCKETS
    ]


def test_ageing_adds_up_open_amounts_due_only(personas):
    tenant = personas.tenant_a
    owed(tenant, 0, "10.00")
    owed(tenant, 0, "5.50", payment_status=Invoice.PaymentStatus.PARTLY_PAID)
    owed(tenant, 45, "200.00")
    owed(tenant, 45, "999.00", payment_status=Invoice.PaymentStatus.PAID)  # paid
    owed(tenant, 45, "999.00", voided=True)
    owed(tenant, 45, "999.00", deleted_in_halo=True)
    owed(tenant, 120, "1234.56", currency="GBP")
    factories.portal_invoice(tenant, issue=False)  # a draft owes nothing yet

    (chart,) = ageing(tenant, today=TODAY)

    assert figures(chart) == {
        "Current": ["£15.50"],
        "1–30 days": ["£0.00"],
        "31–60 days": ["£200.00"],
        "61–90 days": ["£0.00"],
        "Over 90 days": ["£1,234.56"],
    }
    assert chart.summary == (
        "£1,450.06 owed on 4 open invoice(s); £1,434.56 of it overdue, £1,234.56 by more "
        "than 90 days."
    )
    assert chart.links[2] == reverse("admin:billing_invoice_changelist") + "?ageing=31-60"


def test_ageing_charts_each_currency_in_its_own_format(personas):
    tenant = personas.tenant_a
    tenant.currency, tenant.locale = "EUR", "de_DE"
    tenant.save()
    owed(tenant, 10, "7777.77", currency="EUR")
    owed(tenant, 10, "12.00", currency="USD")

    euros, dollars = ageing(tenant, today=TODAY)

    assert euros.title == "Receivables ageing (EUR)" and dollars.title.endswith("(USD)")
    assert figures(euros)["1–30 days"] == ["7.777,77\u00a0€"]
    assert figures(dollars)["1–30 days"] == ["12,00\u00a0$"]
    # The axis in round steps, written as the tenant writes money.
    assert [label for _value, label in euros.ticks()] == [
        f"{n}\u00a0€" for n in ("0", "2.000", "4.000", "6.000", "8.000")
    ]
    assert euros.links[1].endswith("?ageing=1-30&currency__exact=EUR")


# -- payments collected per month ------------------------------------------------------------


def paid(tenant, when, amount, refunded="0", status=Payment.Status.SUCCEEDED, **fields):
    invoice = factories.invoice(tenant, amount_due=Decimal(amount))
    return factories.payment(
        tenant,
        invoice=invoice,
        status=status,
        succeeded_at=when,
        refunded_amount=Decimal(refunded),
        **fields,
    )


def test_payments_per_month_are_net_of_refunds_in_the_tenants_months(personas):
    tenant = personas.tenant_a
    tenant.time_zone = "Australia/Sydney"
    tenant.save()
    now = datetime(2026, 6, 15, 3, 0, tzinfo=UTC)
    paid(tenant, datetime(2026, 6, 2, tzinfo=UTC), "100.00")
    paid(tenant, datetime(2026, 6, 3, tzinfo=UTC), "50.00", refunded="20.00")
    paid(tenant, datetime(2026, 5, 9, tzinfo=UTC), "80.00", "80.00", Payment.Status.REFUNDED)
    # 31 January 23:30 in London is 1 February in Sydney: February's.
    paid(tenant, datetime(2026, 1, 31, 23, 30, tzinfo=UTC), "40.00")
    paid(tenant, datetime(2025, 6, 30, 13, 59, tzinfo=UTC), "7.00")  # 23:59 on 30 June there
    paid(tenant, datetime(2026, 6, 4, tzinfo=UTC), "999.00", status=Payment.Status.FAILED)
    paid(tenant, None, "999.00", status=Payment.Status.PENDING)

    (chart,) = collected(tenant, now=now)

    table = figures(chart)
    assert list(table)[::11] == ["Jul 2025", "Jun 2026"]
    assert "Jun 2025" not in table  # before the twelve months
    assert table["Jun 2026"] == ["£150.00", "£20.00", "£130.00"]
    assert table["May 2026"] == ["£80.00", "£80.00", "£0.00"]
    assert table["Feb 2026"] == ["£40.00", "£0.00", "£40.00"]
    assert table["Jan 2026"] == ["£0.00", "£0.00", "£0.00"]
    assert [s.name for s in chart.columns] == ["Collected", "Refunded", "Collected, less refunds"]
    drawn = chart.data()["series"]
    assert len(drawn) == 1 and drawn[0]["values"][-1] == 130.0
    assert drawn[0]["labels"][-1] == "£130.00"
    assert chart.summary == (
        "£170.00 collected in the last 12 months after £100.00 refunded; £130.00 so far this month."
    )


def test_no_payments_yet_says_so_instead_of_an_empty_chart(personas):
    (chart,) = collected(personas.tenant_a)
    assert not chart.has_data and chart.empty.startswith("No payment was taken")


# -- licences over time --------------------------------------------------------------------


def usage(tenant, when, rows):
    submission, _ = UsageSubmission.objects.record(
        tenant, rows, source=UsageSubmission.Source.ADMIN
    )
    UsageSubmission.objects.filter(pk=submission.pk).update(created=when)


@pytest.fixture
def history(personas):
    """Two organisations' usage of two products since before the charts' twelve months."""
    tenant = personas.tenant_a
    acme, globex = (factories.organisation(tenant, name=n) for n in ("Acme", "Globex"))
    backup, edr = (factories.product(tenant, name=n) for n in ("Backup", "EDR"))
    usage(tenant, datetime(2024, 12, 1, tzinfo=UTC), [(acme, edr, 10)])
    usage(tenant, datetime(2026, 1, 10, tzinfo=UTC), [(acme, backup, 5)])
    usage(tenant, datetime(2026, 3, 10, tzinfo=UTC), [(acme, backup, 8)])
    usage(tenant, datetime(2026, 4, 2, tzinfo=UTC), [(globex, backup, 3)])
    usage(tenant, datetime(2026, 6, 1, tzinfo=UTC), [(acme, backup, 6)])
    return acme, globex, backup, edr


NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def test_licences_per_product_month_by_month(personas, history):
    (chart,) = licences(personas.tenant_a, now=NOW)

    series = {s.name: list(s.values) for s in chart.series}
    assert series == {
        "Backup": [0] * 6 + [5, 5, 8, 11, 11, 9],
        "EDR": [10] * 12,
    }
    assert chart.categories[0] == "Jul 2025" and chart.categories[-1] == "Jun 2026"
    assert [s.name for s in chart.series] == ["EDR", "Backup"]  # the most licences first
    assert figures(chart)["Apr 2026"] == ["10", "11"]
    assert chart.rows()[-1][2] == "19"  # the "All products" column
    assert chart.summary == "19 licence(s) now across 2 product(s); 10 at the end of Jul 2025."


def test_licences_of_one_organisation_per_product(personas, history):
    acme, globex, backup, _edr = history
    (chart,) = licences(personas.tenant_a, organisation=acme, now=NOW)
    assert {s.name: list(s.values) for s in chart.series} == {
        "Backup": [0] * 6 + [5, 5, 8, 8, 8, 6],
        "EDR": [10] * 12,
    }
    assert chart.title == "Licences of Acme per product, month by month"
    (pair,) = licences(personas.tenant_a, organisation=globex, product=backup, now=NOW)
    assert [list(s.values) for s in pair.series] == [[0] * 9 + [3, 3, 3]]


def test_many_products_keep_the_chart_readable(personas):
    tenant = personas.tenant_a
    organisation = factories.organisation(tenant)
    products = [factories.product(tenant, name=f"P{n:02d}") for n in range(12)]
    usage(
        tenant, NOW - timedelta(days=3), [(organisation, p, n + 1) for n, p in enumerate(products)]
    )
    (chart,) = licences(tenant, now=NOW)
    names = [s.name for s in chart.series]
    assert names == ["P11", "P10", "P09", "P08", "P07", "P06", "P05", "5 other products"]
    assert chart.series[-1].values[-1] == 1 + 2 + 3 + 4 + 5


# -- the chart's axis and data ----------------------------------------------------------------


def test_counts_get_whole_steps_and_money_round_ones(personas):
    tenant = personas.tenant_a
    count = charts.count_format(tenant)
    small = charts.Chart("c", "t", "line", ["a"], [charts.Series("s", [3])], count)
    assert [v for v, _ in small.ticks()] == [0, 1, 2, 3]
    big = charts.Chart("c", "t", "line", ["a", "b"], [charts.Series("s", [0, 12345])], count)
    assert [label for _, label in big.ticks()] == [
        "0", "2,500", "5,000", "7,500", "10,000", "12,500"
    ]  # fmt: skip
    money = charts.money_format("GBP", tenant)
    tick = charts.money_tick_format("GBP", tenant)
    cents = charts.Chart("c", "t", "bar", ["a"], [charts.Series("s", [Decimal("0.6")])], money,
                         format_tick=tick)  # fmt: skip
    assert [label for _, label in cents.ticks()] == [
        "£0", "£0.20", "£0.40", "£0.60"
    ]  # fmt: skip


# -- in the console ----------------------------------------------------------------------------


def chart_data(html, key):
    found = re.search(
        rf'<script id="chart-{key}-data" type="application/json">(.*?)</script>', html
    )
    assert found, f"no data for chart {key}"
    return json.loads(found.group(1))


def hidden_table(html, key):
    found = re.search(
        rf'<div class="visually-hidden"><table id="chart-{key}-table">(.*?)</table>', html, re.S
    )
    assert found, f"no table for chart {key}"
    return [
        [
            unescape(re.sub(r"<[^>]+>", "", cell)).strip()
            for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)
        ]
        for row in re.findall(r"<tr>(.*?)</tr>", found.group(1), re.S)
    ]


INVOICES = "/admin/billing/invoice/"


@pytest.fixture
def today(monkeypatch):
    """The portal's date is TODAY (the list's filter and chart take the tenant's date)."""
    monkeypatch.setattr(timezone, "localdate", lambda value=None, timezone=None: TODAY)
    return TODAY


def test_the_invoice_list_shows_source_status_pay_link_pdf_and_the_ageing_chart(personas, today):
    tenant = personas.tenant_a
    halo = owed(tenant, 40, "300.00", invoice_number="H-1")
    settled = owed(tenant, 40, "0.00", payment_status=Invoice.PaymentStatus.PAID)
    draft = factories.portal_invoice(tenant, issue=False).invoice
    issued = factories.portal_invoice(tenant).invoice
    client = personas.client(personas.viewer_a)

    response = client.get(INVOICES)
    html = response.content.decode()

    rows = {invoice.pk: invoice for invoice in response.context["cl"].result_list}
    assert set(rows) == {halo.pk, settled.pk, draft.pk, issued.pk}
    order = list(rows)
    sources = dict(zip(order, cells(html, "field-source_label"), strict=True))
    statuses = dict(zip(order, cells(html, "field-status"), strict=True))
    assert sources == {halo.pk: "Halo", settled.pk: "Halo", draft.pk: "Portal", issued.pk: "Portal"}
    assert statuses[draft.pk] == "Draft" and statuses[halo.pk] == "Overdue"
    assert statuses[settled.pk] == "Paid"
    # The pay link is the customer's pay page, copied by a button; only open invoices have one.
    copies = re.findall(r'data-copy="([^"]+)"', html)
    pages = {page.invoice_id: page.public_url() for page in PayPage.objects.all()}
    assert set(pages) == {halo.pk, issued.pk}
    assert sorted(copies) == sorted(pages.values())
    assert 'src="/static/portal/copy_link.js"' in html
    pdfs = re.findall(r'href="(/admin/invoicing/invoicepdf/[^"]+)"', html)
    assert reverse("admin:invoicing_invoicepdf_pdf", args=[halo.pk]) in pdfs
    assert len(pdfs) == 4
    # The chart: its data for the script, its figures in a table, nothing inline to run.
    data = chart_data(html, "ageing-gbp")
    assert data["kind"] == "bar" and data["series"][0]["labels"][2] == "£300.00"
    table = hidden_table(html, "ageing-gbp")
    assert table[0] == ["Days overdue", "Amount due"]
    assert ["31–60 days", "£300.00"] in table
    issued_due = f"£{issued.amount_due:,.2f}"
    assert ["Current", issued_due] in table
    assert 'src="/static/portal/vendor/chartjs/chart.umd.min.js"' in html
    assert 'role="img"' in html
    inline = re.findall(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", html)
    assert inline == []


def cells(html, css_class):
    found = re.findall(
        rf'<(?:td|th) class="[^"]*\b{css_class}\b[^"]*"[^>]*>(.*?)</t[dh]>', html, re.S
    )
    return [unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in found]


@pytest.mark.parametrize(("days", "key"), BOUNDARIES)
def test_the_ageing_filter_lists_each_bucket(personas, today, days, key):
    tenant = personas.tenant_a
    invoice = owed(tenant, days)
    owed(tenant, 5, payment_status=Invoice.PaymentStatus.PAID)
    client = personas.client(personas.owner_a)
    for bucket in AGEING_BUCKETS:
        listed = client.get(INVOICES, {"ageing": bucket.key}).context["cl"].result_list
        assert [i.pk for i in listed] == ([invoice.pk] if bucket.key == key else [])


def test_the_invoice_list_filters_render_and_combine(personas, today):
    tenant = personas.tenant_a
    owed(tenant, 45, source=Invoice.Source.HALO)
    portal = factories.portal_invoice(tenant).invoice
    Invoice.objects.filter(pk=portal.pk).update(due_date=TODAY - timedelta(days=45))
    client = personas.client(personas.owner_a)

    html = client.get(INVOICES).content.decode()
    assert "By days overdue" in html and "By source" in html
    for bucket in AGEING_BUCKETS:
        assert f"?ageing={bucket.key}" in unescape(html)
    both = client.get(INVOICES, {"ageing": "31-60", "source__exact": "portal"})
    assert [i.pk for i in both.context["cl"].result_list] == [portal.pk]
    # A bucket that is not one is ignored, not an error.
    assert client.get(INVOICES, {"ageing": "1000"}).status_code == 200


def test_the_job_pages_and_an_organisation_show_their_charts(personas, history):
    acme = history[0]
    client = personas.client(personas.viewer_a)

    billing = client.get(reverse("admin:job_billing_sync")).content.decode()
    data = chart_data(billing, "licences")
    assert [s["name"] for s in data["series"]] == ["EDR", "Backup"]
    assert hidden_table(billing, "licences")[0] == ["End of month", "EDR", "Backup", "All products"]

    payments = client.get(reverse("admin:job_payments")).content.decode()
    assert "Receivables ageing" in payments and "Payments collected per month" in payments
    assert "No payment was taken in the last 12 months." in payments  # nothing to draw yet
    assert payments.count("chart.umd.min.js") == 1  # the library once for two charts

    org = client.get(reverse("admin:portal_organisation_change", args=[acme.pk])).content.decode()
    assert chart_data(org, f"licences-org-{acme.pk}")["series"][0]["name"] == "EDR"


# -- isolation and cost -----------------------------------------------------------------------


def test_a_tenant_never_sees_another_tenants_figures(personas, today):
    a, b = personas.tenant_a, personas.tenant_b
    owed(a, 10, "7777.77")
    paid(a, timezone.now(), "4444.44")
    org_a, product_a = factories.organisation(a), factories.product(a, name="Alpha EDR")
    usage(a, timezone.now(), [(org_a, product_a, 321)])
    owed(b, 10, "3333.33")
    client = personas.client(personas.owner_b)

    pages = [
        client.get(INVOICES).content.decode(),
        client.get(reverse("admin:job_payments")).content.decode(),
        client.get(reverse("admin:job_billing_sync")).content.decode(),
    ]
    for html in pages:
        assert "7,777.77" not in html and "4,444.44" not in html
        assert "Alpha EDR" not in html and "321" not in re.sub(r"[?&]\w+=\d+", "", html)
    assert ["1–30 days", "£3,333.33"] in hidden_table(pages[0], "ageing-gbp")
    for chart in [*ageing(b), *collected(b), *licences(b)]:
        assert "7,777.77" not in str(chart.data()) and "Alpha EDR" not in str(chart.data())
    assert licences(b)[0].series == []


def queries(func):
    with CaptureQueriesContext(connection) as captured:
        func()
    return len(captured)


def test_charts_cost_the_same_queries_with_many_rows(personas):
    tenant = personas.tenant_a
    organisations = [factories.organisation(tenant) for _ in range(3)]
    products = [factories.product(tenant) for _ in range(3)]

    def build_all():
        ageing(tenant), collected(tenant), licences(tenant), licences(tenant, organisations[0])

    def add(rows):
        for n in range(rows):
            owed(tenant, n * 7 % 130, "10.00")
            paid(tenant, timezone.now() - timedelta(days=n * 11 % 360), "5.00")
        for month in range(rows):
            usage(
                tenant,
                timezone.now() - timedelta(days=month * 29 % 360),
                [(o, p, month + 1) for o in organisations for p in products],
            )

    add(2)
    few = queries(build_all)
    add(60)
    assert queries(build_all) == few <= 10


def test_the_invoice_list_costs_the_same_queries_with_many_invoices(personas, today):
    tenant = personas.tenant_a
    client = personas.client(personas.owner_a)
    for n in range(3):
        owed(tenant, n, customer=factories.customer(tenant))
    client.get(INVOICES)  # the pay pages are made on the first visit
    few = queries(lambda: client.get(INVOICES))
    for n in range(60):
        owed(tenant, n * 3, customer=factories.customer(tenant))
    client.get(INVOICES)
    assert queries(lambda: client.get(INVOICES)) == few


@pytest.mark.django_db(transaction=True)
def test_the_invoice_list_with_its_chart_through_a_real_server(validated_server):
    from django.test import Client

    from portal.models import Membership
    from tests.conftest import make_staff

    tenant = factories.tenant("alpha")
    owed(tenant, 95, "512.00")
    client = Client()
    client.force_login(make_staff("owner", tenant, Membership.Role.OWNER))
    cookies = {"sessionid": client.cookies["sessionid"].value}

    response = requests.get(f"{validated_server}{INVOICES}", cookies=cookies, timeout=10)
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert (
        "script-src 'self'" in policy
        and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    )
    assert ["Over 90 days", "£512.00"] in hidden_table(response.text, "ageing-gbp")
    for asset in (
        "portal/charts.js",
        "portal/vendor/chartjs/chart.umd.min.js",
        "portal/copy_link.js",
    ):
        served = requests.get(f"{validated_server}/static/{asset}", timeout=10)
        assert served.status_code == 200 and "javascript" in served.headers["Content-Type"]
