from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Halo integration"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from integrations import demo, health  # noqa: F401  (registers the demo step and health row)
