"""Pay-link redirects, pay pages and the customer's account page under gunicorn: throughput
and latency with concurrent customers. Targets: at least 200 requests per second with p99
under 100 ms for the pay link and page; at least 150 with p99 under 150 ms for the account
page of a customer with `--account-invoices` (200) invoices, as it opens (the open invoices
and those of the last 12 months: 52 here) and with all of them listed; no errors.

    .venv/bin/python bench/pay_pages.py [--seconds 10] [--clients 20] [--workers 2]

Runs standalone: a temporary SQLite database (and the database cache, as deployed without
Redis) with one tenant and `--invoices` invoices of five lines each, served by gunicorn
(sync workers, DEBUG off, persistent database connections). The pay-link throttle stays
on, at a rate no client reaches. Each client is a thread making one request at a time on a
fresh connection (gunicorn's sync workers close them) over a raw socket, spread over every
invoice. "CPU ms/req" is the server's own CPU time per request (from /proc): its cost even
when other work shares the machine, whose load average is printed too.
"""

import argparse
import gc
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = tempfile.mkdtemp(prefix="pay-bench-")
ENV = {
    "DJANGO_SETTINGS_MODULE": "portal.settings",
    # Persistent connections, as the README recommends for production: a new SQLite
    # connection per request costs more than the page itself.
    "DATABASE_URL": f"sqlite:///{DATA}/bench.sqlite3?conn_max_age=60",
    "PORTAL_DATA_DIR": DATA,
    "SECRET_KEY": "bench-" + "x" * 50,
    "FIELD_ENCRYPTION_KEY": "",
    "DEBUG": "false",
    "SECURE_SSL_REDIRECT": "false",  # plain HTTP on loopback: no TLS in front here
    "ALLOWED_HOSTS": "127.0.0.1",
    "PAYMENTS_TEST_PROCESSOR": "true",
    "PAYMENTS_LINK_RATE": "100000000/min",
    "LOG_LEVEL": "WARNING",
}
os.environ.update(ENV)

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from billing.accounts.links import account_path  # noqa: E402
from billing.models import Customer, Invoice, InvoiceLine  # noqa: E402
from billing.payments.models import PaymentSettings, PayPage  # noqa: E402
from portal.models import Tenant  # noqa: E402


def seed(count, account_invoices):
    """One tenant, `count` open invoices with five lines, and a customer with
    `account_invoices` invoices (a tenth open, the rest paid, each paid online, a saved card);
    answers (link paths, page paths, account page paths)."""
    call_command("migrate", verbosity=0, skip_checks=True)
    call_command("createcachetable", verbosity=0)
    tenant = Tenant.objects.create(name="Bench MSP", slug="bench", support_email="a@b.example")
    PaymentSettings.for_tenant(tenant)
    customer = Customer.objects.create(tenant=tenant, halo_id=1, name="Northwind Traders")
    invoices = Invoice.objects.bulk_create(
        Invoice(
            tenant=tenant,
            customer=customer,
            halo_id=1000 + n,
            invoice_number=str(1000 + n),
            total=Decimal("360.90"),
            tax_total=Decimal("60.15"),
            amount_due=Decimal("360.90"),
            currency="GBP",
        )
        for n in range(count)
    )
    InvoiceLine.objects.bulk_create(
        InvoiceLine(invoice=i, position=p, description=f"Service {p}", quantity=3, total=72)
        for i in invoices
        for p in range(5)
    )
    pages = PayPage.objects.for_invoices(invoices)
    links = [f"/pay/bench/{i.halo_id}" for i in invoices]
    return (
        links,
        [pages[i.pk].get_absolute_url() for i in invoices],
        seed_account(tenant, account_invoices),
    )


