"""`manage.py fleet_status`: the fleet view in a terminal, for operators and monitoring.

One line per tenant and job (last slot, its state, next slot) and one per worker process.
Exit codes: 0 the fleet is whole; 1 something is stale, missed or failing, or a worker
process went silent (each listed); 2 usage error.

`--forget-silent`: a machine or container replaced for good leaves its processes' heartbeat
rows silent (a restart on the same machine clears them by itself); this deletes them once
an operator has checked that they are gone, so the fleet reads whole again.
"""

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from portal import fleet


def _when(row, field="slot"):
    value = getattr(row, field, None) if row else None
    return f"{value:%Y-%m-%d %H:%M}" if value else "–"


class Command(BaseCommand):
    help = "Every tenant's scheduled jobs and every worker; exit 1 if anything needs a look."

    def add_arguments(self, parser):
        parser.add_argument("--job", help="Only this job (e.g. billing_sync).")
        parser.add_argument(
            "--problems", action="store_true", help="List only what is stale, missed or failing."
        )
        parser.add_argument(
            "--forget-silent",
            action="store_true",
            help="Delete the heartbeat rows of silent worker processes (machines gone for good).",
        )

    def handle(self, *args, **options):
        from portal import ledger

        if options["job"] and options["job"] not in ledger.jobs():
            known = ", ".join(sorted(ledger.jobs()))
            raise CommandError(f"No job named {options['job']!r}. Jobs: {known}.", returncode=2)
        if options["forget_silent"]:
            from portal.models import WorkerHeartbeat

            for beat in WorkerHeartbeat.objects.silent().order_by("host", "pid"):
                beat.delete()
                self.stdout.write(
                    f"forgot worker {beat.cluster} (last beat {beat.seen:%Y-%m-%d %H:%M} UTC)"
                )
        survey = fleet.survey(job=options["job"])
        shown = survey.problems if options["problems"] else survey.jobs
        self.stdout.write(f"{'TENANT':<24} {'JOB':<22} {'LAST SLOT':<17} {'STATE':<9} NEXT SLOT")
        for job in shown:
            self.stdout.write(
                f"{job.tenant[:24]:<24} {job.job[:22]:<22} {_when(job.last):<17} "
                f"{job.state:<9} {_when(job.next)}" + (f"  {job.detail}" if job.problem else "")
            )
        now = timezone.now()
        for worker in survey.workers:
            age = (now - worker.seen).total_seconds()
            silent = worker in survey.silent_workers
            self.stdout.write(
                f"worker {worker.host}:{worker.pid} heartbeat {age:.0f} s ago"
                + (" SILENT (killed or machine lost)" if silent else "")
            )
        counts = ", ".join(f"{n} {state}" for state, n in sorted(survey.counts().items()))
        self.stdout.write(f"{len(survey.jobs)} tenant jobs: {counts or 'none'}.")
        if not survey.whole:
            raise CommandError(
                f"{len(survey.problems)} job(s) need a look, "
                f"{len(survey.silent_workers)} worker process(es) silent.",
                returncode=1,
            )
