"""The Halo simulator over real HTTP, as the portal's client will meet it."""

import base64

import pytest
import requests

from integrations.halo_sim.seed import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_TENANT


def token_reply(sim, params=None, **form):
    data = {
        "grant_type": "client_credentials",
        "client_id": DEMO_CLIENT_ID,
        "client_secret": DEMO_CLIENT_SECRET,
    }
    return requests.post(sim.token_url, params=params, data={**data, **form}, timeout=5)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def create_invoice(api, sim, total_lines=((2, 50.0),), **fields):
    lines = [{"qty_order": qty, "unit_price": price, "tax_rate": 20} for qty, price in total_lines]
    reply = api.post(f"{sim.api_url}/Invoice", json=[{"client_id": 1, "lines": lines, **fields}])
    assert reply.status_code == 201, reply.text
    return reply.json()


# -- servers and tokens ---------------------------------------------------------------


def test_authinfo_points_at_the_auth_server(sim):
    assert requests.get(f"{sim.base_url}/api/authinfo", timeout=5).json() == {
        "auth_url": sim.auth_url
    }


def test_token_with_tenant_in_query_body_or_omitted(sim):
    for params, form in (({"tenant": DEMO_TENANT}, {}), (None, {"tenant": "ACME"}), (None, {})):
        reply = token_reply(sim, params, scope="all", **form)
        assert reply.status_code == 200
        body = reply.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
        assert "admin:webhooks" in body["scope"].split()
    assert len(DEMO_CLIENT_SECRET) == 73 and DEMO_CLIENT_SECRET.count("-") == 9


def test_bad_secret_is_invalid_client_and_wrong_tenant_a_bare_500(sim):
    reply = token_reply(sim, client_secret="nope")
    assert reply.status_code == 401 and reply.json()["error"] == "invalid_client"
    assert "error_description" in reply.json()
    reply = token_reply(sim, {"tenant": "globex"})
    assert (reply.status_code, reply.text) == (500, "Internal Server Error")


def test_missing_unknown_and_expired_tokens_are_401(sim):
    assert requests.get(f"{sim.api_url}/Client", timeout=5).status_code == 401
    assert (
        requests.get(f"{sim.api_url}/Client", headers=bearer("forged"), timeout=5).status_code
        == 401
    )
    sim.control.config(token_lifetime=60)
    token = token_reply(sim).json()["access_token"]
    assert (
        requests.get(f"{sim.api_url}/Client", headers=bearer(token), timeout=5).status_code == 200
    )
    sim.control.move_clock(seconds=61)
    assert (
        requests.get(f"{sim.api_url}/Client", headers=bearer(token), timeout=5).status_code == 401
    )
    fresh = token_reply(sim).json()["access_token"]
    sim.control.expire_tokens()
    assert (
        requests.get(f"{sim.api_url}/Client", headers=bearer(fresh), timeout=5).status_code == 401
    )


def test_scopes_are_the_intersection_and_refusals_have_empty_bodies(sim, token_for):
    reply = token_for(
        "read:customers edit:customers read:invoices", "read:customers read:invoices", "all"
    )
    assert reply["scope"].split() == ["read:customers", "read:invoices"]
    headers = bearer(reply["access_token"])
    assert requests.get(f"{sim.api_url}/Site", headers=headers, timeout=5).status_code == 200
    refused = requests.post(
        f"{sim.api_url}/Client", json=[{"name": "X"}], headers=headers, timeout=5
    )
    assert (refused.status_code, refused.content) == (403, b"")
    assert requests.get(f"{sim.api_url}/Item", headers=headers, timeout=5).status_code == 403
    narrowed = bearer(token_for(scope="read:items")["access_token"])
    assert requests.get(f"{sim.api_url}/Item", headers=narrowed, timeout=5).status_code == 200
    assert requests.get(f"{sim.api_url}/Client", headers=narrowed, timeout=5).status_code == 403
    standard = bearer(token_for(permissions="all:standard")["access_token"])
    assert requests.get(f"{sim.api_url}/Webhook", headers=standard, timeout=5).status_code == 403
    assert requests.get(f"{sim.api_url}/FieldInfo", headers=standard, timeout=5).status_code == 200


