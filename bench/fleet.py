"""A fleet of tenants on the durable run ledger with real `manage.py worker` processes.

    .venv/bin/python bench/fleet.py [--tenants 200] [--pairs 250] [--latency-ms 200]
                                    [--workers 3] [--q-workers 2] [--skip-kill] [--big]
    .venv/bin/python bench/fleet.py --big-only [--window-seconds 300]   # the 10,000 x 5 tenant

PostgreSQL (a fresh database `portal_fleetbench`) and Redis (db 11) as in production,
DEBUG off. Every tenant gets a Halo of its own (one Halo, one tenant is enforced): one
simulator each, all served from one child process on ports of their own, answering at
`--latency-ms` with Halo's rate limit (300 per 5 minutes). Tenants are built with
`bench/billing_sync.py`'s `build_tenant` (`--pairs` / 5 organisations x 5 products, every
pair with a count), their billing sync scheduled daily and their invoice sync off.

Each phase starts from the same Halo (every simulator reset to its state after the build:
clients and items, no licences) and an empty Redis, then writes every tenant's billing
sync slot as a row due now in the ledger and runs the ledger's tick in this process every
`--tick-seconds` (the `portal.ledger_tick` schedule does it every minute; it also fires
here, on the workers' scheduler). Phases: 1 worker process, `--workers` processes, then
`--workers` with one SIGKILLed (its whole process group, as an OOM kill or a lost machine)
once a third of the slots succeeded; that phase lasts at least 3 minutes after the kill.
Each worker runs with production timings (RUN_HEARTBEAT_SECONDS=20, RUN_STALE_SECONDS=120,
HALO_RATE_LIMIT=280/300) and `--q-workers` django-q2 children. Measured: wall time (first
tick to last run finished), runs per minute, lost runs (slots not succeeded), runs still
stale 3 minutes after the kill, duplicate licences (more than one portal licence per pair
in a simulator's state) and missing or wrong counts, time to recover, peak RSS and PSS
per worker process group and per process, PostgreSQL connections per worker
(pg_stat_activity rows by application_name), and the load average around each phase
(the machine is shared: figures taken under load say so).

`--big` (after the fleet) or `--big-only`: one 10,000 x 5 tenant at Halo's budget, the
simulator's limit on (300 per window) and HALO_RATE_LIMIT 280 per window, simulator at
`--big-latency-ms`. `--window-seconds` (default 300, Halo's real window, about 10 minutes
in all) scales the window of both, and HALO_RETRY_BUDGET_SECONDS with it. A run pauses
(a continuation on the ledger) only when its wait for the budget is longer than the retry
budget, so a window shorter than the time 280 requests take (about 40 s here) never
pauses: 120 is the shortest that still shows the continuations. Reported: Halo requests,
429s, continuations and windows used.
"""

import argparse
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_SERVER = os.environ.get("FLEET_BENCH_PG", "postgres://postgres@127.0.0.1:5432")
DB_NAME = "portal_fleetbench"
REDIS_URL = os.environ.get("FLEET_BENCH_REDIS", "redis://127.0.0.1:6379/11")
PRODUCTS = 5
STALE_SECONDS, HEARTBEAT_SECONDS = 120, 20
AFTER_KILL = 180  # "still stale 3 minutes after the kill"
HALO_BUDGET = 280  # of Halo's 300 per window (HALO_RATE_LIMIT's default)


# -- the simulators' process (no Django) ------------------------------------------------------


