"""Sign in with Halo in the admin: the tenant's switch, its Halo application, and the URLs to
copy into Halo."""

from django import forms
from django.contrib import admin
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.timezone import localtime

from billing.accounts.signin_models import HaloSignIn
from integrations.models import HaloConnection
from portal.admin_base import SingletonSettingsAdmin, TenantScopedAdmin


@admin.register(HaloSignIn)
class HaloSignInAdmin(SingletonSettingsAdmin, TenantScopedAdmin):
    list_display = ["__str__", "enabled", "client_id"]
    readonly_fields = ["redirect_url", "start_link", "signs_in_against", "problem"]
    fieldsets = [
        (None, {"fields": ["enabled", "client_id", "signs_in_against"]}),
        ("To copy into Halo", {"fields": ["redirect_url", "start_link"]}),
        ("Problems", {"fields": ["problem"]}),
    ]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "client_id":  # a GUID: show it whole
            kwargs["widget"] = forms.TextInput(
                attrs={"class": "vTextField", "style": "width: 40ch; max-width: 100%"}
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="Login redirect URL")
    def redirect_url(self, obj):
        if obj.pk is None:
            return "Shown once saved."
        return format_html(
            '<code>{}</code><div class="help">Add it, exactly, as a login redirect URL of the '
            "Halo application above.</div>",
            obj.redirect_uri(),
        )

    @admin.display(description="“Sign in with Halo” link")
    def start_link(self, obj):
        if obj.pk is None:
            return "Shown once saved."
        return format_html(
            '<code>{}</code><div class="help">The account page\'s sign-in form links here; '
            "you can also put it on a button in Halo's self-service portal.</div>",
            obj.start_url(),
        )

    @admin.display(description="Signs in against")
    def signs_in_against(self, obj):
        connection = HaloConnection.objects.active(obj.tenant_id) if obj.tenant_id else None
        if connection is None:
            return "No active Halo connection: customers cannot sign in with Halo."
        return format_html(
            "{} (<code>{}</code>), the active Halo connection; the customer's Halo client is "
            "matched to the portal's customer by its Halo client ID.",
            connection.name,
            connection.auth_url,
        )

    @admin.display(description="Last problem on the Halo side")
    def problem(self, obj):
        if not obj.last_problem:
            return "None."
        if obj.last_problem_at is None:
            return obj.last_problem
        when = date_format(localtime(obj.last_problem_at), "DATETIME_FORMAT")
        return format_html('{} <span class="help">({})</span>', obj.last_problem, when)
