"""What every run of a tenant's job has in common: its states, its claim, its heartbeat.

A run (a billing sync, an invoice sync fetch) is a row that says how it went. One shared
set of states, `RunStatus`, is used by every kind of run, so "succeeded" means the same in
billing sync, invoice sync and the durable run ledger (`portal.ledger`).

The claim is the row itself: `TenantRun` subclasses declare a partial unique constraint
on the tenant over the active states (`active_run_constraint`), so creating a queued or
running row is the lock. It holds across every process and machine sharing the database,
on SQLite and PostgreSQL alike, and needs no lock table. A run proves it is alive with
`beat()`; one whose heartbeat is older than its `stale_after` was killed with its worker
and is released (`interrupted`) by the next claim or by the ledger's sweeper, after which
the work is done again by a new run (every run plans afresh from Halo).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.db import IntegrityError, connections, models, transaction
from django.db.models import Q
from django.utils import timezone

log = logging.getLogger(__name__)


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    PREVIEWED = "previewed", "Preview ready"
    AWAITING_APPROVAL = "awaiting", "Awaiting approval"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Some items failed"
    ERROR = "error", "Could not run"
    INTERRUPTED = "interrupted", "Interrupted"
    SKIPPED = "skipped", "Skipped"


ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)


class ClaimLost(Exception):
    """Another process declared this run dead and took over the tenant's claim."""


def active_run_constraint(name: str) -> models.UniqueConstraint:
    """One queued or running run per tenant: the claim (see the module's docstring)."""
    return models.UniqueConstraint(
        fields=["tenant"], condition=Q(status__in=[s.value for s in ACTIVE]), name=name
    )


def stale_after() -> timedelta:
    """How old a running run's heartbeat may be before it counts as dead."""
    return timedelta(seconds=settings.RUN_STALE_SECONDS)


class TenantRunQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=ACTIVE)

    def stale(self, now=None):
        """Running runs whose worker stopped beating, and queued ones no worker started."""
        now = now or timezone.now()
        return self.filter(
            Q(status=RunStatus.RUNNING, heartbeat__lt=now - stale_after())
            | Q(status=RunStatus.QUEUED, heartbeat__lt=now - self.model.QUEUE_STALE_AFTER)
        )


class TenantRunManager(models.Manager.from_queryset(TenantRunQuerySet)):  # type: ignore[misc]
    def claim(self, tenant, **fields):
        """Take the tenant's one run slot: `(run, None)`, or `(None, the active run)`."""
        self.release_stale(tenant=tenant)
        try:
            with transaction.atomic():
                run = self.create(tenant=tenant, **fields)
            return run, None
        except IntegrityError:
            return None, self.active().filter(tenant=tenant).first()

    def release_stale(self, **filters):
        """Mark dead runs interrupted (with why), freeing their tenants; answers how many."""
        now = timezone.now()
        stale = self.filter(**filters).stale(now)
        released = 0
        for status, why in (
            (RunStatus.QUEUED, self.model.NOT_STARTED),
            (RunStatus.RUNNING, self.model.STOPPED),
        ):
            released += stale.filter(status=status).update(
                status=RunStatus.INTERRUPTED, finished=now, error=why
            )
        return released


def describe_duration(duration: timedelta) -> str:
    """A run's length as staff read it: "under a second" (never "0.0 s"), "4.2 s", "12 s",
    "3 min 5 s", "2 h 4 min"."""
    seconds = duration.total_seconds()
    if seconds < 1:
        return "under a second"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


class TenantRun(models.Model):
    """A run of one tenant's job. Subclasses add what the job records, and in Meta the
    `active_run_constraint` that makes `objects.claim` the lock."""

    Status = RunStatus
    ACTIVE = ACTIVE
    #: A queued run no worker started within this long: its task was lost.
    QUEUE_STALE_AFTER: ClassVar[timedelta] = timedelta(minutes=30)
    NOT_STARTED = "No worker started this run: check that `manage.py qcluster` is running."
    STOPPED = (
        "The run stopped without finishing (worker restarted or killed). The next run reads "
        "Halo afresh and completes the work."
    )

    tenant: Any  # the subclass's ForeignKey, with its own related_name
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.QUEUED)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(default=timezone.now)
    error = models.TextField(blank=True)

    objects = TenantRunManager()

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    @property
    def duration(self) -> timedelta | None:
        if self.started and self.finished:
            return self.finished - self.started
        return None

    @property
    def took(self) -> str:
        """How long the run took, as staff read it (`describe_duration`); '' until done."""
        return describe_duration(self.duration) if self.duration is not None else ""

    def _claimed(self, status=RunStatus.RUNNING):
        return type(self).objects.filter(pk=self.pk, status=status)

    def start(self) -> bool:
        """Queued → running, unless another process declared this run dead meanwhile."""
        now = timezone.now()
        started = self.started or now  # a continuation keeps its run's start
        if self._claimed(RunStatus.QUEUED).update(
            status=RunStatus.RUNNING, started=started, heartbeat=now
        ):
            self.status, self.started, self.heartbeat = RunStatus.RUNNING, started, now
            return True
        return False

    def beat(self, **progress) -> None:
        """Prove this run is alive (and save `progress` fields); raises ClaimLost if it was
        declared dead and its tenant taken over."""
        fields = {"heartbeat": timezone.now(), **progress}
        for name, value in fields.items():
            setattr(self, name, value)
        if not self._claimed().update(**fields):
            raise ClaimLost(f"run {self.pk} was taken over")

    def finish(self, status, *, error: str = "", **recorded) -> None:
        """Running → `status`, saving `recorded` fields with it; ClaimLost if it was taken."""
        self.status, self.error, self.finished = status, error, timezone.now()
        for name, value in recorded.items():
            setattr(self, name, value)
        fields = {"status": status, "error": error, "finished": self.finished, **recorded}
        if not self._claimed().update(**fields):
            raise ClaimLost(f"run {self.pk} was taken over")


@contextmanager
def keep_alive(row: models.Model, field: str = "heartbeat", **still: Any) -> Iterator[None]:
    """Beat `row`'s heartbeat every `RUN_HEARTBEAT_SECONDS` from a thread while the block
    runs, so a run that waits (Halo's rate window, a backoff, a slow page) is never taken
    for dead, and one whose worker is killed stops beating within seconds. `still` narrows
    the update (e.g. `status="running"`) so a row taken over is not touched."""
    interval = settings.RUN_HEARTBEAT_SECONDS
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(interval):
                try:
                    type(row)._default_manager.filter(pk=row.pk, **still).update(
                        **{field: timezone.now()}
                    )
                except Exception:  # the next beat tries again; the run itself goes on
                    log.warning("Could not beat %s %s", type(row).__name__, row.pk, exc_info=True)
        finally:
            connections.close_all()  # this thread's own connections

    thread = threading.Thread(target=beat, name=f"keep-alive-{row.pk}", daemon=True)
    if interval > 0:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
