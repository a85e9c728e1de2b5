"""HaloClient against the simulator over real HTTP: tokens, paging, variants, faults."""

import logging

import pytest

from integrations.halo import (
    HaloBadRequest,
    HaloClient,
    HaloNotFound,
    HaloPermissionError,
    HaloRateLimited,
    HaloServerError,
    HaloUnavailable,
    HaloUnexpectedResponse,
)
from tests.halo.conftest import make_connection

pytestmark = pytest.mark.django_db


def sim_count(sim, endpoint):
    return sim.control.requests()["by_endpoint"].get(endpoint, 0)


def live(sim, resource):
    return [r for r in sim.control.state(resource) if not r.get("_deleted")]


# -- tokens ---------------------------------------------------------------------------------


def test_token_fetched_once_and_shared_through_the_cache(sim, connection):
    first, second = HaloClient(connection), HaloClient(connection)  # two processes' worth
    list(first.list_items())
    list(second.list_items())
    list(first.list_items())
    assert first.stats.token_requests == 1
    assert second.stats.token_requests == 0
    assert sim_count(sim, "POST /auth/token") == 1


def test_a_token_is_never_sent_to_a_resource_server_it_was_not_fetched_for(connection):
    from integrations.halo.tokens import TokenCache

    before = TokenCache(connection).key
    connection.resource_url = "https://elsewhere.example/api"
    assert TokenCache(connection).key != before  # a cached token is not reused there


def test_token_refreshed_a_minute_before_expiry(sim, connection, halo_clock):
    sim.control.config(token_lifetime=61)  # fresh for one second only
    halo = HaloClient(connection, clock=halo_clock, sleep=halo_clock.sleep)
    halo.get_client(1)
    halo.get_client(1)
    assert halo.stats.token_requests == 1
    halo_clock.advance(0.9)
    halo.get_client(1)
    assert halo.stats.token_requests == 1  # 60.1 s left: still used
    halo_clock.advance(0.2)
    halo.get_client(1)
    assert halo.stats.token_requests == 2  # 59.9 s left: refreshed
    assert sim.control.requests()["by_status"].get("401", 0) == 0


def test_token_refetched_once_on_401(sim, connection):
    halo = HaloClient(connection)
    halo.get_client(1)
    sim.control.expire_tokens()
    assert halo.get_client(1)["id"] == 1
    assert halo.stats.token_requests == 2
    assert halo.stats.by_endpoint["GET /Client/{id}"] == 3  # the refused one is counted too
    # Another process still holding the refused token picks up the new one from the cache.
    other = HaloClient(connection)
    other.tokens._token = None
    other.get_client(1)
    assert other.stats.token_requests == 0


def test_tenant_sent_on_the_token_url_and_omitted_when_blank(sim, db):
    hosted = make_connection(sim)
    assert HaloClient(hosted).get_token_info()["token_type"] == "Bearer"
    self_hosted = make_connection(sim, halo_tenant="")
    assert "scope" in HaloClient(self_hosted).get_token_info()
    wrong = make_connection(sim, halo_tenant="globex")
    with pytest.raises(HaloServerError, match="check the tenant name"):
        HaloClient(wrong, retry_budget=0).get_token_info()


# -- lists ----------------------------------------------------------------------------------