def serve_simulators(count, latency_ms, rate_limit):
    """`count` simulators (empty Halo, one tenant each) on free ports, one thread each;
    prints each base URL, then READY; runs until stdin closes (the bench ended)."""
    from integrations.halo_sim.config import Config
    from integrations.halo_sim.server import Simulator, make_server

    for _ in range(count):
        config = Config().update({"latency_ms": latency_ms, "rate_limit": rate_limit})
        server = make_server(Simulator(seed="empty", config=config), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(server.base_url, flush=True)
    print("READY", flush=True)
    sys.stdin.read()


if __name__ == "__main__" and sys.argv[1:2] == ["--serve-simulators"]:
    serve_simulators(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
    sys.exit(0)


# -- the bench process ------------------------------------------------------------------------


def fernet_key():
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


BASE_ENV = {
    "DJANGO_SETTINGS_MODULE": "portal.settings",
    "DATABASE_URL": f"{PG_SERVER}/{DB_NAME}",
    "REDIS_URL": REDIS_URL,
    "DEBUG": "false",
    "SECRET_KEY": "fleet-bench-" + "x" * 50,
    "FIELD_ENCRYPTION_KEY": fernet_key(),
    "ALLOWED_HOSTS": "localhost",
    "HALO_ALLOW_PRIVATE_ADDRESSES": "true",  # the simulators are on loopback
    "HALO_RATE_LIMIT": "280/300",
    "RUN_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
    "RUN_STALE_SECONDS": str(STALE_SECONDS),
    "LOG_LEVEL": "ERROR",
    "Q_LOG_LEVEL": "ERROR",
    "EMAIL_URL": "consolemail://",
}
os.environ.update(BASE_ENV)
os.environ["DATABASE_URL"] += "?application_name=fleetbench-bench"


def recreate_database():
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB_NAME}")


if __name__ == "__main__":
    recreate_database()

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from integrations.billing_sync import engine, schedules  # noqa: E402
from integrations.billing_sync.models import (  # noqa: E402
    BillingSyncRun,
    BillingSyncSettings,
    UsageCount,
)
from integrations.halo_sim.testing import SimControl  # noqa: E402
from integrations.models import HaloConnection  # noqa: E402
from portal import ledger  # noqa: E402
from portal.models import ScheduledRun, WorkerHeartbeat  # noqa: E402
from portal.runs import ACTIVE  # noqa: E402


def _billing_sync_bench():
    """bench/billing_sync.py, for its `build_tenant`. Importing it sets its own (SQLite)
    environment; this process is configured by then, and the environment is put back."""
    saved = dict(os.environ)
    spec = importlib.util.spec_from_file_location(
        "bench_billing_sync", ROOT / "bench/billing_sync.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.environ.clear()
    os.environ.update(saved)
    return module


build_tenant = _billing_sync_bench().build_tenant


@contextmanager
def simulators(count, latency_ms, rate_limit):
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-simulators", str(count), str(latency_ms), rate_limit],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    urls = []
    while (line := process.stdout.readline().strip()) != "READY":
        if not line:
            raise SystemExit("the simulators did not start")
        urls.append(line)
    try:
        yield urls
    finally:
        process.stdin.close()
        process.wait(timeout=30)


def parallel(func, items, threads=16):
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(func, items))


def flush_redis():
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


# -- building -----------------------------------------------------------------------------------


class Fleet:
    """Tenants, each with its simulator, its Halo state after the build, and the licences
    its Halo should end up with: {(halo client id, sku): count}."""

    def __init__(self):
        self.tenants = []  # (tenant, control)
        self.snapshots = {}
        self.wanted = {}

    def add(self, control, base_url, organisations, slug):
        control.config(latency_ms=0, rate_limit="off")  # building is not measured
        tenant, halo = build_tenant(control, base_url, organisations, slug)
        HaloConnection.objects.filter(pk=halo.pk).update(invoice_sync=False)
        BillingSyncSettings.objects.filter(tenant=tenant).update(
            schedule=BillingSyncSettings.Schedule.DAILY, schedule_hour=2
        )
        self.tenants.append((tenant, control))
        counts = UsageCount.objects.filter(tenant=tenant).values_list(
            "organisation__halo_mapping__halo_client__halo_id", "product__sku", "quantity"
        )
        self.wanted[tenant.pk] = {(client, sku): quantity for client, sku, quantity in counts}
        return tenant

    def snapshot(self):
        states = parallel(lambda pair: pair[1].state(), self.tenants)
        self.snapshots = {t.pk: s for (t, _), s in zip(self.tenants, states, strict=True)}

    def reset(self):
        """Every Halo back to its state after the build, with its start-up config (latency,
        rate limit), no tokens and no counts."""
        parallel(lambda pair: pair[1].reset(self.snapshots[pair[0].pk]), self.tenants)

    def requests(self):
        answers = parallel(lambda pair: pair[1].requests(), self.tenants)
        return sum((Counter(a["by_status"]) for a in answers), Counter())

    def licences_check(self):
        """(pairs with more than one portal licence, pairs missing or with a wrong count)."""

        def check(pair):
            tenant, control = pair
            owned = {}
            for record in control.state("SoftwareLicence"):
                if not record.get("_deleted") and (sku := engine.owned_sku(record)) is not None:
                    owned.setdefault((record["client_id"], sku), []).append(record["count"])
            duplicates = sum(1 for found in owned.values() if len(found) > 1)
            wrong = sum(
                1 for key, count in self.wanted[tenant.pk].items() if owned.get(key) != [count]
            )
            return duplicates, wrong

        results = parallel(check, self.tenants)
        return sum(d for d, _ in results), sum(w for _, w in results)


def build_fleet(urls, pairs):
    fleet = Fleet()
    organisations = max(1, pairs // PRODUCTS)
    for number, url in enumerate(urls, 1):
        fleet.add(SimControl(url), url, organisations, f"fleet-{number:04d}")
    fleet.snapshot()
    return fleet


# -- workers --------------------------------------------------------------------------------


class Worker:
    """A `manage.py worker` process in its own process group (its django-q2 children too),
    its database connections named by application_name."""

    def __init__(self, name, **env):
        self.name = name
        self.application = f"fleetbench-{name}"
        environment = {
            **os.environ,
            **BASE_ENV,
            "DATABASE_URL": f"{BASE_ENV['DATABASE_URL']}?application_name={self.application}",
            **env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "worker"],
            cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        self.pid = self.process.pid
        self.peak_rss = self.peak_pss = self.peak_process_rss = self.peak_connections = 0
        self.peak_master_rss = self.processes = 0
        self.killed = False
        self.cpu = {}  # pid: CPU seconds used, as last seen
        self.db_cpu = {}  # its PostgreSQL backends' pid: CPU seconds, as last seen

    def cpu_used(self):
        """CPU seconds of this worker's processes and of its PostgreSQL backends."""
        return sum(self.cpu.values()), sum(self.db_cpu.values())

    def group(self):
        """Pids of this worker's process group (Linux /proc)."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == self.pid:  # the process group
                pids.append(int(entry))
        return pids

    def sample_memory(self):
        rss = pss = 0
        pids = self.group()
        for pid in pids:
            self.cpu[pid] = cpu_seconds(pid) or self.cpu.get(pid, 0.0)
            mine = _kb(f"/proc/{pid}/status", "VmRSS:")
            rss += mine
            pss += _kb(f"/proc/{pid}/smaps_rollup", "Pss:")
            self.peak_process_rss = max(self.peak_process_rss, mine)
            if pid == self.pid:
                self.peak_master_rss = max(self.peak_master_rss, mine)
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        self.processes = max(self.processes, len(pids))

    def kill(self):
        os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.killed = True

    def stop(self):
        """As systemd's KillMode=mixed: SIGTERM to the main process (django-q2's graceful
        stop), SIGKILL to the group if it takes longer than a minute."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # anything of its group left behind


def _kb(path, label):
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(label):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    """User + system CPU seconds of a process (Linux /proc; 0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sample_connections(workers):
    """Peak connections per worker, and the CPU its backends used (same machine)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT application_name, pid FROM pg_stat_activity WHERE datname = %s", [DB_NAME]
        )
        backends = cursor.fetchall()
    counts = Counter(application for application, _ in backends)
    for worker in workers:
        worker.peak_connections = max(worker.peak_connections, counts.get(worker.application, 0))
        for application, pid in backends:
            if application == worker.application:
                worker.db_cpu[pid] = cpu_seconds(pid) or worker.db_cpu.get(pid, 0.0)


