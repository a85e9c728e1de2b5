from django.urls import path

from integrations.billing_sync.api import OrganisationsView, ProductsView, UsageView

urlpatterns = [
    path("usage", UsageView.as_view(), name="usage-api"),
    path("organisations", OrganisationsView.as_view(), name="organisations-api"),
    path("products", ProductsView.as_view(), name="products-api"),
]
