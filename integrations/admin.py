from django import forms
from django.contrib import admin
from django.http import HttpResponseNotAllowed
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from integrations import connection_test
from integrations.halo import discover_auth_url, egress, web_budget
from integrations.halo.addresses import derive_urls
from integrations.models import HaloConnection
from portal.admin_base import TenantScopedAdmin, TenantScopedForm, secret_field

#: Where and as whom the secret is sent: changing any of them needs the secret typed again.
SECRET_BOUND_FIELDS = ("auth_url", "resource_url", "halo_tenant", "client_id")


#: The URL boxes take the form's width (the change form's `.url-input` style): Halo
#: addresses with a tenant path are longer than the admin's 20em text box.
URL_INPUT = forms.TextInput(attrs={"class": "vTextField url-input"})


class HaloConnectionForm(TenantScopedForm):
    # Plain text, not URLField: a pasted `acme.halopsa.com` is completed in clean().
    auth_url = forms.CharField(
        label="Authorisation server URL",
        max_length=300,
        required=False,
        widget=URL_INPUT,
        help_text=HaloConnection._meta.get_field("auth_url").help_text,
    )
    resource_url = forms.CharField(
        label="Resource server URL",
        max_length=300,
        required=False,
        widget=URL_INPUT,
        help_text=HaloConnection._meta.get_field("resource_url").help_text,
    )
    new_secret = secret_field(
        "Replace secret",
        "Paste a new client secret to replace the stored one; leave blank to keep it. The "
        "secret is stored encrypted and never shown again. Changing the URLs, tenant name or "
        "client ID needs it again: it is only ever sent to the Halo it was entered for.",
    )

    class Meta:
        model = HaloConnection
        fields = [
            "name",
            "active",
            "auth_url",
            "resource_url",
            "halo_tenant",
            "client_id",
            "scopes",
            "billing_sync",
            "invoice_sync",
            "payments",
            "webhooks",
        ]
        # Halo's client IDs are GUIDs: 36 characters, shown whole.
        widgets = {"client_id": forms.TextInput(attrs={"class": "vTextField guid-input"})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.instance.client_secret_encrypted:
            self.fields["new_secret"].label = "Client secret"
            self.fields["new_secret"].required = True
            self.fields["new_secret"].help_text = "Stored encrypted; never shown again."

    def clean(self):
        cleaned = super().clean()
        auth, resource = cleaned.get("auth_url", ""), cleaned.get("resource_url", "")
        if not (auth or resource):
            self.add_error("auth_url", "Paste your Halo address, e.g. https://acme.halopsa.com.")
            return cleaned
        cleaned["auth_url"], cleaned["resource_url"] = derive_urls(
            auth, resource, discover=discover_auth_url
        )
        for name in ("auth_url", "resource_url"):
            if refused := egress.refusal(cleaned[name]):
                self.add_error(name, refused)
        self._require_secret_again(cleaned)
        return cleaned

    def _require_secret_again(self, cleaned):
        """A stored secret keeps going where it was entered for: a new address, tenant or
        client ID (someone else's Halo, perhaps) must come with the secret typed again.
        `self.instance` still holds the stored values here (the form copies the cleaned
        values onto it after clean())."""
        if not self.instance.client_secret_encrypted or cleaned.get("new_secret"):
            return
        changed = [
            HaloConnection._meta.get_field(name).verbose_name
            for name in SECRET_BOUND_FIELDS
            if name in cleaned and cleaned[name] != getattr(self.instance, name)
        ]
        if changed:
            what = " and ".join([", ".join(changed[:-1]), changed[-1]] if changed[1:] else changed)
            self.add_error(
                "new_secret",
                f"You changed the {what}: enter the client secret again. The stored secret "
                "is only ever sent to the Halo application it was entered for.",
            )
        elif not self.instance.secret_fits_urls:
            self.add_error(
                "new_secret",
                "The stored client secret was entered for another address: enter it again.",
            )

    @sensitive_variables("secret")
    def save(self, commit=True):
        if secret := self.cleaned_data.get("new_secret"):
            self.instance.set_secret(secret)
        return super().save(commit)


@admin.register(HaloConnection)
class HaloConnectionAdmin(TenantScopedAdmin):
    form = HaloConnectionForm
    list_display = ["name", "active", "resource_url", "last_test", "tested_at", "test_summary"]
    list_display_links = ["name"]
    readonly_fields = ["last_test", "tested_at", "test_summary"]
    actions = ["test_connection"]
    change_form_template = "admin/integrations/haloconnection/change_form.html"
    fieldsets = [
        (None, {"fields": ["name", "active"]}),
        (
            "Halo API application",
            {
                # Rendered as HTML: angle brackets are escaped (a bare "<application>"
                # was taken for a tag and vanished).
                "description": "From Halo: Configuration &gt; Integrations &gt; HaloPSA API "
                "&gt; View Applications &gt; your application (authentication method: "
                "Client ID and Secret (Services)).",
                "fields": [
                    "auth_url",
                    "resource_url",
                    "halo_tenant",
                    "client_id",
                    "new_secret",
                    "scopes",
                ],
            },
        ),
        ("Features", {"fields": ["billing_sync", "invoice_sync", "payments", "webhooks"]}),
        ("Last test", {"fields": ["last_test", "tested_at", "test_summary"]}),
    ]

    @admin.display(description="Last test", ordering="test_status")
    def last_test(self, obj):
        return {"ok": "✓ OK", "failed": "✗ Failed"}.get(obj.test_status, "Not tested yet")

    @method_decorator(sensitive_post_parameters("new_secret"))
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return super().changeform_view(request, object_id, form_url, extra_context)

    @admin.action(description="Test connection", permissions=["change"])
    def test_connection(self, request, queryset):
        budget = web_budget()  # one page: every selected connection within one budget
        return self._results(request, [connection_test.run(c, budget=budget) for c in queryset])

    def get_urls(self):
        return [
            path(
                "<path:object_id>/test/",
                self.admin_site.admin_view(self.test_view),
                name="integrations_haloconnection_test",
            ),
            *super().get_urls(),
        ]

    def test_view(self, request, object_id):
        """The change page's Test connection button (POST only: it calls Halo)."""
        connection = self.get_object_or_404(request, object_id)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        self.require_edit(request)
        return self._results(request, [connection_test.run(connection)])

    def _results(self, request, results):
        for result in results:
            result.change_url = reverse(
                "admin:integrations_haloconnection_change", args=[result.connection.pk]
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Test connection",
            "results": results,
        }
        return TemplateResponse(
            request, "admin/integrations/haloconnection/test_result.html", context
        )
