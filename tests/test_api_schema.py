"""The portal keeps to its own OpenAPI schema (`/api/schema/`), checked by schemathesis.

`test_every_operation_keeps_to_the_schema` runs schemathesis's examples, coverage and
fuzzing phases on every operation of the served schema (the usage and onboarding APIs, the
PDF API, the Halo webhook and the pay link), over HTTP against the real WSGI application
behind wsgiref's validator (the `validated_server` fixture), with a tenant's real usage
token, PDF secret and webhook credentials, so the authenticated answers (201, 200 PDFs, 304,
202, 302) are checked too, not only the refusals. Any 5xx, undocumented status code or
content type, body or header that breaks the documented schema, or a request the schema
calls invalid that the API accepts, fails it. Examples are the same on every run (the
derandomized profile of tests/conftest.py: at most 60 per operation and phase); rate limits
are lifted there, so how many requests land in one minute's window changes nothing.

The other tests pin each thing schemathesis found, one request at a time (in process: the
WSGI application called directly, on the test's own transaction).
"""

import base64

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client, override_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from billing.payments.models import PaymentSettings
from integrations.billing_sync.api import UsageThrottle
from integrations.invoice_sync import tasks as invoice_sync_tasks
from integrations.invoice_sync.models import InvoiceSyncSettings
from portal.api import WindowThrottle
from portal.crypto import token_digest
from portal.models import ApiToken
from tests import factories
from tests.invoicing.conftest import branded_tenant

USAGE_TOKEN = "hpp_usage_schemathesis-usage-token"
PDF_SECRET = "hpp_pdf_schemathesis-pdf-secret"
WEBHOOK_USER, WEBHOOK_PASSWORD = "halo-schemathesis", "schemathesis-webhook-password"
# alpha opens pay pages at once, bravo asks a question first, charlie takes payments for
# invoices it does not know (each a different 200 or 302 of the pay link).
TENANTS = ["alpha", "bravo", "charlie"]
ORGANISATIONS = ["NW-1001", "CD-1002"]
PRODUCTS = ["EDR-STD", "BKP-1TB"]
REFS = ["INV-000001", "4242", "INV-04242"]  # alpha's portal invoice; a Halo invoice's two refs

# Every check of a single answer (not the ones that send more requests).
ANSWER_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def served_schema():
    """The schema as /api/schema/ serves it (fetched once, at collection)."""
    with override_settings(SECURE_SSL_REDIRECT=False):
        response = Client().get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200, response.content
    return response.json()


CONFIG = schemathesis.Config.from_dict(
    {
        "auth": {
            "openapi": {
                "usageToken": {"bearer": USAGE_TOKEN},
                "pdfSecret": {"bearer": PDF_SECRET},
                "haloWebhook": {"username": WEBHOOK_USER, "password": WEBHOOK_PASSWORD},
            }
        },
        # NUL characters are refused on purpose, everywhere (tests/test_hostile_input.py);
        # the schema does not spell that out for every string.
        "generation": {"allow-x00": False},
        "continue-on-failure": True,  # a failing operation lists every distinct failure
        "output": {"sanitization": {"enabled": False}},  # test secrets: show what was sent
        # Real tenant codes, invoice references, organisations and products, most of the
        # time, so that requests get past the lookups; random ones the rest of the time.
        "dictionaries": {
            "tenants": {"values": TENANTS},
            "refs": {"values": REFS},
            "organisations": {"values": ORGANISATIONS},
            "products": {"values": PRODUCTS},
        },
        "parameters": {
            "path.tenant_code": {"dictionary": "tenants", "probability": 0.8},
            "path.ref": {"dictionary": "refs", "probability": 0.5},
            "body.usage[*].organisation": {"dictionary": "organisations", "probability": 0.8},
            "body.usage[*].product": {"dictionary": "products", "probability": 0.8},
        },
        "operations": [
            {
                # Rows naming what the tenant does not have, or a pair twice, answer 400:
                # data decides that, not the schema (the 400's body is still checked).
                "include-operation-id": "report_usage",
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "400", "401", "409", "429"]
                    }
                },
            },
            *(
                {
                    # Likewise onboarding: a reference twice, a new row without a name, a
                    # Halo record the tenant does not have, a price past 4 decimal places.
                    "include-operation-id": operation,
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2xx", "400", "401", "409", "429"]
                        }
                    },
                }
                for operation in ("import_organisations", "import_products")
            ),
        ],
    }
)
schema = schemathesis.openapi.from_dict(served_schema(), config=CONFIG)


