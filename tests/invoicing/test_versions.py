"""Stored PDF versions: rendered once per version of the data, served byte for byte, kept when
the data changes; concurrent first renders end with one version; the served log."""

import hashlib
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.db.models import QuerySet
from django.utils import timezone

from billing.invoicing import pdfs
from billing.invoicing.models import PdfServed, PdfVersion, PdfVersionQuerySet
from billing.invoicing.pdfs import resolve_pdf, store_portal_pdf
from billing.models import Invoice
from tests import factories
from tests.invoicing.conftest import halo_invoice


def test_the_same_data_is_rendered_once_and_served_byte_for_byte(tenant, monkeypatch):
    invoice = halo_invoice(tenant)
    first = resolve_pdf(invoice, "api")
    renders = []
    monkeypatch.setattr(pdfs, "render_invoice_pdf", lambda doc: renders.append(doc))
    again = resolve_pdf(Invoice.objects.get(pk=invoice.pk), "pay_page")
    assert renders == []
    assert again.content == first.content and again.etag == first.etag
    assert again.version == first.version and first.version.number == 1
    assert first.etag == f'"{first.version.sha256}"' and first.version.size == len(first.content)


def test_a_change_makes_a_new_version_and_old_versions_stay_listed(tenant):
    invoice = halo_invoice(tenant)
    v1 = resolve_pdf(invoice, "api").version
    Invoice.objects.filter(pk=invoice.pk).update(amount_paid=5, amount_due=11.20)
    v2 = resolve_pdf(Invoice.objects.get(pk=invoice.pk), "api").version
    assert (v1.number, v2.number) == (1, 2) and v1.data_key != v2.data_key
    Invoice.objects.filter(pk=invoice.pk).update(amount_paid=0, amount_due=16.20)
    back = resolve_pdf(Invoice.objects.get(pk=invoice.pk), "api").version
    assert back == v1  # the same data again: the version it made, not a third one
    assert list(invoice.pdf_versions.values_list("number", flat=True)) == [2, 1]


def test_branding_feeds_the_version_too(tenant):
    invoice = halo_invoice(tenant)
    v1 = resolve_pdf(invoice, "api").version
    tenant.accent_colour = "#7B1FA2"
    tenant.save()
    v2 = resolve_pdf(Invoice.objects.get(pk=invoice.pk), "api").version
    assert v2.number == 2 and v2.sha256 != v1.sha256


def test_regenerating_unchanged_data_keeps_the_version(tenant, monkeypatch):
    invoice = halo_invoice(tenant)
    v1, created = store_portal_pdf(invoice)
    assert created
    assert store_portal_pdf(invoice, force=True) == (v1, False)  # deterministic: same bytes
    # A renderer upgrade that changes the bytes makes the next version of the same data.
    real = pdfs.render_invoice_pdf
    monkeypatch.setattr(pdfs, "render_invoice_pdf", lambda doc: real(doc) + b"\n% v2\n")
    v2, created = store_portal_pdf(invoice, force=True)
    assert created and v2.number == 2 and v2.data_key == v1.data_key
    assert resolve_pdf(invoice, "api").version == v2  # the newest render of this data


def test_a_lost_race_answers_the_winners_version(tenant, monkeypatch):
    """Another process stores the same version between our lookup and our insert."""
    invoice = halo_invoice(tenant)
    rendered, _ = store_portal_pdf(invoice)
    data_key, content = rendered.data_key, bytes(rendered.content)
    rendered.delete()  # the bytes to store, and nothing stored yet
    winner = []

    def lookup_then_the_other_process_stores(self):
        found = QuerySet.first(self)
        if not winner:  # our lookup found nothing; the other process's insert lands now
            winner.append(
                PdfVersion.objects.create(
                    invoice=invoice,
                    source="portal",
                    data_key=data_key,
                    sha256=hashlib.sha256(content).hexdigest(),
                    number=1,
                    size=len(content),
                    content=content,
                )
            )
        return found

    monkeypatch.setattr(PdfVersionQuerySet, "first", lookup_then_the_other_process_stores)
    stored = PdfVersion.objects.store(invoice, "portal", data_key, content)
    assert stored == (winner[0], False)  # the winner's row, not an error or a second copy
    assert PdfVersion.objects.filter(invoice=invoice).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_requests_rendering_the_first_version_at_once_store_one(monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite's shared in-memory test database refuses threads")
    invoice = halo_invoice(factories.tenant("race"))
    both_rendered = threading.Barrier(2)
    real = pdfs.render_invoice_pdf

    def slow_render(doc):
        content = real(doc)
        both_rendered.wait(timeout=10)  # both requests rendered before either stores
        return content

    monkeypatch.setattr(pdfs, "render_invoice_pdf", slow_render)
    served = []

    def request():
        try:
            served.append(resolve_pdf(Invoice.objects.get(pk=invoice.pk), "api"))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(served) == 2 and served[0].content == served[1].content
    assert PdfVersion.objects.filter(invoice=invoice).count() == 1


def test_the_served_log_says_which_version_each_channel_served(tenant, monkeypatch):
    invoice = halo_invoice(tenant)
    v1 = resolve_pdf(invoice, "api").version
    resolve_pdf(invoice, "api")
    resolve_pdf(invoice, "pay_page")
    Invoice.objects.filter(pk=invoice.pk).update(amount_paid=1, amount_due=15.20)
    v2 = resolve_pdf(Invoice.objects.get(pk=invoice.pk), "api").version
    rows = PdfServed.objects.filter(invoice=invoice).order_by("version__number", "channel")
    served = [(r.version.number, r.channel) for r in rows]
    assert served == [(1, "api"), (1, "pay_page"), (2, "api")]
    assert v2.number == 2 and v1.deliveries.count() == 2

    later = timezone.now() + timedelta(minutes=5)
    monkeypatch.setattr(timezone, "now", lambda: later)
    resolve_pdf(Invoice.objects.get(pk=invoice.pk), "api")
    assert PdfServed.objects.get(version=v2).last_served == later


def test_prefer_must_name_a_source(tenant):
    with pytest.raises(ValueError, match="prefer"):
        resolve_pdf(halo_invoice(tenant), "api", prefer="pdf")