def sample(workers):
    for worker in workers:
        if not worker.killed:
            worker.sample_memory()
    sample_connections(workers)
    return [worker.cpu_used() for worker in workers]


@contextmanager
def running_workers(count, **env):
    started = [Worker(f"w{n}", **env) for n in range(1, count + 1)]
    try:
        deadline = time.monotonic() + 180
        pids = [w.pid for w in started]
        while WorkerHeartbeat.objects.filter(pid__in=pids).count() < count:
            for worker in started:
                if worker.process.poll() is not None:
                    raise SystemExit(f"worker {worker.name} exited: {worker.process.stderr.read()}")
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not come up within 3 minutes")
            time.sleep(0.5)
        yield started
    finally:
        for worker in started:
            worker.stop()


def due_now(tenants):
    now = timezone.now()
    rows = [
        ScheduledRun(
            tenant=tenant,
            job=schedules.JOB,
            slot=now,
            not_before=now,
            deadline=now + timedelta(hours=2),
        )
        for tenant in tenants
    ]
    ScheduledRun.objects.bulk_create(rows)
    return list(
        ScheduledRun.objects.filter(job=schedules.JOB, slot=now).values_list("pk", flat=True)
    )


def worker_pid(row_worker):
    return ledger.pid_of(row_worker)


# -- a phase ------------------------------------------------------------------------------


