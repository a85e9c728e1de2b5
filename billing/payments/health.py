"""The admin home's rows for payments: the processor, the Halo outbox, auto-pay, and pay-link
alerts."""

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from billing.payments.models import (
    AutoPayAttempt,
    HaloOutbox,
    PayLinkAlert,
    Payment,
    PaymentSettings,
)
from portal.health import HealthRow, provider


@provider
def payments(tenant):
    return [_processor(tenant), _outbox(tenant), _autopay(tenant), _pay_link_alerts(tenant)]


def _processor(tenant):
    settings = PaymentSettings.objects.filter(tenant=tenant).first()
    url = reverse("admin:payments_paymentsettings_changelist")
    if settings is None:
        return HealthRow("Payments", "idle", "Not set up: open Payment settings", url)
    processor = settings.processor_impl()
    if reason := processor.unavailable_reason():
        return HealthRow("Payments", "error", reason, url)
    month = Payment.objects.filter(
        tenant=tenant,
        status=Payment.Status.SUCCEEDED,
        succeeded_at__gte=timezone.now() - timedelta(30),
    ).count()
    taken = f"{month} payments in 30 days"
    if not processor.takes_real_money:
        return HealthRow("Payments", "warn", f"Test processor: no real money. {taken}", url)
    mode = "live" if processor.is_live else "test mode"
    return HealthRow(
        "Payments", "ok" if processor.is_live else "warn", f"Stripe ({mode}). {taken}", url
    )


def _outbox(tenant):
    rows = HaloOutbox.objects.filter(tenant=tenant)
    url = reverse("admin:payments_halooutbox_changelist")
    failed = rows.filter(status=HaloOutbox.Status.FAILED).count()
    if failed:
        return HealthRow("Writes to Halo", "error", f"{failed} failed: open the Halo outbox", url)
    late = rows.filter(
        status=HaloOutbox.Status.PENDING, created__lt=timezone.now() - timedelta(hours=1)
    )
    if oldest := late.order_by("created").first():
        text = f"{late.count()} waiting over an hour; last error: {oldest.last_error[:160]}"
        return HealthRow("Writes to Halo", "warn", text, url)
    return HealthRow("Writes to Halo", "ok", "Every payment is recorded in Halo", url)


def _autopay(tenant):
    url = reverse("admin:payments_paymentsettings_autopay_forecast")
    week = timezone.localdate() - timedelta(days=7)
    failed = AutoPayAttempt.objects.filter(tenant=tenant, day__gte=week).failed().count()
    if failed:
        return HealthRow("Auto-pay", "warn", f"{failed} failed charges in 7 days", url)
    if not tenant.autopay_rules.filter(enabled=True).exists():
        return HealthRow("Auto-pay", "idle", "No auto-pay rule: add one under Auto-pay rules", url)
    return HealthRow("Auto-pay", "ok", "See the forecast of the next run", url)


def _pay_link_alerts(tenant):
    url = reverse("admin:payments_paylinkalert_changelist")
    recent = timezone.now() - timedelta(days=7)
    alert = PayLinkAlert.objects.filter(tenant=tenant, last_seen__gte=recent).first()
    if alert is None:
        return HealthRow("Pay links", "ok", "No suspicious lookups in 7 days", url)
    local = timezone.localtime(alert.last_seen, tenant.tz)
    text = f"Someone may be guessing invoice numbers: {alert.reason} (last {local:%d %b %H:%M})"
    return HealthRow("Pay links", "error" if alert.is_open else "warn", text, url)
