from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Halo integration"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from integrations import health  # noqa: F401  (registers the health row)
