"""`manage.py halo_refresh <tenant slug>`: "Refresh from Halo", in the foreground.

Re-reads the tenant's Halo clients and items into the mapping pickers
(`integrations.billing_sync.refresh`, as the admin's button does on the worker: one refresh
per tenant at a time, the outcome shown on the admin's lists too). Prints the counts. Exit
codes: 0 refreshed, 1 Halo refused or failed (or another refresh is under way), 2 usage
error, no such tenant or no Halo connection for billing sync.
"""

from django.core.management.base import BaseCommand, CommandError

from integrations.billing_sync import refresh, runner
from integrations.halo import HaloError
from integrations.management.commands.halo_test_connection import tenant_from

#: Exit codes (documented in the README and above).
FAILED, CANNOT_REFRESH = 1, 2


class Command(BaseCommand):
    help = "Refresh a tenant's Halo clients and items (the mapping pickers) now."

    def add_arguments(self, parser):
        parser.add_argument("tenant", help="The tenant's slug.")

    def handle(self, *args, **options):
        tenant = tenant_from(options["tenant"])
        try:
            clients, items = refresh.refresh_now(tenant)
        except runner.NotConnected as error:
            raise CommandError(str(error), returncode=CANNOT_REFRESH) from None
        except refresh.UnderWay as busy:
            detail = f" {busy.status.describe(tenant)}" if busy.status else ""
            raise CommandError(f"{busy}{detail}", returncode=FAILED) from None
        except HaloError as error:
            raise CommandError(f"Refresh from Halo failed: {error}", returncode=FAILED) from None
        width = len("Clients")
        for label, counts in (("Clients", clients), ("Items", items)):
            self.stdout.write(
                f"  {label:<{width}} {counts['seen']:>6} in Halo, {counts['new']:>5} new, "
                f"{counts['changed']:>5} changed"
            )
        self.stdout.write(self.style.SUCCESS(refresh.describe_counts(clients, items)))
