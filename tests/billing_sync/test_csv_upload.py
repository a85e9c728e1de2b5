"""CSV import of large files (pentest #12, finding 11): the upload is kept on the server
between preview and confirm, scoped to its tenant and user, up to CSV_IMPORT_MAX_BYTES."""

import html
from html.parser import HTMLParser

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from integrations.billing_sync.models import UsageCount, UsageSubmission
from tests import factories

URL = reverse("admin:billing_sync_usagecount_import")


@pytest.fixture
def catalogue(personas):
    """200 organisations x 50 products in tenant A."""
    tenant = personas.tenant_a
    organisations = [
        factories.organisation(tenant, external_ref=f"ORG-{n:04d}") for n in range(200)
    ]
    products = [factories.product(tenant, sku=f"SKU-{n:02d}") for n in range(50)]
    return organisations, products


def big_csv(catalogue, target_bytes):
    """Every pair of the catalogue once, with a notes column padding rows to `target_bytes`."""
    organisations, products = catalogue
    pairs = [(o, p) for o in organisations for p in products]
    padding = max(0, target_bytes // len(pairs) - 40)
    lines = ["organisation,product,quantity,notes"]
    lines += [
        f"{o.external_ref},{p.sku},{(i % 97) + 1},{'x' * padding}" for i, (o, p) in enumerate(pairs)
    ]
    return ("\n".join(lines) + "\n").encode()


def preview(client, content, name="usage.csv"):
    return client.post(URL, {"file": SimpleUploadedFile(name, content, "text/csv")})


class HiddenFields(HTMLParser):
    def __init__(self):
        super().__init__()
        self.fields = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("type") == "hidden" and attrs.get("name"):
            self.fields[attrs["name"]] = attrs.get("value") or ""


def hidden_fields(page):
    parser = HiddenFields()
    parser.feed(page.content.decode())
    return parser.fields


def confirm(client, page):
    """Press "Save these counts" as a browser would: the page's hidden fields, and confirm."""
    return client.post(URL, {**hidden_fields(page), "confirm": "1"})


def test_a_file_over_django_s_form_field_limit_previews_then_saves(personas, catalogue):
    content = big_csv(catalogue, 3_100_000)
    assert len(content) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # 2.5 MB
    client = personas.client(personas.owner_a)

    page = preview(client, content)
    assert page.status_code == 200 and page.context["preview"].ok
    assert b'name="confirm"' in page.content
    assert not UsageCount.objects.exists()

    saved = confirm(client, page)
    assert saved.status_code == 302
    assert UsageCount.objects.filter(tenant=personas.tenant_a).count() == 10_000
    assert UsageSubmission.objects.get().rows == 10_000
    again = confirm(client, page)  # the upload is used up
    assert again.status_code == 400 and "upload the file again" in again.content.decode()
    assert UsageSubmission.objects.count() == 1


def test_a_file_over_the_limit_is_refused_with_the_limit_named(personas, catalogue, settings):
    settings.CSV_IMPORT_MAX_BYTES = 2**20
    page = preview(personas.client(personas.owner_a), big_csv(catalogue, 1_500_000))
    assert page.status_code == 200
    assert "larger than 1 MB (the import's limit): split it" in html.unescape(page.content.decode())
    assert page.context["preview"] is None and not UsageCount.objects.exists()


def test_another_tenant_s_upload_is_refused(personas, catalogue):
    page = preview(personas.client(personas.owner_a), big_csv(catalogue, 10_000))
    client_b = personas.client(personas.owner_b)
    refused = confirm(client_b, page)
    assert refused.status_code == 400
    assert "upload the file again" in refused.content.decode()
    assert "ORG-0001" not in refused.content.decode()
    assert not UsageCount.objects.exists()
    # A's owner still has it: nothing was lost.
    assert confirm(personas.client(personas.owner_a), page).status_code == 302
    assert UsageCount.objects.filter(tenant=personas.tenant_a).exists()


def test_another_user_of_the_same_tenant_cannot_use_an_upload(personas, catalogue):
    from tests.conftest import make_staff

    page = preview(personas.client(personas.owner_a), big_csv(catalogue, 10_000))
    colleague = make_staff("admin-a", personas.tenant_a, "admin")
    assert confirm(personas.client(colleague), page).status_code == 400
    assert not UsageCount.objects.exists()


def test_an_expired_upload_is_refused(personas, catalogue):
    from integrations.billing_sync.models import CsvUpload

    client = personas.client(personas.owner_a)
    page = preview(client, big_csv(catalogue, 10_000))
    upload = CsvUpload.objects.get()
    assert upload.content.startswith("organisation,product")
    token = hidden_fields(page)["upload"]
    assert token and token not in str(CsvUpload.objects.values().get())  # kept hashed
    CsvUpload.objects.update(expires=upload.created)
    assert confirm(client, page).status_code == 400
    assert not UsageCount.objects.exists()


def test_a_file_with_errors_is_kept_for_nothing(personas, catalogue):
    """A preview with errors cannot be confirmed, and its upload is not kept."""
    from integrations.billing_sync.models import CsvUpload

    content = big_csv(catalogue, 10_000) + b"NOPE,SKU-01,3,\n"
    page = preview(personas.client(personas.owner_a), content)
    assert page.context["preview"].errors and b'name="confirm"' not in page.content
    assert not CsvUpload.objects.exists()


def test_too_many_rows_are_refused_with_the_limit_named(personas, catalogue, monkeypatch):
    from integrations.billing_sync import csv_import

    monkeypatch.setattr(csv_import, "MAX_ROWS", 3)
    content = b"organisation,product,quantity\n" + b"ORG-0001,SKU-01,1\n" * 4
    page = preview(personas.client(personas.owner_a), content)
    assert page.context["preview"].problem == ("The file has 4 rows: import at most 3 at a time.")
