"""Usage input: the API (validated whole, idempotent), CSV import with preview, history."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from integrations.billing_sync.models import UsageChange, UsageCount, UsageSubmission
from portal.models import ApiToken
from tests import factories

URL = "/api/v1/usage"


@pytest.fixture
def catalogue(personas):
    tenant = personas.tenant_a
    factories.organisation(tenant, name="Northwind", external_ref="NW-1001")
    factories.organisation(tenant, name="Contoso", external_ref="CD-1002")
    factories.product(tenant, name="Endpoint", sku="EDR-STD")
    factories.product(tenant, name="Backup", sku="BKP-1TB")
    return tenant


def api(tenant, purpose=ApiToken.Purpose.USAGE):
    client = APIClient()
    _, plaintext = ApiToken.issue(tenant, purpose, "rmm")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


def counts(tenant):
    return {
        (c.organisation.external_ref, c.product.sku): c.quantity
        for c in UsageCount.objects.filter(tenant=tenant).select_related("organisation", "product")
    }


def rows(*items):
    return [{"organisation": o, "product": p, "quantity": q} for o, p, q in items]


def test_usage_is_stored_with_history_and_its_source(catalogue):
    client = api(catalogue)
    first = client.post(
        URL, rows(("nw-1001", "EDR-STD", 5), ("CD-1002", "bkp-1tb", 2)), format="json"
    )
    assert first.status_code == 201, first.json()
    assert first.json()["changed"] == 2 and not first.json()["replayed"]
    second = client.post(
        URL, rows(("NW-1001", "EDR-STD", 8), ("CD-1002", "BKP-1TB", 2)), format="json"
    )
    assert second.json()["changes"] == [
        {"organisation": "NW-1001", "product": "EDR-STD", "previous": 5, "quantity": 8}
    ]
    assert counts(catalogue) == {("NW-1001", "EDR-STD"): 8, ("CD-1002", "BKP-1TB"): 2}
    history = UsageChange.objects.filter(organisation__external_ref="NW-1001").order_by("pk")
    assert [(c.previous, c.new) for c in history] == [(None, 5), (5, 8)]
    assert all(c.submission.source == "api" and c.submission.token_id for c in history)


def test_any_bad_row_rejects_the_whole_request_with_every_error(catalogue):
    client = api(catalogue)
    client.post(URL, rows(("NW-1001", "EDR-STD", 5)), format="json")
    body = [
        *rows(
            ("NW-1001", "EDR-STD", 6),
            ("NW-9999", "EDR-STD", 1),
            ("CD-1002", "NOPE", -3),
            ("NW-1001", "EDR-STD", 7),
        ),
        {"organisation": "CD-1002"},
    ]
    response = client.post(URL, body, format="json")
    assert response.status_code == 400
    data = response.json()
    assert data["error"] == "invalid" and "nothing was saved" in data["detail"]
    errors = {row["row"]: row["errors"] for row in data["rows"]}
    assert set(errors) == {2, 3, 4, 5}
    assert "NW-9999" in errors[2]["organisation"][0]
    assert set(errors[3]) == {"quantity"}  # field errors first; lookups once fields are valid
    assert "Row 1 already" in errors[4]["row"][0]
    assert set(errors[5]) == {"product", "quantity"}
    assert counts(catalogue) == {("NW-1001", "EDR-STD"): 5}
    assert UsageSubmission.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "detail"),
    [({"usage": []}, "empty"), ({"rows": []}, "JSON list"), ("text", "JSON list")],
)
def test_malformed_bodies_are_refused(catalogue, body, detail):
    response = api(catalogue).post(URL, body, format="json")
    assert response.status_code == 400 and detail in response.json()["detail"]


def test_idempotency_key_applies_usage_once(catalogue):
    client = api(catalogue)
    payload = {"usage": rows(("NW-1001", "EDR-STD", 5)), "idempotency_key": "export-1"}
    assert client.post(URL, payload, format="json").status_code == 201
    client.post(URL, rows(("NW-1001", "EDR-STD", 9)), format="json")
    replay = client.post(URL, payload, format="json")
    assert replay.status_code == 200 and replay.json()["replayed"]
    assert counts(catalogue) == {("NW-1001", "EDR-STD"): 9}  # the retry did not undo it
    header = client.post(
        URL, rows(("NW-1001", "EDR-STD", 5)), format="json", HTTP_IDEMPOTENCY_KEY="export-1"
    )
    assert header.json()["replayed"]
    reused = client.post(
        URL,
        {"usage": rows(("NW-1001", "EDR-STD", 6)), "idempotency_key": "export-1"},
        format="json",
    )
    assert reused.status_code == 409 and "different usage" in reused.json()["detail"]


def test_only_usage_tokens_of_the_tenant_are_accepted(catalogue, personas):
    body = rows(("NW-1001", "EDR-STD", 5))
    assert APIClient().post(URL, body, format="json").status_code == 401
    assert api(catalogue, ApiToken.Purpose.PDF).post(URL, body, format="json").status_code == 401
    other = api(personas.tenant_b).post(URL, body, format="json")
    assert other.status_code == 400  # tenant B has no such organisation
    assert not UsageCount.objects.exists()


def test_openapi_schema_documents_the_usage_api(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/usage"]["post"]
    assert operation["operationId"] == "report_usage"
    assert {"201", "400", "409"} <= set(operation["responses"])


CSV = "organisation,product,quantity\nNW-1001,EDR-STD,5\nCD-1002,BKP-1TB,3\n"


def test_csv_import_previews_then_saves(catalogue, personas):
    client = personas.client(personas.owner_a)
    url = reverse("admin:billing_sync_usagecount_import")
    upload = SimpleUploadedFile("usage.csv", CSV.encode())
    preview = client.post(url, {"file": upload})
    assert preview.status_code == 200
    assert preview.context["preview"].ok and not UsageCount.objects.exists()
    assert b'name="confirm"' in preview.content
    token = preview.context["form"]["upload"].value()
    saved = client.post(url, {"upload": token, "confirm": "1"})
    assert saved.status_code == 302
    assert counts(catalogue) == {("NW-1001", "EDR-STD"): 5, ("CD-1002", "BKP-1TB"): 3}
    assert UsageSubmission.objects.get().source == "csv"


def test_csv_import_shows_per_row_errors_and_saves_nothing(catalogue, personas):
    client = personas.client(personas.owner_a)
    url = reverse("admin:billing_sync_usagecount_import")
    bad = CSV + "XX-1,EDR-STD,2\nNW-1001,BKP-1TB,many\n"
    page = client.post(url, {"file": SimpleUploadedFile("usage.csv", bad.encode()), "confirm": "1"})
    assert page.status_code == 200
    errors = page.context["preview"].errors
    assert [row.line for row in errors] == [4, 5]
    assert "XX-1" in page.content.decode() and b'name="confirm"' not in page.content
    assert not UsageCount.objects.exists()
    missing = client.post(url, {"file": SimpleUploadedFile("x.csv", b"org,sku\nNW-1001,EDR-STD\n")})
    assert "“organisation” is missing" in missing.context["preview"].problem


def test_viewer_cannot_import(catalogue, personas):
    client = personas.client(personas.viewer_a)
    url = reverse("admin:billing_sync_usagecount_import")
    assert client.post(url, {"content": CSV, "confirm": "1"}).status_code == 403
    assert not UsageCount.objects.exists()


def test_admin_edit_of_a_count_is_recorded_in_history(catalogue, personas):
    count = factories.usage_count(catalogue, quantity=4)
    client = personas.client(personas.owner_a)
    url = reverse("admin:billing_sync_usagecount_change", args=[count.pk])
    assert client.post(url, {"quantity": "6"}).status_code == 302
    count.refresh_from_db()
    assert count.quantity == 6
    change = UsageChange.objects.get(organisation=count.organisation)
    assert (change.previous, change.new, change.submission.source) == (4, 6, "admin")
    assert change.submission.user == personas.owner_a


def preview_table(page):
    """The preview's rows as (organisation, product, now, new), as the page shows them."""
    import re
    from html import unescape

    body = page.content.decode().split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [
        tuple(unescape(cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)[1:5])
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


def test_csv_preview_shows_the_counts_it_replaces_also_beside_errors(catalogue, personas):
    """Issue 15: "Now" showed a dash for pairs that had a count once a row had errors, and
    the same dash for pairs without one."""
    nw, cd = (catalogue.organisations.get(external_ref=ref) for ref in ("NW-1001", "CD-1002"))
    edr = catalogue.products.get(sku="EDR-STD")
    UsageSubmission.objects.record(catalogue, [(nw, edr, 7), (cd, edr, 0)], source="admin")
    client = personas.client(personas.owner_a)
    url = reverse("admin:billing_sync_usagecount_import")
    body = "organisation,product,quantity\nnw-1001,EDR-STD,5\nCD-1002,EDR-STD,4\n"
    body += "CD-1002,BKP-1TB,3\n"

    clean = client.post(url, {"file": SimpleUploadedFile("usage.csv", body.encode())})
    assert preview_table(clean) == [
        ("nw-1001", "EDR-STD", "7", "5"),
        ("CD-1002", "EDR-STD", "0", "4"),
        ("CD-1002", "BKP-1TB", "none yet", "3"),
    ]
    with_errors = client.post(
        url, {"file": SimpleUploadedFile("usage.csv", (body + "XX-9,EDR-STD,many\n").encode())}
    )
    assert preview_table(with_errors)[:3] == preview_table(clean)
    assert preview_table(with_errors)[3] == ("XX-9", "EDR-STD", "", "many")
