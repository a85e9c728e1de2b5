"""The simulator holds requests to Halo's own API document, as Halo does, and records every
departure; the contract and `manage.py halo_conformance` check the same things."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from integrations.halo.contract import check_request_log, contract

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.halo_departures  # these tests send departures on purpose


def kinds(departures):
    return sorted((d["kind"], d["detail"].split(":")[0]) for d in departures)


def test_the_project_copy_is_halos_document():
    shared = ROOT.parent / "shared" / "halo-openapi.json"
    if not shared.exists():
        pytest.skip("no ../shared beside this checkout")
    assert (ROOT / "integrations/halo/halo-openapi.json").read_bytes() == shared.read_bytes()


def test_an_undocumented_path_or_verb_answers_404_and_is_recorded(sim, api):
    sim.control.take_departures()
    assert api.put(f"{sim.api_url}/Invoice", json=[{"id": 1}]).status_code == 404
    assert api.get(f"{sim.api_url}/Ticket").status_code == 404
    assert api.post(f"{sim.api_url}/Currency", json=[{"code": "JPY"}]).status_code == 404
    recorded = sim.control.take_departures()
    assert [(d["kind"], d["request"]) for d in recorded] == [
        ("undocumented endpoint", "PUT /api/Invoice"),
        ("undocumented endpoint", "GET /api/Ticket"),
        ("undocumented endpoint", "POST /api/Currency"),
    ]


def test_a_field_of_the_wrong_type_answers_400_in_halos_shape(sim, api):
    sim.control.take_departures()
    reply = api.post(f"{sim.api_url}/Invoice", json=[{"client_id": 2, "currency_code": "GBP"}])
    assert reply.status_code == 400
    assert "currency_code" in reply.json()["errorMessage"]  # the resultcode error shape
    webhook = {"url": "https://portal.example/hook", "method": "POST"}
    assert api.post(f"{sim.api_url}/Webhook", json=[webhook]).status_code == 400
    assert kinds(sim.control.take_departures()) == [
        ("wrong type", "body[0].currency_code"),
        ("wrong type", "body[0].method"),
    ]
    assert not [i for i in sim.control.state("Invoice") if i.get("currency_code") == "GBP"]


def test_unknown_query_names_are_ignored_as_halo_does_and_recorded(sim, api):
    """/Attachment has no paging in the document: Halo answers every attachment."""
    invoice = api.post(f"{sim.api_url}/Invoice", json=[{"client_id": 2}]).json()
    for name in ("a.pdf", "b.pdf", "c.pdf"):
        record = {
            "filename": name,
            "data_base64": "JVBERg==",
            "type": 3,
            "unique_id": invoice["id"],
        }
        assert api.post(f"{sim.api_url}/Attachment", json=[record]).status_code == 201
    sim.control.take_departures()
    reply = api.get(
        f"{sim.api_url}/Attachment",
        params={"type": 3, "unique_id": invoice["id"], "pageinate": "true", "page_size": 1},
    )
    assert len(reply.json()["attachments"]) == 3  # not one page of one
    payments = api.get(f"{sim.api_url}/InvoicePayment", params={"includeinactive": "true"})
    assert payments.status_code == 200
    assert kinds(sim.control.take_departures()) == [
        ("unknown query parameter", "includeinactive"),
        ("unknown query parameter", "page_size"),
        ("unknown query parameter", "pageinate"),
    ]


def test_unknown_body_fields_are_ignored_not_stored(sim, api):
    sim.control.take_departures()
    reply = api.post(f"{sim.api_url}/Client", json=[{"name": "Globex", "favourite_colour": "teal"}])
    assert reply.status_code == 201
    assert "favourite_colour" not in reply.json()
    stored = next(c for c in sim.control.state("Client") if c["name"] == "Globex")
    assert "favourite_colour" not in stored
    assert kinds(sim.control.take_departures()) == [("unknown field", "body[0].favourite_colour")]


def test_answers_are_in_halos_shapes(sim, api):
    currencies = api.get(f"{sim.api_url}/Currency").json()
    assert isinstance(currencies, list)  # a bare array
    gbp = next(c for c in currencies if c["code"] == "GBP")
    assert set(gbp) >= {"id", "name", "symbol", "code", "conversion_rate"}
    invoices = api.get(f"{sim.api_url}/Invoice", params={"includelines": "true"}).json()
    invoice = next(i for i in invoices["invoices"] if i.get("lines"))
    assert isinstance(invoice["currency_code"], int) and invoice["currency"] in ("£", "$")
    assert all(isinstance(line["linked_item"], dict) for line in invoice["lines"])
    clients = api.get(f"{sim.api_url}/Client").json()["clients"]
    assert clients and not any("last_modified" in c for c in clients)
    assert sim.control.take_departures() == []


def test_the_request_log_and_the_command_find_the_same_departures(sim, api, tmp_path):
    log = tmp_path / "requests.jsonl"
    sim.control.config(request_log=str(log))
    api.get(f"{sim.api_url}/Client", params={"count": 1})
    api.get(f"{sim.api_url}/InvoicePayment", params={"includeinactive": "true"})
    api.post(f"{sim.api_url}/Webhook", json=[{"url": "https://p.example/h", "method": "POST"}])
    sim.token()
    sim.control.config(request_log="")
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    token = next(r for r in logged if r["path"].endswith("/token"))
    assert set(token["body"].values()) == {"…"}  # field names only: the secret is not logged
    found = check_request_log(log.read_text().splitlines())
    assert [(request, d.kind) for request, d in found] == [
        ("GET /api/InvoicePayment", "unknown query parameter"),
        ("POST /api/Webhook", "wrong type"),
    ]
    assert [(d["kind"], d["request"]) for d in sim.control.take_departures()] == [
        (d.kind, request) for request, d in found
    ]

    command = [sys.executable, "manage.py", "halo_conformance", "--from", str(log)]
    failing = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert failing.returncode == 1, failing.stderr
    assert "GET /api/InvoicePayment: unknown query parameter: includeinactive" in failing.stdout
    clean = tmp_path / "clean.jsonl"
    clean.write_text(log.read_text().splitlines()[0] + "\n")
    command[-1] = str(clean)
    passing = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert passing.returncode == 0, passing.stderr
    assert "No departures" in passing.stdout


def test_the_portal_client_filters_only_on_what_the_document_lists():
    from integrations.halo import RESOURCES

    for res in RESOURCES.values():
        operation = contract().operation("GET", f"/{res.path}")
        assert operation is not None, res.path
        assert all(f in operation.query for f in res.filters), res.path
