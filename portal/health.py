"""What the admin home shows for each tenant, contributed by every feature.

A feature registers a function `(tenant) -> list[HealthRow]`; the admin home renders the
rows of every registered function, so later features add rows without editing the page.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.urls import reverse

if TYPE_CHECKING:
    from portal.models import Tenant

_providers: "list[Callable[[Tenant], Iterable[HealthRow]]]" = []


@dataclass(frozen=True)
class HealthRow:
    label: str
    status: str  # "ok", "warn", "error" or "idle" (nothing to report yet)
    text: str
    url: str = ""


def provider(func):
    _providers.append(func)
    return func


def tenant_health(tenant):
    rows = []
    for func in _providers:
        rows.extend(func(tenant))
    return rows


@provider
def catalogue(tenant):
    orgs = tenant.organisations.filter(active=True).count()
    products = tenant.products.filter(active=True).count()
    return [
        HealthRow(
            "Organisations",
            "ok" if orgs else "idle",
            f"{orgs} active" if orgs else "None yet: add your customers",
            reverse("admin:portal_organisation_changelist"),
        ),
        HealthRow(
            "Products",
            "ok" if products else "idle",
            f"{products} active" if products else "None yet: add what you sell",
            reverse("admin:portal_product_changelist"),
        ),
    ]
