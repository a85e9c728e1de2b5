"""Invoice sync against the Halo simulator: an initial sync of 10,000 invoices of 500
clients, a fetch-new with 50 invoices and 5 clients changed, and webhook ingestion over HTTP.

    .venv/bin/python bench/invoice_sync.py [--invoices 10000] [--changed 50] [--latency-ms 20]
        [--clients 500] [--changed-clients 5]
        [--postgres postgres://postgres@127.0.0.1:5432/invoice_sync_bench]
        [--redis redis://127.0.0.1:6379/14]

Standalone: a temporary SQLite database and the ORM broker (the default deployment), or a
PostgreSQL database the bench drops and creates plus the Redis broker. The simulator runs in
its own process. Halo's data is shaped as a real Halo accumulates it: clients and invoices
created over two years, each at its own moment. Memory is the peak Python heap of each sync,
traced in a second, untimed run of it (tracemalloc slows what it traces).

Targets (from the issue): the initial sync in at most ceil(invoices / page size) + a few
Halo requests, the fetch-new in at most 3, webhook ingestion of at least 200 deliveries/s.
Ingestion is timed twice: through Django's test client (the portal's own cost: authenticate,
store and queue each delivery before answering), and end to end over HTTP through gunicorn
(persistent database connections) from concurrent senders.
"""

import argparse
import base64
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--invoices", type=int, default=10_000)
parser.add_argument("--changed", type=int, default=50)
parser.add_argument("--clients", type=int, default=500)
parser.add_argument("--changed-clients", type=int, default=5)
parser.add_argument("--latency-ms", type=float, default=20.0)
parser.add_argument("--deliveries", type=int, default=1000)
parser.add_argument("--senders", type=int, help="concurrent senders (default 2 x workers)")
parser.add_argument(
    "--workers",
    type=int,
    help="gunicorn workers (default 1 on SQLite, whose one writer at a time makes more only "
    "wait on its lock; 4 on PostgreSQL)",
)
parser.add_argument("--postgres", help="a database URL; the bench drops and recreates it")
parser.add_argument("--redis", help="a Redis URL for the broker and cache (with --postgres)")
OPTIONS = parser.parse_args()
OPTIONS.workers = OPTIONS.workers or (4 if OPTIONS.postgres else 1)
OPTIONS.senders = OPTIONS.senders or 2 * OPTIONS.workers

DATA = tempfile.mkdtemp(prefix="invoice-sync-bench-")
DATABASE_URL = OPTIONS.postgres or f"sqlite:///{DATA}/bench.sqlite3"
os.environ.update(
    DJANGO_SETTINGS_MODULE="portal.settings",
    DATABASE_URL=DATABASE_URL,
    PORTAL_DATA_DIR=DATA,
    SECRET_KEY="bench-" + "x" * 50,
    FIELD_ENCRYPTION_KEY="",
    DEBUG="true",
    LOG_LEVEL="WARNING",
)
if OPTIONS.redis:
    os.environ["REDIS_URL"] = OPTIONS.redis

