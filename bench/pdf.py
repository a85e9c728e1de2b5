"""Invoice PDFs: render time and memory, and the PDF API under gunicorn.

    .venv/bin/python -m bench.pdf [--seconds 10] [--clients 20] [--workers 2] [--runs N]

1. Render (no Django): best, median and p95 time and peak memory of the small demo invoice
   (its one-page summary, then its lines; with and without the pay link's QR code) and a
   2,500-line one (``bench.pdf_render.measure``).
2. API: a scratch data directory with the default deployment (SQLite, the database cache
   for the rate limit; ``--redis-url`` for Redis), a tenant with an issued portal invoice
   and a PDF secret, gunicorn with ``--workers`` sync workers on loopback, ``--clients``
   concurrent clients for ``--seconds``. First serving the stored PDF (after the first
   request, from the fingerprint shortcut of ``pdfs.serve_pdf``), then with every request
   rendering again (``rerender_app``: no shortcut, the resolver forced to render, as if
   nothing were stored). Reports requests per second, p50/p99 latency and errors.

Targets (from the product issue): small (one-page) invoice < 15 ms, 2,500 lines < 1 s;
stored PDFs at least 300 requests/s with p99 < 50 ms and no errors. The client shares the
machine with the server, so a busy machine lowers every figure; tests never assert timings.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from pathlib import Path

from bench.pdf_render import measure
from bench.pdf_samples import demo_invoice, large_invoice

ROOT = Path(__file__).resolve().parent.parent
RATE = "1000000/s"  # the bench measures serving, not the rate limit's refusals


def rerender_app():
    """gunicorn app factory (``bench.pdf:rerender_app()``): every request renders again."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    from django.core.wsgi import get_wsgi_application

    application = get_wsgi_application()
    from billing.invoicing import pdfs

    pdfs.source_fingerprint = lambda invoice_id: None  # nothing remembered: the full path
    pdfs.store_portal_pdf = functools.partial(pdfs.store_portal_pdf, force=True)
    return application


# -- the scratch deployment -----------------------------------------------------------------


def scratch_environment(data_dir, redis_url):
    """The process environment of the scratch deployment (also applied to this process)."""
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "PORTAL_DATA_DIR": str(data_dir),
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",  # plain HTTP on loopback: no TLS in front here
        "SECRET_KEY": "bench-" + "x" * 40,
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "127.0.0.1",
        "INVOICE_PDF_RATE": RATE,
        "LOG_LEVEL": "WARNING",
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    os.environ.clear()
    os.environ.update(env)
    return env


def seed():
    """Migrate the scratch database; an issued one-page portal invoice and a PDF secret."""
    import django
    from django.core.management import call_command

    django.setup()
    from billing.invoicing.models import InvoicingSettings, PortalInvoice
    from billing.models import InvoiceLine
    from portal.models import ApiToken, Organisation, Tenant

    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)
    tenant = Tenant.objects.create(
        name="Acme IT Services",
        slug="acme",
        address="Unit 4, Riverside Works\nLeeds LS1 4AB",
        support_email="billing@acme-it.example",
    )
    InvoicingSettings.objects.create(tenant=tenant, tax_rate=Decimal(20), tax_label="VAT")
    organisation = Organisation.objects.create(
        tenant=tenant, name="Northwind Traders", external_ref="NW-1001"
    )
    draft = PortalInvoice.objects.create_draft(organisation, date(2026, 10, 1), date(2026, 10, 31))
    draft.set_lines(
        [
            InvoiceLine(
                code=sku,
                description=name,
                quantity=Decimal(quantity),
                unit_price=Decimal(price),
                tax_rate=Decimal(20),
                start_date=date(2026, 10, 1),
                end_date=date(2026, 10, 31),
            )
            for sku, name, quantity, price in [
                ("EDR-STD", "Endpoint Protection", 42, "4.50"),
                ("BKP-1TB", "Cloud Backup 1TB", 3, "12.00"),
                ("EML-SEC", "Email Security", 40, "2.25"),
            ]
        ]
    )
    [issued] = PortalInvoice.objects.filter(pk=draft.pk).issue()
    _, secret = ApiToken.issue(tenant, ApiToken.Purpose.PDF, "bench")
    from django.db import connections

    connections.close_all()
    return f"/api/v1/invoices/{issued.number}/pdf", secret


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(app, workers, env):
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        app,
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, port
        except OSError:
            time.sleep(0.1)
    server.terminate()
    raise RuntimeError("gunicorn did not start")


# -- the load -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadStats:
    mode: str
    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: Counter
    size: int
    cpu_ms: float  # server CPU per request: what an unshared machine's capacity follows from


