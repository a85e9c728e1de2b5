"""Hostile JSON on the usage API and the Halo webhook receiver (pentest #12, finding 9).

Lone surrogates (not Unicode: no database can store them), NUL characters (PostgreSQL
refuses them in text and JSON), nesting deeper than any real body, numbers JSON cannot
store and wrong types answer 400 with a message naming the problem, and store nothing. The
same tests run on SQLite and PostgreSQL (CI runs the suite on both, `DATABASE_URL`); the
property tests use the derandomized profile of `tests/conftest.py`.
"""

import json

import pytest
from django.core.cache import cache
from hypothesis import event, given
from hypothesis import strategies as st

from integrations.billing_sync.models import UsageChange, UsageCount, UsageSubmission
from integrations.invoice_sync.models import WebhookDelivery
from portal.api import WindowThrottle
from tests import factories
from tests.billing_sync.test_usage import URL, api
from tests.invoice_sync.test_webhooks import basic, credentials, delivery, invoice_record, post

DEEP = 5000


def deep(depth=DEEP, inner="1"):
    """JSON text nested `depth` arrays deep (too deep for Python's own encoder to write)."""
    return "[" * depth + inner + "]" * depth


def body_with(template, **placeholders):
    """`template` as JSON text with each `"<name>"` string replaced by raw JSON text."""
    text = json.dumps(template)
    for name, raw in placeholders.items():
        text = text.replace(json.dumps(f"<{name}>"), raw)
    return text.encode()


@pytest.fixture
def catalogue(personas):
    tenant = personas.tenant_a
    factories.organisation(tenant, name="Northwind", external_ref="NW-1001")
    factories.product(tenant, name="Endpoint", sku="EDR-STD")
    return tenant


def usage_rows_count():
    models = (UsageSubmission, UsageChange, UsageCount)
    return tuple(model.objects.count() for model in models)


def send_usage(client, body, **headers):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(URL, data, content_type="application/json", **headers)


def row(organisation="NW-1001", product="EDR-STD", quantity=5):
    return {"organisation": organisation, "product": product, "quantity": quantity}


# -- usage API: explicit inputs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "detail"),
    [
        ({"usage": [row(organisation="\ud800")]}, {}, "usage[0].organisation"),
        ({"usage": [row(product="EDR\ud800")]}, {}, "usage[0].product"),
        ({"usage": [row(product="\udfffEDR")]}, {}, "surrogate"),
        ({"usage": [row(organisation="NW\x00-1001")]}, {}, "usage[0].organisation"),
        ({"usage": [row(product="EDR-STD\x00")]}, {}, "NUL"),
        ({"usage": [row()], "idempotency_key": "k\x00"}, {}, "idempotency_key"),
        ({"usage": [row()], "idempotency_key": "k\ud800"}, {}, "idempotency_key"),
        ({"usage": [row()], "\ud800": 1}, {}, "surrogate"),
        ([row(), row(organisation="\ud83d")], {}, "[1].organisation"),
        ({"usage": [row()]}, {"HTTP_IDEMPOTENCY_KEY": "k\x00ey"}, "Idempotency-Key"),
        ({"usage": [row()]}, {"HTTP_IDEMPOTENCY_KEY": "k\ud800"}, "Idempotency-Key"),
        ({"usage": [row()]}, {"HTTP_IDEMPOTENCY_KEY": "k\x07"}, "Idempotency-Key"),
        ({"usage": [row()], "idempotency_key": ["k"]}, {}, "idempotency_key"),
        ({"usage": [row()], "idempotency_key": {"k": 1}}, {}, "idempotency_key"),
        ({"usage": [row()], "idempotency_key": True}, {}, "idempotency_key"),
    ],
    ids=[
        "surrogate-organisation",
        "surrogate-product",
        "low-surrogate",
        "nul-organisation",
        "nul-product",
        "nul-key",
        "surrogate-key",
        "surrogate-object-key",
        "surrogate-in-bare-list",
        "nul-header",
        "surrogate-header",
        "control-header",
        "list-key",
        "object-key",
        "bool-key",
    ],
)
def test_usage_api_refuses_text_no_database_stores(catalogue, body, headers, detail):
    client = api(catalogue)
    before = usage_rows_count()
    response = send_usage(client, body, **headers)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid"
    assert detail in json.dumps(response.json()["detail"], ensure_ascii=False)
    assert usage_rows_count() == before


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (deep().encode(), "nested"),
        (body_with({"usage": [row(organisation="<deep>")]}, deep=deep()), "nested"),
        (body_with({"usage": "<deep>"}, deep=deep(900)), "nested"),
        (body_with({"usage": [row(quantity="<big>")]}, big="1e400"), "usage[0].quantity"),
        (body_with({"usage": [row(quantity="<nan>")]}, nan="NaN"), "JSON"),
        (b'{"usage": [{"organisation": "NW-1001", "product": "EDR-STD", "quantity": 5}', "JSON"),
        (b"\xff\xfe", "JSON"),
    ],
    ids=["deep-body", "deep-field", "900-deep", "infinite-number", "nan", "truncated", "not-utf8"],
)
def test_usage_api_refuses_bodies_json_cannot_hold(catalogue, body, detail):
    before = usage_rows_count()
    response = send_usage(api(catalogue), body)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid"
    assert detail in response.json()["detail"]
    assert usage_rows_count() == before


