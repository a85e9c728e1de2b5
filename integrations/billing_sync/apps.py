from django.apps import AppConfig


class BillingSyncConfig(AppConfig):
    name = "integrations.billing_sync"
    label = "billing_sync"
    verbose_name = "Billing sync"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.models.signals import post_save

        from integrations.billing_sync import health, schedules  # noqa: F401  (registers)
        from integrations.billing_sync.models import BillingSyncSettings

        post_save.connect(
            lambda instance, **kwargs: schedules.arm(instance),
            sender=BillingSyncSettings,
            weak=False,
            dispatch_uid="billing_sync_arm_schedule",
        )
