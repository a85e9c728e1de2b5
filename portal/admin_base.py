"""The one tenant-scoping base every ModelAdmin in the portal inherits.

Querysets, foreign-key and many-to-many choices, autocomplete, saves, deletes and actions are
all limited to the request's active tenant (see `portal.access`), objects outside it answer
404, and a viewer's role removes every add/change/delete permission and action.
"""

from typing import TYPE_CHECKING, ClassVar

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.templatetags.admin_urls import admin_urlname
from django.contrib.admin.utils import (
    display_for_field,
    display_for_value,
    flatten_fieldsets,
    label_for_field,
    lookup_field,
    model_format_dict,
    quote,
    unquote,
)
from django.core.exceptions import FieldDoesNotExist, PermissionDenied, ValidationError
from django.http import Http404, HttpResponseRedirect
from django.urls import reverse
from django.utils.text import capfirst

from portal.models import Tenant

if TYPE_CHECKING:
    from django.template.response import _TemplateForResponseT


def tenant_path(model):
    """The ORM lookup from `model` to its Tenant, or None for models not owned by a tenant.

    Models with a direct `tenant` foreign key need nothing; others declare `TENANT_PATH`
    (for example `"run__tenant"`).
    """
    if model is Tenant:
        return "pk"
    declared = getattr(model, "TENANT_PATH", None)
    if declared:
        return declared
    try:
        field = model._meta.get_field("tenant")
    except FieldDoesNotExist:
        return None
    return "tenant" if field.related_model is Tenant else None


def filter_to_tenants(queryset, tenant_ids):
    path = tenant_path(queryset.model)
    if path is None:
        return queryset
    if path == "pk":
        return queryset.filter(pk__in=tenant_ids)
    return queryset.filter(**{f"{path}__in": tenant_ids})


def scope_to_request(queryset, request):
    """`queryset` limited to the tenants the request acts for (none filtered for a
    superuser's "all tenants")."""
    if request.access.all_tenants:
        return queryset
    return filter_to_tenants(queryset, request.access.scope())


def object_tenant_id(obj):
    """Follow TENANT_PATH on an instance; None when the chain is not set yet."""
    path = tenant_path(type(obj))
    if path == "pk":
        return obj.pk
    if path is None:
        return None
    current = obj
    for part in path.split("__"):
        current = getattr(current, part, None)
        if current is None:
            return None
    return current.pk


def secret_field(label, help_text, required=False):
    """A form field for a secret: write-only (never rendered back into the page) and left
    alone by browsers' password managers."""
    return forms.CharField(
        label=label,
        required=required,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=help_text,
    )


class TenantScopedForm(forms.ModelForm):
    """Validates with the tenant set, so per-tenant unique constraints give form errors,
    and refuses related objects that belong to another tenant."""

    scoped_tenant = None  # set by TenantScopedAdmin.get_form

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.scoped_tenant is not None and "tenant" not in self.fields:
            if hasattr(self.instance, "tenant_id") and not self.instance.tenant_id:
                self.instance.tenant = self.scoped_tenant

    def _get_validation_exclusions(self):
        exclusions = super()._get_validation_exclusions()
        if self.scoped_tenant is not None:
            exclusions.discard("tenant")
        return exclusions

    def clean(self):
        cleaned = super().clean()
        owner = cleaned.get("tenant") or getattr(self.instance, "tenant", None)
        owner_id = getattr(owner, "pk", None)
        if owner_id is None:
            return cleaned
        for name, value in cleaned.items():
            field = self.fields.get(name)
            if not isinstance(field, forms.ModelChoiceField) or value is None:
                continue
            values = value if isinstance(field, forms.ModelMultipleChoiceField) else [value]
            for item in values:
                if isinstance(item, Tenant):
                    continue
                item_tenant = object_tenant_id(item)
                if item_tenant is not None and item_tenant != owner_id:
                    self.add_error(name, ValidationError("Choose an object of the same tenant."))
        return cleaned