# -- lists --------------------------------------------------------------------------------


def test_paging_count_default_and_case_insensitive_paths(sim, api):
    sim.control.generate(clients=40)
    total = api.get(f"{sim.api_url}/client", params={"pageinate": "true", "page_size": 30}).json()[
        "record_count"
    ]
    assert total == 74  # 34 active demo clients + 40
    seen = []
    for page in (1, 2, 3):
        body = api.get(
            f"{sim.api_url}/CLIENT", params={"pageinate": "true", "page_size": 30, "page_no": page}
        ).json()
        assert body["record_count"] == total and "page_no" not in body
        seen += [c["id"] for c in body["clients"]]
    assert len(seen) == total == len(set(seen)) and seen == sorted(seen)
    assert len(api.get(f"{sim.api_url}/Client").json()["clients"]) == 50
    assert len(api.get(f"{sim.api_url}/Client", params={"count": 5}).json()["clients"]) == 5
    assert (
        api.get(f"{sim.api_url}/Client", params={"includeinactive": "true", "count": 500}).json()[
            "record_count"
        ]
        == 76
    )


def test_search_order_and_resource_filters(sim, api):
    found = api.get(f"{sim.api_url}/Client", params={"search": "ΑΘΗΝΆ"}).json()["clients"]
    assert [c["name"] for c in found] == ["Αθηνά Λογιστική"]
    names = [
        c["name"]
        for c in api.get(
            f"{sim.api_url}/Client", params={"order": "name", "orderdesc": "true"}
        ).json()["clients"]
    ]
    assert names == sorted(names, key=str.casefold, reverse=True)
    items = api.get(f"{sim.api_url}/Item", params={"recurringonly": "true"}).json()["items"]
    assert "EDR-STD" in {i["supplier_part_code"] for i in items} and all(
        i["isrecurringitem"] for i in items
    )
    licences = api.get(
        f"{sim.api_url}/SoftwareLicence", params={"client_id": 1, "licence_type": 0}
    ).json()
    assert [lic["name"] for lic in licences["licences"]] == ["Microsoft 365 Business Premium"]
    unpaid = api.get(
        f"{sim.api_url}/Invoice", params={"paymentstatuses": "0,-1", "count": 100}
    ).json()["invoices"]
    assert unpaid and {i["paymentstatus"] for i in unpaid} == {0, -1} and "lines" not in unpaid[0]
    with_lines = api.get(
        f"{sim.api_url}/Invoice", params={"includelines": "true", "client_id": 2}
    ).json()["invoices"]
    assert all(i["client_id"] == 2 and i["lines"] for i in with_lines)
    posted = api.get(f"{sim.api_url}/Invoice", params={"postedonly": "true", "count": 100}).json()[
        "record_count"
    ]
    assert posted == 39


def test_datesearch_last_modified_and_client_lastupdate(sim, api):
    before = api.get(f"{sim.api_url}/Invoice", params={"count": 100}).json()["invoices"]
    sim.control.move_clock(minutes=5)
    start = sim.control.state()["now"]
    sim.control.move_clock(minutes=5)
    api.post(f"{sim.api_url}/Invoice", json=[{"id": before[0]["id"], "reference": "changed"}])
    params = {"datesearch": "last_modified", "start_date": start}
    changed = api.get(f"{sim.api_url}/Invoice", params=params).json()
    assert [i["id"] for i in changed["invoices"]] == [before[0]["id"]]
    up_to = api.get(
        f"{sim.api_url}/Invoice",
        params={"datesearch": "last_modified", "end_date": start, "count": 100},
    )
    assert up_to.json()["record_count"] == 39
    api.post(f"{sim.api_url}/Client", json=[{"id": 3, "accountsfirstname": "Dana"}])
    clients = api.get(f"{sim.api_url}/Client", params={"lastupdatefromdate": start + "Z"}).json()[
        "clients"
    ]
    assert [c["id"] for c in clients] == [3]