def run_phase(label, fleet, count, args, kill=False):
    fleet.reset()
    flush_redis()
    env = {"Q_WORKERS": str(args.q_workers)}
    result = {"phase": label, "workers": count, "load_before": os.getloadavg()[0]}
    with running_workers(count, **env) as workers:
        cpu_before = sample(workers)
        ids = due_now([tenant for tenant, _ in fleet.tenants])
        rows = ScheduledRun.objects.filter(pk__in=ids)
        started_at, started = timezone.now(), time.monotonic()
        next_tick = next_sample = 0.0
        victim, victim_rows, victim_pids, killed_at = None, [], set(), None
        resumed_after = recovered_after = stale_after_kill = None
        timeout = args.phase_timeout
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= next_tick:
                ledger.tick()
                next_tick = elapsed + args.tick_seconds
            if elapsed >= next_sample:
                sample(workers)
                next_sample = elapsed + 1.0
            statuses = Counter(rows.values_list("status", flat=True))
            finished = sum(n for s, n in statuses.items() if s not in ACTIVE)
            if kill and victim is None and statuses["succeeded"] >= len(ids) / 3:
                victim = max(workers, key=lambda w: len(_held_by(rows, w)))
                victim_pids = set(victim.group())
                victim_rows = _held_by(rows, victim)
                victim.kill()
                killed_at = time.monotonic()
            if victim is not None:
                since = time.monotonic() - killed_at
                held = rows.filter(pk__in=victim_rows)
                dead = [r for r in held.values_list("status", "worker") if _on(r, victim_pids)]
                if resumed_after is None and not dead:
                    resumed_after = since
                if recovered_after is None and all(
                    s == "succeeded" for s in held.values_list("status", flat=True)
                ):
                    recovered_after = since
                if stale_after_kill is None and since >= AFTER_KILL:
                    stale = set(
                        ScheduledRun.objects.stale().filter(pk__in=ids).values_list("pk", flat=True)
                    )
                    stale |= {
                        pk
                        for pk, *row in held.values_list("pk", "status", "worker")
                        if _on(row, victim_pids)
                    }
                    stale_after_kill = len(stale)
            done = finished == len(ids)
            if done and (victim is None or stale_after_kill is not None):
                break
            if elapsed > timeout:
                print(f"  {label}: timed out after {elapsed:.0f} s: {dict(statuses)}", flush=True)
                break
            time.sleep(0.5)
        cpu_after = sample(workers)
        worker_cpu = sum(a[0] - b[0] for a, b in zip(cpu_after, cpu_before, strict=True))
        db_cpu = sum(a[1] - b[1] for a, b in zip(cpu_after, cpu_before, strict=True))
        last = rows.exclude(finished=None).order_by("-finished").values_list("finished", flat=True)
        wall = ((last.first() or timezone.now()) - started_at).total_seconds()
        succeeded = rows.filter(status="succeeded").count()
        result.update(
            runs=len(ids),
            succeeded=succeeded,
            lost=len(ids) - succeeded,
            wall=wall,
            per_minute=succeeded / wall * 60 if wall else 0.0,
            attempts=sum(rows.values_list("attempts", flat=True)),
            killed_held=len(victim_rows),
            resumed_after=resumed_after,
            recovered_after=recovered_after,
            stale_after_kill=stale_after_kill,
            peak_rss=max(w.peak_rss for w in workers),
            peak_pss=max(w.peak_pss for w in workers),
            peak_master_rss=max(w.peak_master_rss for w in workers),
            peak_process_rss=max(w.peak_process_rss for w in workers),
            processes=max(w.processes for w in workers),
            connections=max(w.peak_connections for w in workers),
            halo_runs_left_running=BillingSyncRun.objects.filter(status="running").count(),
            load_after=os.getloadavg()[0],
            worker_cpu=worker_cpu / len(ids),
            db_cpu=db_cpu / len(ids),
        )
    result["duplicates"], result["wrong"] = fleet.licences_check()
    statuses = fleet.requests()
    result["halo_requests"] = sum(statuses.values())
    result["halo_429"] = statuses.get("429", 0)
    return result


