from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.contenttypes import views as contenttype_views
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from portal import job_pages
from portal.access import switch_tenant
from portal.admin_base import scope_to_request, tenant_path
from portal.health import tenant_health
from portal.sidebar import group_by_job


class PortalAdminSite(admin.AdminSite):
    site_header = "Halo Partner Portal"
    site_title = "Halo Partner Portal"
    index_title = "Partner console"
    site_url = None  # the portal has no public home page; customers arrive on pay links

    def get_urls(self):
        inherited = [u for u in super().get_urls() if getattr(u, "name", None) != "view_on_site"]
        return [
            path(
                "switch-tenant/",
                self.admin_view(require_POST(self.switch_tenant)),
                name="switch_tenant",
            ),
            path(
                "r/<int:content_type_id>/<path:object_id>/",
                self.admin_view(self.view_on_site),
                name="view_on_site",
            ),
            path("fleet/", self.admin_view(self.fleet), name="fleet"),
            *job_pages.urls(self),
            *inherited,
        ]

    def fleet(self, request):
        """The fleet view, for the vendor's operators (superusers): every tenant's jobs on
        the durable run ledger and every worker process, filterable (`portal.fleet`)."""
        from django.core.exceptions import PermissionDenied
        from django.template.response import TemplateResponse

        from portal import fleet, ledger

        if not request.user.is_superuser:
            raise PermissionDenied("The fleet view is for the portal's operators.")
        job, state, tenant = (request.GET.get(k, "") for k in ("job", "state", "tenant"))
        survey = fleet.survey(job=job if job in ledger.jobs() else None)
        shown = [
            j
            for j in survey.jobs
            if (not state or j.state == state or (state == "problems" and j.problem))
            and (not tenant or tenant.casefold() in j.tenant.casefold())
        ]
        context = {
            **self.each_context(request),
            "title": "Fleet",
            "survey": survey,
            "counts": sorted(survey.counts().items()),
            "shown": shown,
            "jobs": sorted(ledger.jobs().items()),
            "states": [fleet.OK, fleet.RUNNING, fleet.DUE, fleet.RETRYING, *fleet.PROBLEMS],
            "filters": {"job": job, "state": state, "tenant": tenant},
        }
        return TemplateResponse(request, "admin/fleet.html", context)

    def view_on_site(self, request, content_type_id, object_id):
        """Django's "View on site" shortcut, for objects of the request's tenants only: it
        redirects to public URLs (pay pages, receipts) and primary keys are sequential.
        Objects that belong to no tenant answer 404 too."""
        try:
            model = ContentType.objects.get_for_id(content_type_id).model_class()
        except ContentType.DoesNotExist:
            model = None
        if model is None or tenant_path(model) is None:
            raise Http404("No object matches the given query.")
        try:
            found = (
                scope_to_request(model._default_manager.all(), request)
                .filter(pk=unquote(object_id))
                .exists()
            )
        except (ValueError, ValidationError):
            found = False
        if not found:
            raise Http404("No object matches the given query.")
        return contenttype_views.shortcut(request, content_type_id, object_id)

    def switch_tenant(self, request):
        if not switch_tenant(request, request.POST.get("tenant")):
            messages.error(request, "You are not a member of that tenant.")
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
            target = ""
        # Object URLs of the previous tenant would 404 in the new one: go to the list.
        return HttpResponseRedirect(_changelist_of(target) or reverse("admin:index"))

    def index(self, request, extra_context=None):
        from portal.setup_checklist import checklist

        access = request.access
        tenants = access.tenants if access.all_tenants else [access.tenant] if access.tenant else []
        extra = {"tenant_health": [(t, tenant_health(t)) for t in tenants]}
        if access.tenant is not None:
            extra["setup_jobs"] = checklist(access.tenant)
        extra.update(extra_context or {})
        return super().index(request, extra)

    def get_app_list(self, request, app_label=None):
        """The sidebar and home list by job (`portal.sidebar`); an app's own index page
        (`/admin/<app>/`) still lists every model of that app."""
        if app_label is not None:
            return super().get_app_list(request, app_label)
        return group_by_job(self._build_app_dict(request), self._registry)

    def each_context(self, request):
        from portal.setup_checklist import SetupPointer

        return {**super().each_context(request), "setup_pointer": SetupPointer(request)}


def _changelist_of(url):
    """`/admin/app/model/12/change/` -> `/admin/app/model/`; other admin URLs unchanged."""
    parts = [p for p in url.split("?")[0].split("/") if p]
    if len(parts) >= 3 and parts[0] == "admin":
        return "/" + "/".join(parts[:3]) + "/"
    return url.split("?")[0] if url.startswith("/admin/") else ""


def site_names(request):
    """The portal's name on every page built on the admin's templates, also those Django's
    own views render without the admin's context (password reset): never "Django
    administration"."""
    return {"site_header": admin.site.site_header, "site_title": admin.site.site_title}
