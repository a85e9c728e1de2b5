"""Shared fixtures. The three personas: owner and viewer of tenant A, owner of tenant B."""

from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django_q.conf import Conf
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from integrations.halo_sim.testing import run_simulator, take_departures
from portal.api import WindowThrottle
from portal.models import Membership, Tenant
from tests import factories

PASSWORD = "correct-horse-battery-staple"

# Property tests: the same examples on every run and machine (CI is deterministic), few
# enough to keep the suite fast. Examples share one test's database and fixtures, which
# the tests allow for (they compare row counts before and after each example).
hypothesis_settings.register_profile(
    "portal",
    derandomize=True,
    database=None,
    max_examples=60,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
hypothesis_settings.load_profile("portal")


@dataclass
class Personas:
    tenant_a: Tenant
    tenant_b: Tenant
    owner_a: object
    viewer_a: object
    owner_b: object

    def client(self, user):
        client = Client()
        client.force_login(user)
        return client


def make_staff(username, tenant, role):
    user = get_user_model().objects.create_user(
        username=username, email=f"{username}@example.com", password=PASSWORD, is_staff=True
    )
    Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


@pytest.fixture
def personas(db):
    tenant_a = factories.tenant("alpha")
    tenant_b = factories.tenant("bravo")
    return Personas(
        tenant_a=tenant_a,
        tenant_b=tenant_b,
        owner_a=make_staff("owner-a", tenant_a, Membership.Role.OWNER),
        viewer_a=make_staff("viewer-a", tenant_a, Membership.Role.VIEWER),
        owner_b=make_staff("owner-b", tenant_b, Membership.Role.OWNER),
    )


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing():
    """Django's default hasher takes a third of a second per password, by design; every
    test with staff personas makes three. Tests check access, not hashing strength."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture
def crashing_encryption(settings, monkeypatch):
    """DEBUG on, and encrypting a secret crashes: the technical 500 page then shows the POST
    data and every frame's locals. Answers a browser for a user that shows 500s as pages."""
    settings.DEBUG = True

    def crash(self, data):
        raise RuntimeError("crash while encrypting")

    monkeypatch.setattr("cryptography.fernet.MultiFernet.encrypt", crash)

    def browser(user):
        client = Client(raise_request_exception=False)
        client.force_login(user)
        return client

    return browser


@pytest.fixture(autouse=True)
def _simulator_on_loopback(settings):
    """The Halo simulator listens on 127.0.0.1, which the portal refuses to call unless
    allowed (tests/halo/test_egress.py switches it off again)."""
    settings.HALO_ALLOW_PRIVATE_ADDRESSES = True


@pytest.fixture(scope="session", autouse=True)
def _plain_http():
    """Production settings (DEBUG off) redirect HTTP to HTTPS; the test client and the live
    server speak HTTP (tests/test_deploy_settings.py checks the redirect). For the session,
    before the live server builds its middleware."""
    with override_settings(SECURE_SSL_REDIRECT=False):
        yield


@pytest.fixture(autouse=True)
def _fresh_cache(request):
    """Tokens and rate budgets live in the cache: no test may see another's.

    The database cache is rolled back with the test database, except by transactional
    tests; Redis never is. Clear it for every test that touches the database.
    """
    if "django_db" in request.keywords or {"db", "transactional_db"} & set(request.fixturenames):
        # `db` honours a django_db(transaction=True) marker: this only ensures the order.
        request.getfixturevalue("db")
        from django.core.cache import cache

        cache.clear()
        WindowThrottle.forget_claims()
    yield


@pytest.fixture(scope="session")
def running_sim():
    """One Halo simulator over real HTTP for the whole session; `sim` resets it per test."""
    with run_simulator() as sim:
        yield sim


@pytest.fixture
def sim(running_sim):
    running_sim.control.reset()
    return running_sim


# -- Halo conformance: every request any simulator saw is held to Halo's document ----------

_departures: list[tuple[str, dict[str, Any]]] = []  # (test node id, departure)


@pytest.fixture(autouse=True)
def _halo_conformance(request):
    """Collect the departures from Halo's API document that this test's requests made.
    Tests of the simulator's own strictness send them on purpose and say so with
    `@pytest.mark.halo_departures`."""
    yield
    taken = take_departures()
    if taken and not request.node.get_closest_marker("halo_departures"):
        _departures.extend((request.node.nodeid, departure) for departure in taken)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _departures:
        return
    terminalreporter.section("Halo conformance: requests real Halo would not understand")
    for nodeid, d in _departures:
        terminalreporter.line(f"{nodeid}: {d['request']}: {d['kind']}: {d['detail']}", red=True)
    terminalreporter.line(
        f"{len(_departures)} departure(s) from integrations/halo/halo-openapi.json", red=True
    )


def pytest_sessionfinish(session, exitstatus):
    if _departures and session.exitstatus == 0:
        session.exitstatus = 1


# -- a real WSGI server -----------------------------------------------------------------------


@pytest.fixture
def validated_server(transactional_db):
    """The portal served over HTTP by wsgiref behind its WSGI validator (`wsgiref.validate`):
    headers that are not plain `str`, bodies of the wrong type and the like answer 500 here,
    as under runserver or a strict server, where Django's test client lets them pass.
    Answers the base URL; the server's data is the test database (committed: transactional)."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
    from wsgiref.validate import validator

    from django.core.wsgi import get_wsgi_application

    problems = []

    class Handler(WSGIRequestHandler):
        def log_message(self, format, *args):
            pass

    class Server(WSGIServer):
        def handle_error(self, request, client_address):
            import traceback

            problems.append(traceback.format_exc())

    server = make_server(
        "127.0.0.1", 0, validator(get_wsgi_application()), server_class=Server,
        handler_class=Handler,
    )  # fmt: skip

    def serve():
        try:
            server.serve_forever()
        finally:
            # The server thread's own connections: left open, PostgreSQL refuses to drop the
            # test database at the end of the session ("accessed by other users").
            from django.db import connections

            connections.close_all()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not problems, "the WSGI validator refused an answer:\n" + "\n".join(problems)


# -- queued work (portal.jobs.enqueue) ---------------------------------------------------------


@pytest.fixture
def tasks_inline(monkeypatch):
    """django-q2 runs queued tasks at once (Q_CLUSTER sync), where `portal.jobs.enqueue`
    would send them, so a test sees what the worker would do."""
    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture
def queued(monkeypatch):
    """Tasks `portal.jobs.enqueue` sends, recorded as `(dotted path, *args)`, not sent."""
    calls = []
    monkeypatch.setattr(
        "portal.jobs.async_task", lambda path, *args, **options: calls.append((path, *args))
    )
    return calls


@pytest.fixture
def requests_commit(monkeypatch):
    """Each test-client request ends as in production, where it is not inside the test's
    transaction: the on-commit callbacks it registered (tasks `enqueue` sends after commit
    on Redis) run when it returns."""
    from django.test import TestCase

    real = Client.request

    def request(self, **kwargs):
        with TestCase.captureOnCommitCallbacks(execute=True):
            return real(self, **kwargs)

    monkeypatch.setattr(Client, "request", request)
