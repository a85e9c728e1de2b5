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


class PortalAdminConfig(admin_apps.AdminConfig):
    default = False
    default_site = "portal.admin_site.PortalAdminSite"
