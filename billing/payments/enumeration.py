"""Noticing someone walking a tenant's pay links (Halo's invoice ids are sequential).

Every pay-link lookup that finds nothing, and every wrong answer to the pay-link question
(`PaymentSettings.link_check`), is a *miss*. Misses are counted in shared counters
(`portal.counters`: one count for every process) per window of `PAYMENTS_ALERT_WINDOW`
seconds, per client address and across the tenant. Each time a count reaches a multiple of
its threshold (`PAYMENTS_ALERT_ADDRESS_MISSES`, `PAYMENTS_ALERT_TENANT_MISSES`) the
tenant's open `PayLinkAlert` is raised: made when there is none (then its owners get one
email each), else brought up to date. So the work is bounded: one row write per threshold
of misses, one email per owner per incident, and an incident lasts until the tenant has been
quiet for `PAYMENTS_ALERT_QUIET` seconds, however many addresses an attacker uses.
"""

import hashlib
import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.payments.models import PayLinkAlert
from portal import counters
from portal.jobs import enqueue

log = logging.getLogger(__name__)


def now():
    """The clock (tests set their own)."""
    return timezone.now()


def record_miss(tenant, address):
    """Count one miss of `tenant`'s pay links from client `address`; raise the alert when
    a count reaches its threshold. Answers the alert raised, or None."""
    if tenant is None:
        return None
    moment = now()
    window = settings.PAYMENTS_ALERT_WINDOW
    slot = int(moment.timestamp() // window)
    ttl = window + 1
    ident = hashlib.sha256(address.encode()).hexdigest()[:24]
    by_address = counters.incr(f"paylink-miss:{tenant.pk}:{ident}:{slot}", ttl=ttl, now=moment)
    across = counters.incr(f"paylink-miss:{tenant.pk}:{slot}", ttl=ttl, now=moment)
    alert = None
    limit = settings.PAYMENTS_ALERT_ADDRESS_MISSES
    if limit and by_address % limit == 0:
        reason = f"{by_address} pay-link misses from {address} within {_minutes(window)}"
        alert = _raise(tenant, moment, reason, address=address, misses=by_address)
    limit = settings.PAYMENTS_ALERT_TENANT_MISSES
    if limit and across % limit == 0:
        reason = f"{across} pay-link misses across the tenant within {_minutes(window)}"
        alert = _raise(tenant, moment, reason, tenant_misses=across)
    return alert


def _minutes(seconds):
    minutes = round(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _raise(tenant, moment, reason, address=None, misses=0, tenant_misses=0):
    quiet = timedelta(seconds=settings.PAYMENTS_ALERT_QUIET)
    opened = False
    with transaction.atomic():
        alert = _open_alert(tenant)
        if alert is not None and alert.last_seen <= moment - quiet:
            alert.is_open = False
            alert.save(update_fields=["is_open"])
            alert = None
        if alert is None:
            try:
                with transaction.atomic():
                    alert = PayLinkAlert.objects.create(
                        tenant=tenant, started=moment, last_seen=moment, reason=reason
                    )
                    opened = True
            except IntegrityError:  # another process opened it just now
                alert = _open_alert(tenant)
        alert.last_seen = max(alert.last_seen, moment)
        alert.tenant_misses = max(alert.tenant_misses, tenant_misses)
        if address is not None and (
            address in alert.addresses or len(alert.addresses) < PayLinkAlert.MAX_ADDRESSES
        ):
            alert.addresses[address] = max(alert.addresses.get(address, 0), misses)
        alert.save(update_fields=["last_seen", "tenant_misses", "addresses"])
        if opened:
            transaction.on_commit(lambda: _queue_email(alert.pk))
    log.warning("Pay links of tenant %s: %s (alert %s)", tenant.slug, reason, alert.pk)
    return alert


def _open_alert(tenant):
    return PayLinkAlert.objects.select_for_update().filter(tenant=tenant, is_open=True).first()


def _queue_email(alert_id):
    from billing.payments import tasks

    enqueue(tasks.send_pay_link_alert, alert_id)


def email_owners(alert_id):
    """Email each owner of the alert's tenant, once per alert (claimed first, so a repeated
    task sends nothing)."""
    from billing.payments import emails

    if not PayLinkAlert.objects.filter(pk=alert_id, emailed__isnull=True).update(emailed=now()):
        return 0
    alert = PayLinkAlert.objects.select_related("tenant").get(pk=alert_id)
    sent = emails.send_pay_link_alert(alert)
    PayLinkAlert.objects.filter(pk=alert_id).update(emailed_to=sent)
    return sent
