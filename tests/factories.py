"""One way to make a row of each tenant-owned model, for tests that sweep every admin.

`tests/test_admin_isolation.py` fails for a registered admin model missing here, so a new
model cannot skip the isolation tests.
"""

from decimal import Decimal
from itertools import count

from portal.models import ApiToken, Membership, Organisation, Product, Tenant

_seq = count(1)
MAKERS = {}


def maker(model):
    def register(func):
        MAKERS[model] = func
        return func

    return register


def tenant(slug):
    return Tenant.objects.create(name=f"Tenant {slug}", slug=slug)


def make(model, tenant):
    return MAKERS[model](tenant)


@maker(Tenant)
def _tenant(tenant):
    return tenant


@maker(Organisation)
def organisation(tenant, **kwargs):
    n = next(_seq)
    fields = {"name": f"Org {n}", "external_ref": f"ORG-{n}"} | kwargs
    return Organisation.objects.create(tenant=tenant, **fields)


@maker(Product)
def product(tenant, **kwargs):
    n = next(_seq)
    fields = {"name": f"Product {n}", "sku": f"SKU-{n}", "unit_price": Decimal("1.50")} | kwargs
    return Product.objects.create(tenant=tenant, **fields)


@maker(Membership)
def membership(tenant):
    from django.contrib.auth import get_user_model

    n = next(_seq)
    user = get_user_model().objects.create_user(username=f"member{n}", email=f"m{n}@example.com")
    return Membership.objects.create(user=user, tenant=tenant, role=Membership.Role.ADMIN)


@maker(ApiToken)
def api_token(tenant, purpose=ApiToken.Purpose.USAGE):
    return ApiToken.issue(tenant, purpose, f"token {next(_seq)}")[0]


from integrations.models import HaloConnection  # noqa: E402  (kept beside its maker)


@maker(HaloConnection)
def halo_connection(tenant, secret="s3cret-" + "0" * 65, **kwargs):
    n = next(_seq)
    fields = {
        "name": f"Halo {n}",
        "auth_url": f"https://halo{n}.example.com/auth",
        "resource_url": f"https://halo{n}.example.com/api",
        "halo_tenant": f"halo{n}",
        "client_id": f"client-{n}",
    } | kwargs
    connection = HaloConnection(tenant=tenant, **fields)
    connection.set_secret(secret)
    connection.save()
    return connection
