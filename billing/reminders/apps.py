from django.apps import AppConfig


class RemindersConfig(AppConfig):
    """Payment reminders (dunning) to customers, and staff emails when a payment lands."""

    name = "billing.reminders"
    label = "reminders"
    verbose_name = "Reminders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from billing.reminders import health, tasks  # noqa: F401  (registers them)
