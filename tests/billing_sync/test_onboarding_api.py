"""Bulk onboarding through the API: `POST /api/v1/organisations` and `/products` upsert by
external reference / SKU, all or nothing, with an idempotency key, scoped to the token's
tenant; and the usage API creating unknown organisations when the tenant allows it."""

import json
from decimal import Decimal

import pytest
import requests
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from integrations.billing_sync.models import (
    BillingSyncSettings,
    OnboardingSubmission,
    OrganisationMapping,
    ProductMapping,
    UsageCount,
    UsageSubmission,
)
from portal.models import ApiToken, Organisation, Product
from tests import factories

ORGS, PRODUCTS, USAGE = "/api/v1/organisations", "/api/v1/products", "/api/v1/usage"


def api(tenant, purpose=ApiToken.Purpose.USAGE):
    client = APIClient()
    _, plaintext = ApiToken.issue(tenant, purpose, "crm")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


def organisations(tenant):
    return {
        o.external_ref: (o.name, o.active)
        for o in Organisation.objects.filter(tenant=tenant).order_by("external_ref")
    }


@pytest.fixture
def tenant(personas):
    return personas.tenant_a


def test_organisations_are_created_then_updated_by_external_reference(tenant):
    client = api(tenant)
    factories.organisation(tenant, name="Northwind", external_ref="NW-1001")
    answer = client.post(
        ORGS,
        {
            "organisations": [
                {"external_ref": "nw-1001", "name": "Northwind Traders"},
                {"external_ref": "CD-1002", "name": "Contoso Dental", "active": False},
                {"external_ref": "FB-1003", "name": "Fabrikam"},
            ]
        },
        format="json",
    )
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert (body["created"], body["updated"], body["unchanged"], body["replayed"]) == (
        2,
        1,
        0,
        False,
    )
    assert [(r["external_ref"], r["action"]) for r in body["results"]] == [
        ("NW-1001", "updated"),  # matched case-insensitively; the stored reference stays
        ("CD-1002", "created"),
        ("FB-1003", "created"),
    ]
    assert organisations(tenant) == {
        "CD-1002": ("Contoso Dental", False),
        "FB-1003": ("Fabrikam", True),
        "NW-1001": ("Northwind Traders", True),
    }
    # Fields a row leaves out stay as they are; a row changing nothing says so.
    again = client.post(
        ORGS,
        {
            "organisations": [
                {"external_ref": "CD-1002"},
                {"external_ref": "FB-1003", "active": False},
            ]
        },
        format="json",
    )
    assert [r["action"] for r in again.json()["results"]] == ["unchanged", "updated"]
    assert organisations(tenant)["CD-1002"] == ("Contoso Dental", False)
    assert organisations(tenant)["FB-1003"] == ("Fabrikam", False)
    submission = OnboardingSubmission.objects.order_by("pk").first()
    assert (submission.kind, submission.source, submission.token.tenant) == (
        "organisations",
        "api",
        tenant,
    )


