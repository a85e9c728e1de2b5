"""`manage.py sync_billing <tenant-slug> [--dry-run]`: one sync in the foreground.

Prints a summary table and every pair that needs a look. Exit codes, for scripts:
0 every pair written (or previewed, or held for approval), 1 some pairs failed (the others
were written), 2 another run holds the tenant (nothing done), 3 the run could not run
(credentials, permissions, no connection: nothing written past the error).
"""

from django.core.management.base import BaseCommand, CommandError

from integrations.billing_sync import runner
from integrations.billing_sync.models import BillingSyncRun, SyncResult
from portal.models import Tenant

#: Exit codes (documented in the README and above).
SOME_PAIRS_FAILED, ALREADY_RUNNING, COULD_NOT_RUN = 1, 2, 3
ATTENTION = [SyncResult.Outcome.FAILED, SyncResult.Outcome.HELD, SyncResult.Outcome.SKIPPED]


class Command(BaseCommand):
    help = "Push a tenant's usage counts to Halo as licences now (or preview with --dry-run)."

    def add_arguments(self, parser):
        parser.add_argument("tenant", help="The tenant's slug.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Compute the rows; write nothing to Halo."
        )

    def handle(self, *args, **options):
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant with the slug “{options['tenant']}”.")
        trigger = (
            BillingSyncRun.Trigger.PREVIEW if options["dry_run"] else BillingSyncRun.Trigger.COMMAND
        )
        run, active = runner.start(tenant, trigger, dry_run=options["dry_run"])
        if run is None:
            busy = f"{active} is already {active.get_status_display().lower()}" if active else ""
            raise CommandError(
                f"{busy or 'Another run just finished'} for {tenant.slug}: not starting another.",
                returncode=ALREADY_RUNNING,
            )
        run.refresh_from_db()
        self._summary(run)
        if run.status == BillingSyncRun.Status.FAILED:
            raise CommandError(
                f"{run}: {run.get_status_display().lower()}.", returncode=SOME_PAIRS_FAILED
            )
        if run.status == BillingSyncRun.Status.ERROR:
            raise CommandError(
                f"{run}: {run.get_status_display().lower()}.", returncode=COULD_NOT_RUN
            )

    def _summary(self, run):
        """Counts by action (done, or previewed), then problems, requests and time."""
        self.stdout.write(f"{run} for {run.tenant.slug}: {run.get_status_display()}")
        labels = [
            *(c for c in SyncResult.Action.choices if c[0] != SyncResult.Action.SKIP),
            *(c for c in SyncResult.Outcome.choices if c[0] in ATTENTION),
        ]
        rows = [
            *((label, run.counts.get(key, 0)) for key, label in labels),
            ("Halo requests", run.halo_requests),
            ("Took", run.took or "–"),
        ]
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            self.stdout.write(f"  {label:<{width}} {value:>8}")
        if run.error:
            self.stderr.write(run.error)
        for result in run.results.filter(outcome__in=ATTENTION):
            self.stdout.write(
                f"  {result.get_outcome_display().upper()}: {result.organisation_name} / "
                f"{result.product_sku} ({result.halo_client_name or 'no Halo client'}): "
                f"{result.message}"
            )