@pytest.mark.parametrize("envelope", ["plain", "paged"])
def test_lists_page_through_record_count(sim, halo, envelope):
    sim.control.variants(envelope=envelope)
    expected = sorted(c["id"] for c in live(sim, "Client") if not c.get("inactive"))
    clients = list(halo.list_clients(page_size=10))
    assert sorted(c["id"] for c in clients) == expected
    pages = -(-len(expected) // 10)
    assert pages >= 3
    assert halo.stats.by_endpoint["GET /Client"] == pages


@pytest.mark.parametrize("key", ["licences", "softwarelicences", "bare"])
def test_licence_list_envelopes(sim, halo, key):
    sim.control.variants(licence_key=key)
    sim.control.generate(licences_per_client=1)
    expected = sorted(r["id"] for r in live(sim, "SoftwareLicence") if r.get("is_active"))
    assert len(expected) > 20
    got = [r["id"] for r in halo.list_licences(page_size=10)]
    assert sorted(got) == expected
    # A bare array has no record_count: paging stops at the first short (or empty) page.
    pages = len(expected) // 10 + 1 if key == "bare" else -(-len(expected) // 10)
    assert halo.stats.by_endpoint["GET /SoftwareLicence"] == pages


def test_filters_pass_through(sim, halo):
    unpaid = next(i for i in live(sim, "Invoice") if i.get("paymentstatus") in (0, -1))
    invoices = list(halo.list_invoices(client_id=unpaid["client_id"], paymentstatuses=[0, -1]))
    assert unpaid["id"] in [i["id"] for i in invoices]
    assert {i["client_id"] for i in invoices} == {unpaid["client_id"]}
    assert {i["paymentstatus"] for i in invoices} <= {0, -1}


def test_webhooks_are_a_bare_array(sim, halo):
    hook = {"name": "Portal", "url": "https://portal.example.com/hooks/halo"}
    saved = halo.upsert_webhook(hook | {"events": [{"eventno": 1}]})
    assert isinstance(saved["id"], str)
    assert [w["id"] for w in halo.list_webhooks()] == [saved["id"]]


def test_get_invoice_with_details_and_attachment_round_trip(sim, halo):
    invoice = next(halo.list_invoices())
    saved = halo.create_attachment("Faktura Å.pdf", b"%PDF-1.7 fake", 3, invoice["id"])
    assert saved["id"] and saved["filename"] == "Faktura Å.pdf"
    data, filename, content_type = halo.get_attachment_bytes(saved["id"])
    assert (data, filename, content_type) == (b"%PDF-1.7 fake", "Faktura Å.pdf", "application/pdf")
    assert [a["id"] for a in halo.list_attachments(type=3, unique_id=invoice["id"])] == [
        saved["id"]
    ]
    detailed = halo.get_invoice(invoice["id"])
    assert "payments" in detailed and "lines" in detailed


def test_delete(sim, halo):
    [licence] = halo.upsert_licences([{"client_id": 1, "name": "Tmp", "vendor_product_sku": "T"}])
    assert halo.delete("SoftwareLicence", licence["id"]) == licence["id"]
    with pytest.raises(HaloNotFound):
        halo.get_licence(licence["id"])


# -- upserts --------------------------------------------------------------------------------


@pytest.mark.parametrize("post_response", ["ordered", "last"])
def test_upsert_answers_saved_records_in_input_order(sim, halo, post_response):
    sim.control.variants(post_response=post_response)
    existing = next(halo.list_licences(client_id=2))
    records = [
        {"client_id": 1, "name": "Endpoint", "vendor_product_sku": "EDR-STD", "count": 3},
        {"id": existing["id"], "count": 42},
        {"Client_ID": 2, "Name": "Email Security", "vendor_product_sku": "EML-SEC", "count": 5},
        {"client_id": 1, "name": "Backup", "vendor_product_sku": "BKP-1TB", "count": 1},
    ]
    before = len(live(sim, "SoftwareLicence"))
    saved = halo.upsert_licences(records, batch_size=3)
    assert [s.get("vendor_product_sku") for s in saved] == ["EDR-STD", None, "EML-SEC", "BKP-1TB"]
    assert saved[1]["id"] == existing["id"] and saved[1]["count"] == 42
    assert all(isinstance(s["id"], int) for s in saved)
    assert len(live(sim, "SoftwareLicence")) == before + 3
    assert halo.stats.by_endpoint["POST /SoftwareLicence"] == 2


def test_last_object_only_answer_without_natural_key_is_reported(sim, halo):
    sim.control.variants(post_response="last")
    with pytest.raises(HaloUnexpectedResponse, match="did not return the ids of 1 new"):
        halo.upsert_clients([{"name": "Globex"}, {"name": "Initech"}])
    saved = halo.upsert_clients([{"name": "Hooli"}, {"name": "Umbrella"}], natural_key=("name",))
    assert [s["name"] for s in saved] == ["Hooli", "Umbrella"]
    assert saved[0]["id"] != saved[1]["id"]


def test_single_record_upserts(sim, halo):
    [client] = halo.upsert_clients([{"name": "Vandelay Industries"}])
    assert halo.get_client(client["id"])["name"] == "Vandelay Industries"
    [updated] = halo.upsert_clients([{"id": client["id"], "name": "Vandelay Imports"}])
    assert updated["name"] == "Vandelay Imports"


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("error_body", ["resultcode", "dotnet", "error", "text"])
def test_error_bodies_of_every_shape(sim, halo, error_body):
    sim.control.variants(error_body=error_body)
    with pytest.raises(HaloBadRequest) as bad:
        halo.upsert_licences([{"name": "No client", "vendor_product_sku": "X"}])
    error = bad.value
    assert error.permanent and not error.transient
    assert error.status == 400 and error.method == "POST" and error.endpoint == "/SoftwareLicence"
    assert "client_id is required" in error.halo_message
    assert str(error).startswith(
        "Halo rejected the data sent to create licence 'No client' (400 on POST /SoftwareLicence)"
    )
    with pytest.raises(HaloNotFound) as missing:
        halo.get_item(9999)
    assert "Item 9999 not found" in missing.value.halo_message


@pytest.mark.parametrize("unknown_update", ["400", "404"])
def test_update_of_unknown_id(sim, halo, unknown_update):
    sim.control.variants(unknown_update=unknown_update)
    with pytest.raises((HaloBadRequest, HaloNotFound)) as err:
        halo.upsert_items([{"id": 9999, "name": "Ghost"}])
    assert err.value.status == int(unknown_update) and err.value.permanent


def test_forbidden_names_the_permission_to_tick(sim, db):
    app = sim.control.add_application(permissions="read:customers")
    halo = HaloClient(make_connection(sim, client_id=app["client_id"], secret=app["client_secret"]))
    list(halo.list_clients(page_size=1))
    with pytest.raises(HaloPermissionError) as denied:
        halo.upsert_clients([{"name": "Nope"}])
    assert denied.value.halo_message == ""  # Halo's 403 has no body
    assert denied.value.permission == "edit:customers"
    assert "tick edit:customers under Configuration > Integrations > HaloPSA API" in str(
        denied.value
    )


# -- retries --------------------------------------------------------------------------------


def test_429_with_retry_after_is_honoured(sim, connection, halo_clock):
    sim.control.add_fault("429", path="Client", method="GET", seconds=3)
    halo = HaloClient(connection, clock=halo_clock, sleep=halo_clock.sleep)
    assert next(halo.list_clients())
    assert halo_clock.slept == [3]  # Halo's Retry-After, not the client's own backoff
    assert halo.stats.retries == 1 and halo.stats.by_endpoint["GET /Client"] == 2


def test_429_without_retry_after_backs_off(sim, connection, halo_clock, settings):
    sim.control.variants(retry_after="absent")
    sim.control.add_fault("429", path="Client", method="GET", times=3)
    halo = HaloClient(connection, clock=halo_clock, sleep=halo_clock.sleep)
    assert next(halo.list_clients())
    assert halo.stats.retries == 3
    # Full jitter: up to HALO_BACKOFF_BASE doubling per retry (scaled down in tests).
    limits = [settings.HALO_BACKOFF_BASE * 2**n for n in range(3)]
    assert len(halo_clock.slept) == 3
    assert all(0 <= s <= limit for s, limit in zip(halo_clock.slept, limits, strict=True))


@pytest.mark.parametrize("kind", ["500", "drop_before", "drop_after", "timeout"])
def test_transient_read_failures_recovered(sim, halo, kind):
    sim.control.add_fault(kind, path="Item", method="GET", times=2, seconds=1.5)
    assert len(list(halo.list_items())) == len(
        [i for i in live(sim, "Item") if not i.get("inactive")]
    )
    assert halo.stats.retries == 2


@pytest.mark.parametrize("kind", ["drop_after", "timeout", "500", "drop_before"])
def test_lost_create_response_is_not_duplicated(sim, halo, kind):
    sim.control.add_fault(kind, path="SoftwareLicence", method="POST", seconds=1.5)
    before = len(live(sim, "SoftwareLicence"))
    records = [
        {"client_id": 3, "name": "Endpoint Protection", "vendor_product_sku": "EDR-STD"},
        {"client_id": 4, "name": "Endpoint Protection", "vendor_product_sku": "EDR-STD"},
    ]
    saved = halo.upsert_licences(records)
    assert [(s["client_id"], s["vendor_product_sku"]) for s in saved] == [
        (3, "EDR-STD"),
        (4, "EDR-STD"),
    ]
    assert len(live(sim, "SoftwareLicence")) == before + 2
    posts = halo.stats.by_endpoint["POST /SoftwareLicence"]
    assert posts == (1 if kind in ("drop_after", "timeout") else 2)


def test_lost_payment_create_is_matched_by_thirdpartyid(sim, halo):
    invoice = next(halo.list_invoices(paymentstatuses=0))
    sim.control.add_fault("drop_after", path="InvoicePayment", method="POST")
    [payment] = halo.create_invoice_payments(
        [{"invoice_id": invoice["id"], "amount": 1.0, "thirdpartyid": "pi_123"}]
    )
    assert payment["thirdpartyid"] == "pi_123" and payment["id"]
    mine = [p for p in live(sim, "InvoicePayment") if p.get("thirdpartyid") == "pi_123"]
    assert len(mine) == 1


def test_lost_create_without_natural_key_is_not_retried(sim, halo):
    sim.control.add_fault("drop_after", path="Client", method="POST")
    with pytest.raises(HaloUnavailable) as lost:
        halo.upsert_clients([{"name": "Maybe Created Ltd"}])
    assert lost.value.transient
    assert "not retried" in str(lost.value) and "could duplicate" in str(lost.value)
    assert len([c for c in live(sim, "Client") if c["name"] == "Maybe Created Ltd"]) == 1


def test_lost_create_missing_its_natural_key_is_not_retried(sim, halo):
    sim.control.add_fault("drop_after", path="SoftwareLicence", method="POST")
    with pytest.raises(HaloUnavailable, match="not retried"):
        halo.upsert_licences([{"client_id": 1, "name": "No SKU"}])
    assert halo.stats.by_endpoint["POST /SoftwareLicence"] == 1


def test_updates_are_replayed_after_a_lost_answer(sim, halo):
    sim.control.add_fault("drop_after", path="Client", method="POST")
    [saved] = halo.upsert_clients([{"id": 1, "ref": "NW"}])
    assert saved["ref"] == "NW" and halo.stats.by_endpoint["POST /Client"] == 2


def test_retry_budget_exceeded_is_a_clear_transient_error(sim, connection, settings, halo_clock):
    settings.HALO_RETRY_BUDGET_SECONDS = 0.3
    sim.control.add_fault("500", path="Client", method="GET", times=1000)
    halo = HaloClient(connection, clock=halo_clock, sleep=halo_clock.sleep)
    with pytest.raises(HaloServerError) as failed:
        next(halo.list_clients())
    assert halo.stats.retries >= 2  # retried while the budget lasted...
    assert sum(halo_clock.slept) <= 0.3  # ...and never waited past it
    assert halo.stats.by_endpoint["GET /Client"] == halo.stats.retries + 1
    assert failed.value.transient
    message = str(failed.value)
    assert message.startswith("Halo had an internal error while trying to list clients (500 on")
    assert "The portal gave up after" in message and "(retry budget 0.3 s)" in message


def test_retry_after_longer_than_the_budget_gives_up_at_once(sim, connection, settings, halo_clock):
    settings.HALO_RETRY_BUDGET_SECONDS = 0.5
    sim.control.add_fault("429", path="Client", method="GET", seconds=5)
    halo = HaloClient(connection, clock=halo_clock, sleep=halo_clock.sleep)
    with pytest.raises(HaloRateLimited, match="rate limit"):
        next(halo.list_clients())
    assert halo_clock.slept == []  # no wait that could not end in time
    assert halo.stats.by_endpoint["GET /Client"] == 1


def test_unreachable_halo(db, settings):
    from tests import factories

    settings.HALO_RETRY_BUDGET_SECONDS = 0.2
    connection = factories.halo_connection(
        factories.tenant("nowhere"),
        auth_url="http://127.0.0.1:9/auth",
        resource_url="http://127.0.0.1:9/api",
    )
    with pytest.raises(HaloUnavailable) as down:
        HaloClient(connection).get_client(1)
    assert str(down.value).startswith(
        "Cannot reach http://127.0.0.1:9/auth/token: connection refused."
    )
    assert not down.value.ambiguous


# -- rate budget ----------------------------------------------------------------------------


def test_burst_stays_under_halo_rate_limit(sim, connection, settings, halo_clock):
    settings.HALO_RATE_LIMIT = "5/1"
    sim.control.config(rate_limit="5/1")
    # Two clients (two processes' worth) share one budget; their waits move Halo's clock too.
    one, two = (HaloClient(connection, clock=halo_clock, sleep=halo_clock.sleep) for _ in "12")
    started = halo_clock.now
    for n in range(12):
        (one if n % 2 else two).get_client(1)
    assert sim.control.requests()["by_status"].get("429", 0) == 0
    assert halo_clock.now - started >= 2  # 12 calls + a token at 5 per second: 3 windows
    assert one.stats.waited + two.stats.waited == pytest.approx(sum(halo_clock.slept))


# -- logging --------------------------------------------------------------------------------


def test_requests_logged_at_debug_without_secrets(sim, connection, caplog):
    caplog.set_level(logging.DEBUG)
    halo = HaloClient(connection)
    sim.control.add_fault("500", path="Item", method="GET")
    list(halo.list_items())
    halo.get_client(1)
    with pytest.raises(HaloNotFound):
        halo.get_client(99999)
    bad = make_connection(sim, secret="wrong-secret-value")
    with pytest.raises(Exception, match="invalid_client"):
        HaloClient(bad).get_token_info()
    token = halo.tokens.current().access_token
    text = caplog.text
    assert "Halo GET /Client/{id}" in text and "-> 404" in text and "-> 500" in text
    for secret in (connection.secret, token, "wrong-secret-value", "Bearer"):
        assert secret not in text
    assert secret not in repr(halo) and connection.secret not in repr(connection)
