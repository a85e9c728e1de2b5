"""Sign in with Halo in the admin: the tenant's switch, its Halo application, and the URLs to
copy into Halo."""

from django.contrib import admin
from django.utils.html import format_html

from billing.accounts.signin_models import HaloSignIn
from integrations.models import HaloConnection
from portal.admin_base import SingletonSettingsAdmin, TenantScopedAdmin


@admin.register(HaloSignIn)
class HaloSignInAdmin(SingletonSettingsAdmin, TenantScopedAdmin):
    list_display = ["__str__", "enabled", "client_id", "last_problem_at"]
    readonly_fields = ["redirect_url", "start_link", "signs_in_against", "problem"]
    fieldsets = [
        (None, {"fields": ["enabled", "client_id", "signs_in_against"]}),
        ("To copy into Halo", {"fields": ["redirect_url", "start_link"]}),
        ("Problems", {"fields": ["problem"]}),
    ]

    def changelist_view(self, request, extra_context=None):
        if request.access.tenant is not None:
            HaloSignIn.for_tenant(request.access.tenant)
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request):
        tenant = request.access.tenant
        exists = tenant is not None and HaloSignIn.objects.filter(tenant=tenant).exists()
        return super().has_add_permission(request) and not exists

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
        return format_html("{} ({})", obj.last_problem, obj.last_problem_at)