def issue_token(tenant, purpose, plaintext):
    """An API token with a known secret (ApiToken.issue makes a random one)."""
    return ApiToken.objects.create(
        tenant=tenant, purpose=purpose, name="schemathesis", prefix=plaintext[:12],
        digest=token_digest(plaintext),
    )  # fmt: skip


@pytest.fixture
def portal_data(monkeypatch, settings):
    """The data the examples name; rate limits lifted, and the webhook's drain task not
    queued (no broker needed). Needs a database fixture before it."""
    alpha, bravo, charlie = (branded_tenant(slug) for slug in TENANTS)
    for ref in ORGANISATIONS:
        factories.organisation(alpha, external_ref=ref)
    for sku in PRODUCTS:
        factories.product(alpha, sku=sku)
    factories.portal_invoice(alpha)
    for tenant in (alpha, bravo):
        factories.invoice(tenant, halo_id=4242, third_party_number="INV-04242")
    factories.payment_settings(bravo, link_check=PaymentSettings.LinkCheck.AMOUNT)
    factories.payment_settings(charlie, pay_unknown_invoices=True)
    issue_token(alpha, ApiToken.Purpose.USAGE, USAGE_TOKEN)
    issue_token(alpha, ApiToken.Purpose.PDF, PDF_SECRET)
    webhook = InvoiceSyncSettings.for_tenant(alpha)
    webhook.webhook_username = WEBHOOK_USER
    webhook.webhook_password_digest = token_digest(WEBHOOK_PASSWORD)
    webhook.save()
    settings.PAYMENTS_LINK_RATE = ""
    settings.INVOICE_PDF_RATE = None
    monkeypatch.setattr(UsageThrottle, "rate", "1000000/min")
    monkeypatch.setattr(invoice_sync_tasks, "queue_drain", lambda tenant_id: None)


@pytest.fixture
def server(validated_server, portal_data):
    """The portal over HTTP (`validated_server`) with `portal_data`: its base URL."""
    return validated_server


@pytest.fixture
def app(db, portal_data):
    """The portal's WSGI application, in process, with `portal_data`. Database connections
    stay open between requests, as under Django's test client: closing them would end the
    test's transaction."""
    signals = (request_started, request_finished)
    for signal in signals:
        signal.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        for signal in signals:
            signal.connect(close_old_connections)


@pytest.mark.filterwarnings("ignore:Unknown REQUEST_METHOD:wsgiref.validate.WSGIWarning")
@schema.parametrize()
def test_every_operation_keeps_to_the_schema(case, server):
    case.call_and_validate(base_url=server)


# -- what schemathesis found, pinned ------------------------------------------------------------

WEBHOOK = schema["/api/v1/halo/webhook/{tenant_code}"]["POST"]
USAGE = schema["/api/v1/usage"]["POST"]
PDF = schema["/api/v1/invoices/{ref}/pdf"]["GET"]
PAY_LINK = schema["/pay/{tenant_code}/{ref}"]["GET"]


def answer(case, app):
    """`case` sent once; fails unless the answer keeps to the schema."""
    response = case.call(app=app)
    case.validate_response(response, checks=ANSWER_CHECKS)
    return response


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


WEBHOOK_AUTHORIZATION = basic(WEBHOOK_USER, WEBHOOK_PASSWORD)


def delivery(body, tenant_code="alpha", authorization=WEBHOOK_AUTHORIZATION):
    headers = {"Authorization": authorization} if authorization else {}
    return WEBHOOK.Case(
        path_parameters={"tenant_code": tenant_code},
        headers=headers,
        body=body,
        media_type="application/json",
    )


