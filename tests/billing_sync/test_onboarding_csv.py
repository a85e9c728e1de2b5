"""Bulk onboarding from CSV in the admin: organisations and products previewed with per-row
errors and what each row would do (Halo matches included), saved only on confirm, all or
nothing, through the same upload machinery as the usage import."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from integrations.billing_sync.models import (
    CsvUpload,
    OnboardingSubmission,
    OrganisationMapping,
    ProductMapping,
)
from portal.models import Organisation, Product
from tests import factories
from tests.billing_sync.test_csv_upload import hidden_fields

ORGS = reverse("admin:portal_organisation_import")
PRODUCTS = reverse("admin:portal_product_import")
USAGE = reverse("admin:billing_sync_usagecount_import")


def upload(client, url, text, name="import.csv"):
    return client.post(url, {"file": SimpleUploadedFile(name, text.encode(), "text/csv")})


def confirm(client, url, page):
    return client.post(url, {**hidden_fields(page), "confirm": "1"})


@pytest.fixture
def owner(personas):
    return personas.client(personas.owner_a)


def test_organisations_preview_then_save(personas, owner):
    tenant = personas.tenant_a
    factories.organisation(tenant, name="Northwind", external_ref="NW-1001")
    factories.halo_client_record(tenant, halo_id=12, name="Northwind Traders Ltd")
    factories.halo_client_record(tenant, halo_id=13, name="Contoso")
    text = (
        "External reference,Name,Active,Halo client\n"
        "nw-1001,Northwind Traders,,12\n"
        "CD-1002,Contoso Dental,no,contoso\n"
        "FB-1003,Fabrikam,,\n"
    )
    page = upload(owner, ORGS, text)
    assert page.status_code == 200
    preview = page.context["preview"]
    assert preview.ok and preview.counts == {"added": 2, "updated": 1, "unchanged": 0, "mapped": 2}
    content = page.content.decode()
    assert "Northwind Traders Ltd (#12)" in content and "Contoso (#13)" in content
    assert '<span class="was">Northwind</span>Northwind Traders' in content
    assert "2 to create · 1 to update · 0 unchanged · 2 Halo mappings to set" in content
    assert Organisation.objects.count() == 1 and not OrganisationMapping.objects.exists()

    saved = confirm(owner, ORGS, page)
    assert saved.status_code == 302
    assert saved["Location"] == reverse("admin:portal_organisation_changelist")
    assert {o.external_ref: (o.name, o.active) for o in Organisation.objects.all()} == {
        "NW-1001": ("Northwind Traders", True),
        "CD-1002": ("Contoso Dental", False),
        "FB-1003": ("Fabrikam", True),
    }
    assert {
        m.organisation.external_ref: m.halo_client.halo_id
        for m in OrganisationMapping.objects.all()
    } == {
        "NW-1001": 12,
        "CD-1002": 13,
    }
    submission = OnboardingSubmission.objects.get()
    assert (submission.source, submission.user, submission.added) == ("csv", personas.owner_a, 2)
    # A second click finds the upload used up: nothing is saved twice.
    assert confirm(owner, ORGS, page).status_code == 400
    assert OnboardingSubmission.objects.count() == 1


def test_per_row_errors_are_shown_and_nothing_can_be_saved(personas, owner):
    factories.halo_client_record(personas.tenant_a, halo_id=12, name="Twin")
    factories.halo_client_record(personas.tenant_a, halo_id=13, name="Twin")
    text = (
        "external_ref,name,active,halo_client\n"
        "OK-1,Fine,yes,\n"
        "NEW-2,,,\n"
        "ok-1,Twice,,\n"
        "TW-3,Twin,maybe,Twin\n"
    )
    page = upload(owner, ORGS, text)
    preview = page.context["preview"]
    assert not preview.ok
    assert {row.line: row.errors for row in preview.errors} == {
        3: {"name": ["Required for a new organisation."]},
        4: {"external_ref": ["Line 2 already gives “ok-1”."]},
        5: {
            "active": ["Must be a valid boolean."],
        },
    }
    content = page.content.decode()
    assert "3 of 4 rows have errors. Nothing was saved" in content
    assert 'name="confirm"' not in content
    assert not Organisation.objects.exists() and not CsvUpload.objects.exists()


def test_ambiguous_halo_names_are_shown_as_errors(personas, owner):
    factories.halo_client_record(personas.tenant_a, halo_id=12, name="Twin")
    factories.halo_client_record(personas.tenant_a, halo_id=13, name="Twin")
    page = upload(owner, ORGS, "external_ref,name,halo_client\nTW-3,Twin,Twin\nTW-4,Other,13\n")
    errors = {row.line: row.errors for row in page.context["preview"].errors}
    assert errors == {
        2: {"halo_client": ["2 Halo clients are named “Twin” (#12, #13): give the id."]}
    }


def test_a_file_without_the_key_column_names_what_is_missing(owner):
    page = upload(owner, ORGS, "organisation,product,quantity\nNW-1,EDR,3\n")
    assert page.context["preview"].problem.startswith(
        "The first line must name the columns external_ref (optional: name, active, "
        "halo_client); “external_ref” is missing"
    )


def test_products_preview_shows_prices_in_the_tenant_s_money(personas, owner):
    from decimal import Decimal

    factories.product(personas.tenant_a, name="EDR", sku="EDR-STD", unit_price=Decimal("4"))
    factories.halo_item_record(personas.tenant_a, halo_id=31, name="Backup")
    page = upload(
        owner, PRODUCTS, "sku,name,price,halo item\nEDR-STD,,4.50,\nBKP-1TB,Backup 1 TB,12,Backup\n"
    )
    preview = page.context["preview"]
    assert preview.ok, [row.errors for row in preview.errors]
    content = page.content.decode()
    assert '<span class="was">£4.00</span>£4.50' in content and "£12.00" in content
    assert "Backup (#31)" in content
    assert confirm(owner, PRODUCTS, page).status_code == 302
    assert Product.objects.get(sku="EDR-STD").unit_price == Decimal("4.5")
    assert ProductMapping.objects.get().product.sku == "BKP-1TB"


def test_the_catalogue_changing_before_confirm_saves_nothing(personas, owner):
    """Between preview and confirm another organisation took the Halo client: the confirm
    previews again, shows why, and saves nothing."""
    tenant = personas.tenant_a
    client_record = factories.halo_client_record(tenant, halo_id=12, name="Northwind")
    page = upload(owner, ORGS, "external_ref,name,halo_client\nNW-1,Northwind,12\nCD-2,Contoso,\n")
    assert page.context["preview"].ok
    factories.organisation_mapping(tenant, halo_client=client_record)
    again = confirm(owner, ORGS, page)
    assert again.status_code == 200
    assert "would also be mapped to" in again.content.decode()
    assert not Organisation.objects.filter(external_ref__in=["NW-1", "CD-2"]).exists()


def test_an_upload_confirms_only_on_the_import_it_was_made_for(owner):
    """A token from the organisations import is no use on the usage or products import."""
    page = upload(owner, ORGS, "external_ref,name\nNW-1,Northwind\n")
    assert confirm(owner, USAGE, page).status_code == 400
    assert confirm(owner, PRODUCTS, page).status_code == 400
    assert not Organisation.objects.exists()
    assert confirm(owner, ORGS, page).status_code == 302
    assert Organisation.objects.get().name == "Northwind"


def test_another_tenant_and_viewers_cannot_use_it(personas, owner):
    page = upload(owner, ORGS, "external_ref,name\nNW-1,Northwind\n")
    assert confirm(personas.client(personas.owner_b), ORGS, page).status_code == 400
    viewer = personas.client(personas.viewer_a)
    assert confirm(viewer, ORGS, page).status_code == 403
    assert upload(viewer, ORGS, "external_ref,name\nX,X\n").status_code == 403
    assert not Organisation.objects.exists()
    # Tenant B imports the same reference into its own catalogue only.
    b_page = upload(personas.client(personas.owner_b), ORGS, "external_ref,name\nNW-1,B's\n")
    assert confirm(personas.client(personas.owner_b), ORGS, b_page).status_code == 302
    assert Organisation.objects.get().tenant == personas.tenant_b


def test_the_lists_offer_the_import(owner):
    for url in ("admin:portal_organisation_changelist", "admin:portal_product_changelist"):
        page = owner.get(reverse(url))
        assert page.status_code == 200
        assert reverse(url.replace("changelist", "import")) in page.content.decode()
