from django.contrib import admin
from django.http import Http404
from django.urls import path
from django.utils.html import format_html
from django.views.decorators.http import require_GET

from billing.accounts import links, views
from billing.accounts.models import HALO_CLIENT_VARIABLE, AccountSettings, unfilled
from billing.models import Customer
from portal.admin_base import SingletonSettingsAdmin, TenantScopedAdmin


@admin.register(AccountSettings)
class AccountSettingsAdmin(SingletonSettingsAdmin, TenantScopedAdmin):
    list_display = ["__str__", "frame_ancestors"]
    readonly_fields = ["halo_button", "embedding"]
    fieldsets = [
        ("Halo custom button", {"fields": ["halo_button"]}),
        ("Inside Halo's self-service portal", {"fields": ["halo_portal_origins", "embedding"]}),
    ]

    def changelist_view(self, request, extra_context=None):
        if request.access.tenant is not None:
            AccountSettings.for_tenant(request.access.tenant)
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request):
        tenant = request.access.tenant
        exists = tenant is not None and AccountSettings.objects.filter(tenant=tenant).exists()
        return super().has_add_permission(request) and not exists

    @admin.display(description="Allowed to frame the page")
    def frame_ancestors(self, obj):
        return ", ".join(obj.frame_origins()) or "No site (framing refused)"

    @admin.display(description="URL for a custom button on Halo's client record")
    def halo_button(self, obj):
        if obj.pk is None:
            return "Shown once saved."
        return format_html(
            '<code class="once-secret">{}</code><div class="help">In Halo, add a custom button '
            "to the <strong>Client</strong> screen that opens a URL in a new tab "
            "(Configuration › Custom Objects › Custom Buttons) and paste this URL: Halo puts in "
            "the client's ID for {}. If the variable list in Halo's button editor names the "
            "client's ID differently, use that name instead. An agent who clicks it logs in "
            "to the portal if needed and sees that client's account page as the customer "
            "does; only staff of this tenant can open it.</div>",
            obj.halo_button_url(),
            HALO_CLIENT_VARIABLE,
        )

    @admin.display(description="Framing")
    def embedding(self, obj):
        return format_html(
            '<div class="help">The page sent to the browser names these addresses in its '
            "Content-Security-Policy (<code>frame-ancestors</code>): now <code>{}</code>. "
            "Halo's portal frames the customer's own account link (from an invoice or "
            "reminder email, or Sign in with Halo); pay pages and PDFs open in a new tab "
            "from inside the frame. The page needs no cookies, so it works where browsers "
            "block third-party cookies.</div>",
            obj.frame_ancestors() if obj.pk else "'none'",
        )

    # -- the account page for staff, from Halo's custom button ------------------------------
    def get_urls(self):
        view = self.admin_site.admin_view(require_GET(self.halo_client))
        return [
            path(
                "halo-client/<slug:tenant_code>/<str:client_id>/",
                view,
                name="accounts_halo_client",
            ),
            *super().get_urls(),
        ]

    def halo_client(self, request, tenant_code, client_id):
        """The account page of the customer Halo's button names, for a staff member of the
        tenant in the URL (the button's tenant, whatever tenant is active in the admin); 404
        for anyone else and for a client of another tenant."""
        tenant = next((t for t in request.access.tenants if t.slug == tenant_code), None)
        if tenant is None or not self.has_view_permission(request):
            raise Http404("No such client.")
        if unfilled(client_id):  # the variable itself: Halo did not fill it in
            return self._unsubstituted(request, tenant, client_id)
        is_id = client_id.isascii() and client_id.isdecimal()  # not other scripts' digits
        customer = (
            Customer.objects.select_related(
                "tenant__invoice_sync_settings",
                "tenant__payment_settings",
                "tenant__account_settings",
            )
            .filter(tenant=tenant, halo_id=int(client_id) if is_id else None)
            .first()
            if is_id
            else None
        )
        if customer is None:
            return self._staff_page(request, tenant, 404, client_id=client_id)
        return views.account_page(self._staff_account)(request, customer)

    def _staff_account(self, request, customer):
        token = links.make_token(customer)
        return views.show_account(request, customer, token, staff=request.user)

    def _unsubstituted(self, request, tenant, client_id):
        return self._staff_page(
            request,
            tenant,
            404,
            unsubstituted=True,
            client_id=client_id[:40],
            variable=HALO_CLIENT_VARIABLE,
        )

    def _staff_page(self, request, tenant, status, **context):
        def render(request):
            template = "accounts/staff_no_client.html"
            return views.show(request, template, tenant, status=status, staff=True, **context)

        return views.account_page(render)(request)


from billing.accounts import signin_admin  # noqa: E402, F401  (Sign in with Halo)
