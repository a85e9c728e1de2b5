"""Limits on guessing passwords and on password-reset mail (pentest #12, finding 5).

Logins are django-axes' job (settings `AXES_*`, from `LOGIN_FAILURE_LIMIT` and
`LOGIN_COOLOFF_MINUTES`): its authentication backend refuses a username from a client
address after too many failures, whichever login view asks. This module gives it the client
address (`PAYMENTS_PROXIES` decides whether X-Forwarded-For is believed) and the lockout page.

Password-reset mail is counted here, per address typed and per client, in the shared cache
(`PASSWORD_RESET_EMAIL_RATE`, `PASSWORD_RESET_IP_RATE`). Over a limit no mail is sent and the
page says what it always says, so the answer reveals nothing about the address either way.
"""

import hashlib
import logging

from axes.utils import reset as axes_reset
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import PasswordResetForm
from django.shortcuts import render

from portal.api import WindowThrottle
from portal.http import client_address

logger = logging.getLogger("portal.login_limits")

__all__ = ["client_address", "lockout_response"]


def lockout_response(request, original_response=None, credentials=None):
    """The page a locked-out login gets (AXES_LOCKOUT_CALLABLE), status 429."""
    minutes = round(settings.AXES_COOLOFF_TIME.total_seconds() / 60)
    context = {
        **admin.site.each_context(request),
        "title": "Too many failed logins",
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "cooloff_minutes": minutes,
    }
    return render(request, "registration/locked_out.html", context, status=429)


class ResetMailThrottle(WindowThrottle):
    """One shared fixed-window counter of password-reset requests: per address typed
    (`kind="email"`) or per client (`kind="client"`). Keys hold a hash, not the address."""

    def __init__(self, kind, ident, rate):
        self.scope = f"password_reset_{kind}"
        self.ident = hashlib.sha256(ident.encode()).hexdigest()[:32]
        self.rate = rate or None
        if self.rate:
            self.num_requests, self.duration = self.parse_rate(self.rate)

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.ident}

    def allowed(self):
        return self.allow_request(None, None)


def reset_mail_allowed(request, email):
    """Count one reset request; False when the client or the address is over its limit."""
    client = client_address(request) if request is not None else ""
    if not ResetMailThrottle("client", client, settings.PASSWORD_RESET_IP_RATE).allowed():
        logger.warning(
            "Password reset mail not sent: PASSWORD_RESET_IP_RATE (%s) reached by client %s",
            settings.PASSWORD_RESET_IP_RATE,
            client,
        )
        return False
    address = email.strip().casefold()
    if not ResetMailThrottle("email", address, settings.PASSWORD_RESET_EMAIL_RATE).allowed():
        logger.warning(
            "Password reset mail not sent: PASSWORD_RESET_EMAIL_RATE (%s) reached for the "
            "address typed by client %s",
            settings.PASSWORD_RESET_EMAIL_RATE,
            client,
        )
        return False
    return True


class ThrottledPasswordResetForm(PasswordResetForm):
    def save(self, *args, request=None, **kwargs):
        if reset_mail_allowed(request, self.cleaned_data["email"]):
            super().save(*args, request=request, **kwargs)


class PasswordResetView(auth_views.PasswordResetView):
    """Django's, with the mail capped (`ThrottledPasswordResetForm`) and in the portal's
    name (Django would name the host)."""

    form_class = ThrottledPasswordResetForm

    @property
    def extra_email_context(self):
        return {"site_name": admin.site.site_header}


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """Django's; a new password set from the mailed link also lifts a login lockout of that
    user (whoever reads the user's mail could set one anyway)."""

    def form_valid(self, form):
        response = super().form_valid(form)
        axes_reset(username=form.user.get_username())
        return response
