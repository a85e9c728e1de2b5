from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from portal.admin_base import TenantScopedAdmin, TenantScopedForm
from portal.invitations import send_invitation
from portal.models import ApiToken, Invitation, Membership, Organisation, Product, Tenant


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdmin):
    list_display = ["name", "slug", "currency", "time_zone"]
    search_fields = ["name", "slug"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "time_zone", "currency", "locale"]}),
        (
            "Branding on invoices and pay pages",
            {
                "fields": [
                    "display_name",
                    "logo",
                    "accent_colour",
                    "address",
                    "support_email",
                    "support_phone",
                ]
            },
        ),
    ]

    def get_queryset(self, request):
        return Tenant.objects.filter(pk__in=[t.pk for t in request.access.tenants])

    def get_readonly_fields(self, request, obj=None):
        # The slug is in every pay link already sent; only a superuser may change it.
        return [] if request.user.is_superuser else ["slug"]

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        if obj is None:
            return any(request.access.is_owner(t) for t in request.access.tenants)
        return request.access.is_owner(obj)

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


class MembershipForm(TenantScopedForm):
    """A member's role (people join by invitation: see `InvitationAdmin`)."""

    email = forms.EmailField(disabled=True, required=False)

    class Meta:
        model = Membership
        fields = ["role"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["email"].initial = self.instance.user.email

    def clean(self):
        cleaned = super().clean()
        tenant = self.instance.tenant if self.instance.tenant_id else None
        if self.instance.pk and self.instance.role == Membership.Role.OWNER:
            if (
                cleaned.get("role") != Membership.Role.OWNER
                and tenant.memberships.filter(role=Membership.Role.OWNER).count() == 1
            ):
                raise ValidationError("A tenant needs at least one owner.")
        return cleaned


class OwnersOnly:
    """Only owners manage who has access."""

    def has_change_permission(self, request, obj=None):
        return self.has_module_permission(request) and request.access.is_owner()

    def has_add_permission(self, request):
        return self.has_change_permission(request) and request.access.tenant is not None


@admin.register(Membership)
class MembershipAdmin(OwnersOnly, TenantScopedAdmin):
    """Who has access and with which role. New members are invited (Add leads to the
    invitation form): nobody is added to a tenant without accepting."""

    form = MembershipForm
    list_display = ["user_email", "role"]
    list_filter = ["role"]
    search_fields = ["user__email", "user__username"]

    @admin.display(description="Email", ordering="user__email")
    def user_email(self, obj):
        return obj.user.email or obj.user.username

    def get_fields(self, request, obj=None):
        return ["email", "role"] if not request.access.all_tenants else ["tenant", "email", "role"]

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.role == Membership.Role.OWNER:
            if obj.tenant.memberships.filter(role=Membership.Role.OWNER).count() == 1:
                return False
        return self.has_change_permission(request, obj)

    def get_form(self, request, obj=None, **kwargs):
        kwargs["fields"] = ["role"] + (["tenant"] if request.access.all_tenants else [])
        return super().get_form(request, obj, **kwargs)

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        return HttpResponseRedirect(reverse("admin:portal_invitation_add"))


class InvitationForm(TenantScopedForm):
    class Meta:
        model = Invitation
        fields = ["email", "role"]
        help_texts = {
            "email": "They get an email with a link to accept. Nothing changes for them until "
            "they do: an existing account logs in to accept, someone new chooses a password.",
        }

    def clean(self):
        cleaned = super().clean()
        tenant = self.instance.tenant if self.instance.tenant_id else cleaned.get("tenant")
        email = (cleaned.get("email") or "").strip()
        if tenant and email:
            if Membership.objects.filter(tenant=tenant, user__email__iexact=email).exists():
                raise ValidationError(f"{email} is already a member of {tenant}.")
        return cleaned


@admin.register(Invitation)
class InvitationAdmin(OwnersOnly, TenantScopedAdmin):
    """Invitations to join the tenant, by email: the invited person accepts from the link
    (an existing account logs in first); until then nothing changes for them. Delete a
    pending one to withdraw it; *Send again* mails a new link."""

    form = InvitationForm
    list_display = ["email", "role", "state", "invited_by", "created", "expires", "accepted_at"]
    list_filter = ["role"]
    search_fields = ["email"]
    readonly_fields = ["state", "invited_by", "created", "expires", "accepted_at", "accepted_by"]
    actions = ["send_again"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["email", "role"] + (["tenant"] if request.access.all_tenants else [])
        return ["email", "role", *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        # An invitation is not edited: withdraw it (delete) and invite again instead.
        return [*self.readonly_fields, "email", "role"] if obj else []

    @admin.display(description="State")
    def state(self, obj):
        return obj.state.capitalize()

    def save_model(self, request, obj, form, change):
        if change:
            return
        tenant = obj.tenant if request.access.all_tenants else request.access.tenant
        invitation, token = Invitation.issue(tenant, obj.email, obj.role, request.user)
        obj.pk = invitation.pk
        send_invitation(invitation, token)

    def response_add(self, request, obj, post_url_continue=None):
        self.message_user(
            request,
            f"Invitation sent to {obj.email}. They join {request.access.tenant or obj.tenant} "
            "when they accept it from the email.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:portal_invitation_changelist"))

    @admin.action(description="Send again (a new link; the old one stops working)")
    def send_again(self, request, queryset):
        sent = 0
        for invitation in queryset.filter(accepted_at__isnull=True):
            token = invitation.new_token()
            invitation.save(update_fields=["digest", "expires"])
            send_invitation(invitation, token)
            sent += 1
        self.message_user(request, f"{sent} invitation(s) sent again.")


@admin.register(Organisation)
class OrganisationAdmin(TenantScopedAdmin):
    list_display = ["name", "external_ref", "active"]
    list_filter = ["active"]
    search_fields = ["name", "external_ref"]


@admin.register(Product)
class ProductAdmin(TenantScopedAdmin):
    list_display = ["name", "sku", "unit_price", "active"]
    list_filter = ["active"]
    search_fields = ["name", "sku"]


@admin.register(ApiToken)
class ApiTokenAdmin(TenantScopedAdmin):
    list_display = ["name", "purpose", "prefix", "state", "created", "last_used", "expires"]
    list_filter = ["purpose", "revoked"]
    search_fields = ["name", "prefix"]
    fields = [
        "name",
        "purpose",
        "prefix",
        "created",
        "created_by",
        "last_used",
        "expires",
        "revoked",
    ]
    readonly_fields = ["prefix", "created", "created_by", "last_used", "expires"]
    actions = ["rotate", "revoke"]

    def get_readonly_fields(self, request, obj=None):
        # A token's purpose and tenant never change; revoke or rotate it instead.
        return self.readonly_fields + (["purpose"] if obj else [])

    def get_fields(self, request, obj=None):
        return ["name", "purpose"] if obj is None else self.fields

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        tenant = obj.tenant if request.access.all_tenants else request.access.tenant
        token, plaintext = ApiToken.issue(tenant, obj.purpose, obj.name, request.user)
        obj.pk, obj._plaintext = token.pk, plaintext

    def response_add(self, request, obj, post_url_continue=None):
        return self._show_once(request, obj, obj._plaintext, "created")

    def _show_once(self, request, token, plaintext, verb):
        context = {
            **self.admin_site.each_context(request),
            "title": f"API token {verb}",
            "token": token,
            "plaintext": plaintext,
            "opts": self.opts,
            "changelist_url": reverse("admin:portal_apitoken_changelist"),
        }
        return TemplateResponse(request, "admin/portal/apitoken/issued.html", context)

    @admin.action(
        description="Rotate (new secret; the old one works 7 more days)", permissions=["change"]
    )
    def rotate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Rotate one token at a time.", messages.WARNING)
            return None
        new, plaintext = queryset.get().rotate(request.user)
        return self._show_once(request, new, plaintext, "rotated")

    @admin.action(description="Revoke now", permissions=["change"])
    def revoke(self, request, queryset):
        count = queryset.update(revoked=True)
        self.message_user(request, f"Revoked {count} token(s). Calls using them now get 401.")
