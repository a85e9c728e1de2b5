"""Joining a tenant by invitation: the email an owner's invitation sends, and the page its
link opens (`/invitation/<token>/`).

Until the invited person accepts, nothing changes for them: no membership, no staff flag.
Whoever already has an account with the invitation's email must be logged in as that
account (on this page, or already) and press Accept; someone new chooses a password here.
A link works once and expires after `INVITATION_DAYS`; an unknown, used or expired one gets
the same page, which says to ask for a new invitation.
"""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import authenticate, get_user_model, login
from django.contrib.auth.forms import SetPasswordForm
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_http_methods

from portal.access import SESSION_KEY
from portal.models import Invitation

#: Logging in from the accept page uses the portal's own backends (axes counts failures).
BACKEND = "django.contrib.auth.backends.ModelBackend"


def invitation_url(token):
    return settings.PORTAL_BASE_URL + reverse("invitation", args=[token])


@sensitive_variables("token")
def send_invitation(invitation, token):
    """Email the invitation's link (the only place the token is ever written)."""
    context = {
        "invitation": invitation,
        "inviter": _name(invitation.invited_by),
        "role": invitation.get_role_display(),
        "url": invitation_url(token),
        "site": admin.site.site_header,
    }
    send_mail(
        subject=f"You are invited to {invitation.tenant.name} on {admin.site.site_header}",
        message=render_to_string("portal/email/invitation.txt", context),
        html_message=render_to_string("portal/email/invitation.html", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[invitation.email],
    )


def _name(user):
    if user is None:
        return "A tenant owner"
    return user.get_full_name() or user.email or user.get_username()


class LoginForm(forms.Form):
    """The password of the account the invitation's email belongs to."""

    password = forms.CharField(
        label="Your password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )


class NewAccountForm(SetPasswordForm):
    """Django's password pair with its validators, labelled for a new account."""

    def __init__(self, user, *args, **kwargs):
        super().__init__(user, *args, **kwargs)
        self.fields["new_password1"].label = "Choose a password"
        self.fields["new_password2"].label = "The same password again"


def _matching_users(invitation):
    User = get_user_model()
    return list(User.objects.filter(email__iexact=invitation.email, is_active=True)[:2])


def _is_invited(user, invitation):
    return user.is_authenticated and user.email.casefold() == invitation.email.casefold()


@never_cache
@sensitive_post_parameters("password", "new_password1", "new_password2")
@require_http_methods(["GET", "POST"])
def accept(request, token):
    invitation = Invitation.find(token)
    if invitation is None:
        return _page(request, "portal/invitation_invalid.html", status=404)
    users = _matching_users(invitation)
    context = {"invitation": invitation, "role": invitation.get_role_display()}
    context["inviter"] = _name(invitation.invited_by)
    if request.user.is_authenticated and not _is_invited(request.user, invitation):
        return _page(request, "portal/invitation_other_user.html", status=403, **context)
    if not users:
        return _new_account(request, invitation, context)
    if request.user.is_authenticated:  # the invited account itself
        if request.method == "POST":
            return _accepted(request, invitation, request.user)
        return _page(request, "portal/invitation.html", **context)
    # An existing account, not logged in: its password here, then accepted in one step.
    form = LoginForm(request.POST or None)
    if request.method == "POST" and form.is_valid() and len(users) == 1:
        user = authenticate(
            request, username=users[0].get_username(), password=form.cleaned_data["password"]
        )
        if user is not None and _is_invited(user, invitation):
            login(request, user, backend=BACKEND)
            return _accepted(request, invitation, user)
        form.add_error("password", "That is not the password of this account.")
    status = 400 if request.method == "POST" else 200
    context |= {"form": form, "ambiguous": len(users) > 1}
    return _page(request, "portal/invitation_login.html", status=status, **context)


def _new_account(request, invitation, context):
    User = get_user_model()
    user = User(username=invitation.email.casefold(), email=invitation.email)
    form = NewAccountForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                user = form.save()  # sets the password (validated) and saves the user
                if not invitation.accept(user):
                    raise IntegrityError("invitation used meanwhile")
        except IntegrityError:  # the address got an account, or the link was used, meanwhile
            return _page(request, "portal/invitation_invalid.html", status=409)
        login(request, user, backend=BACKEND)
        return _welcome(request, invitation)
    status = 400 if request.method == "POST" else 200
    context |= {"form": form}
    return _page(request, "portal/invitation_new.html", status=status, **context)


def _accepted(request, invitation, user):
    if not invitation.accept(user):
        return _page(request, "portal/invitation_invalid.html", status=404)
    return _welcome(request, invitation)


def _welcome(request, invitation):
    request.session[SESSION_KEY] = invitation.tenant_id
    messages.success(
        request,
        f"Welcome to {invitation.tenant.name}: you joined as "
        f"{invitation.get_role_display().lower()}.",
    )
    return HttpResponseRedirect(reverse("admin:index"))


def _page(request, template, status=200, **context):
    context = {
        **admin.site.each_context(request),
        "title": "Invitation",
        **context,
    }
    return render(request, template, context, status=status)