def test_one_bad_row_saves_nothing_and_every_bad_row_is_listed(tenant):
    client = api(tenant)
    answer = client.post(
        ORGS,
        {
            "organisations": [
                {"external_ref": "OK-1", "name": "Fine"},
                {"external_ref": "NEW-2"},
                {"external_ref": "ok-1", "name": "Twice"},
                {"external_ref": 7, "name": "Number", "active": "yes"},
                "not an object",
            ]
        },
        format="json",
    )
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "invalid"
    assert body["detail"] == "3 of 5 rows are invalid; nothing was saved."
    errors = {row["row"]: row for row in body["rows"]}
    assert set(errors) == {3, 4, 5}
    assert errors[3]["errors"] == {"external_ref": ["Row 1 already gives “ok-1”."]}
    assert errors[4]["external_ref"] == "7"
    assert set(errors[4]["errors"]) == {"external_ref", "active"}
    assert errors[5]["errors"] == {"row": ["Each organisation is an object, not str."]}
    assert not Organisation.objects.exists() and not OnboardingSubmission.objects.exists()
    # Row 2 passes its own check, but a new organisation needs a name: found once the
    # others are fixed, still before anything is saved.
    fixed = client.post(
        ORGS,
        {"organisations": [{"external_ref": "OK-1", "name": "Fine"}, {"external_ref": "NEW-2"}]},
        format="json",
    )
    assert fixed.status_code == 400
    assert fixed.json()["rows"] == [
        {
            "row": 2,
            "external_ref": "NEW-2",
            "errors": {"name": ["Required for a new organisation."]},
        }
    ]
    assert not Organisation.objects.exists()


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ([{"external_ref": "X", "name": "X"}], "Send an object"),
        ({"organisations": []}, "The list of organisations is empty."),
        ({"organisations": {"external_ref": "X"}}, "JSON list of organisations"),
        ({"rows": []}, "JSON list of organisations"),
        ({"organisations": [{"external_ref": "X", "name": "X"}], "idempotency_key": True}, "text"),
    ],
)
def test_a_request_that_is_not_a_list_of_rows_is_refused(tenant, body, detail):
    answer = api(tenant).post(ORGS, body, format="json")
    assert answer.status_code == 400 and detail in answer.json()["detail"]
    assert not Organisation.objects.exists()


def test_more_rows_than_the_limit_are_refused(tenant, monkeypatch):
    from integrations.billing_sync import onboarding

    monkeypatch.setattr(onboarding, "MAX_ROWS", 2)
    rows = [{"external_ref": f"R-{n}", "name": "R"} for n in range(3)]
    answer = api(tenant).post(ORGS, {"organisations": rows}, format="json")
    assert answer.status_code == 400
    assert answer.json()["detail"] == "Send at most 2 organisations at a time."