def seed_account(tenant, count):
    """A customer with `count` invoices over the past years: one in ten open (spread over
    the ageing buckets), the others paid, each with its online payment; a saved card."""
    from datetime import timedelta

    from django.utils import timezone

    from billing.payments.models import Payment, SavedPaymentMethod

    customer = Customer.objects.create(tenant=tenant, halo_id=2, name="Contoso Pharmaceuticals")
    today = timezone.localdate()
    invoices = Invoice.objects.bulk_create(
        Invoice(
            tenant=tenant,
            customer=customer,
            halo_id=100_000 + n,
            invoice_number=str(100_000 + n),
            total=Decimal("1240.00"),
            tax_total=Decimal("206.67"),
            amount_due=Decimal("1240.00") if n % 10 == 0 else 0,
            amount_paid=0 if n % 10 == 0 else Decimal("1240.00"),
            payment_status="unpaid" if n % 10 == 0 else "paid",
            currency="GBP",
            invoice_date=today - timedelta(days=7 * n + 30),
            due_date=today - timedelta(days=7 * n),
        )
        for n in range(count)
    )
    Payment.objects.bulk_create(
        Payment(
            tenant=tenant,
            invoice=invoice,
            invoice_ref=invoice.invoice_number,
            idempotency_key=f"bench-{invoice.pk}",
            processor="test",
            amount=invoice.total,
            currency="GBP",
            status="succeeded",
            card_brand="Visa",
            card_last4="4242",
            succeeded_at=timezone.now() - timedelta(days=(today - invoice.due_date).days),
            recorded=timezone.now(),
        )
        for invoice in invoices
        if invoice.amount_paid
    )
    SavedPaymentMethod.objects.create(
        tenant=tenant,
        customer=customer,
        processor="test",
        reference="test_pm_4242_bench",
        brand="Visa",
        last4="4242",
        consent_text="I authorise charges for auto-pay invoices.",
        consented_at=timezone.now(),
    )
    PayPage.objects.for_invoices(invoices)
    customer.tenant = tenant
    return [account_path(customer)]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(port, workers):
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "portal.wsgi",
            f"--workers={workers}",
            f"--bind=127.0.0.1:{port}",
            "--backlog=256",
            "--log-level=warning",
        ],
        cwd=ROOT,
        env=os.environ | ENV,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:  # listening is enough (/healthz would log a 503: no worker runs here)
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("gunicorn did not start")


def get(port, path):
    """One GET on a fresh connection, read to the end; answers the status code. Raw
    sockets: the client shares the CPUs with the server, so it must cost next to nothing."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/html\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        head = sock.recv(65536)
        while sock.recv(65536):
            pass
    return int(head.split(b" ", 2)[1])


def load(port, paths, expect, clients, seconds):
    """`clients` threads GET `paths` round-robin for `seconds`; answers (latencies, errors)."""
    latencies, errors = [], []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(offset):
        mine, wrong = [], []
        n = offset
        while time.monotonic() < stop:
            path = paths[n % len(paths)]
            n += clients
            started = time.perf_counter()
            try:
                status = get(port, path)
            except (OSError, IndexError, ValueError) as error:
                status = type(error).__name__
            mine.append(time.perf_counter() - started)
            if status != expect:
                wrong.append(status)
        with lock:
            latencies.extend(mine)
            errors.extend(wrong)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors


def cpu_seconds(server):
    """CPU time gunicorn's processes have used (Linux /proc; 0 elsewhere): with it, the
    server's cost per request shows even on a machine busy with other work."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in [server.pid, *_children(server.pid)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / ticks


def _children(pid):
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def report(name, latencies, errors, seconds, cpu, target=(200, 100)):
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[int(len(ms) * 0.99) - 1]
    rps = len(ms) / seconds
    verdict = "PASS" if rps >= target[0] and p99 < target[1] and not errors else "FAIL"
    print(
        f"{name:<22}{len(ms):>8}{rps:>9.0f}{statistics.median(ms):>9.1f}"
        f"{ms[int(len(ms) * 0.95) - 1]:>9.1f}{p99:>9.1f}{ms[-1]:>9.1f}{len(errors):>8}"
        f"{cpu * 1000 / len(ms):>10.2f}  {verdict}"
    )
    if errors:
        print(f"    first errors: {errors[:5]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per scenario")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--invoices", type=int, default=500)
    parser.add_argument("--account-invoices", type=int, default=200)
    parser.add_argument(
        "--only", choices=["link", "page", "account"], action="append", help="scenarios to run"
    )
    args = parser.parse_args()
    links, pages, accounts = seed(args.invoices, args.account_invoices)
    # The clients share this process with Django and the seeded objects: a full garbage
    # collection here would pause every client at once and show as server latency.
    gc.collect()
    gc.freeze()
    port = free_port()
    server = start_gunicorn(port, args.workers)
    try:
        for path in (links[0], pages[0], accounts[0]):  # warm imports and template caches
            for _ in range(4 * args.workers):
                get(port, path)
        print(
            f"gunicorn: {args.workers} sync workers; {args.clients} concurrent clients; "
            f"{args.seconds:g} s per scenario; {os.cpu_count()} CPUs; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        print(
            f"{'scenario':<22}{'requests':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}"
            f"{'p99 ms':>9}{'max ms':>9}{'errors':>8}{'CPU ms/req':>10}"
        )
        scenarios = (
            ("link", "pay link -> redirect", links, 302, (200, 100)),
            ("page", "pay page", pages, 200, (200, 100)),
            ("account", f"account ({args.account_invoices} inv.)", accounts, 200, (150, 150)),
            ("account", "account, all listed", [f"{accounts[0]}?invoices=all"], 200, (150, 150)),
        )
        for key, name, paths, expect, target in scenarios:
            if args.only and key not in args.only:
                continue
            before = cpu_seconds(server)
            latencies, errors = load(port, paths, expect, args.clients, args.seconds)
            cpu = cpu_seconds(server) - before
            report(name, latencies, errors, args.seconds, cpu, target)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
