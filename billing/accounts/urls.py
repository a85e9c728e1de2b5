"""The customer's account page, under /account/<tenant code>/."""

from django.urls import path

from billing.accounts import signin_views, views

app_name = "accounts"
urlpatterns = [
    path("account/<slug:tenant_code>/", views.request_link, name="request-link"),
    path("account/<slug:tenant_code>/<str:token>", views.account, name="account"),
    # Sign in with Halo (signin_views.py).
    path("account/<slug:tenant_code>/halo/start", signin_views.start, name="halo_signin"),
    path("account/<slug:tenant_code>/halo/callback", signin_views.callback, name="halo_callback"),
]
