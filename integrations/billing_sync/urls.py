from django.urls import path

from integrations.billing_sync.api import UsageView

urlpatterns = [
    path("usage", UsageView.as_view(), name="usage-api"),
]