def test_usage_api_still_takes_any_real_unicode(catalogue):
    """Only text that is not Unicode is refused: names in any script are fine."""
    factories.organisation(catalogue, name="Zürich", external_ref="ZÜ-😀-東京")
    client = api(catalogue)
    response = send_usage(
        client, {"usage": [row(organisation="zü-😀-東京")], "idempotency_key": "clé-😀"}
    )
    assert response.status_code == 201, response.content
    assert UsageSubmission.objects.get().idempotency_key == "clé-😀"
    unknown = send_usage(client, {"usage": [row(organisation="NW-\u200b\ufeff")]})
    assert unknown.status_code == 400 and "NW-\u200b\ufeff" in unknown.content.decode()


# -- Halo webhook: explicit inputs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (json.dumps({"id": "\ud800"}).encode(), "id"),
        (json.dumps(delivery(invoice_record(client_name="Contoso \ud800"))).encode(), "surrogate"),
        (json.dumps({"id": "d-1", "\udc00": 1}).encode(), "surrogate"),
        (json.dumps({"id": "d-1\x00"}).encode(), "NUL"),
        (json.dumps({"id": "d-1", "note": {"\x00": "key"}}).encode(), "NUL"),
        (body_with({"id": "d-1", "invoice": "<deep>"}, deep=deep()), "nested"),
        (body_with({"id": "d-1", "invoice": "<deep>"}, deep=deep(900)), "nested"),
        (deep().encode(), "nested"),
        (body_with({"id": "d-1", "total": "<big>"}, big="-1e400"), "total"),
        (json.dumps({"id": ["d-1"]}).encode(), "id"),
        (json.dumps({"id": {"d": 1}}).encode(), "id"),
        (json.dumps({"id": True}).encode(), "id"),
        (json.dumps({"id": 1.5}).encode(), "id"),
        (json.dumps({"id": "d-1", "event": ["invoice updated"]}).encode(), "event"),
        (json.dumps({"id": "d-1", "object_id": {"id": 1}}).encode(), "object_id"),
    ],
    ids=[
        "surrogate-id",
        "surrogate-in-record",
        "surrogate-key",
        "nul-id",
        "nul-key",
        "deep-5000",
        "deep-900",
        "deep-body",
        "infinite-number",
        "list-id",
        "object-id",
        "bool-id",
        "float-id",
        "list-event",
        "object-object-id",
    ],
)
def test_halo_webhook_refuses_what_it_cannot_store(personas, client, body, detail, monkeypatch):
    monkeypatch.setattr("portal.jobs.async_task", lambda *args, **options: None)
    response = post(client, personas.tenant_a.slug, body, basic(*credentials(personas.tenant_a)))
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid"
    assert detail in response.json()["detail"]
    assert not WebhookDelivery.objects.exists()


def test_halo_webhook_keeps_text_that_only_looks_like_a_nul(personas, client, monkeypatch):
    r"""A backslash followed by `u0000` is ordinary text (`"\\u0000"` in JSON), not a NUL."""
    monkeypatch.setattr("portal.jobs.async_task", lambda *args, **options: None)
    record = invoice_record(client_name=r"C:\u0000 Ltd")
    response = post(
        client, personas.tenant_a.slug, delivery(record), basic(*credentials(personas.tenant_a))
    )
    assert response.status_code == 202, response.content
    assert WebhookDelivery.objects.get().payload["invoice"]["client_name"] == r"C:\u0000 Ltd"


# -- property tests ------------------------------------------------------------------------------

#: Text of any code point, with what breaks databases (NUL, lone surrogates) often.
hostile_text = st.text(
    st.one_of(
        st.characters(exclude_categories=()),
        st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\x7f", "\n"]),
    ),
    max_size=12,
)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False),  # infinities too: JSON cannot store them
    hostile_text,
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(hostile_text, children, max_size=3)
    ),
    max_leaves=10,
)
DEEP_MARK = "<deep>"


