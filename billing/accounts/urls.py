"""The customer's account page, under /account/<tenant code>/."""

from django.urls import path

from billing.accounts import views

app_name = "accounts"
urlpatterns = [
    path("account/<slug:tenant_code>/", views.request_link, name="request-link"),
    path("account/<slug:tenant_code>/<str:token>", views.account, name="account"),
]
