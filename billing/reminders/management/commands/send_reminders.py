"""`manage.py send_reminders [--tenant SLUG] [--dry-run]`: send the reminders due now."""

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing.reminders import dunning
from billing.reminders.models import ReminderSettings
from portal.models import Tenant


class Command(BaseCommand):
    help = (
        "Send the payment reminders due now, as the 15-minute schedule does (each tenant "
        "from its send hour, in its time zone; nothing is ever sent twice). --dry-run lists "
        "them without sending."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", metavar="SLUG", help="Only this tenant (its code).")
        parser.add_argument("--dry-run", action="store_true", help="List, do not send.")

    def handle(self, *args, tenant=None, dry_run=False, **options):
        tenants = Tenant.objects.order_by("slug")
        if tenant is not None:
            tenants = tenants.filter(slug=tenant)
            if not tenants.exists():
                raise CommandError(f"No tenant with slug {tenant!r}.")
        else:
            tenants = tenants.filter(reminder_settings__enabled=True)
        now = timezone.now()
        for found in tenants:
            self.tenant(found, now, dry_run)

    def tenant(self, tenant, now, dry_run):
        settings = ReminderSettings.for_tenant(tenant)
        day = settings.day_due(now)
        if day is None:
            why = (
                "reminders are off"
                if not settings.enabled
                else (f"before {settings.send_hour}:00 in {tenant.time_zone}")
            )
            self.stdout.write(f"{tenant.slug}: nothing sent: {why}.")
            return
        if dry_run:
            due = dunning.plan(tenant, day)
            for item in due:
                what = f"would send to {item.to}" if item.goes_out else f"skipped: {item.skip}"
                self.stdout.write(
                    f"{tenant.slug}: invoice {item.invoice.display_number()} "
                    f"({item.step_label}): {what}"
                )
            sends = sum(item.goes_out for item in due)
            self.stdout.write(f"{tenant.slug}: {sends} would be sent (dry run).")
            return
        claimed = dunning.send_due_reminders(tenant, now)
        sent = [r for r in claimed if r.status == r.Status.SENT]
        for reminder in claimed:
            self.stdout.write(f"{tenant.slug}: {reminder}: {reminder.state}")
        style = self.style.SUCCESS if len(sent) == len(claimed) else self.style.WARNING
        self.stdout.write(style(f"{tenant.slug}: {len(sent)} of {len(claimed)} sent."))
