from django.urls import path

from integrations.invoice_sync.views import HaloWebhookView

app_name = "invoice_sync"
urlpatterns = [
    path("halo/webhook/<str:tenant_code>", HaloWebhookView.as_view(), name="halo-webhook"),
]
