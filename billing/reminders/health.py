"""The admin home's row for reminders: off, failing, or what went out."""

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from billing.reminders.models import Reminder, ReminderSettings
from portal.health import HealthRow, provider


@provider
def reminders(tenant):
    settings = ReminderSettings.objects.filter(tenant=tenant).first()
    if settings is None or not settings.enabled:
        url = reverse("admin:reminders_remindersettings_changelist")
        return [HealthRow("Reminders", "idle", "Off: switch them on in Reminder settings", url)]
    url = reverse("admin:reminders_reminder_changelist")
    recent = Reminder.objects.filter(tenant=tenant, claimed_at__gte=timezone.now() - timedelta(7))
    if trouble := recent.need_attention().count():
        text = f"{trouble} failed or unconfirmed in 7 days: open Reminders, then Send again"
        return [HealthRow("Reminders", "error", text, url)]
    sent = recent.filter(status=Reminder.Status.SENT).count()
    return [HealthRow("Reminders", "ok", f"{sent} sent in 7 days", url)]
