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
        return {"ok": False, "detail": "no heartbeat yet: is `manage.py qcluster` running?"}
    age = (timezone.now() - seen).total_seconds()
    ok = age <= settings.HEALTHZ_MAX_HEARTBEAT_AGE
    result = {"ok": ok, "heartbeat_age_seconds": round(age, 1)}
    if not ok:
        result["detail"] = "heartbeat too old: the qcluster worker or its scheduler is down"
    return result


def run_all():
    return {"database": database(), "broker": broker(), "worker": worker()}
