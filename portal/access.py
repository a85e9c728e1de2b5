"""Which tenant a staff request acts for, and what the user may do there.

A staff user works in one *active* tenant at a time (the tenant switcher changes it); their
role in that tenant decides what they may change. Superusers may also choose "all tenants".
"""

from django.utils.functional import SimpleLazyObject

from portal.models import Membership, Tenant

SESSION_KEY = "active_tenant_id"
ALL_TENANTS = "all"


class TenantAccess:
    """The request user's tenants, active tenant and role, computed once per request."""

    def __init__(self, request):
        self.user = request.user
        self.tenants = (
            list(Tenant.objects.for_user(self.user)) if self.user.is_authenticated else []
        )
        self.is_superuser = bool(self.user.is_authenticated and self.user.is_superuser)
        self.roles = {}
        if self.user.is_authenticated:
            self.roles = dict(
                Membership.objects.filter(user=self.user).values_list("tenant_id", "role")
            )
        self.tenant = self._pick_active(request.session.get(SESSION_KEY))

    def _pick_active(self, wanted):
        if wanted == ALL_TENANTS and self.is_superuser:
            return None
        by_id = {t.pk: t for t in self.tenants}
        if wanted in by_id:
            return by_id[wanted]
        if self.is_superuser and len(self.tenants) != 1:
            return None
        return self.tenants[0] if self.tenants else None

    @property
    def all_tenants(self):
        """True when a superuser looks across every tenant."""
        return self.is_superuser and self.tenant is None

    def scope(self):
        """Tenant ids the request may read: the active one, or all for a superuser's 'all'."""
        if self.all_tenants:
            return [t.pk for t in self.tenants]
        return [self.tenant.pk] if self.tenant else []

    def role(self, tenant=None):
        tenant = tenant or self.tenant
        if tenant is None:
            return None
        if self.is_superuser:
            return Membership.Role.OWNER
        return self.roles.get(tenant.pk)

    def can_edit(self, tenant=None):
        if self.all_tenants:
            return True
        return self.role(tenant) in (Membership.Role.OWNER, Membership.Role.ADMIN)

    def is_owner(self, tenant=None):
        return self.role(tenant) == Membership.Role.OWNER


class ActiveTenantMiddleware:
    """Attach `request.access` (lazy: public pages never touch memberships)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.access = SimpleLazyObject(lambda: TenantAccess(request))
        return self.get_response(request)


def switch_tenant(request, value):
    """Make `value` (a tenant id or 'all') active if the user may; returns whether it changed."""
    access = request.access
    if value == ALL_TENANTS and access.is_superuser:
        request.session[SESSION_KEY] = ALL_TENANTS
        return True
    try:
        wanted = int(value)
    except (TypeError, ValueError):
        return False
    if any(t.pk == wanted for t in access.tenants):
        request.session[SESSION_KEY] = wanted
        return True
    return False


def tenant_context(request):
    """Template context for the admin header's tenant switcher."""
    if not request.path.startswith("/admin") or not request.user.is_authenticated:
        return {}
    access = request.access
    return {
        "tenant_access": access,
        "show_tenant_switcher": len(access.tenants) > 1 or access.is_superuser,
    }
