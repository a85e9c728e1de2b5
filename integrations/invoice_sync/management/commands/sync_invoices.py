"""`manage.py sync_invoices <tenant-slug> [--initial|--new|--unpaid]`; exits 1 on failure."""

from django.core.management.base import BaseCommand, CommandError

from integrations.invoice_sync.models import InvoiceSyncRun
from integrations.invoice_sync.runner import run_sync
from portal.models import Tenant


class Command(BaseCommand):
    help = (
        "Sync a tenant's clients and invoices from Halo now (no staff rate limits apply). "
        "Without an option: fetch new data, which also finishes an unfinished initial sync."
    )

    def add_arguments(self, parser):
        parser.add_argument("tenant", help="The tenant's slug (its code in webhook URLs).")
        kind = parser.add_mutually_exclusive_group()
        for flag, value, text in (
            ("--initial", InvoiceSyncRun.Kind.INITIAL, "everything since the created-since date "
             "(resumes an unfinished initial sync, else starts a new one)"),
            ("--new", InvoiceSyncRun.Kind.NEW, "clients and invoices changed since the last sync"),
            ("--unpaid", InvoiceSyncRun.Kind.UNPAID, "re-read every invoice still owed"),
        ):  # fmt: skip
            kind.add_argument(flag, dest="kind", action="store_const", const=value, help=text)
        parser.set_defaults(kind=InvoiceSyncRun.Kind.NEW)

    def handle(self, *args, tenant, kind, **options):
        found = Tenant.objects.filter(slug=tenant).first()
        if found is None:
            raise CommandError(f"No tenant with slug {tenant!r}.")
        run = run_sync(found, kind, InvoiceSyncRun.Trigger.CLI)
        summary = (
            f"{run.get_kind_display()} of {found.slug}: {run.get_status_display().lower()}; "
            f"invoices {run.invoices_created} new, {run.invoices_updated} updated, "
            f"{run.invoices_skipped} skipped, {run.invoices_deleted} marked deleted; "
            f"customers {run.customers_saved} saved; {run.halo_requests} Halo requests"
        )
        if run.status != InvoiceSyncRun.Status.SUCCEEDED:
            raise CommandError(f"{summary}. {run.error}")
        self.stdout.write(self.style.SUCCESS(summary))
