from django.apps import AppConfig


class InvoicingConfig(AppConfig):
    name = "billing.invoicing"
    label = "invoicing"
    verbose_name = "Invoicing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from billing.invoicing import health  # noqa: F401  (registers it)
