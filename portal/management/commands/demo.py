"""`manage.py demo`: a demo tenant to click through. Idempotent: run it as often as you like.

Each feature adds its own demo data through `portal.demo.register`; this command creates the
tenant, staff user and catalogue, then runs every registered step in order.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from portal import demo
from portal.models import Membership

DEMO_USER = "demo@acme.example"
DEMO_PASSWORD = "acme-demo-2026"  # noqa: S105  a demo login, printed on purpose


class Command(BaseCommand):
    help = "Create or refresh the demo tenant, its catalogue and a staff login."

    def add_arguments(self, parser):
        parser.add_argument(
            "--halo-url",
            default="http://127.0.0.1:8765",
            help="Base URL of the Halo simulator the demo tenant connects to.",
        )

    @transaction.atomic
    def handle(self, *args, **options):
        tenant = demo.ensure_tenant()
        user = _ensure_user(tenant)
        context = demo.DemoContext(tenant=tenant, user=user, halo_url=options["halo_url"])
        for step in demo.steps():
            step(context)
        self.stdout.write(self.style.SUCCESS(f"Demo tenant ready: {tenant.name} ({tenant.slug})"))
        for line in context.notes:
            self.stdout.write(f"  {line}")
        self.stdout.write(f"  Admin login: {DEMO_USER} / {DEMO_PASSWORD}")


def _ensure_user(tenant):
    User = get_user_model()
    user, _ = User.objects.get_or_create(
        username=DEMO_USER, defaults={"email": DEMO_USER, "is_staff": True}
    )
    # Only touch the hash when it is wrong: a fresh salt every run would change the data.
    if not user.check_password(DEMO_PASSWORD):
        user.set_password(DEMO_PASSWORD)
        user.save()
    Membership.objects.update_or_create(
        user=user, tenant=tenant, defaults={"role": Membership.Role.OWNER}
    )
    return user
