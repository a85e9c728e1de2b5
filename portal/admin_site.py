from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from portal.access import switch_tenant
from portal.health import tenant_health


class PortalAdminSite(admin.AdminSite):
    site_header = "Halo Partner Portal"
    site_title = "Halo Partner Portal"
    index_title = "Partner console"
    index_template = "admin/portal_index.html"
    site_url = None  # the portal has no public home page; customers arrive on pay links

    def get_urls(self):
        return [
            path(
                "switch-tenant/",
                self.admin_view(require_POST(self.switch_tenant)),
                name="switch_tenant",
            ),
            *super().get_urls(),
        ]

    def switch_tenant(self, request):
        if not switch_tenant(request, request.POST.get("tenant")):
            messages.error(request, "You are not a member of that tenant.")
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
            target = ""
        # Object URLs of the previous tenant would 404 in the new one: go to the list.
        return HttpResponseRedirect(_changelist_of(target) or reverse("admin:index"))

    def index(self, request, extra_context=None):
        access = request.access
        tenants = access.tenants if access.all_tenants else [access.tenant] if access.tenant else []
        extra = {"tenant_health": [(t, tenant_health(t)) for t in tenants]}
        extra.update(extra_context or {})
        return super().index(request, extra)


def _changelist_of(url):
    """`/admin/app/model/12/change/` -> `/admin/app/model/`; other admin URLs unchanged."""
    parts = [p for p in url.split("?")[0].split("/") if p]
    if len(parts) >= 3 and parts[0] == "admin":
        return "/" + "/".join(parts[:3]) + "/"
    return url.split("?")[0] if url.startswith("/admin/") else ""
