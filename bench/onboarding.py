"""Bulk onboarding: `POST /api/v1/organisations` with 1,000 organisations per request, and the
organisations CSV import (preview, then confirm) of 10,000 rows, in rows per second.

    .venv/bin/python bench/onboarding.py [--rows 1000] [--csv-rows 10000] [--repeat 5]
        [--postgres postgres://postgres@127.0.0.1:5432/onboarding_bench]

Standalone: a temporary SQLite database (the default deployment), or a PostgreSQL database
the bench drops and creates. Requests go through the whole WSGI stack in process (Django's
test client: token, rate limit, JSON checks, the upsert, the answer); the figure is the
portal's own cost per request. Each scenario runs `--repeat` times on a fresh tenant and
prints the median, with the SQL queries of one request.

Scenarios: 1,000 new organisations; the same 1,000 sent again (all unchanged); 10% renamed;
1,000 new ones each mapped to a Halo client by name; the same request replayed by its
idempotency key; a 10,000-row CSV previewed then confirmed.
"""

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--rows", type=int, default=1000)
parser.add_argument("--csv-rows", type=int, default=10_000)
parser.add_argument("--repeat", type=int, default=5)
parser.add_argument("--postgres", help="a database URL; the bench drops and recreates it")
OPTIONS = parser.parse_args()

DATA = tempfile.mkdtemp(prefix="onboarding-bench-")
os.environ.update(
    DJANGO_SETTINGS_MODULE="portal.settings",
    DATABASE_URL=OPTIONS.postgres or f"sqlite:///{DATA}/bench.sqlite3",
    PORTAL_DATA_DIR=DATA,
    SECRET_KEY="bench-" + "x" * 50,
    FIELD_ENCRYPTION_KEY="",
    DEBUG="true",
    LOG_LEVEL="WARNING",
)
if OPTIONS.postgres:
    import psycopg

    name = urlsplit(OPTIONS.postgres).path.lstrip("/")
    maintenance = OPTIONS.postgres.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(maintenance, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import reverse  # noqa: E402

from integrations.billing_sync.api import OnboardingThrottle  # noqa: E402
from integrations.billing_sync.models import HaloClientRecord  # noqa: E402
from portal.models import ApiToken, Membership, Organisation, Tenant  # noqa: E402

URL = "/api/v1/organisations"


def tenant_with_token(n):
    tenant = Tenant.objects.create(name=f"Bench {n}", slug=f"bench-{n}")
    _, token = ApiToken.issue(tenant, ApiToken.Purpose.USAGE, "bench")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    return tenant, client


def rows(count, name="Organisation", **extra):
    return [{"external_ref": f"ORG-{n:05d}", "name": f"{name} {n}", **extra} for n in range(count)]


def post(client, body, **headers):
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        answer = client.post(URL, body, content_type="application/json", **headers)
        took = time.perf_counter() - started
    assert answer.status_code in (200, 201), answer.content[:500]
    return took, len(queries)


def scenarios(n):
    """One fresh tenant through every API scenario: {name: (seconds, queries)}."""
    tenant, client = tenant_with_token(n)
    found = {}
    found["1,000 new"] = post(client, {"organisations": rows(OPTIONS.rows)})
    found["same 1,000 again (unchanged)"] = post(client, {"organisations": rows(OPTIONS.rows)})
    renamed = rows(OPTIONS.rows)
    for row in renamed[::10]:
        row["name"] += " (renamed)"
    found["10% renamed"] = post(client, {"organisations": renamed})
    HaloClientRecord.objects.bulk_create(
        HaloClientRecord(tenant=tenant, halo_id=100_000 + i, name=f"Halo client {i}")
        for i in range(OPTIONS.rows)
    )
    mapped = [
        {"external_ref": f"MAP-{i:05d}", "name": f"Mapped {i}", "halo_client": f"Halo client {i}"}
        for i in range(OPTIONS.rows)
    ]
    found["1,000 new, each mapped to a Halo client by name"] = post(
        client, {"organisations": mapped, "idempotency_key": "bench"}
    )
    found["that request replayed (idempotency key)"] = post(
        client, {"organisations": mapped, "idempotency_key": "bench"}
    )
    assert Organisation.objects.filter(tenant=tenant).count() == 2 * OPTIONS.rows
    return found


def csv_import(n):
    """Preview then confirm a CSV of `--csv-rows` organisations: (preview s, confirm s)."""
    tenant = Tenant.objects.create(name=f"CSV {n}", slug=f"csv-{n}")
    user = get_user_model().objects.create_user(f"bench{n}", is_staff=True)
    Membership.objects.create(user=user, tenant=tenant, role=Membership.Role.OWNER)
    client = Client()
    client.force_login(user)
    url = reverse("admin:portal_organisation_import")
    text = "external_ref,name,active\n" + "".join(
        f"CSV-{i:06d},Customer {i},yes\n" for i in range(OPTIONS.csv_rows)
    )
    started = time.perf_counter()
    page = client.post(url, {"file": SimpleUploadedFile("orgs.csv", text.encode())})
    preview = time.perf_counter() - started
    token = re.search(r'name="upload" value="([^"]+)"', page.content.decode())[1]
    started = time.perf_counter()
    saved = client.post(url, {"upload": token, "confirm": "1"})
    confirm = time.perf_counter() - started
    assert saved.status_code == 302
    assert Organisation.objects.filter(tenant=tenant).count() == OPTIONS.csv_rows
    return preview, confirm


def main():
    call_command("migrate", verbosity=0)
    OnboardingThrottle.rate = "1000000/min"
    runs = [scenarios(n) for n in range(OPTIONS.repeat)]
    database = "PostgreSQL" if OPTIONS.postgres else "SQLite"
    print(f"POST {URL}, {OPTIONS.rows:,} rows per request, {database}, median of {OPTIONS.repeat}")
    print(f"{'scenario':50} {'ms':>8} {'rows/s':>9} {'queries':>8}")
    for name in runs[0]:
        seconds = statistics.median(run[name][0] for run in runs)
        queries = runs[0][name][1]
        print(f"{name:50} {seconds * 1000:8.0f} {OPTIONS.rows / seconds:9,.0f} {queries:8}")
    imports = [csv_import(n) for n in range(max(1, OPTIONS.repeat // 2))]
    preview = statistics.median(p for p, _ in imports)
    confirm = statistics.median(c for _, c in imports)
    print(f"\nCSV import of {OPTIONS.csv_rows:,} organisations (admin), median of {len(imports)}")
    for name, seconds in [
        ("preview (parse, check, plan)", preview),
        ("confirm (check, plan again, write)", confirm),
    ]:
        print(f"{name:50} {seconds * 1000:8.0f} {OPTIONS.csv_rows / seconds:9,.0f}")


if __name__ == "__main__":
    main()