def test_the_idempotency_key_replays_the_first_answer_and_refuses_other_rows(tenant):
    client = api(tenant)
    body = {"organisations": [{"external_ref": "NW-1001", "name": "Northwind"}]}
    first = client.post(ORGS, body, format="json", HTTP_IDEMPOTENCY_KEY="crm-1")
    Organisation.objects.filter(external_ref="NW-1001").update(name="Renamed meanwhile")
    again = client.post(ORGS, {**body, "idempotency_key": "crm-1"}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == {**first.json(), "replayed": True}
    assert again.json()["results"][0]["action"] == "created"
    assert organisations(tenant)["NW-1001"][0] == "Renamed meanwhile"  # not applied twice
    other = {"organisations": [{"external_ref": "NW-1001", "name": "Other"}]}
    conflict = client.post(ORGS, other, format="json", HTTP_IDEMPOTENCY_KEY="crm-1")
    assert conflict.status_code == 409 and conflict.json()["error"] == "conflict"
    assert "different organisations" in conflict.json()["detail"]
    assert OnboardingSubmission.objects.count() == 1
    # Keys are per endpoint: the same key onboards products independently.
    products = {"products": [{"sku": "EDR-STD", "name": "EDR"}]}
    assert (
        client.post(PRODUCTS, products, format="json", HTTP_IDEMPOTENCY_KEY="crm-1").status_code
        == 201
    )


def test_a_replay_is_answered_even_when_its_rows_would_now_be_refused(tenant):
    """The key is checked before the rows are matched again: here the Halo client the
    first request mapped to has since gone from Halo."""
    client = api(tenant)
    record = factories.halo_client_record(tenant, halo_id=12, name="Northwind Ltd")
    body = {
        "organisations": [{"external_ref": "NW-1", "name": "Northwind", "halo_client": "12"}],
        "idempotency_key": "k",
    }
    assert client.post(ORGS, body, format="json").status_code == 201
    record.missing = True
    record.save()
    assert client.post(ORGS, body, format="json").status_code == 200
    body["idempotency_key"] = "k2"
    refused = client.post(ORGS, body, format="json")
    assert refused.status_code == 400
    assert "no longer exists in Halo" in refused.json()["rows"][0]["errors"]["halo_client"][0]


def test_organisations_map_to_halo_clients_by_id_or_exact_name(tenant):
    client = api(tenant)
    northwind = factories.halo_client_record(tenant, halo_id=12, name="Northwind Ltd")
    contoso = factories.halo_client_record(tenant, halo_id=13, name="Contoso")
    factories.halo_client_record(tenant, halo_id=14, name="Twin")
    factories.halo_client_record(tenant, halo_id=15, name="twin")
    answer = client.post(
        ORGS,
        {
            "organisations": [
                {"external_ref": "NW-1", "name": "Northwind", "halo_client": "12"},
                {"external_ref": "CD-2", "name": "Contoso", "halo_client": "contoso"},
            ]
        },
        format="json",
    )
    assert answer.status_code == 201, answer.json()
    assert answer.json()["mapped"] == 2
    assert answer.json()["results"][0]["halo_client"] == {"id": 12, "name": "Northwind Ltd"}
    mappings = {m.organisation.external_ref: m for m in OrganisationMapping.objects.all()}
    assert (mappings["NW-1"].halo_client, mappings["CD-2"].halo_client) == (northwind, contoso)
    assert mappings["NW-1"].matched_by == "onboarding import"

    # Swapping the two clients is one consistent change, not a constraint violation.
    swapped = client.post(
        ORGS,
        {
            "organisations": [
                {"external_ref": "NW-1", "halo_client": "13"},
                {"external_ref": "CD-2", "halo_client": "12"},
            ]
        },
        format="json",
    )
    assert swapped.status_code == 201, swapped.json()
    assert {
        m.organisation.external_ref: m.halo_client.halo_id
        for m in OrganisationMapping.objects.all()
    } == {
        "NW-1": 13,
        "CD-2": 12,
    }
    refused = client.post(
        ORGS,
        {
            "organisations": [
                {"external_ref": "FB-3", "name": "Fabrikam", "halo_client": "13"},
                {"external_ref": "TW-4", "name": "Twin", "halo_client": "Twin"},
                {"external_ref": "UN-5", "name": "Unknown", "halo_client": "Nobody"},
            ]
        },
        format="json",
    )
    assert refused.status_code == 400
    errors = [row["errors"]["halo_client"][0] for row in refused.json()["rows"]]
    assert errors[0].startswith("Halo client “Contoso” (#13) would also be mapped to “NW-1”")
    assert errors[1] == "2 Halo clients are named “Twin” (#14, #15): give the id."
    assert errors[2].startswith("No Halo client has the id or name “Nobody”.")
    assert OrganisationMapping.objects.count() == 2 and Organisation.objects.count() == 2


def test_products_upsert_by_sku_with_prices_and_items(tenant):
    client = api(tenant)
    factories.product(tenant, name="EDR", sku="EDR-STD", unit_price=Decimal("4.00"))
    item = factories.halo_item_record(tenant, halo_id=31, name="Backup")
    answer = client.post(
        PRODUCTS,
        {
            "products": [
                {"sku": "edr-std", "unit_price": "4.5"},
                {"sku": "BKP-1TB", "name": "Backup 1 TB", "unit_price": 12, "halo_item": "31"},
                {"sku": "AV", "name": "Antivirus"},
            ]
        },
        format="json",
    )
    assert answer.status_code == 201, answer.json()
    results = answer.json()["results"]
    assert [(r["sku"], r["unit_price"], r["action"]) for r in results] == [
        ("EDR-STD", "4.5000", "updated"),
        ("BKP-1TB", "12.0000", "created"),
        ("AV", "0.0000", "created"),
    ]
    assert ProductMapping.objects.get().halo_item == item
    refused = client.post(
        PRODUCTS,
        {
            "products": [
                {"sku": "X", "name": "X", "unit_price": p} for p in ("1e3", -1, "1.23456", True)
            ]
        },
        format="json",
    )
    assert refused.status_code == 400
    assert [set(row["errors"]) for row in refused.json()["rows"]] == [{"unit_price"}] * 4
    assert Product.objects.count() == 3


def test_a_token_of_tenant_a_never_touches_tenant_b(personas):
    """B has the same external reference: A's request creates A's own; B's row is untouched,
    and B's Halo clients are not A's to map to."""
    b_org = factories.organisation(personas.tenant_b, name="B's", external_ref="NW-1001")
    factories.halo_client_record(personas.tenant_b, halo_id=99, name="B client")
    client = api(personas.tenant_a)
    answer = client.post(
        ORGS, {"organisations": [{"external_ref": "NW-1001", "name": "A's"}]}, format="json"
    )
    assert answer.json()["results"][0]["action"] == "created"
    b_org.refresh_from_db()
    assert b_org.name == "B's"
    refused = client.post(
        ORGS, {"organisations": [{"external_ref": "NW-1001", "halo_client": "99"}]}, format="json"
    )
    assert refused.status_code == 400 and not OrganisationMapping.objects.exists()
    # B's key space is its own too.
    key = {"idempotency_key": "same"}
    assert (
        client.post(
            ORGS, {"organisations": [{"external_ref": "K", "name": "K"}], **key}, format="json"
        ).status_code
        == 201
    )
    b = api(personas.tenant_b)
    assert (
        b.post(
            ORGS, {"organisations": [{"external_ref": "L", "name": "L"}], **key}, format="json"
        ).status_code
        == 201
    )


def test_only_usage_tokens_are_accepted(tenant):
    body = {"organisations": [{"external_ref": "X", "name": "X"}]}
    assert api(tenant, ApiToken.Purpose.PDF).post(ORGS, body, format="json").status_code == 401
    assert APIClient().post(ORGS, body, format="json").status_code == 401
    assert not Organisation.objects.exists()


def test_a_thousand_organisations_take_a_few_queries(tenant):
    client = api(tenant)
    rows = [{"external_ref": f"ORG-{n:04d}", "name": f"Organisation {n}"} for n in range(1000)]
    with CaptureQueriesContext(connection) as created:
        assert client.post(ORGS, {"organisations": rows}, format="json").status_code == 201
    for row in rows[::2]:
        row["name"] += " (renamed)"
    with CaptureQueriesContext(connection) as updated:
        answer = client.post(ORGS, {"organisations": rows}, format="json")
    assert (answer.json()["updated"], answer.json()["unchanged"]) == (500, 500)
    assert Organisation.objects.filter(tenant=tenant).count() == 1000
    # The token, the rate limit, the catalogue read, the submission, and the rows written in
    # batches (as large as the database allows: about 250 rows per INSERT on SQLite), never a
    # query per row.
    for captured in (created, updated):
        queries = [q["sql"] for q in captured.captured_queries if "SAVEPOINT" not in q["sql"]]
        writes = [
            q
            for q in queries
            if q.startswith(('INSERT INTO "portal_organisation', 'UPDATE "portal_organisation'))
        ]
        assert len(writes) <= 5 and len(queries) - len(writes) <= 7, "\n".join(
            q[:100] for q in queries
        )


# -- the usage API creating unknown organisations -------------------------------------------


def usage(organisation, quantity=3, **extra):
    return {"organisation": organisation, "product": "EDR-STD", "quantity": quantity, **extra}


def test_usage_creates_unknown_organisations_only_when_the_tenant_says_so(tenant):
    factories.product(tenant, sku="EDR-STD")
    factories.organisation(tenant, external_ref="NW-1001")
    client = api(tenant)
    body = {"usage": [usage("NW-1001"), usage("NEW-7", organisation_name="New Seven")]}
    refused = client.post(USAGE, body, format="json")
    assert refused.status_code == 400
    assert "NEW-7" in refused.json()["rows"][0]["errors"]["organisation"][0]
    assert not UsageCount.objects.exists() and Organisation.objects.count() == 1

    settings = BillingSyncSettings.for_tenant(tenant)
    settings.usage_creates_organisations = True
    settings.save()
    answer = client.post(USAGE, {**body, "idempotency_key": "u-1"}, format="json")
    assert answer.status_code == 201, answer.json()
    assert answer.json()["created_organisations"] == ["NEW-7"]
    assert Organisation.objects.get(external_ref="NEW-7").name == "New Seven"
    assert UsageCount.objects.count() == 2
    replay = client.post(USAGE, {**body, "idempotency_key": "u-1"}, format="json")
    assert replay.status_code == 200 and replay.json()["replayed"] is True
    assert replay.json()["created_organisations"] == ["NEW-7"]
    later = client.post(USAGE, {"usage": [usage("new-7", 4)]}, format="json")
    assert later.json()["created_organisations"] == [] and Organisation.objects.count() == 2


def test_usage_that_fails_creates_no_organisation(tenant):
    factories.product(tenant, sku="EDR-STD")
    BillingSyncSettings.objects.create(tenant=tenant, usage_creates_organisations=True)
    body = {"usage": [usage("NEW-1"), {"organisation": "NEW-2", "product": "NOPE", "quantity": 1}]}
    assert api(tenant).post(USAGE, body, format="json").status_code == 400
    assert not Organisation.objects.exists() and not UsageSubmission.objects.exists()


# -- over HTTP, through the real WSGI stack ---------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_onboarding_over_http(validated_server):
    tenant = factories.tenant("alpha")
    _, token = ApiToken.issue(tenant, ApiToken.Purpose.USAGE, "crm")
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "http-1"}
    body = {"organisations": [{"external_ref": f"H-{n}", "name": f"H {n}"} for n in range(50)]}
    first = requests.post(f"{validated_server}{ORGS}", json=body, headers=headers, timeout=30)
    again = requests.post(f"{validated_server}{ORGS}", json=body, headers=headers, timeout=30)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.headers["Content-Type"] == "application/json"
    assert again.json()["replayed"] and again.json()["results"] == first.json()["results"]
    bad = requests.post(
        f"{validated_server}{PRODUCTS}",
        data=json.dumps({"products": [{"sku": "S", "name": "\ud800"}]}),
        headers={**headers, "Content-Type": "application/json"},
        timeout=30,
    )
    assert bad.status_code == 400 and "surrogate" in bad.json()["detail"]
    assert Organisation.objects.filter(tenant=tenant).count() == 50
    assert not Product.objects.exists()


