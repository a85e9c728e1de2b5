from django.conf import settings

from portal.models import WorkerHeartbeat


def heartbeat():
    """Scheduled every minute; /healthz reads its age."""
    WorkerHeartbeat.beat(settings.Q_CLUSTER["name"])
