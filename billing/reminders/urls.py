"""The customer-facing reminder URL: the opt-out page, under /reminders/<tenant code>/."""

from django.urls import path

from billing.reminders import views

app_name = "reminders"
urlpatterns = [
    path("reminders/<slug:tenant_code>/opt-out/<str:token>", views.opt_out, name="opt-out"),
]
