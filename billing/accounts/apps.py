from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """The customer's account page: every invoice, the statement, the saved card."""

    name = "billing.accounts"
    label = "accounts"
    verbose_name = "Customer accounts"
    default_auto_field = "django.db.models.BigAutoField"
