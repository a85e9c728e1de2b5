"""'Refresh from Halo' runs on the worker: reading every client and item of a large Halo (or
a slow one) takes longer than a page may hold a web worker. The button queues one refresh
per tenant at a time; the picker and mapping lists show how it is going and how it ended.

The state lives in the shared cache (it is a progress note, not data): queued, reading, then
done with the counts or failed with the reason. A refresh whose worker died is given up
after the worker's task timeout, so the button works again.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from integrations.billing_sync import runner
from integrations.halo import HaloError
from portal.jobs import enqueue
from portal.models import Tenant

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
#: How long the outcome stays on the lists.
KEEP = 7 * 86400


def _claim_key(tenant_id):
    return f"billing_sync:refresh:{tenant_id}:claim"


def _state_key(tenant_id):
    return f"billing_sync:refresh:{tenant_id}:state"


def _lost_after():
    """Seconds after which a queued or running refresh is taken as lost (task timeout)."""
    return int(settings.Q_CLUSTER.get("timeout", 900)) + 60


@dataclass(frozen=True)
class Status:
    state: str
    at: datetime
    text: str = ""

    @property
    def under_way(self):
        return self.state in (QUEUED, RUNNING)

    def describe(self, tenant):
        when = f"{self.at.astimezone(tenant.tz):%d %b %H:%M}"
        if self.state == QUEUED:
            return f"Refreshing from Halo on the worker: queued at {when}. Reload to follow it."
        if self.state == RUNNING:
            return f"Refreshing from Halo on the worker: reading Halo since {when}."
        if self.state == DONE:
            return f"{self.text} ({when})"
        return f"Refresh from Halo failed at {when}: {self.text}"


def status(tenant):
    """The tenant's latest refresh, or None."""
    found = cache.get(_state_key(tenant.pk))
    return Status(**found) if found else None


def _note(tenant_id, state, text=""):
    found = {"state": state, "at": timezone.now(), "text": text}
    cache.set(_state_key(tenant_id), found, KEEP)


def queue(tenant):
    """Queue a refresh unless one is under way: `(queued, status)`."""
    if not cache.add(_claim_key(tenant.pk), True, _lost_after()):
        return False, status(tenant)
    _note(tenant.pk, QUEUED)
    from integrations.billing_sync import tasks  # tasks import this module

    def could_not_queue(error):
        cache.delete(_claim_key(tenant.pk))
        _note(tenant.pk, FAILED, f"it could not be queued ({type(error).__name__}).")

    enqueue(
        tasks.refresh_halo,
        tenant.pk,
        name=f"refresh {tenant.slug} from Halo",
        group="billing_sync",
        on_error=could_not_queue,
    )
    return True, status(tenant)


class UnderWay(Exception):
    """Another refresh of the tenant is queued or running (its `status`)."""

    def __init__(self, status):
        super().__init__("A refresh from Halo is already under way.")
        self.status = status


def refresh_now(tenant):
    """Refresh in this process (`manage.py halo_refresh`) as the button's task does on the
    worker: one refresh per tenant at a time, the outcome noted for the admin's lists.
    Answers the `(clients, items)` counts; raises `runner.NotConnected` (before claiming
    anything), `UnderWay`, or the `HaloError` that stopped it."""
    client = runner.halo_client_for(tenant)
    if not cache.add(_claim_key(tenant.pk), True, _lost_after()):
        raise UnderWay(status(tenant))
    return _refresh(tenant, client)


def run(tenant_id):
    """The task: refresh, noting progress and the outcome. Halo errors end up on the page."""
    tenant = Tenant.objects.get(pk=tenant_id)
    try:
        clients, items = _refresh(tenant)
    except (HaloError, runner.NotConnected) as error:
        return {"error": str(error)}
    return {"clients": clients, "items": items}


def describe_counts(clients, items):
    return (
        f"Refreshed from Halo: {clients['seen']} clients and {items['seen']} items "
        f"({clients['new'] + items['new']} new, {clients['changed'] + items['changed']} "
        "changed)."
    )


def _refresh(tenant, client=None):
    """Refresh `tenant` under the claim its caller took (released here), noting progress and
    the outcome; raises what stopped it."""
    _note(tenant.pk, RUNNING)
    try:
        clients, items = runner.refresh_from_halo(tenant, client or runner.halo_client_for(tenant))
    except (HaloError, runner.NotConnected) as error:
        _note(tenant.pk, FAILED, str(error))
        raise
    except Exception:
        log.exception("The Halo refresh of %s crashed", tenant.pk)
        _note(tenant.pk, FAILED, "an unexpected error stopped it (details in the worker log).")
        raise
    finally:
        cache.delete(_claim_key(tenant.pk))
    _note(tenant.pk, DONE, describe_counts(clients, items))
    return clients, items
