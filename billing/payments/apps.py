from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "billing.payments"
    label = "payments"
    verbose_name = "Payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from billing.payments import health, tasks  # noqa: F401  (registers them)