# -- writes --------------------------------------------------------------------------------


@pytest.mark.halo_departures  # also posts an object where Halo takes an array
def test_array_post_creates_updates_and_changes_only_fields_sent(sim, api):
    created = api.post(
        f"{sim.api_url}/Client", json=[{"Name": "Globex"}, {"NAME": "Initech", "ref": "INI"}]
    )
    assert created.status_code == 201
    globex, initech = created.json()
    assert (globex["name"], initech["ref"]) == ("Globex", "INI") and globex["id"] < initech["id"]
    assert globex["main_site_id"] and "datecreated" in globex
    reply = api.post(
        f"{sim.api_url}/Client",
        json=[{"id": initech["id"], "accountsemailaddress": "ap@initech.example"}],
    )
    assert reply.status_code == 201 and reply.json()["ref"] == "INI"
    one = api.get(f"{sim.api_url}/Client/{initech['id']}").json()
    assert (one["name"], one["accountsemailaddress"]) == ("Initech", "ap@initech.example")
    written = api.post(
        f"{sim.api_url}/Client",
        json=[{"id": globex["id"], "customfields": [{"id": 101, "value": "GX-1"}]}],
    )
    assert written.json()["customfields"][0]["name"] == "CFVendorCustomerId"
    assert api.post(f"{sim.api_url}/Client", json={"name": "not an array"}).status_code == 400


@pytest.mark.halo_departures  # a count that is not a number, on purpose
def test_a_bad_object_rejects_the_whole_array(sim, api):
    before = sim.control.state("Client")
    bad = [{"name": "Fine Ltd"}, {"id": 1, "name": "Renamed"}, {"ref": "NO-NAME"}]
    reply = api.post(f"{sim.api_url}/Client", json=bad)
    assert reply.status_code == 400 and "name" in reply.json()["errorMessage"]
    assert sim.control.state("Client") == before
    reply = api.post(
        f"{sim.api_url}/SoftwareLicence", json=[{"client_id": 1, "name": "X", "count": "many"}]
    )
    assert reply.status_code == 400
    reply = api.post(f"{sim.api_url}/SoftwareLicence", json=[{"client_id": 9999, "name": "X"}])
    assert reply.status_code == 400


@pytest.mark.parametrize("form, status", [("400", 400), ("404", 404)])
def test_unknown_id_update(sim, api, form, status):
    sim.control.variants(unknown_update=form)
    assert (
        api.post(f"{sim.api_url}/Item", json=[{"id": 9999, "name": "Ghost"}]).status_code == status
    )


def test_delete_answers_the_id_and_removes_the_record(sim, api):
    assert api.delete(f"{sim.api_url}/SoftwareLicence/2").json() == {"id": 2}
    assert api.get(f"{sim.api_url}/SoftwareLicence/2").status_code == 404
    assert 2 not in [
        lic["id"] for lic in api.get(f"{sim.api_url}/SoftwareLicence").json()["licences"]
    ]
    assert (
        api.post(f"{sim.api_url}/SoftwareLicence", json=[{"id": 2, "count": 3}]).status_code == 400
    )
    assert [r.get("_deleted") for r in sim.control.state("SoftwareLicence") if r["id"] == 2] == [
        True
    ]


# -- variants ------------------------------------------------------------------------------


def test_envelope_and_licence_key_variants(sim, api):
    params = {"pageinate": "true", "page_size": 2, "page_no": 2}
    plain = api.get(f"{sim.api_url}/SoftwareLicence", params=params).json()
    assert set(plain) == {"record_count", "licences"} and len(plain["licences"]) == 2
    sim.control.variants(envelope="paged", licence_key="softwarelicences")
    paged = api.get(f"{sim.api_url}/SoftwareLicence", params=params).json()
    assert (paged["page_no"], paged["page_size"], paged["record_count"]) == (2, 2, 4)
    assert paged["softwarelicences"] == plain["licences"]
    sim.control.variants(licence_key="bare")
    assert api.get(f"{sim.api_url}/SoftwareLicence", params=params).json() == plain["licences"]
    assert isinstance(api.get(f"{sim.api_url}/Webhook").json(), list)