if OPTIONS.postgres:
    import psycopg

    name = urlsplit(OPTIONS.postgres).path.lstrip("/")
    maintenance = OPTIONS.postgres.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(maintenance, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import reverse  # noqa: E402

from billing.models import AutoPayRule, Customer, Invoice  # noqa: E402
from integrations.halo_sim.seed import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_TENANT  # noqa: E402
from integrations.halo_sim.testing import SimControl  # noqa: E402
from integrations.invoice_sync import webhooks  # noqa: E402
from integrations.invoice_sync.models import InvoiceSyncSettings, WebhookDelivery  # noqa: E402
from integrations.invoice_sync.runner import run_sync  # noqa: E402
from integrations.models import HaloConnection  # noqa: E402
from portal.models import Tenant  # noqa: E402


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(command, url, env=None):
    """Start a server process and wait until `url` answers."""
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(200):
        try:
            requests.get(url, timeout=5)
            return process
        except requests.RequestException:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{' '.join(command[:3])} did not start")


def traced_peak(tenant, kind):
    """Peak Python heap (MiB) of the same sync run once more under tracemalloc (not timed:
    tracing slows it down)."""
    tracemalloc.start()
    run_sync(tenant, kind, "cli")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def halo_data(control, invoices, clients=200, span=timedelta(days=730)):
    """Clients, contracts and invoices with distinct creation times over `span`."""
    control.generate(items=5)
    start = datetime.fromisoformat(control.state()["now"]) - span

    def moment(n, count):
        return (start + span * n / count).isoformat()

    made = control.records(
        "Client",
        [
            {"name": f"Client {n:04d}", "datecreated": moment(n, clients),
             "last_modified": moment(n, clients), "accountsemailaddress": f"ap{n}@example.com"}
            for n in range(clients)
        ],
    )  # fmt: skip
    control.generate(contracts_per_client=1)
    contract_of = {c["client_id"]: c["id"] for c in control.state("ClientContract")}
    items = [i["id"] for i in control.state("Item")]
    for batch in range(0, invoices, 1000):
        control.records(
            "Invoice",
            [
                {
                    "client_id": made[n % clients]["id"],
                    "thirdpartyinvoicenumber": f"INV-{n:06d}",
                    "invoice_date": moment(n, invoices)[:10],
                    "date_created": moment(n, invoices),
                    "last_modified": moment(n, invoices),
                    "contract_id": contract_of[made[n % clients]["id"]] if n % 3 else None,
                    "lines": [
                        {"_itemid": items[(n + k) % len(items)], "qty_order": 1 + n % 40,
                         "tax_rate": 20.0}
                        for k in range(1 + n % 3)
                    ],
                }
                for n in range(batch, min(batch + 1000, invoices))
            ],
        )  # fmt: skip


def tenant_for(base_url):
    tenant = Tenant.objects.create(name="Bench MSP", slug="bench")
    connection = HaloConnection(
        tenant=tenant,
        auth_url=f"{base_url}/auth",
        resource_url=f"{base_url}/api",
        halo_tenant=DEMO_TENANT,
        client_id=DEMO_CLIENT_ID,
    )
    connection.set_secret(DEMO_CLIENT_SECRET)
    connection.save()
    AutoPayRule.objects.create(tenant=tenant, halo_subtype_id=1, subtype_name="Managed Services")
    return tenant


def timed_run(tenant, kind, control):
    """(run, Halo requests, requests by endpoint, wall s, portal CPU s, peak heap MiB)."""
    control.clear_requests()
    started, cpu = time.perf_counter(), time.process_time()
    run = run_sync(tenant, kind, "cli")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if run.status != "ok":
        raise SystemExit(f"{kind} failed: {run.error}")
    by_endpoint = control.requests()["by_endpoint"]
    halo = sum(n for endpoint, n in by_endpoint.items() if "/token" not in endpoint)
    return run, halo, by_endpoint, seconds, cpu, traced_peak(tenant, kind)


def delivery_bodies(tenant, count):
    invoices = Invoice.objects.filter(tenant=tenant).select_related("customer")
    return [
        json.dumps(
            {
                "id": f"bench-{n}",
                "webhook_id": "bench",
                "event": "invoice updated",
                "object_id": invoice.halo_id,
                "timestamp": "2026-11-22T10:15:00.1234567Z",
                "invoice": {
                    "id": invoice.halo_id,
                    "client_id": invoice.customer.halo_id,
                    "client_name": invoice.customer.name,
                    "invoice_date": invoice.invoice_date.isoformat(),
                    "last_modified": "2099-01-01T00:00:00",
                    "total": float(invoice.total),
                    "amountpaid": 0.0,
                    "amountdue": float(invoice.total),
                    "paymentstatus": 0,
                },
            }
        )
        for n, invoice in enumerate(invoices[:count])
    ]


def in_process(url, bodies, auth):
    """Deliveries/s through the portal's own stack (Django's test client: no sockets)."""
    client = Client()
    started = time.perf_counter()
    for body in bodies:
        response = client.post(url, body, content_type="application/json", HTTP_AUTHORIZATION=auth)
        assert response.status_code == 202, response.content
    return len(bodies) / (time.perf_counter() - started)


def over_http(path, bodies, auth, senders, workers):
    """Deliveries/s through gunicorn from `senders` concurrent connections; also answers
    the response statuses counted."""
    port = free_port()
    separator = "&" if "?" in DATABASE_URL else "?"
    server_env = {**os.environ, "DATABASE_URL": f"{DATABASE_URL}{separator}conn_max_age=600"}
    base = f"http://127.0.0.1:{port}"
    gunicorn = serve(
        [sys.executable, "-m", "gunicorn", "portal.wsgi:application", "--workers", str(workers),
         "--bind", f"127.0.0.1:{port}", "--log-level", "warning"],
        f"{base}/healthz",
        env=server_env,
    )  # fmt: skip
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    local = threading.local()

    def send(body):
        if not hasattr(local, "http"):
            local.http = requests.Session()
        return local.http.post(base + path, data=body, headers=headers).status_code

    try:
        for body in bodies[:20]:  # warm the workers up (imports, connections)
            send(body.replace('"bench-', '"warm-'))
        started = time.perf_counter()
        with ThreadPoolExecutor(senders) as pool:
            statuses = list(pool.map(send, bodies))
        rate = len(bodies) / (time.perf_counter() - started)
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=10)
    return rate, {status: statuses.count(status) for status in set(statuses)}


