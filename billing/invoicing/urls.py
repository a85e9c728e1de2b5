from django.urls import path

from billing.invoicing.api import InvoicePdfView

urlpatterns = [
    path("invoices/<str:ref>/pdf", InvoicePdfView.as_view(), name="invoice-pdf"),
]
