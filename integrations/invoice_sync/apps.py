from django.apps import AppConfig


class InvoiceSyncConfig(AppConfig):
    name = "integrations.invoice_sync"
    label = "invoice_sync"
    verbose_name = "Invoice sync"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from integrations.invoice_sync import health, schedules  # noqa: F401  (registers them)
