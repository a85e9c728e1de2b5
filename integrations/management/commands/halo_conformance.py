"""``manage.py halo_conformance --from LOG``: hold logged Halo requests to Halo's document."""

import sys

from django.core.management.base import BaseCommand, CommandError

from integrations.halo.contract import check_request_log


class Command(BaseCommand):
    help = (
        "Check every request in a Halo simulator request log (halo_simulator --request-log) "
        "against Halo's own API document; exits 1 listing each departure, 0 when there is none."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--from", dest="log", required=True, help="the request log ('-' for standard input)"
        )

    def handle(self, log, **options):
        try:
            if log == "-":
                found = check_request_log(sys.stdin)
            else:
                with open(log, encoding="utf-8") as lines:
                    found = check_request_log(lines)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot check {log}: {exc}") from exc
        for request, departure in found:
            self.stdout.write(f"{request}: {departure.kind}: {departure.detail}")
        if found:
            self.stderr.write(f"{len(found)} departure(s) from Halo's API document.")
            sys.exit(1)
        self.stdout.write("No departures from Halo's API document.")
