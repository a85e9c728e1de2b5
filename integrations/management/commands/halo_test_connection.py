"""`manage.py halo_test_connection <tenant slug>`: the admin's Test connection, for scripts.

Gets a token from the tenant's active Halo connection and probes, read-only, every
permission its enabled features need (`integrations.connection_test`, as the button does,
and the outcome is stored on the connection the same way). Prints each check. Exit codes:
0 every check passed, 1 a check failed (or no token), 2 usage error, no such tenant or no
active connection.
"""

from django.core.management.base import BaseCommand, CommandError

from integrations import connection_test
from integrations.models import HaloConnection
from portal.models import Tenant

#: Exit codes (documented in the README and above).
CHECK_FAILED, CANNOT_TEST = 1, 2
MARKS = {"ok": "ok", "missing": "MISSING", "unknown": "unknown", "error": "ERROR"}


def tenant_from(slug):
    """The tenant with `slug`, or a CommandError (exit 2) naming it."""
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        raise CommandError(f"No tenant with the slug “{slug}”.", returncode=CANNOT_TEST)
    return tenant


class Command(BaseCommand):
    help = "Test a tenant's Halo connection (token and permissions), as the admin's button does."

    def add_arguments(self, parser):
        parser.add_argument("tenant", help="The tenant's slug.")

    def handle(self, *args, **options):
        tenant = tenant_from(options["tenant"])
        connection = HaloConnection.objects.active(tenant)
        if connection is None:
            raise CommandError(
                f"{tenant.slug} has no active Halo connection: add one under Halo connections.",
                returncode=CANNOT_TEST,
            )
        result = connection_test.run(connection)
        self.stdout.write(
            f"Halo connection “{connection}” of {tenant.slug}: {connection.resource_url}"
        )
        if result.granted_scope is not None:
            self.stdout.write(f"  Token granted, scope: {result.granted_scope or '(none)'}")
        width = max((len(check.permission) for check in result.checks), default=0)
        for check in result.checks:
            self.stdout.write(
                f"  {MARKS.get(check.status, check.status):<8} {check.permission:<{width}}  "
                f"{check.detail}"
            )
        if not result.ok:
            raise CommandError(f"Test failed: {result.summary}", returncode=CHECK_FAILED)
        self.stdout.write(self.style.SUCCESS(f"OK: {result.summary}"))
