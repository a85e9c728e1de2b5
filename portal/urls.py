from csp.decorators import csp_update
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

from portal import invitations, login_limits, metrics, views

# Redoc (served from static files) searches in a worker started from a blob: URL and draws
# its images from data: URLs and its maker's logo.
api_docs = csp_update(
    {"worker-src": ["'self'", "blob:"], "img-src": ["data:", "https://cdn.redoc.ly"]}
)(SpectacularRedocView.as_view(url_name="api-schema"))

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", api_docs, name="api-docs"),
    path("api/v1/", include("integrations.billing_sync.urls")),
    path("api/v1/", include("integrations.invoice_sync.urls")),
    path("api/v1/", include("billing.invoicing.urls")),
    # Password-reset mail is capped (portal.login_limits); logins go through axes' backend.
    path(
        "admin/password_reset/",
        login_limits.PasswordResetView.as_view(),
        name="admin_password_reset",
    ),
    path("admin/", admin.site.urls),
    # The admin's login is the one login page (this one had no template of its own).
    path(
        "accounts/login/",
        RedirectView.as_view(pattern_name="admin:login", query_string=True),
        name="login",
    ),
    path(
        "accounts/password_reset/",
        login_limits.PasswordResetView.as_view(),
        name="password_reset",
    ),
    path(
        "accounts/reset/<uidb64>/<token>/",
        login_limits.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("accounts/", include("django.contrib.auth.urls")),
    # The link an owner's invitation emails: join a tenant (portal.invitations).
    path("invitation/<str:token>/", invitations.accept, name="invitation"),
    path("", include("billing.accounts.urls")),
    path("", include("billing.reminders.urls")),
    path("", include("billing.payments.urls")),
]