def test_a_failure_while_writing_leaves_nothing_half_applied(tenant, monkeypatch):
    """The organisations are inserted, then writing the mappings fails: the organisations
    go too (one transaction), and the submission with them."""
    factories.halo_client_record(tenant, halo_id=12, name="Northwind")

    def broken(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(OrganisationMapping.objects, "bulk_create", broken)
    from integrations.billing_sync import onboarding

    rows = [{"external_ref": f"R-{n}", "name": "R"} for n in range(600)]
    rows[-1]["halo_client"] = "12"
    with pytest.raises(RuntimeError):
        OnboardingSubmission.objects.record(
            tenant, onboarding.ORGANISATIONS, rows, source="api", key="k"
        )
    assert not Organisation.objects.exists() and not OnboardingSubmission.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_requests_creating_the_same_organisations_at_once_both_succeed():
    """Whichever inserts second meets the unique constraint, starts again and finds the
    other's rows: one request creates them, the other finds them unchanged; never a 500."""
    import threading

    from tests.billing_sync.test_claim import in_thread, skip_unless_postgres

    skip_unless_postgres()
    from integrations.billing_sync import onboarding

    tenant = factories.tenant("race")
    rows = [{"external_ref": f"R-{n}", "name": f"R {n}"} for n in range(300)]
    barrier, outcomes = threading.Barrier(2), []

    def request(key):
        barrier.wait()
        submission, _ = OnboardingSubmission.objects.record(
            tenant, onboarding.ORGANISATIONS, rows, source="api", key=key
        )
        outcomes.append((submission.added, submission.unchanged))

    for thread in [in_thread(lambda: request("a")), in_thread(lambda: request("b"))]:
        thread.join(timeout=60)
    assert sorted(outcomes) == [(0, 300), (300, 0)]
    assert Organisation.objects.filter(tenant=tenant).count() == 300