def usage(body, token=USAGE_TOKEN):
    return USAGE.Case(
        headers={"Authorization": f"Bearer {token}"}, body=body, media_type="application/json"
    )


def test_the_webhook_documents_its_refusals(app):
    """Only 200 and 202 were documented: every refusal was an undocumented status."""
    assert answer(delivery({"id": "d-1"}, authorization=None), app).status_code == 401
    assert answer(delivery({"id": "d-1"}, tenant_code="nobody"), app).status_code == 401
    refused = answer(delivery(["not", "a", "delivery"]), app)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid"
    assert answer(delivery({"id": "d-1"}), app).status_code == 202
    assert answer(delivery({"id": "d-1"}), app).status_code == 200


WEBHOOK_BODIES = [
    ({"id": "d-1", "event": "invoice updated", "object_id": 501}, True),
    ({"id": 77, "event": None, "timestamp": "2026-03-02T10:00:00Z", "extra": [1]}, True),
    ({"id": -3}, True),
    ({}, False),
    ({"id": ""}, False),
    ({"id": 0}, False),
    ({"id": None}, False),
    ({"id": True}, False),
    ({"id": 1.5}, False),
    ({"id": "d-2", "object_id": {"id": 5}}, False),
    ({"id": "d-3", "event": ["invoice updated"]}, False),
]


@pytest.mark.parametrize(("body", "accepted"), WEBHOOK_BODIES)
def test_the_webhook_schema_admits_what_the_receiver_accepts(app, body, accepted):
    """The delivery was documented as any object: most of them answer 400."""
    response = answer(delivery(body), app)
    assert (response.status_code in (200, 202)) is accepted, response.text
    assert WEBHOOK.body[0].is_valid(body) is accepted


def row(organisation="NW-1001", product="EDR-STD", quantity=3):
    return {"organisation": organisation, "product": product, "quantity": quantity}


USAGE_BODIES = [
    ({"usage": [row()]}, True),
    ({"usage": [row()], "idempotency_key": None}, True),
    ({"usage": [row()], "idempotency_key": 20261122}, True),
    ({"usage": [row()], "idempotency_key": 0}, True),
    ({"usage": [row()], "idempotency_key": "  rmm-export  "}, True),
    ({"usage": [row()], "idempotency_key": True}, False),
    ({"usage": [row()], "idempotency_key": ["k"]}, False),
    ({"usage": [row()], "idempotency_key": "k" * 101}, False),
    ({"usage": [row(organisation="")]}, False),
    ({"usage": [row(organisation="   ")]}, False),
    ({"usage": [row(product="\t")]}, False),
    ({"usage": [row(quantity=-1)]}, False),
]


@pytest.mark.parametrize(("body", "accepted"), USAGE_BODIES)
def test_the_usage_schema_admits_what_the_api_accepts(app, body, accepted):
    """A null or numeric idempotency key was accepted but documented as text only; blank
    references were refused but documented as any text."""
    response = answer(usage(body), app)
    assert (response.status_code in (200, 201)) is accepted, response.text
    assert USAGE.body[0].is_valid(body) is accepted


def test_a_numeric_idempotency_key_is_a_key_even_zero(app):
    """Zero was read as no key at all, so a retry applied the usage twice."""
    first = answer(usage({"usage": [row(quantity=5)], "idempotency_key": 0}), app)
    again = answer(usage({"usage": [row(quantity=5)], "idempotency_key": 0}), app)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["replayed"] is True


@pytest.mark.parametrize(
    "case",
    [
        usage({"usage": [row()]}),
        PDF.Case(
            path_parameters={"ref": "INV-000001"},
            headers={"Authorization": f"Bearer {PDF_SECRET}"},
        ),
        PAY_LINK.Case(path_parameters={"tenant_code": "alpha", "ref": "4242"}),
    ],
    ids=["usage", "pdf", "pay-link"],
)
def test_rate_limited_answers_are_documented(app, settings, monkeypatch, case):
    """The usage API's 429 was undocumented (and the pay link was not in the schema)."""
    monkeypatch.setattr(WindowThrottle, "timer", staticmethod(lambda: 600.0))  # one window
    monkeypatch.setattr(UsageThrottle, "rate", "1/min")
    settings.INVOICE_PDF_RATE = "1/min"
    settings.PAYMENTS_LINK_RATE = "1/min"
    assert answer(case, app).status_code != 429
    assert answer(case, app).status_code == 429