def test_post_response_variants(sim, api):
    assert api.post(f"{sim.api_url}/Item", json=[{"name": "One"}]).json()["name"] == "One"
    both = api.post(f"{sim.api_url}/Item", json=[{"name": "A"}, {"name": "B"}]).json()
    assert [i["name"] for i in both] == ["A", "B"]
    sim.control.variants(post_response="last")
    assert (
        api.post(f"{sim.api_url}/Item", json=[{"name": "C"}, {"name": "D"}]).json()["name"] == "D"
    )


@pytest.mark.parametrize(
    "form, check",
    [
        (
            "resultcode",
            lambda r: r.json() == {"resultCode": 404, "errorMessage": "Invoice 999 not found"},
        ),
        (
            "dotnet",
            lambda r: r.json()["ClassName"].startswith("System.") and "999" in r.json()["Message"],
        ),
        ("error", lambda r: r.json() == {"error": "Invoice 999 not found"}),
        (
            "text",
            lambda r: (
                r.headers["Content-Type"].startswith("text/plain")
                and r.text == "Invoice 999 not found"
            ),
        ),
    ],
)
def test_error_body_variants(sim, api, form, check):
    sim.control.variants(error_body=form)
    reply = api.get(f"{sim.api_url}/Invoice/999")
    assert reply.status_code == 404 and check(reply)
    sim.control.add_fault("500", path="invoice")
    failed = api.get(f"{sim.api_url}/Invoice")
    assert failed.status_code == 500
    assert (
        ("ClassName" in failed.json())
        if form == "dotnet"
        else failed.text == "Internal Server Error"
    )


@pytest.mark.parametrize("form", ["present", "absent"])
def test_rate_limit_per_application(sim, api, form, token_for):
    sim.control.config(rate_limit="5/300", variants={"retry_after": form})
    assert [api.get(f"{sim.api_url}/Item").status_code for _ in range(5)] == [200] * 5
    limited = api.get(f"{sim.api_url}/Item")
    assert limited.status_code == 429
    assert limited.json() == {
        "error": "Rate Limit Reached - 5 Requests per rolling 5 minute window"
    }
    assert ("Retry-After" in limited.headers) == (form == "present")
    if form == "present":
        assert 0 < int(limited.headers["Retry-After"]) <= 300
    other = bearer(token_for()["access_token"])
    assert requests.get(f"{sim.api_url}/Item", headers=other, timeout=5).status_code == 200
    sim.control.move_clock(seconds=301)
    assert api.get(f"{sim.api_url}/Item").status_code == 200


# -- faults --------------------------------------------------------------------------------


def test_fault_queue(sim, api):
    sim.control.add_fault("500", path="SoftwareLicence", method="POST", after=1)
    sim.control.add_fault("drop_before", path="softwarelicence", method="POST")
    sim.control.add_fault("drop_after", path="SOFTWARELICENCE", method="POST")
    licence = {"client_id": 1, "name": "Cove Backup", "vendor_product_sku": "COVE"}
    assert api.get(f"{sim.api_url}/SoftwareLicence").status_code == 200  # GET does not match
    assert (
        api.post(f"{sim.api_url}/SoftwareLicence", json=[licence]).status_code == 201
    )  # after=1 lets one pass
    assert api.post(f"{sim.api_url}/SoftwareLicence", json=[licence]).status_code == 500
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            api.post(f"{sim.api_url}/SoftwareLicence", json=[licence])
    assert sim.control.faults() == []
    stored = [
        r for r in sim.control.state("SoftwareLicence") if r.get("vendor_product_sku") == "COVE"
    ]
    assert len(stored) == 2  # the first create, and the one whose answer was lost
    assert api.get(f"{sim.api_url}/SoftwareLicence").status_code == 200
    assert sim.control.requests()["by_status"]["dropped"] == 2


