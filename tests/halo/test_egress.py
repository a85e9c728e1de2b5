"""Halo URLs typed by tenant admins never make the portal call private addresses (unless
the operator allows them): the simulator on 127.0.0.1 stands in for an internal service."""

import pytest
from django.urls import reverse

from integrations.halo import HaloAddressRefused
from integrations.halo.egress import is_allowed, refusal
from tests.halo.conftest import make_connection
from tests.halo.test_connection_admin import form_data, run_url


@pytest.fixture
def private_refused(settings):
    settings.HALO_ALLOW_PRIVATE_ADDRESSES = False


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.10",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",  # noqa: S104 (refused, not bound)
        "::1",
        "fe80::1%eth0",
        "fd00::1",
        "::ffff:127.0.0.1",
    ],
)
def test_private_and_reserved_addresses_are_refused(private_refused, address):
    assert not is_allowed(address)


def test_public_addresses_are_allowed(private_refused):
    assert is_allowed("93.184.216.34") and is_allowed("2606:4700::1111")


def test_the_client_refuses_before_sending_anything(private_refused, sim, db):
    connection = make_connection(sim)
    with pytest.raises(HaloAddressRefused) as refused:
        list(connection.client().list_clients())
    assert refused.value.permanent
    assert "127.0.0.1" in str(refused.value) and "HALO_ALLOW_PRIVATE_ADDRESSES" in str(
        refused.value
    )
    assert sim.control.requests()["total"] == 0  # the simulator was never asked


def test_forms_refuse_private_addresses_and_save_nothing(private_refused, personas, sim):
    admin = personas.client(personas.owner_a)
    secret = sim.demo_app.client_secret
    data = form_data(auth_url=sim.auth_url, resource_url=sim.api_url, new_secret=secret)
    response = admin.post(reverse("admin:integrations_haloconnection_add"), data)
    assert response.status_code == 200
    assert "a private or reserved address" in response.content.decode()
    assert not personas.tenant_a.halo_connections.exists()
    assert refusal("https://localhost/api")
    assert refusal("not a url") == ""


def test_test_connection_says_why(private_refused, personas, sim):
    connection = make_connection(sim, personas.tenant_a)
    page = personas.client(personas.owner_a).post(run_url(connection), follow=True)
    assert "a private or reserved address" in page.content.decode()
    assert sim.control.requests()["total"] == 0