def test_the_pay_link_answers_are_documented(app):
    """The pay link was left out of the schema: a 302 to the pay page, the question page
    (bravo asks first), the unknown-invoice form (charlie takes those), 404 pages."""
    found = answer(PAY_LINK.Case(path_parameters={"tenant_code": "alpha", "ref": "4242"}), app)
    assert found.status_code == 302
    assert found.headers["location"][0].startswith("/pay/alpha/invoice/")
    for tenant_code, ref, status in [
        ("bravo", "4242", 200),
        ("charlie", "4242", 200),
        ("alpha", "9", 404),
        ("alpha", "$INVOICEID", 404),
        ("nobody", "4242", 404),
    ]:
        case = PAY_LINK.Case(path_parameters={"tenant_code": tenant_code, "ref": ref})
        response = answer(case, app)
        assert response.status_code == status, (tenant_code, ref)
        assert response.headers["content-type"][0].startswith("text/html")


@pytest.mark.parametrize("method", ["OPTIONS", "POST", "DELETE"])
def test_the_pay_link_refuses_other_methods_without_a_500(app, method):
    """OPTIONS answered 500: DRF's metadata answer has no template to render it."""
    case = PAY_LINK.Case(method=method, path_parameters={"tenant_code": "alpha", "ref": "4242"})
    response = case.call(app=app)
    assert response.status_code == 405
    allowed = response.headers["allow"][0].replace(" ", "").split(",")
    assert set(allowed) == {"GET", "HEAD"}


ORGANISATIONS_API = schema["/api/v1/organisations"]["POST"]
PRODUCTS_API = schema["/api/v1/products"]["POST"]

ONBOARDING_BODIES = [
    (ORGANISATIONS_API, {"organisations": [{"external_ref": "NEW-1", "name": "New"}]}, True),
    (ORGANISATIONS_API, {"organisations": [{"external_ref": "NW-1001", "active": False}]}, True),
    (ORGANISATIONS_API, {"organisations": [{"external_ref": 7, "name": "Number"}]}, False),
    (
        ORGANISATIONS_API,
        {"organisations": [{"external_ref": "A", "name": "A", "active": "yes"}]},
        False,
    ),
    (ORGANISATIONS_API, {"organisations": [{"external_ref": "A", "name": " "}]}, False),
    (ORGANISATIONS_API, {"organisations": []}, False),
    (
        ORGANISATIONS_API,
        {"organisations": [{"external_ref": "A", "name": "A"}], "idempotency_key": 5},
        True,
    ),
    (PRODUCTS_API, {"products": [{"sku": "S-1", "name": "S", "unit_price": 4.5}]}, True),
    (PRODUCTS_API, {"products": [{"sku": "S-1", "name": "S", "unit_price": "4.50"}]}, True),
    (PRODUCTS_API, {"products": [{"sku": "S-1", "name": "S", "unit_price": "1e3"}]}, False),
    (PRODUCTS_API, {"products": [{"sku": "S-1", "name": "S", "unit_price": -1}]}, False),
    (PRODUCTS_API, {"products": [{"sku": "S-1", "name": "S", "unit_price": True}]}, False),
]


@pytest.mark.parametrize(("endpoint", "body", "accepted"), ONBOARDING_BODIES)
def test_the_onboarding_schema_admits_what_the_api_accepts(app, endpoint, body, accepted):
    """DRF's fields take numbers as text, "yes" as true and "1e3" as a price; the schema
    says string, boolean and decimal text, so the API refuses what it does not document."""
    case = endpoint.Case(
        headers={"Authorization": f"Bearer {USAGE_TOKEN}"}, body=body, media_type="application/json"
    )
    response = answer(case, app)
    assert (response.status_code in (200, 201)) is accepted, response.text
    assert endpoint.body[0].is_valid(body) is accepted