def test_timeout_fault_applies_the_write_late(sim, api):
    sim.control.add_fault("timeout", path="Item", method="POST", seconds=0.5)
    answered = sum(sim.control.requests()["by_status"].values())
    with pytest.raises(requests.ReadTimeout):
        api.post(f"{sim.api_url}/Item", json=[{"name": "Slow"}], timeout=0.1)
    counts = sim.control.wait_for_requests(answered + 1)  # the late answer, given to no one
    assert counts["by_status"]["201"] == 1
    assert "Slow" in [i["name"] for i in sim.control.state("Item")]


def test_random_fault_rate_and_latency(sim, api, monkeypatch):
    sim.control.config(fault_rate=1.0)
    assert api.get(f"{sim.api_url}/Item").status_code == 500
    pauses = []
    pause = sim.simulator._pause
    monkeypatch.setattr(sim.simulator, "_pause", lambda s: (pauses.append(s), pause(s)))
    sim.control.config(fault_rate=0.0, latency_ms=100)
    assert api.get(f"{sim.api_url}/Item").status_code == 200
    assert pauses == [0.1]  # before answering the call


# -- invoices, payments, attachments ------------------------------------------------------


def test_invoice_totals_and_payments_move_amounts_and_status(sim, api):
    invoice = create_invoice(
        api, sim, ((2, 50.0), (1, 10.0)), thirdpartyinvoicenumber="INV-2026-09999"
    )
    assert (invoice["total"], invoice["tax_total"], invoice["amountdue"]) == (132.0, 22.0, 132.0)
    assert invoice["invoicenumber"] and invoice["client_name"] == "Northwind Traders"
    assert api.get(f"{sim.api_url}/Invoice/{invoice['id']}").json()["paymentstatus"] == 0
    pay = {"invoice_id": invoice["id"], "amount": 32.0, "thirdpartyid": "pi_1"}
    assert api.post(f"{sim.api_url}/InvoicePayment", json=[pay]).status_code == 201
    partly = api.get(f"{sim.api_url}/Invoice/{invoice['id']}").json()
    assert (partly["amountpaid"], partly["amountdue"], partly["paymentstatus"]) == (32.0, 100.0, 1)
    too_much = api.post(
        f"{sim.api_url}/InvoicePayment", json=[{"invoice_id": invoice["id"], "amount": 60}] * 2
    )
    assert too_much.status_code == 400  # the batch together exceeds what is due
    api.post(f"{sim.api_url}/InvoicePayment", json=[{"invoice_id": invoice["id"], "amount": 100}])
    paid = api.get(
        f"{sim.api_url}/Invoice/{invoice['id']}", params={"includedetails": "true"}
    ).json()
    assert (paid["amountdue"], paid["paymentstatus"], paid["total"]) == (0.0, 2, 132.0)
    assert "datepaid" in paid and len(paid["payments"]) == 2 and len(paid["lines"]) == 2
    assert paid["last_modified"] > invoice["last_modified"]
    first = paid["payments"][0]["id"]
    assert api.delete(f"{sim.api_url}/InvoicePayment/{first}").json() == {"id": first}
    reopened = api.get(f"{sim.api_url}/Invoice/{invoice['id']}").json()
    assert (reopened["amountdue"], reopened["paymentstatus"]) == (32.0, 1)
    assert "datepaid" not in reopened
    late = create_invoice(api, sim, invoice_date="2020-01-01", duedate="2020-01-31T00:00:00Z")
    assert (late["duedate"], late["paymentstatus"]) == ("2020-01-31T00:00:00", -1)
    api.post(f"{sim.api_url}/InvoicePayment", json=[{"invoice_id": late["id"], "amount": 10}])
    assert (
        api.get(f"{sim.api_url}/Invoice/{late['id']}").json()["paymentstatus"] == -1
    )  # partly paid, still late


