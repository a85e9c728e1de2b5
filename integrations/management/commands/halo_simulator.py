"""``manage.py halo_simulator``: same flags as ``python -m integrations.halo_sim``."""

from django.core.management.base import BaseCommand, CommandError

from integrations.halo_sim import cli


class Command(BaseCommand):
    help = "Run the Halo simulator: a fake HaloPSA with demo data, faults and a /_sim/ control API."
    requires_system_checks = []

    def add_arguments(self, parser):
        cli.add_arguments(parser)

    def handle(self, **options):
        try:
            cli.serve(options, out=self.stdout)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
