from django.conf import settings

from portal.models import WorkerHeartbeat


def heartbeat():
    """Scheduled every minute; /healthz reads its age."""
    WorkerHeartbeat.beat(settings.Q_CLUSTER["name"])


def purge_counters():
    """Hourly: expired shared counters (rate limits, alerts) are deleted."""
    from portal import counters

    return counters.purge()
