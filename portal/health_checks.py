"""The checks behind /healthz: database, broker and worker heartbeat."""

import logging

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django_q.brokers import get_broker

from portal.models import WorkerHeartbeat

log = logging.getLogger(__name__)


def database():
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        log.warning("healthz: database unreachable: %s", exc)
        return {"ok": False, "detail": f"unreachable: {type(exc).__name__}"}
    return {"ok": True, "vendor": connection.vendor}


def broker():
    try:
        b = get_broker()
        size = b.queue_size()
        if b.ping() is False:
            raise ConnectionError("ping failed")
    except Exception as exc:
        log.warning("healthz: broker unreachable: %s", exc)
        return {"ok": False, "detail": f"unreachable: {type(exc).__name__}"}
    return {"ok": True, "type": b.info(), "queued": size}


def worker():
    try:
        seen = WorkerHeartbeat.latest()
    except Exception as exc:
        return {"ok": False, "detail": f"unknown: {type(exc).__name__}"}
    if seen is None:
        return {"ok": False, "detail": "no heartbeat yet: is `manage.py worker` running?"}
    age = (timezone.now() - seen).total_seconds()
    ok = age <= settings.HEALTHZ_MAX_HEARTBEAT_AGE
    result = {"ok": ok, "heartbeat_age_seconds": round(age, 1), "processes": processes()}
    if not ok:
        result["detail"] = "heartbeat too old: the qcluster worker or its scheduler is down"
    elif silent := [p["name"] for p in result["processes"] if p["silent"]]:
        result["detail"] = (
            f"worker process(es) silent (killed or machine lost): {', '.join(silent)}"
        )
    return result


def processes():
    """Each `manage.py worker` process: name, host, pid, heartbeat age, silent or not."""
    limit = settings.HEALTHZ_MAX_HEARTBEAT_AGE
    return [
        {
            "name": beat.cluster,
            "host": beat.host,
            "pid": beat.pid,
            "age_seconds": round(beat.age.total_seconds(), 1),
            "silent": beat.age.total_seconds() > limit,
        }
        for beat in WorkerHeartbeat.objects.processes().order_by("host", "pid")
    ]


def run_all():
    return {"database": database(), "broker": broker(), "worker": worker()}