def test_invoice_lines_link_items(sim, api):
    invoice = api.post(
        f"{sim.api_url}/Invoice",
        json=[{"client_id": 2, "lines": [{"_itemid": 1, "qty_order": 10}]}],
    ).json()
    [line] = invoice["lines"]
    # Halo answers the line's Item as an object, not an id (halo-api.md §4, Invoice).
    assert line["linked_item"]["id"] == 1
    assert line["linked_item"]["name"] == "Endpoint Protection"
    assert (line["unit_price"], line["net_amount"]) == (4.5, 45.0)
    assert "_itemid" not in line
    assert (
        api.post(
            f"{sim.api_url}/Invoice", json=[{"client_id": 2, "lines": [{"_itemid": 999}]}]
        ).status_code
        == 400
    )


def test_attachments_answer_raw_bytes(sim, api):
    invoice = create_invoice(api, sim)
    pdf = b"%PDF-1.7\n fake invoice \n%%EOF"
    created = api.post(
        f"{sim.api_url}/Attachment",
        json=[
            {
                "filename": "INV-1.pdf",
                "data_base64": base64.b64encode(pdf).decode(),
                "type": 3,
                "unique_id": invoice["id"],
            }
        ],
    ).json()
    assert "data_base64" not in created
    listed = api.get(
        f"{sim.api_url}/Attachment", params={"type": 3, "unique_id": invoice["id"]}
    ).json()
    assert [a["id"] for a in listed["attachments"]] == [created["id"]]
    raw = api.get(f"{sim.api_url}/Attachment/{created['id']}")
    assert raw.content == pdf and raw.headers["Content-Type"] == "application/pdf"
    assert raw.headers["Content-Disposition"] == 'attachment; filename="INV-1.pdf"'
    bad = {"filename": "x.pdf", "data_base64": "***", "type": 3, "unique_id": invoice["id"]}
    assert api.post(f"{sim.api_url}/Attachment", json=[bad]).status_code == 400


# -- webhooks --------------------------------------------------------------------------------


def register_webhook(api, sim, receiver, events=("invoice updated", "invoice paid")):
    hook = {
        "name": "portal",
        "url": receiver.url,
        "authentication_type": 1,
        "basic_username": "halo",
        "basic_password": "s3cret",
        "events": [{"name": name} for name in events],
    }
    reply = api.post(f"{sim.api_url}/Webhook", json=[hook])
    assert reply.status_code == 201 and "basic_password" not in reply.json()
    return reply.json()


def test_webhooks_deliver_with_basic_auth(sim, api, receiver):
    hook = register_webhook(api, sim, receiver)
    invoice = create_invoice(api, sim)
    api.post(
        f"{sim.api_url}/InvoicePayment",
        json=[{"invoice_id": invoice["id"], "amount": invoice["total"]}],
    )
    deliveries = sim.control.wait_for_deliveries(2)
    assert [(d["event"], d["status"]) for d in deliveries] == [
        ("invoice updated", 204),
        ("invoice paid", 204),
    ]
    expected_auth = "Basic " + base64.b64encode(b"halo:s3cret").decode()
    assert [r["authorization"] for r in receiver.received] == [expected_auth] * 2
    body = receiver.received[1]["json"]
    assert (body["webhook_id"], body["object_id"], body["invoice"]["paymentstatus"]) == (
        hook["id"],
        invoice["id"],
        2,
    )
    assert body["timestamp"].endswith("Z") and isinstance(body["notification_id"], int)


def test_webhooks_duplicates_and_ui_changes(sim, api, receiver):
    register_webhook(api, sim, receiver, events=["client updated"])
    sim.control.config(webhook_duplicates=True)
    sim.control.records("Client", {"id": 4, "name": "Tailspin Toys Ltd"})
    deliveries = sim.control.wait_for_deliveries(2)
    assert [d["attempt"] for d in deliveries] == [1, 2]
    assert receiver.received[0]["json"] == receiver.received[1]["json"]
    assert receiver.received[0]["json"]["client"]["name"] == "Tailspin Toys Ltd"


