"""`/metrics`: the fleet in Prometheus's text format, through `prometheus_client`.

Everything is read when Prometheus scrapes, from the database and the shared counters
(`portal.counters`), so every web process answers the same whatever process did the work:
runs on the durable run ledger by job and status, their durations, retries, the oldest
due run, the broker's queue, Halo requests, 429s and rate-budget waits, the Halo outbox's
backlog and each worker process's heartbeat. Labels are bounded: job, status, worker
(host:pid); a `tenant` label only with `METRICS_PER_TENANT` (thousands of tenants make
thousands of series).

Access: a bearer token (`METRICS_TOKEN`, compared in constant time) or a client address in
`METRICS_ALLOWED_IPS` (default loopback only; behind proxies see `PAYMENTS_PROXIES`).
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.http import HttpResponse, HttpResponseForbidden
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, SummaryMetricFamily

from portal.http import client_address

#: Shared counters (portal.counters keys) exposed as Prometheus counters.
HALO_REQUESTS, HALO_429S, HALO_BUDGET_WAITS = (
    "metrics:halo_requests",
    "metrics:halo_429",
    "metrics:halo_budget_waits",
)
COUNTER_TTL = 400 * 24 * 3600  # a counter lives a year and more; Prometheus handles resets


def finished_key(job: str, status: str) -> str:
    return f"metrics:ledger_finished:{job}:{status}"


def timed_key(job: str) -> str:
    return f"metrics:ledger_timed:{job}"


def duration_key(job: str) -> str:
    return f"metrics:ledger_duration_ms:{job}"


def count(key: str, amount: int = 1) -> None:
    """Add to a fleet-wide counter; never raises (metrics must not break the work)."""
    from portal import counters

    try:
        with transaction.atomic():  # a failure rolls back this savepoint only
            counters.incr(key, amount, ttl=COUNTER_TTL)
    except Exception:  # noqa: S110 (a lost increment is better than a failed Halo call)
        pass


class PortalCollector:
    def collect(self):
        from django_q.brokers import get_broker

        from billing.payments.models import HaloOutbox
        from portal import counters, ledger
        from portal.models import ScheduledRun, WorkerHeartbeat
        from portal.runs import RunStatus

        now = timezone.now()
        per_tenant = settings.METRICS_PER_TENANT
        labels = ["job", "status", *(["tenant"] if per_tenant else [])]
        runs = GaugeMetricFamily(
            "portal_ledger_runs",
            "Scheduled runs waiting or running, by job and status",
            labels=labels,
        )
        group = ["job", "status", *(["tenant__slug"] if per_tenant else [])]
        active = ScheduledRun.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING])
        for row in active.values(*group).annotate(n=Count("pk")).order_by(*group):
            runs.add_metric([str(row[k] or "") for k in group], row["n"])
        yield runs

        # Finished runs: fleet-wide counters kept as they end (`ledger.count_finished`), not
        # a count of the rows kept (millions at fleet scale, pruned over time).
        jobs = sorted(ledger.jobs())
        ended = [s for s in RunStatus.values if s not in (RunStatus.QUEUED, RunStatus.RUNNING)]
        keys = [finished_key(job, status) for job in jobs for status in ended]
        keys += [k for job in jobs for k in (timed_key(job), duration_key(job))]
        counted = counters.values(keys)
        done = GaugeMetricFamily(
            "portal_ledger_runs_finished_total",
            "Scheduled runs that ended, by job and how",
            labels=["job", "status"],
        )
        done.type = "counter"
        for job in jobs:
            for status in ended:
                if value := counted[finished_key(job, status)]:
                    done.add_metric([job, status], float(value))
        yield done
        duration = SummaryMetricFamily(
            "portal_ledger_run_duration_seconds", "Duration of finished runs", labels=["job"]
        )
        for job in jobs:
            if timed := counted[timed_key(job)]:
                seconds = counted[duration_key(job)] / 1000
                duration.add_metric([job], count_value=timed, sum_value=seconds)
        yield duration

        retries = GaugeMetricFamily(
            "portal_ledger_retrying_runs", "Runs waiting to retry after a failure", labels=["job"]
        )
        for row in (
            ScheduledRun.objects.retrying().values("job").annotate(n=Count("pk")).order_by("job")
        ):
            retries.add_metric([row["job"]], row["n"])
        yield retries

        oldest = (
            ScheduledRun.objects.due(now)
            .order_by("not_before")
            .values_list("not_before", flat=True)
            .first()
        )
        yield GaugeMetricFamily(
            "portal_ledger_oldest_due_seconds",
            "How long the oldest due run has waited for a worker",
            value=(now - oldest).total_seconds() if oldest else 0.0,
        )
        yield GaugeMetricFamily(
            "portal_ledger_stale_runs",
            "Running runs whose worker stopped beating",
            value=ScheduledRun.objects.stale(now).count(),
        )
        try:
            depth = float(get_broker().queue_size() or 0)
        except Exception:
            depth = float("nan")
        yield GaugeMetricFamily(
            "portal_broker_queue_depth", "Tasks waiting in the broker", value=depth
        )
        yield GaugeMetricFamily(
            "portal_halo_outbox_backlog",
            "Payments and pay links due to be written to Halo",
            value=HaloOutbox.objects.due().count(),
        )
        for key, name, text in (
            (HALO_REQUESTS, "portal_halo_requests", "Requests sent to Halo"),
            (HALO_429S, "portal_halo_rate_limited", "Halo answers 429 (rate limited)"),
            (
                HALO_BUDGET_WAITS,
                "portal_halo_budget_waits",
                "Calls that waited for the rate budget",
            ),
        ):
            family = GaugeMetricFamily(f"{name}_total", text)
            family.type = "counter"
            family.add_metric([], float(counters.value(key) or 0))
            yield family
        beats = GaugeMetricFamily(
            "portal_worker_heartbeat_age_seconds",
            "Seconds since each worker process beat",
            labels=["worker"],
        )
        for beat in WorkerHeartbeat.objects.processes().order_by("host", "pid"):
            # The cluster's name ends with host:pid:token, unique even where hosts repeat.
            worker = beat.cluster.rsplit("@", 1)[-1]
            beats.add_metric([worker], (now - beat.seen).total_seconds())
        yield beats


def _allowed(request) -> bool:
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return True
    try:
        address = ipaddress.ip_address(client_address(request))
    except ValueError:
        return False
    return any(
        address in ipaddress.ip_network(net, strict=False) for net in settings.METRICS_ALLOWED_IPS
    )


@require_GET
def metrics(request):
    if not _allowed(request):
        return HttpResponseForbidden(
            "Metrics need METRICS_TOKEN or an address in METRICS_ALLOWED_IPS."
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