def ingestion(tenant, count, senders, workers):
    """Deliveries/s received (auth, store, queue) in process and over HTTP, then applied/s
    by the worker's function."""
    sync_settings = InvoiceSyncSettings.for_tenant(tenant)
    username, password = sync_settings.new_webhook_credentials()
    sync_settings.save()
    auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    bodies = delivery_bodies(tenant, 2 * count)
    path = reverse("invoice_sync:halo-webhook", args=[tenant.slug])
    local = in_process(path, bodies[:count], auth)
    http, answers = over_http(path, bodies[count:], auth, senders, workers)
    started = time.perf_counter()
    pending = WebhookDelivery.objects.filter(status="received")
    for delivery_id in pending.values_list("pk", flat=True):
        webhooks.process(delivery_id)
    applied = len(bodies) / (time.perf_counter() - started)
    return local, http, answers, applied


def main():
    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)
    cache.clear()
    port = free_port()
    simulator = serve(
        [sys.executable, "-m", "integrations.halo_sim", "--port", str(port), "--seed", "empty",
         "--latency-ms", str(OPTIONS.latency_ms)],
        f"http://127.0.0.1:{port}/_sim/config",
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    database = "PostgreSQL" if OPTIONS.postgres else "SQLite"
    broker = "Redis" if OPTIONS.redis else "ORM"
    print(f"Database {database}, broker {broker}, Halo latency {OPTIONS.latency_ms:g} ms")
    try:
        control = SimControl(base_url)
        halo_data(control, OPTIONS.invoices, clients=OPTIONS.clients)
        tenant = tenant_for(base_url)
        page = settings.HALO_PAGE_SIZE

        run, halo, by_endpoint, seconds, cpu, memory = timed_run(tenant, "initial", control)
        stored = Invoice.objects.filter(tenant=tenant).count()
        print(
            f"Initial sync: {stored:,} invoices, {run.customers_saved} clients, "
            f"{run.contracts_saved} contracts in {seconds:.1f} s ({cpu:.1f} s portal CPU); "
            f"{halo} Halo requests (target <= {math.ceil(OPTIONS.invoices / page)} + a few: "
            f"{dict(by_endpoint)}); peak Python heap {memory:.1f} MiB"
        )

        changed = list(Invoice.objects.filter(tenant=tenant)[: OPTIONS.changed])
        control.records(
            "Invoice", [{"id": i.halo_id, "reference": "Changed for the bench"} for i in changed]
        )
        renamed = list(Customer.objects.filter(tenant=tenant)[: OPTIONS.changed_clients])
        control.records(
            "Client", [{"id": c.halo_id, "name": f"{c.name} (renamed)"} for c in renamed]
        )
        run, halo, by_endpoint, seconds, cpu, memory = timed_run(tenant, "new", control)
        picked = Invoice.objects.filter(reference="Changed for the bench").count()
        clients = Customer.objects.filter(tenant=tenant, name__endswith="(renamed)").count()
        print(
            f"Fetch new: {picked} changed invoices and {clients} changed clients (of "
            f"{OPTIONS.clients}) picked up in {seconds:.2f} s ({cpu:.2f} s "
            f"portal CPU); {halo} Halo requests (target <= 3: {dict(by_endpoint)}); peak "
            f"Python heap {memory:.1f} MiB"
        )

        local, http, answers, applied = ingestion(
            tenant, OPTIONS.deliveries, OPTIONS.senders, OPTIONS.workers
        )
        print(
            f"Webhooks (target >= 200 deliveries/s received): {local:.0f}/s received, stored "
            f"and queued in process; {http:.0f}/s over HTTP (gunicorn, {OPTIONS.workers} "
            f"workers, {OPTIONS.senders} senders, answers {answers}); {applied:.0f}/s applied "
            f"by the worker function ({OPTIONS.deliveries} deliveries each)"
        )
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)


if __name__ == "__main__":
    main()
