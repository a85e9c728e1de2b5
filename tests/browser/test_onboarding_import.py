"""The organisations CSV import in a real browser: upload, the preview (actions, changed
values, Halo matches, a row's error), fix and confirm. The preview's screenshot is kept in
the test's tmp_path (`--basetemp` to look at it)."""

import pytest

from tests.browser.conftest import login
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_organisations_import_previews_then_saves(page, live_server, personas, tmp_path):
    from integrations.billing_sync.models import OrganisationMapping
    from portal.models import Organisation
    from tests import factories

    tenant = personas.tenant_a
    factories.organisation(tenant, name="Northwind", external_ref="NW-1001")
    factories.halo_client_record(tenant, halo_id=12, name="Northwind Traders Ltd")
    factories.halo_client_record(tenant, halo_id=13, name="Contoso Dental")
    rows = (
        "external_ref,name,active,halo_client\n"
        "NW-1001,Northwind Traders,,12\n"
        "CD-1002,Contoso Dental,yes,Contoso Dental\n"
        "FB-1003,Fabrikam,no,\n"
    )
    bad = tmp_path / "organisations-bad.csv"
    bad.write_text(rows + "TT-1004,,,Tailspin\n")
    good = tmp_path / "organisations.csv"
    good.write_text(rows)

    login(page, live_server, personas.owner_a.username, PASSWORD)
    page.goto(f"{live_server.url}/admin/portal/organisation/")
    page.click("text=Import CSV")
    page.set_input_files("input[type=file]", str(bad))
    page.click("input[value=Preview]")
    page.wait_for_selector(".csv-preview table")
    assert "1 of 4 rows have errors" in page.inner_text("#content-main")
    assert "2 to create · 1 to update" in page.inner_text(".csv-preview")  # valid rows only
    error_row = page.locator("tr.row-error")
    assert "Required for a new organisation." in error_row.inner_text()
    assert "No Halo client has the id or name “Tailspin”" in error_row.inner_text()
    page.screenshot(path=tmp_path / "preview-with-error.png", full_page=True)
    assert page.locator("input[name=confirm]").count() == 0

    page.click("text=Upload another file")
    page.set_input_files("input[type=file]", str(good))
    page.click("input[value=Preview]")
    page.wait_for_selector(".csv-preview table")
    text = page.inner_text(".csv-preview")
    assert "2 to create · 1 to update · 0 unchanged · 2 Halo mappings to set" in text
    assert "Northwind Traders Ltd (#12)" in text and "Contoso Dental (#13)" in text
    page.screenshot(path=tmp_path / "preview.png", full_page=True)
    assert not Organisation.objects.filter(external_ref="CD-1002").exists()
    page.click("input[name=confirm]")
    page.wait_for_selector("#result_list")
    assert "Imported 3 organisations: 2 created · 1 updated · 2 mapped to Halo." in page.inner_text(
        ".messagelist"
    )
    assert Organisation.objects.filter(tenant=tenant).count() == 3
    assert OrganisationMapping.objects.filter(tenant=tenant).count() == 2
    # The import is on record: who, and what each row did.
    from integrations.billing_sync.models import OnboardingSubmission

    submission = OnboardingSubmission.objects.get(tenant=tenant)
    page.goto(f"{live_server.url}/admin/billing_sync/onboardingsubmission/{submission.pk}/change/")
    record = page.inner_text("#content-main")
    assert "owner-a" in record and "2 created · 1 updated · 2 mapped to Halo" in record
    assert "Northwind Traders Ltd (#12)" in record and "csv-upload:" not in record
    page.screenshot(path=tmp_path / "onboarding-import-record.png", full_page=True)
