"""One admin page per job: its settings, its state and its actions together (issue 15).

Staff looked for Sync now, Fetch new data or Add payment links in change lists' "Action"
dropdowns; a job page (like the billing tab of Huntress) shows what the job is set to do,
how it stands, what needs a look, and the buttons that act on it. Each app describes its
page (`integrations/billing_sync/job_page.py`, `integrations/invoice_sync/job_page.py`,
`billing/payments/job_page.py`); the admin site serves them under `/admin/jobs/` as
`admin:job_<name>` (and `admin:job_<name>_<action>` for the page's POST buttons).

Who may see and act is the job's settings admin's decision (a `TenantScopedAdmin`): the
page shows the active tenant only, and every button's view starts with its `require_edit`
(viewers get 403). The pages read; work goes through the same functions as the admin's
other ways in (`runner.start`, `tasks.start_fetch`, ...), so there is one way to do each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.module_loading import import_string
from django.views.decorators.http import require_GET, require_POST

#: The job pages, in the order of the admin's "Jobs" list (dotted paths of JobPage classes).
PAGES = [
    "integrations.billing_sync.job_page.BillingSyncPage",
    "integrations.invoice_sync.job_page.InvoiceSyncPage",
    "billing.payments.job_page.PaymentsPage",
]


def when(moment: datetime | None, tenant, empty: str = "–") -> str:
    """A moment as staff of `tenant` read it: '01 Dec 2026 14:05 (Europe/London)'."""
    if moment is None:
        return empty
    return f"{timezone.localtime(moment, tenant.tz):%d %b %Y %H:%M} ({tenant.time_zone})"


@dataclass(frozen=True)
class Link:
    """A labelled link (a reference list, a settings page), with an optional count."""

    label: str
    url: str
    note: str = ""


@dataclass(frozen=True)
class Button:
    """A POST button on a job page. `disabled` says why it cannot be pressed now."""

    label: str
    url: str
    disabled: str = ""
    primary: bool = False
    help: str = ""


class JobPage:
    """One job's page. Subclasses set the names and `settings_model` (whose admin decides
    who may see and edit), fill `context`, and list their POST views in `actions`
    (`{"route/": "method name"}`; each method answers a response)."""

    name: ClassVar[str] = ""  # URL name: admin:job_<name>
    route: ClassVar[str] = ""  # under /admin/jobs/
    title: ClassVar[str] = ""
    template: ClassVar[str] = ""
    settings_model: ClassVar[Any] = None
    actions: ClassVar[dict[str, str]] = {}

    def __init__(self, site):
        self.site = site

    @property
    def model_admin(self):
        return self.site._registry[self.settings_model]

    @classmethod
    def url_name(cls, action: str = "") -> str:
        return f"job_{cls.name}_{action}" if action else f"job_{cls.name}"

    def url(self, action: str = "") -> str:
        return reverse(f"{self.site.name}:{self.url_name(action)}")

    def urls(self):
        page = self.site.admin_view(require_GET(self.view))
        found = [path(f"jobs/{self.route}", page, name=self.url_name())]
        for route, method in self.actions.items():
            view = self.site.admin_view(require_POST(getattr(self, method)))
            found.append(path(f"jobs/{self.route}{route}", view, name=self.url_name(method)))
        return found

    # -- the page ---------------------------------------------------------------------
    def view(self, request):
        if not self.model_admin.has_view_permission(request):
            raise PermissionDenied
        tenant = request.access.tenant
        context = {
            **self.site.each_context(request),
            "title": self.title,
            "job": self,
            "tenant": tenant,
            "can_edit": tenant is not None and self.model_admin.has_edit_permission(request),
            "job_pages": job_links(self.site, request),
        }
        if tenant is not None:  # else a superuser looking at "All tenants": pick one first
            context.update(self.context(request, tenant))
        return TemplateResponse(request, self.template, context)

    def context(self, request, tenant) -> dict[str, Any]:
        raise NotImplementedError

    # -- helpers for the POST views -------------------------------------------------------
    def back(self, request, level, text):
        """Say how it went and return to the page."""
        messages.add_message(request, level, text)
        return HttpResponseRedirect(self.url())


def pages(site) -> list[JobPage]:
    return [import_string(dotted)(site) for dotted in PAGES]


def urls(site):
    """Every job page's URLs, for `PortalAdminSite.get_urls`."""
    return [pattern for page in pages(site) for pattern in page.urls()]


def job_links(site, request) -> list[Link]:
    """The job pages the request's user may open (the pages link to each other)."""
    return [
        Link(page.title, page.url())
        for page in pages(site)
        if page.model_admin.has_view_permission(request)
    ]


if TYPE_CHECKING:
    from django.template.response import _TemplateForResponseT

    _ModelAdmin = admin.ModelAdmin  # what ObjectActionsMixin is mixed into
else:
    _ModelAdmin = object


class ObjectActionsMixin(_ModelAdmin):
    """Offer some of a ModelAdmin's changelist actions as buttons on each object's page
    (Refund on a payment, Export to Halo on an invoice), not only in the list's dropdown.

    A button posts the action for this one object to the changelist, so the action, its
    permission (viewers are not offered it, and the admin refuses it) and its confirmation
    page are the list's own; afterwards staff come back to the object's page."""

    change_form_template: ClassVar[_TemplateForResponseT | None] = "admin/jobs/change_form.html"
    #: Names of the actions to offer, in order.
    object_actions: ClassVar[list[str]] = []
    BACK = "_back_to_object"

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.pk is not None:
            available = self.get_actions(request)
            opts = self.model._meta
            context["object_action_buttons"] = {
                "url": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
                "pk": obj.pk,
                "back": self.BACK,
                "actions": [
                    (name, available[name][2]) for name in self.object_actions if name in available
                ],
            }
        return super().render_change_form(
            request, context, add=add, change=change, form_url=form_url, obj=obj
        )

    def changelist_view(self, request, extra_context=None):
        """One of these actions posted by someone who may not edit: 403, like every other
        button (Django would quietly drop an action the user is not offered)."""
        if request.method == "POST" and request.POST.get("action") in self.object_actions:
            self.require_edit(request)
        return super().changelist_view(request, extra_context)

    def response_action(self, request, queryset):
        response = super().response_action(request, queryset)
        back = request.POST.get(self.BACK)
        done = isinstance(response, HttpResponseRedirect) and response.url == (
            request.get_full_path()
        )
        if back and done:
            obj = self.get_object_or_404(request, back)
            opts = self.model._meta
            return HttpResponseRedirect(
                reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
            )
        return response
