"""Billing admin fixes of issue 15: the auto-pay rule form offers only agreement subtypes
without a rule; a portal draft never shows as "Unpaid"."""

import re
from decimal import Decimal
from html import unescape

from django.urls import reverse

from billing.models import AutoPayRule, Contract
from tests import factories


def subtype_choices(client, url):
    return dict(client.get(url).context["adminform"].form.fields["halo_subtype_id"].choices)


def test_autopay_rule_form_offers_only_subtypes_without_a_rule(personas):
    tenant = personas.tenant_a
    for halo_id, subtype, name in [(1, 1, "Managed Services"), (2, 2, "Backup"), (3, 4, "VoIP")]:
        Contract.objects.create(
            tenant=tenant, halo_id=halo_id, subtype_id=subtype, subtype_name=name
        )
    rule = factories.autopay_rule(tenant, halo_subtype_id=1, subtype_name="Managed Services")
    factories.autopay_rule(personas.tenant_b, halo_subtype_id=2)  # another tenant's: no matter
    client = personas.client(personas.owner_a)
    add = reverse("admin:billing_autopayrule_add")

    assert subtype_choices(client, add) == {2: "Backup (2)", 4: "VoIP (4)"}
    # Its own subtype stays on offer when a rule is edited, beside the free ones.
    change = reverse("admin:billing_autopayrule_change", args=[rule.pk])
    assert subtype_choices(client, change) == {
        1: "Managed Services (1)",
        2: "Backup (2)",
        4: "VoIP (4)",
    }
    # A form from before the rule was added, posted now: refused, and nothing saved.
    refused = client.post(add, {"halo_subtype_id": 1, "enabled": "on"})
    assert refused.status_code == 200
    assert "Select a valid choice" in refused.content.decode()
    assert AutoPayRule.objects.filter(tenant=tenant).count() == 1

    for subtype in (2, 4):
        assert client.post(add, {"halo_subtype_id": subtype, "enabled": "on"}).status_code == 302
    form = client.get(add).context["adminform"].form
    assert dict(form.fields["halo_subtype_id"].choices) == {}
    assert "Every agreement subtype" in form.fields["halo_subtype_id"].help_text


def cells(html, css_class):
    """The text of the admin's cells of one column (`field-<name>` class)."""
    found = re.findall(rf'<(?:td|p|div) class="[^"]*\b{css_class}\b[^"]*"[^>]*>(.*?)</', html, re.S)
    return [unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in found]


def test_invoice_lines_show_quantities_as_written(personas):
    """Issue 15: lines read "26.0000" (the column's four decimal places)."""
    tenant = personas.tenant_a
    invoice = factories.invoice(tenant, currency="GBP")
    for position, (quantity, price) in enumerate(
        [("26", "13.5"), ("2.5", "19.2"), ("1200", "0.0125")]
    ):
        line = factories.invoice_line(quantity=Decimal(quantity), unit_price=Decimal(price))
        line.invoice, line.position = invoice, position
        line.save()
    client = personas.client(personas.owner_a)

    html = client.get(reverse("admin:billing_invoice_change", args=[invoice.pk])).content.decode()

    assert "26.0000" not in html and "13.5000" not in html
    assert cells(html, "field-qty") == ["26", "2.5", "1,200"]
    assert cells(html, "field-price") == ["£13.50", "£19.20", "£0.0125"]
    assert cells(html, "field-rate") == ["20%"] * 3


def test_one_off_charges_list_quantities_as_written(personas):
    charge = factories.one_off_charge(personas.tenant_a, quantity=Decimal(12))
    client = personas.client(personas.owner_a)
    html = client.get(reverse("admin:invoicing_oneoffcharge_changelist")).content.decode()
    assert cells(html, "field-qty") == ["12"] and charge.quantity == Decimal("12.0000")


def test_a_portal_draft_shows_as_draft_not_unpaid(personas):
    """Issue 15: a draft (not issued, nothing owed yet) was listed as "Unpaid"."""
    tenant = personas.tenant_a
    draft = factories.portal_invoice(tenant, issue=False).invoice
    issued = factories.portal_invoice(tenant).invoice
    halo = factories.invoice(tenant)
    client = personas.client(personas.owner_a)
    url = reverse("admin:billing_invoice_changelist")

    assert (draft.status_label, issued.status_label, halo.status_label) == (
        "Draft",
        "Unpaid",
        "Unpaid",
    )
    listed = client.get(url).context["cl"].result_list
    shown = zip(listed, statuses_of(client, url), strict=True)
    statuses = {invoice.pk: status for invoice, status in shown}
    assert statuses == {draft.pk: "Draft", issued.pk: "Unpaid", halo.pk: "Unpaid"}
    # Owed money only once issued: the Unpaid filter leaves it out; a Draft filter finds it.
    unpaid = client.get(url, {"status": "unpaid"}).context["cl"].result_list
    assert {invoice.pk for invoice in unpaid} == {issued.pk, halo.pk}
    drafts = client.get(url, {"status": "draft"}).context["cl"].result_list
    assert [invoice.pk for invoice in drafts] == [draft.pk]


def statuses_of(client, url):
    return cells(client.get(url).content.decode(), "field-status")


def test_pdf_list_names_the_customer_of_portal_invoices_too(personas):
    """Issue 15: Invoice PDFs showed a dash for the customer for portal invoices (billed to an
    organisation, not a Halo client)."""
    tenant = personas.tenant_a
    organisation = factories.organisation(tenant, name="Contoso Dental")
    portal = factories.portal_invoice(tenant, organisation=organisation).invoice
    halo = factories.invoice(tenant, customer=factories.customer(tenant, name="Northwind"))
    client = personas.client(personas.owner_a)
    url = reverse("admin:invoicing_invoicepdf_changelist")

    listed = client.get(url).context["cl"].result_list
    names = cells(client.get(url).content.decode(), "field-bill_to")
    assert dict(zip([i.pk for i in listed], names, strict=True)) == {
        portal.pk: "Contoso Dental",
        halo.pk: "Northwind",
    }
    found = client.get(url, {"q": "contoso"}).context["cl"].result_list
    assert [invoice.pk for invoice in found] == [portal.pk]
    change = client.get(reverse("admin:invoicing_invoicepdf_change", args=[portal.pk]))
    assert '<div class="readonly">Contoso Dental</div>' in change.content.decode()