def _held_by(rows, worker):
    pids = set(worker.group())
    return [
        pk
        for pk, w in rows.filter(status="running").values_list("pk", "worker")
        if worker_pid(w) in pids
    ]


def _on(row, pids):
    status, worker = row
    return status == "running" and worker_pid(worker) in pids


# -- the big tenant ------------------------------------------------------------------------------


def run_big(args):
    window = args.window_seconds
    with simulators(1, args.big_latency_ms, f"300/{window}") as (url,):
        control = SimControl(url)
        fleet = Fleet()
        built = time.monotonic()
        tenant = fleet.add(control, url, args.big_organisations, "big")
        build_seconds = time.monotonic() - built
        control.config(latency_ms=args.big_latency_ms, rate_limit=f"300/{window}")
        control.clear_requests()
        flush_redis()
        budget = f"{HALO_BUDGET}/{window}"
        env = {
            "Q_WORKERS": str(args.q_workers),
            "HALO_RATE_LIMIT": budget,
            "HALO_RETRY_BUDGET_SECONDS": f"{120 * window / 300:g}",
        }
        load_before = os.getloadavg()[0]
        with running_workers(1, **env) as (worker,):
            cpu_before = sample([worker])[0]
            (pk,) = due_now([tenant])
            started_at, started = timezone.now(), time.monotonic()
            next_tick = 0.0
            while True:
                elapsed = time.monotonic() - started
                if elapsed >= next_tick:
                    ledger.tick()
                    next_tick = elapsed + args.tick_seconds
                sample([worker])
                row = ScheduledRun.objects.get(pk=pk)
                if row.status not in ACTIVE:
                    break
                if elapsed > window * 10 + 900:
                    print(f"  big tenant: timed out: {row.status} {row.summary}", flush=True)
                    break
                time.sleep(1.0)
            cpu_after = sample([worker])[0]
        wall = ((row.finished or timezone.now()) - started_at).total_seconds()
        statuses = Counter(control.requests()["by_status"])
        run = BillingSyncRun.objects.filter(pk=row.checkpoint.get("run")).first()
        duplicates, wrong = fleet.licences_check()
        return {
            "pairs": len(fleet.wanted[tenant.pk]),
            "status": row.status,
            "summary": row.summary,
            "build_seconds": build_seconds,
            "wall": wall,
            "window": window,
            "budget": budget,
            "halo_requests": sum(statuses.values()),
            "halo_429": statuses.get("429", 0),
            "run_requests": run.halo_requests if run else None,
            "continuations": row.checkpoint.get("continuations", 0),
            "windows": row.checkpoint.get("continuations", 0) + 1,
            "duplicates": duplicates,
            "wrong": wrong,
            "peak_rss": worker.peak_rss,
            "peak_process_rss": worker.peak_process_rss,
            "connections": worker.peak_connections,
            "worker_cpu": cpu_after[0] - cpu_before[0],
            "db_cpu": cpu_after[1] - cpu_before[1],
            "load": (load_before, os.getloadavg()[0]),
        }


