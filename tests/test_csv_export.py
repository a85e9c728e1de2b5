"""Every CSV the portal writes neutralises cells a spreadsheet would run as formulas."""

import csv
import io
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.urls import reverse

from portal import csv_export
from tests import factories

ROOT = Path(__file__).resolve().parent.parent

HOSTILE = {
    "=cmd|' /C calc'!A0": "'=cmd\\|' /C calc'!A0",
    "+SUM(1,2)": "'+SUM(1,2)",
    '@HYPERLINK("http://evil.example","x")': '\'@HYPERLINK("http://evil.example","x")',
    "-1+1": "'-1+1",
    "-cmd": "'-cmd",
    "\t=1+1": "'\t=1+1",
    "\r=1+1": "'\r=1+1",
}
KEPT = ["-12.50", "12.50", "Acme Ltd", "", "a=b", "1-2"]


def read(content):
    return list(csv.reader(io.StringIO(content, newline="")))


@pytest.mark.parametrize(("cell", "written"), HOSTILE.items())
def test_formula_cells_are_neutralised(cell, written):
    out = io.StringIO(newline="")
    csv_export.writer(out).writerow([cell])
    assert read(out.getvalue()) == [[written]]


def test_plain_values_and_numbers_are_kept():
    out = io.StringIO(newline="")
    csv_export.writer(out).writerows([KEPT, [-3, Decimal("-12.50"), None, 7]])
    assert read(out.getvalue()) == [KEPT, ["-3", "-12.50", "", "7"]]


def test_billing_sync_results_export_is_neutralised(personas):
    run = factories.billing_sync_run(personas.tenant_a)
    hostile = list(HOSTILE)
    factories.billing_sync_result(
        personas.tenant_a,
        run=run,
        organisation_name=hostile[0],
        product_sku=hostile[3],
        halo_client_name=hostile[2],
        message=hostile[1],
    )
    factories.billing_sync_result(
        personas.tenant_a, run=run, organisation_name=hostile[5], message=hostile[6]
    )
    client = personas.client(personas.owner_a)
    export = client.post(
        reverse("admin:billing_sync_syncresult_changelist"),
        {
            "action": "export_csv",
            "_selected_action": list(run.results.values_list("pk", flat=True)),
        },
    )
    assert export["Content-Type"].startswith("text/csv")
    assert export["Content-Disposition"] == 'attachment; filename="billing-sync-results.csv"'
    rows = list(csv.DictReader(io.StringIO(export.content.decode(), newline="")))
    by_message = {row["message"]: row for row in rows}
    assert by_message.keys() == {HOSTILE[hostile[1]], HOSTILE[hostile[6]]}
    first, second = by_message[HOSTILE[hostile[1]]], by_message[HOSTILE[hostile[6]]]
    assert first["organisation_name"] == HOSTILE[hostile[0]]
    assert first["product_sku"] == HOSTILE[hostile[3]]
    assert first["halo_client_name"] == HOSTILE[hostile[2]]
    assert second["organisation_name"] == HOSTILE[hostile[5]]


def test_every_csv_the_portal_writes_goes_through_the_helper():
    """A new export cannot forget: csv.writer, csv.DictWriter and text/csv responses
    belong in portal/csv_export.py only."""
    helper = ROOT / "portal" / "csv_export.py"
    writers = re.compile(r"\bcsv\.(writer|DictWriter)\b|text/csv|from csv import")
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("portal", "billing", "integrations")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != helper and writers.search(path.read_text())
    ]
    assert not offenders, f"write CSV with portal.csv_export in {offenders}"