class TenantScopedAdmin(admin.ModelAdmin):
    form = TenantScopedForm
    #: False for reference lists (records copied from Halo, logs) that the admin sidebar and
    #: home leave out: still registered, reached from their job's page.
    in_sidebar = True

    # -- visibility -------------------------------------------------------------------
    def get_queryset(self, request):
        return scope_to_request(super().get_queryset(request), request)

    def get_object_or_404(self, request, pk, queryset=None):
        """The one way a custom admin view finds a tenant's object: from `queryset` (default:
        this admin's), scoped to the request's tenants; 404 for another tenant's object,
        exactly like one that does not exist (Django would redirect or answer 403)."""
        scoped = self.get_queryset(request) if queryset is None else queryset
        scoped = scope_to_request(scoped, request)
        try:
            found = scoped.filter(pk=unquote(str(pk))).first()
        except (ValueError, ValidationError):
            found = None
        if found is None:
            raise Http404(f"No {scoped.model._meta.verbose_name} matches the given query.")
        return found

    def require_edit(self, request):
        """The active tenant, when the user may change things in it; else 403 (viewers, and
        "All tenants", where no one tenant is being edited). The one check custom views
        that change something make first."""
        tenant = request.access.tenant
        if tenant is None or not self.has_edit_permission(request):
            raise PermissionDenied("Choose a tenant you can edit first.")
        return tenant

    def change_view(self, request, object_id, form_url="", extra_context=None):
        self.get_object_or_404(request, object_id)
        return super().change_view(request, object_id, form_url, extra_context)

    def delete_view(self, request, object_id, extra_context=None):
        self.get_object_or_404(request, object_id)
        return super().delete_view(request, object_id, extra_context)

    def history_view(self, request, object_id, extra_context=None):
        self.get_object_or_404(request, object_id)
        return super().history_view(request, object_id, extra_context)

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_staff and bool(request.access.tenants)

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request)

    def has_edit_permission(self, request):
        """Owners and admins of the active tenant may change its data. Also the permission
        of actions that change something on read-only lists (`permissions=["edit"]`),
        whose change permission is off."""
        return self.has_module_permission(request) and request.access.can_edit()

    def has_add_permission(self, request):
        return self.has_edit_permission(request)

    def has_change_permission(self, request, obj=None):
        return self.has_edit_permission(request)

    def has_delete_permission(self, request, obj=None):
        return self.has_change_permission(request, obj)

    # -- forms ------------------------------------------------------------------------
    def get_exclude(self, request, obj=None):
        exclude = list(super().get_exclude(request, obj) or [])
        if not request.access.all_tenants and tenant_path(self.model) == "tenant":
            exclude.append("tenant")
        return exclude

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        if request.access.all_tenants:
            return form
        return type(form.__name__, (form,), {"scoped_tenant": request.access.tenant})

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        return self._scope_choices(field, request)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        field = super().formfield_for_manytomany(db_field, request, **kwargs)
        return self._scope_choices(field, request)

    def _scope_choices(self, field, request):
        if field is None or not hasattr(field, "queryset"):
            return field
        if field.queryset.model is Tenant:
            editable = [t.pk for t in request.access.tenants if request.access.can_edit(t)]
            field.queryset = field.queryset.filter(pk__in=editable)
        elif not request.access.all_tenants:
            field.queryset = filter_to_tenants(field.queryset, request.access.scope())
        return field

    def save_model(self, request, obj, form, change):
        if not request.access.all_tenants and tenant_path(type(obj)) == "tenant":
            if not change:
                obj.tenant = request.access.tenant
            elif obj.tenant_id not in request.access.scope():
                raise Http404
        super().save_model(request, obj, form, change)

    def get_list_display(self, request):
        display = list(super().get_list_display(request))
        if request.access.all_tenants and tenant_path(self.model) == "tenant":
            display.append("tenant")
        return display

    def get_list_filter(self, request):
        filters = list(super().get_list_filter(request))
        if request.access.all_tenants and tenant_path(self.model) == "tenant":
            filters.append("tenant")
        return filters


class ReadOnlyTenantAdmin(TenantScopedAdmin):
    """For records the portal copies from elsewhere (Halo) or writes itself (results)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class SingletonSettingsAdmin:
    """For a tenant's one row of a feature's settings (`OnePerTenant`): mixed in before
    `TenantScopedAdmin`. A one-row list with a Delete button said nothing to a partner, so
    the list opens the active tenant's form directly (made with defaults on first visit),
    nothing is added or deleted, the list's actions are buttons on the form, and the list's
    columns that are not form fields are shown above it. Superusers looking at "All
    tenants" still get the list of every tenant's row."""

    change_form_template: ClassVar["_TemplateForResponseT | None"] = (
        "admin/singleton_settings_form.html"
    )

    def changelist_view(self, request, extra_context=None):
        tenant = request.access.tenant
        if request.method == "GET" and tenant is not None:  # a POST is an action: run it
            return HttpResponseRedirect(self._form_url(self.model.for_tenant(tenant)))
        return super().changelist_view(request, extra_context)

    def add_view(self, request, form_url="", extra_context=None):
        tenant = request.access.tenant
        row = self.model.objects.filter(tenant=tenant).first() if tenant else None
        if row is not None and self.has_edit_permission(request):
            return HttpResponseRedirect(self._form_url(row))
        return super().add_view(request, form_url, extra_context)

    def has_add_permission(self, request):
        tenant = request.access.tenant
        if tenant is not None and self.model.objects.filter(tenant=tenant).exists():
            return False
        return super().has_add_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False  # the row would only be made again, with defaults, on the next read

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object_or_404(request, object_id)
        extra = {
            "title": capfirst(self.opts.verbose_name),
            "subtitle": None if not request.access.all_tenants else str(obj.tenant),
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "singleton_summary": self._summary(request, obj),
            "singleton_actions": self._form_actions(request),
            "singleton_action_url": reverse(admin_urlname(self.opts, "changelist")),
            "singleton_object": obj,
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, extra)

    def response_change(self, request, obj):
        """Saved: back to the same form (its list would only lead here again)."""
        if "_save" not in request.POST or IS_POPUP_VAR in request.POST:
            return super().response_change(request, obj)
        self.message_user(request, f"{capfirst(self.opts.verbose_name)} saved.", messages.SUCCESS)
        return HttpResponseRedirect(self._form_url(obj))

    def _form_url(self, row):
        return reverse(admin_urlname(self.opts, "change"), args=[quote(row.pk)])

    def _form_actions(self, request):
        """The list's actions (those this user may run), as (name, label) for buttons."""
        actions = self.get_actions(request)
        return [
            (name, description % model_format_dict(self.opts))
            for name, (_func, _name, description) in actions.items()
            if name != "delete_selected"
        ]

    def _summary(self, request, obj):
        """The list's columns that the form does not show, as (label, value)."""
        shown = set(flatten_fieldsets(self.get_fieldsets(request, obj)))
        rows = []
        for name in self.get_list_display(request):
            if name in ("__str__", "tenant") or name in shown:
                continue
            label = label_for_field(name, self.model, model_admin=self)
            field, _attr, value = lookup_field(name, obj, self)
            empty = self.get_empty_value_display()
            if field is None:
                boolean = getattr(getattr(self, name, None), "boolean", False)
                text = display_for_value(value, empty, boolean)
            else:
                text = display_for_field(value, field, empty)
            rows.append((capfirst(label), text))
        return rows