# -- output ---------------------------------------------------------------------------------


def mb(kb):
    return f"{kb / 1024:.0f}"


def seconds(value):
    return "–" if value is None else f"{value:.0f} s"


def print_fleet(results, args):
    print(
        f"\n{args.tenants} tenants × {args.pairs} pairs ({args.pairs // PRODUCTS} organisations × "
        f"{PRODUCTS} products), simulator latency {args.latency_ms:g} ms, Halo limit 300/300, "
        f"HALO_RATE_LIMIT 280/300, Q_WORKERS={args.q_workers}, tick every {args.tick_seconds:g} s, "
        f"{os.cpu_count()} cores\n"
    )
    head = (
        f"{'phase':<30}{'wall':>7}{'runs/min':>9}{'lost':>5}{'dup':>5}{'wrong':>6}"
        f"{'Halo req':>9}{'429':>5}{'RSS MB':>8}{'PSS MB':>8}{'max proc':>9}{'procs':>6}"
        f"{'DB conn':>8}  load 1 min"
    )
    print(head)
    for r in results:
        print(
            f"{r['phase']:<30}{r['wall']:>6.0f}s{r['per_minute']:>9.0f}{r['lost']:>5}"
            f"{r['duplicates']:>5}{r['wrong']:>6}{r['halo_requests']:>9}{r['halo_429']:>5}"
            f"{mb(r['peak_rss']):>8}{mb(r['peak_pss']):>8}{mb(r['peak_process_rss']):>9}"
            f"{r['processes']:>6}{r['connections']:>8}"
            f"  {r['load_before']:.1f} → {r['load_after']:.1f}"
        )
    print(
        "  (RSS/PSS: peak of one worker's whole process group, manage.py worker and its "
        "django-q2 children; max proc: the largest single process; DB conn: peak "
        "pg_stat_activity rows of one worker)"
    )
    for r in results:
        print(
            f"CPU per run, {r['phase']}: {r['worker_cpu']:.2f} s in the workers, "
            f"{r['db_cpu']:.2f} s in PostgreSQL"
        )
    one = next((r for r in results if r["workers"] == 1), None)
    many = next((r for r in results if r["workers"] > 1 and not r.get("killed")), None)
    if one and many:
        ratio = many["per_minute"] / one["per_minute"]
        print(f"\nscaling {many['workers']} vs 1 worker: {ratio:.2f}×")
    for r in results:
        if r.get("killed"):
            print(
                f"kill: {r['killed_held']} runs held by the killed worker; all resumed elsewhere "
                f"{seconds(r['resumed_after'])} after the kill, all succeeded "
                f"{seconds(r['recovered_after'])} after it; still stale 3 minutes after the kill: "
                f"{r['stale_after_kill']}; attempts {r['attempts']} for {r['runs']} runs; billing "
                f"sync runs left running: {r['halo_runs_left_running']}"
            )


