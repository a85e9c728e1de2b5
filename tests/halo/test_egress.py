"""Halo URLs typed by tenant admins never make the portal call private addresses (unless
the operator allows them): the simulator on 127.0.0.1 stands in for an internal service."""

import http.server
import socket
import threading

import pytest
from django.urls import reverse

from integrations.halo import HaloAddressRefused, HaloClient, HaloRedirected, egress
from integrations.halo.egress import is_allowed, refusal
from tests import factories
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
        list(HaloClient(connection).list_clients())
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


# -- no port scanning: an open internal port and a closed one give the same answer ----------


@pytest.fixture
def internal_port():
    """A port on 127.0.0.1 (an internal service), listening; `close()` shuts it."""

    class Port:
        def __init__(self):
            self.server = socket.create_server(("127.0.0.1", 0))
            self.number = self.server.getsockname()[1]

        def close(self):
            self.server.close()

    port = Port()
    yield port
    port.close()


def _test_connection_summary(personas, connection):
    page = personas.client(personas.owner_a).post(run_url(connection))
    assert page.status_code == 200
    [result] = page.context["results"]
    return result.summary


def _open_then_closed(personas, connection, port):
    """Test connection's message with the internal port open, then closed."""
    opened = _test_connection_summary(personas, connection)
    port.close()
    closed = _test_connection_summary(personas, connection)
    return opened, closed


def test_a_host_resolving_to_an_internal_address_is_refused_before_connecting(
    private_refused, personas, internal_port, monkeypatch
):
    """DNS rebinding: a name that was public when typed now resolves to an internal address.
    Nothing is connected to, so an open port and a closed one answer alike."""
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        return real("127.0.0.1" if host == "halo.rebound.example" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    site = f"http://halo.rebound.example:{internal_port.number}"
    connection = factories.halo_connection(
        personas.tenant_a, auth_url=f"{site}/auth", resource_url=f"{site}/api"
    )
    opened, closed = _open_then_closed(personas, connection, internal_port)
    assert opened == closed
    assert "a private or reserved address" in opened and "refused" not in opened


class _Redirector(http.server.BaseHTTPRequestHandler):
    """An attacker's public server answering every request with a redirect inward."""

    target = ""

    def _redirect(self):
        self.send_response(307)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _redirect

    def log_message(self, *args):
        pass


@pytest.fixture
def redirector(private_refused, monkeypatch):
    """A redirecting server on 127.0.0.2, which the portal is told is public."""
    real = egress.is_allowed
    monkeypatch.setattr(egress, "is_allowed", lambda a: a == "127.0.0.2" or real(a))
    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), _Redirector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_redirect_to_an_internal_port_tells_nothing_about_the_port(
    personas, internal_port, redirector
):
    _Redirector.target = f"http://127.0.0.1:{internal_port.number}/anything"
    site = f"http://127.0.0.2:{redirector.server_address[1]}"
    connection = factories.halo_connection(
        personas.tenant_a, auth_url=f"{site}/auth", resource_url=f"{site}/api"
    )
    opened, closed = _open_then_closed(personas, connection, internal_port)
    assert opened == closed
    assert "redirect" in opened and "refused" not in opened


def test_the_client_never_follows_a_redirect(personas, redirector, sim):
    """Not even to a Halo it may call: a redirected call fails, and says where it was sent."""
    _Redirector.target = f"{sim.auth_url}/token"
    site = f"http://127.0.0.2:{redirector.server_address[1]}"
    connection = factories.halo_connection(
        personas.tenant_a, auth_url=f"{site}/auth", resource_url=f"{site}/api"
    )
    with pytest.raises(HaloRedirected) as redirected:
        HaloClient(connection).get_token_info()
    assert redirected.value.permanent and redirected.value.status == 307
    assert f"{sim.auth_url}/token" in str(redirected.value)
    assert sim.control.requests()["total"] == 0
