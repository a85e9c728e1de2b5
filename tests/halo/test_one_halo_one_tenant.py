"""One Halo belongs to one tenant: a second tenant cannot connect to a Halo (same site and
Halo tenant name) another tenant's active connection uses."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from integrations.models import HaloConnection
from tests import factories
from tests.halo.test_connection_admin import form_data


def test_the_admin_refuses_a_halo_another_tenant_uses(personas):
    factories.halo_connection(
        personas.tenant_a,
        auth_url="https://acme.halopsa.com/auth",
        resource_url="https://acme.halopsa.com/api",
        halo_tenant="acme",
    )
    add = reverse("admin:integrations_haloconnection_add")
    owner_b = personas.client(personas.owner_b)
    page = owner_b.post(
        add,
        form_data(
            auth_url="https://ACME.halopsa.com/auth",
            resource_url="https://acme.halopsa.com:443/api/",
            halo_tenant="Acme",
            new_secret="x" * 73,
        ),
    )
    assert page.status_code == 200
    assert "already connected to another partner" in page.content.decode()
    assert not HaloConnection.objects.filter(tenant=personas.tenant_b).exists()
    assert personas.tenant_a.name not in page.content.decode()  # nothing about who


def test_another_halo_tenant_on_the_same_site_or_an_inactive_one_is_fine(personas):
    taken = factories.halo_connection(
        personas.tenant_a, resource_url="https://shared.example.com/api", halo_tenant="one"
    )
    other = HaloConnection(
        tenant=personas.tenant_b,
        auth_url="https://shared.example.com/auth",
        resource_url="https://shared.example.com/api",
        halo_tenant="two",
        client_id="x",
    )
    other.full_clean(exclude=["client_secret_encrypted"])
    other.halo_tenant = "ONE"
    with pytest.raises(ValidationError, match="already connected"):
        other.full_clean(exclude=["client_secret_encrypted"])
    taken.active = False
    taken.save()
    other.full_clean(exclude=["client_secret_encrypted"])
