"""`Invoice.objects.for_ref` (billing/models.py): the invoices a customer-facing reference
names, per the tenant's number setting; portal numbers and digits of other scripts."""

import pytest

from billing.models import Invoice
from integrations.invoice_sync.models import InvoiceSyncSettings
from tests import factories


@pytest.mark.django_db
def test_for_ref_finds_portal_invoices_by_their_own_number_and_ignores_foreign_digits():
    tenant = factories.tenant("refs")
    InvoiceSyncSettings.objects.update_or_create(
        tenant=tenant, defaults={"number_field": "third_party"}
    )
    portal = Invoice.objects.create(
        tenant=tenant, source=Invoice.Source.PORTAL, invoice_number="INV-000009", halo_id=77
    )
    halo = Invoice.objects.create(tenant=tenant, halo_id=123, third_party_number="INV-2026-1")
    assert list(Invoice.objects.for_ref(tenant, "INV-000009")) == [portal]
    assert list(Invoice.objects.for_ref(tenant, "INV-2026-1")) == [halo]
    assert portal.display_number() == "INV-000009"

    InvoiceSyncSettings.objects.filter(tenant=tenant).update(number_field="halo_id")
    tenant = type(tenant).objects.get(pk=tenant.pk)  # drop the cached settings
    assert list(Invoice.objects.for_ref(tenant, "123")) == [halo]
    assert not Invoice.objects.for_ref(tenant, "١٢٣").exists()