@st.composite
def mutated(draw, valid):
    """`valid` (a JSON-able tree) as JSON text after 0-2 mutations: a value or key anywhere
    replaced by hostile text, any JSON value, or a value nested up to 5,000 deep."""
    tree = json.loads(json.dumps(valid))
    deep_value = None
    for _ in range(draw(st.integers(0, 2))):
        parents = [tree]
        places = []  # (container, key)
        while parents:
            container = parents.pop()
            keys = container.keys() if isinstance(container, dict) else range(len(container))
            for key in keys:
                places.append((container, key))
                if isinstance(container[key], dict | list):
                    parents.append(container[key])
        if not places:
            break
        container, key = draw(st.sampled_from(places))
        how = draw(st.sampled_from(["value", "text", "key", "deep"]))
        if how == "key" and isinstance(container, dict):
            container[draw(hostile_text)] = container.pop(key)
        elif how == "deep":
            depth = draw(st.sampled_from([33, 999, 1000, DEEP]))
            deep_value = deep(depth, json.dumps(draw(json_leaves)))
            container[key] = DEEP_MARK
        else:
            container[key] = draw(hostile_text if how == "text" else json_values)
    text = json.dumps(tree)
    if deep_value is not None:
        text = text.replace(json.dumps(DEEP_MARK), deep_value, 1)
    return text.encode()


usage_rows = st.lists(
    st.builds(
        row,
        st.sampled_from(["NW-1001", "nw-1001", "CD-1002", "ZÜ-東京"]),
        st.sampled_from(["EDR-STD", "BKP-1TB", "bkp-1tb"]),
        st.integers(0, 20),
    ),
    min_size=1,
    max_size=3,
)
usage_bodies = st.one_of(
    usage_rows,
    st.fixed_dictionaries(
        {"usage": usage_rows}, optional={"idempotency_key": st.sampled_from(["k-1", "k-2", 7])}
    ),
).flatmap(mutated)


@pytest.fixture
def wide_catalogue(catalogue):
    factories.organisation(catalogue, name="Contoso", external_ref="CD-1002")
    factories.organisation(catalogue, name="Zürich", external_ref="ZÜ-東京")
    factories.product(catalogue, name="Backup", sku="BKP-1TB")
    return catalogue


def fresh_throttle():
    cache.clear()
    WindowThrottle.forget_claims()


@given(
    body=st.one_of(usage_bodies, json_values.map(lambda v: json.dumps(v).encode())),
    header=st.one_of(st.none(), st.sampled_from(["k-1", "k-3"]), hostile_text),
)
def test_usage_api_never_answers_5xx_nor_half_applies(wide_catalogue, body, header):
    fresh_throttle()
    headers = {} if header is None else {"HTTP_IDEMPOTENCY_KEY": header}
    before = usage_rows_count()
    response = send_usage(api(wide_catalogue), body, **headers)
    event(f"answer {response.status_code}")
    assert response.status_code < 500
    answer = response.json()
    if response.status_code in (200, 201):
        submissions = 0 if answer["replayed"] else 1
        changes = 0 if answer["replayed"] else answer["changed"]
        after = usage_rows_count()
        assert after[:2] == (before[0] + submissions, before[1] + changes)
    else:
        assert response.status_code in (400, 409), answer
        assert answer["error"] in ("invalid", "conflict") and answer["detail"]
        assert usage_rows_count() == before


deliveries = st.builds(
    lambda delivery_id, event_name, record: delivery(record, delivery_id, event_name),
    st.one_of(st.integers(1, 10**6), st.text("abcdef0123456789-", min_size=1, max_size=36)),
    st.sampled_from(["invoice updated", "invoice created", "client updated", "other"]),
    st.builds(invoice_record, st.integers(1, 10**6)),
).flatmap(mutated)


@given(
    body=st.one_of(deliveries, json_values.map(lambda v: json.dumps(v).encode())),
    raw=st.binary(max_size=20),
)
def test_halo_webhook_never_answers_5xx_nor_stores_junk(personas, client, monkeypatch, body, raw):
    monkeypatch.setattr("portal.jobs.async_task", lambda *args, **options: None)
    auth = basic(*credentials(personas.tenant_a))
    for payload in (body, raw):
        before = WebhookDelivery.objects.count()
        response = post(client, personas.tenant_a.slug, payload, auth)
        event(f"answer {response.status_code}")
        assert response.status_code < 500
        if response.status_code in (200, 202):
            assert WebhookDelivery.objects.count() == before + (response.status_code == 202)
            stored = WebhookDelivery.objects.get(delivery_id=response.json()["delivery"])
            # What was stored is Unicode text all through, and its id is an id.
            json.dumps(stored.payload, ensure_ascii=False).encode()
            assert type(stored.payload["id"]) in (str, int)
        else:
            assert response.status_code == 400 and response.json()["detail"]
            assert WebhookDelivery.objects.count() == before