def worker_cpu_seconds(master_pid):
    """User + system CPU of gunicorn's workers so far (Linux /proc)."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    total = 0
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


async def _load(port, request, clients, seconds):
    loop = asyncio.get_running_loop()
    latencies, statuses, sizes = [], Counter(), Counter()
    deadline = loop.time() + seconds

    async def client():
        while loop.time() < deadline:
            started = time.perf_counter()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                await writer.drain()
                answer = await reader.read()  # gunicorn's sync workers close after each reply
                writer.close()
                status = answer[9:12].decode()
                sizes[len(answer)] += 1
            except OSError as error:
                status = type(error).__name__
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[status] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, statuses, sizes, time.perf_counter() - started


def load(mode, server, port, path, secret, clients, seconds):
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {secret}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    asyncio.run(_load(port, request, clients, 1.0))  # warm-up: workers import and connect
    cpu_before = worker_cpu_seconds(server.pid)
    latencies, statuses, sizes, elapsed = asyncio.run(_load(port, request, clients, seconds))
    cpu = worker_cpu_seconds(server.pid) - cpu_before
    latencies.sort()
    return LoadStats(
        mode=mode,
        requests=len(latencies),
        per_second=len(latencies) / elapsed,
        p50_ms=statistics.median(latencies),
        p99_ms=latencies[round(0.99 * (len(latencies) - 1))],
        errors=Counter({s: n for s, n in statuses.items() if s != "200"}),
        size=sizes.most_common(1)[0][0],
        cpu_ms=cpu * 1000 / len(latencies),
    )


def serve(app, mode, env, args, path, secret):
    server, port = start_gunicorn(app, args.workers, env)
    try:
        return load(mode, server, port, path, secret, args.clients, args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=10)


# -- report ---------------------------------------------------------------------------------


def _row(cells, first=24):
    return f"{cells[0]:<{first}}" + "".join(f"{cell:>11}" for cell in cells[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load per mode (10)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (20)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers (2)")
    parser.add_argument("--runs", type=int, default=0, help="renders per size (200 / 20)")
    parser.add_argument("--redis-url", default="", help="Redis for the rate limit's cache")
    args = parser.parse_args()

    small = demo_invoice()  # one summary page; its lines itemised on the next
    renders = [
        measure(
            "small, no pay link",
            replace(small, payment=replace(small.payment, pay_link=None)),
            args.runs or 200,
        ),
        measure("small, pay link + QR", small, args.runs or 200),
        measure("2,500 lines", large_invoice(2500), args.runs or 20),
    ]
    targets = {
        "small, no pay link": "< 15",
        "small, pay link + QR": "< 15",
        "2,500 lines": "< 1000",
    }
    print("Render (reportlab, in process)")
    print(
        _row(("invoice", "lines", "pages", "best ms", "median ms", "p95 ms", "target", "peak MiB"))
    )
    for r in renders:
        print(
            _row(
                (
                    r.name,
                    r.lines,
                    r.pages,
                    f"{r.best_ms:.1f}",
                    f"{r.median_ms:.1f}",
                    f"{r.p95_ms:.1f}",
                    targets[r.name],
                    f"{r.peak_mib:.1f}",
                )
            )
        )

    with tempfile.TemporaryDirectory(prefix="bench-pdf-") as data_dir:
        env = scratch_environment(data_dir, args.redis_url)
        path, secret = seed()
        results = [
            serve("portal.wsgi:application", "stored PDF", env, args, path, secret),
            serve("bench.pdf:rerender_app()", "re-rendered each time", env, args, path, secret),
        ]
    cache = "Redis" if args.redis_url else "the database cache"
    print(
        f"\nPDF API: gunicorn, {args.workers} sync workers, {args.clients} clients, "
        f"{args.seconds:g} s each; SQLite + {cache}; {os.cpu_count()} CPUs "
        f"shared with the client, load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(_row(("mode", "requests", "req/s", "p50 ms", "p99 ms", "errors", "KiB", "CPU ms/req")))
    for r in results:
        errors = ", ".join(f"{n}× {s}" for s, n in r.errors.items()) or "0"
        print(
            _row(
                (
                    r.mode,
                    r.requests,
                    f"{r.per_second:.0f}",
                    f"{r.p50_ms:.1f}",
                    f"{r.p99_ms:.1f}",
                    errors,
                    f"{r.size / 1024:.0f}",
                    f"{r.cpu_ms:.1f}",
                )
            )
        )
    print("Targets: stored PDFs >= 300 req/s, p99 < 50 ms, no errors.")
    print(
        "CPU ms/req is the workers' CPU per request: on CPUs not shared with the client or "
        f"anything else, {args.workers} workers serve about {args.workers} × 1000 / that."
    )


if __name__ == "__main__":
    main()
