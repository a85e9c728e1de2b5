"""Pay-link redirects and pay pages under gunicorn: throughput and latency with concurrent
customers. Target: at least 200 requests per second, p99 under 100 ms, no errors.

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

from billing.models import Customer, Invoice, InvoiceLine  # noqa: E402
from billing.payments.models import PaymentSettings, PayPage  # noqa: E402
from portal.models import Tenant  # noqa: E402


def seed(count):
    """One tenant, `count` open invoices with five lines; answers (link paths, page paths)."""
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
    return links, [pages[i.pk].get_absolute_url() for i in invoices]


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


def report(name, latencies, errors, seconds, cpu):
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[int(len(ms) * 0.99) - 1]
    rps = len(ms) / seconds
    verdict = "PASS" if rps >= 200 and p99 < 100 and not errors else "FAIL"
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
    args = parser.parse_args()
    links, pages = seed(args.invoices)
    port = free_port()
    server = start_gunicorn(port, args.workers)
    try:
        for path in (links[0], pages[0]):  # warm both workers' imports and template cache
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
        for name, paths, expect in (
            ("pay link -> redirect", links, 302),
            ("pay page", pages, 200),
        ):
            before = cpu_seconds(server)
            latencies, errors = load(port, paths, expect, args.clients, args.seconds)
            cpu = cpu_seconds(server) - before
            report(name, latencies, errors, args.seconds, cpu)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
