from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class PortalConfig(AppConfig):
    default = True
    name = "portal"
    verbose_name = "Partners"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.models.signals import post_migrate

        from portal import checks, health  # noqa: F401  (registers checks and health rows)
        from portal.schedules import ensure_schedules

        post_migrate.connect(lambda **kwargs: ensure_schedules(), sender=self, weak=False)
        post_migrate.connect(create_cache_table, sender=self, weak=False)


def create_cache_table(using="default", **kwargs):
    """`migrate` alone gives a working deployment: the database cache (the default, holding
    Halo tokens and rate budgets) needs its table, which `migrate` does not make by itself.
    Idempotent, and a no-op for other cache backends (Redis)."""
    from django.core.management import call_command

    call_command("createcachetable", database=using, verbosity=0)


class PortalAdminConfig(admin_apps.AdminConfig):
    default = False
    default_site = "portal.admin_site.PortalAdminSite"