def test_webhooks_out_of_order(sim, api, receiver):
    register_webhook(api, sim, receiver, events=["invoice created"])
    sim.control.config(webhook_out_of_order=True)
    created = api.post(f"{sim.api_url}/Invoice", json=[{"client_id": n} for n in (1, 2, 3)]).json()
    sim.control.wait_for_deliveries(3)
    delivered = [r["json"]["object_id"] for r in receiver.received]
    assert delivered == [i["id"] for i in reversed(created)]


def test_waiting_for_deliveries_until_nothing_is_left_to_send(sim, api, receiver):
    register_webhook(api, sim, receiver, events=["invoice created"])
    receiver.gate.clear()  # the receiver holds each delivery until let go
    api.post(f"{sim.api_url}/Invoice", json=[{"client_id": n} for n in (1, 2, 3)])
    with pytest.raises(AssertionError, match="and nothing left to send"):
        sim.control.wait_for_deliveries(0, idle=True, timeout=0)  # three still to send
    assert sim.control.wait_for_deliveries(0, timeout=0) == []  # without idle: none needed
    receiver.gate.set()
    deliveries = sim.control.wait_for_deliveries(1, idle=True)
    assert [d["status"] for d in deliveries] == [204] * 3  # all of them, not the first one
    with pytest.raises(AssertionError, match="expected 4 webhook deliveries within 0 s"):
        sim.control.wait_for_deliveries(4, timeout=0)


def test_a_failing_receiver_does_not_break_the_api(sim, api):
    dead = {"url": "http://127.0.0.1:9/nothing", "events": [{"name": "invoice created"}]}
    assert api.post(f"{sim.api_url}/Webhook", json=[dead]).status_code == 201
    create_invoice(api, sim)
    [delivery] = sim.control.wait_for_deliveries(1)
    assert "error" in delivery and "status" not in delivery


# -- control API ----------------------------------------------------------------------------


def test_control_reset_state_requests_and_generate(sim, api):
    sim.control.clear_requests()
    api.get(f"{sim.api_url}/Client")
    api.get(f"{sim.api_url}/Client/1")
    api.get(f"{sim.api_url}/client/2")
    counts = sim.control.requests()
    assert counts["by_endpoint"] == {"GET /Client": 1, "GET /Client/{id}": 2}
    assert counts["total"] == 3 and counts["by_status"] == {"200": 3}
    assert sim.control.clear_requests()["total"] == 0
    made = sim.control.generate(clients=100, items=10, invoices=10_000, licences_per_client=5)
    assert (made["clients"], made["items"]) == (100, 10)  # its speed: bench/halo_simulator.py
    assert (made["invoices"], made["licences"]) == (10_000, 500)
    assert api.get(f"{sim.api_url}/Invoice", params={"count": 1}).json()["record_count"] == 10_040
    snapshot = sim.control.state()
    assert snapshot["tenant"] == "acme" and snapshot["counts"]["Invoice"] == 10_040
    assert sim.control.reset(seed="empty")["Client"] == 0
    assert api.get(f"{sim.api_url}/Client").status_code == 401  # reset forgets tokens
    sim.control.reset(seed={"Client": [{"id": 7, "name": "Only One"}]})
    with sim.session() as fresh:
        assert [c["name"] for c in fresh.get(f"{sim.api_url}/Client").json()["clients"]] == [
            "Only One"
        ]
    assert sim.control.reset()["Invoice"] == 40
    demo = sim.control.state()
    sim.control.reset(seed=demo)
    assert sim.control.state()["resources"] == demo["resources"]
    with pytest.raises(AssertionError, match="400"):
        sim.control.reset(seed={"Client": [{"name": "no id"}]})