def print_big(big):
    print(
        f"\n1 tenant × {big['pairs']} pairs, Halo limit 300/{big['window']} s, HALO_RATE_LIMIT "
        f"{big['budget']}: {big['status']} in {big['wall']:.0f} s (built in "
        f"{big['build_seconds']:.0f} s)\n  Halo requests {big['halo_requests']} (the run counted "
        f"{big['run_requests']}), 429s {big['halo_429']}, continuations {big['continuations']}, "
        f"windows used {big['windows']}; duplicates {big['duplicates']}, wrong or missing "
        f"{big['wrong']}; worker peak RSS {mb(big['peak_rss'])} MB (largest process "
        f"{mb(big['peak_process_rss'])} MB), DB connections {big['connections']}, load 1 min "
        f"{big['load'][0]:.1f} → {big['load'][1]:.1f}; CPU {big['worker_cpu']:.0f} s in the "
        f"worker, {big['db_cpu']:.0f} s in PostgreSQL\n  {big['summary']}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=250, help="pairs per tenant (5 products)")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--workers", type=int, default=3, help="worker processes to compare with 1")
    parser.add_argument("--q-workers", type=int, default=2, help="django-q2 children per worker")
    parser.add_argument("--tick-seconds", type=float, default=5.0)
    parser.add_argument("--phase-timeout", type=float, default=900.0)
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument("--big", action="store_true", help="the 10,000 x 5 tenant too, after")
    parser.add_argument("--big-only", action="store_true", help="only the 10,000 x 5 tenant")
    parser.add_argument("--big-organisations", type=int, default=10_000)
    parser.add_argument("--big-latency-ms", type=float, default=20.0)
    parser.add_argument(
        "--window-seconds", type=int, default=300, help="Halo's rate window (300: Halo's own)"
    )
    args = parser.parse_args()
    began = time.monotonic()
    call_command("migrate", verbosity=0, skip_checks=True)
    call_command("createcachetable", verbosity=0)
    print(
        f"database ready in {time.monotonic() - began:.0f} s on {socket.gethostname()}", flush=True
    )
    results, big = [], None
    if not args.big_only:
        with simulators(args.tenants, args.latency_ms, "300/300") as urls:
            built = time.monotonic()
            fleet = build_fleet(urls, args.pairs)
            print(f"{args.tenants} tenants built in {time.monotonic() - built:.0f} s", flush=True)
            phases = [("1 worker", 1, False), (f"{args.workers} workers", args.workers, False)]
            if not args.skip_kill:
                phases.append((f"{args.workers} workers, 1 SIGKILLed", args.workers, True))
            for label, count, kill in phases:
                result = run_phase(label, fleet, count, args, kill=kill)
                result["killed"] = kill
                results.append(result)
                print(
                    f"  {label}: {result['succeeded']}/{result['runs']} in {result['wall']:.0f} s",
                    flush=True,
                )
    if args.big or args.big_only:
        big = run_big(args)
    if results:
        print_fleet(results, args)
    if big:
        print_big(big)
    checks = []
    for r in results:
        checks += [
            (f"{r['phase']}: 0 lost", r["lost"] == 0),
            (
                f"{r['phase']}: 0 duplicate licences, every count right",
                r["duplicates"] == r["wrong"] == 0,
            ),
        ]
        if r.get("killed"):
            checks += [
                ("recovered within 3 minutes of the kill", (r["recovered_after"] or 1e9) <= 180),
                ("nothing stale 3 minutes after the kill", r["stale_after_kill"] == 0),
            ]
    one = next((r for r in results if r["workers"] == 1), None)
    many = next((r for r in results if r["workers"] > 1 and not r.get("killed")), None)
    if one and many:
        ratio = many["per_minute"] / one["per_minute"]
        checks.append((f"{many['workers']} workers ≥ 2.5× one worker ({ratio:.2f}×)", ratio >= 2.5))
    if big:
        checks += [
            ("big tenant: succeeded", big["status"] == "succeeded"),
            ("big tenant: no 429 from Halo", big["halo_429"] == 0),
            ("big tenant: 0 duplicates, every count right", big["duplicates"] == big["wrong"] == 0),
        ]
    print()
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    print(f"\ntotal {time.monotonic() - began:.0f} s")
    sys.exit(0 if all(ok for _, ok in checks) else 1)


if __name__ == "__main__":
    main()
