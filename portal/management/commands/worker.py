"""`manage.py worker`: the django-q2 cluster (`qcluster`) as a process to supervise.

- It waits for the broker with backoff (1 s doubling to 60 s) instead of exiting at once
  when Redis is unreachable at start, so a worker started before its broker, or during a
  broker restart, comes up by itself.
- While the cluster runs it beats a heartbeat row of its own (`WorkerHeartbeat`: host, pid,
  started, seen) every `RUN_HEARTBEAT_SECONDS`; a graceful stop (SIGTERM, Ctrl-C) deletes
  the row, so a row that goes silent is a killed process or a lost machine. /healthz, the
  fleet view and `fleet_status` read them. A worker starting on a machine deletes the rows
  of that machine's processes that no longer exist (restarted after a crash).

Run it instead of `qcluster` (systemd: deploy/portal-worker@.service). Nothing is lost when
it dies: the durable run ledger's sweeper resumes what it held.
"""

import logging
import os
import socket
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.cluster import Cluster

from portal import ledger
from portal.models import WorkerHeartbeat

log = logging.getLogger(__name__)


def wait_for_broker(max_wait, sleep=time.sleep, out=None):
    """Ping the broker until it answers (backoff 1 → 60 s); False after `max_wait` seconds
    (0: keep trying for ever)."""
    delay, waited = 1.0, 0.0
    while True:
        try:
            broker = get_broker()
            if broker.ping() is not False:
                return True
        except Exception as error:
            message = (
                f"Broker unreachable ({type(error).__name__}: {error}); retrying in {delay:g} s"
            )
            log.warning(message)
            if out:
                out.write(message)
        if max_wait and waited + delay > max_wait:
            return False
        sleep(delay)
        waited += delay
        delay = min(delay * 2, 60.0)


def process_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class Command(BaseCommand):
    help = "Run a django-q2 cluster that waits for its broker and beats a heartbeat."

    def add_arguments(self, parser):
        parser.add_argument(
            "--broker-wait",
            type=float,
            default=0,
            help="Give up after this many seconds without a broker (default 0: never).",
        )

    def handle(self, *args, **options):
        if not wait_for_broker(options["broker_wait"], out=self.stderr):
            raise CommandError("The broker did not answer: not starting.", returncode=1)
        host, pid = socket.gethostname(), os.getpid()
        # host:pid:token (`ledger.worker_name`): containers may share a hostname and a pid,
        # and each process needs a heartbeat row of its own.
        name = f"{settings.Q_CLUSTER['name']}@{ledger.worker_name()}"[:100]
        started = timezone.now()
        WorkerHeartbeat.objects.forget_dead(host, alive=process_exists)
        cluster = Cluster()
        cluster.start()
        self.stdout.write(f"Worker {name} running.")
        try:
            while cluster.sentinel.is_alive():
                try:
                    WorkerHeartbeat.beat(name, host=host, pid=pid, started=started)
                except Exception:
                    log.warning("Could not write the worker heartbeat", exc_info=True)
                    close_old_connections()
                cluster.sentinel.join(settings.RUN_HEARTBEAT_SECONDS)
        finally:
            WorkerHeartbeat.objects.filter(cluster=name).delete()  # a goodbye, not a death
