from django.apps import AppConfig


class BillingSyncConfig(AppConfig):
    name = "integrations.billing_sync"
    label = "billing_sync"
    verbose_name = "Billing sync"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.models.signals import post_save

        from integrations.billing_sync import health, schedules, tasks  # noqa: F401  (registers)
        from integrations.billing_sync.models import BillingSyncSettings
        from portal import ledger

        post_save.connect(
            lambda instance, **kwargs: ledger.replan(schedules.JOB, instance.tenant_id),
            sender=BillingSyncSettings,
            weak=False,
            dispatch_uid="billing_sync_plan_next_slot",
        )
