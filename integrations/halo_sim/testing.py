"""Run a Halo simulator inside a test process.

Typical use::

    from integrations.halo_sim.testing import run_simulator

    with run_simulator(latency_ms=20, variants={"licence_key": "bare"}) as sim:
        halo = sim.session()                       # requests.Session with a Bearer token
        clients = halo.get(f"{sim.api_url}/Client").json()["clients"]
        sim.control.add_fault(kind="drop_after", path="SoftwareLicence", method="POST")
        sim.control.move_clock(hours=2)            # tokens expire, invoices fall overdue
        sim.control.wait_for_deliveries(2, idle=True)   # on the event: no polling, no sleep
        assert sim.control.requests()["by_endpoint"]["GET /Client"] == 1

For a pytest fixture, start one simulator per module or session and call
``sim.control.reset()`` before each test (fresh demo data, start-up config,
no tokens, faults, counts or deliveries); it is much faster than a new server.

``run_simulator(seed="demo", tenant="acme", **options)``: ``seed`` is
``"demo"``, ``"empty"`` or a state mapping (as ``control.state()`` answers);
``options`` are config keys: ``latency_ms``, ``fault_rate``, ``rate_limit``
(``"300/300"``, ``(n, seconds)`` or None), ``variants`` (dict or
``"name=form,..."``), ``token_lifetime``, ``webhook_duplicates``,
``webhook_out_of_order``, ``clock_offset_seconds``, ``verbose``.

The yielded ``RunningSimulator`` has ``base_url`` (the site), ``api_url``,
``auth_url``, ``token_url``, ``tenant``, ``demo_app`` (``tenant``,
``client_id``, ``client_secret``), ``control`` (a ``SimControl``), the
in-process ``simulator``, and ``token()`` / ``session()`` helpers.
"""

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests

from .config import Config
from .seed import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_TENANT
from .server import Simulator, make_server


@dataclass(frozen=True)
class DemoApp:
    tenant: str
    client_id: str
    client_secret: str


class SimControl:
    """Thin client for the ``/_sim/`` control API; every method answers the JSON reply."""

    def __init__(self, base_url):
        self.url = f"{base_url}/_sim"
        self.http = requests.Session()

    def _call(self, method, path, payload=None, timeout=30):
        reply = self.http.request(method, f"{self.url}/{path}", json=payload, timeout=timeout)
        if reply.status_code != 200:
            raise AssertionError(
                f"{method} /_sim/{path} answered {reply.status_code}: {reply.text}"
            )
        return reply.json()

    def reset(self, seed=None):
        """Fresh start from ``seed``: "demo", "empty", a state mapping, or None (start-up seed)."""
        return self._call("POST", "reset", {} if seed is None else {"seed": seed})

    def state(self, resource=None):
        """Everything (``resource=None``) or one resource's raw records, tombstones included."""
        return self._call("GET", f"state/{resource}" if resource else "state")

    def records(self, resource, records):
        """Create or change records as a Halo user in the UI would (webhooks fire)."""
        return self._call("POST", f"records/{resource}", records)

    def generate(self, **counts):
        """Bulk records: clients, items, invoices, licences_per_client, contracts_per_client."""
        return self._call("POST", "generate", counts)

    def config(self, **changes):
        """Read the config, or change some keys and answer the new config."""
        return self._call("POST", "config", changes) if changes else self._call("GET", "config")

    def variants(self, **forms):
        """E.g. ``variants(envelope="paged", error_body="dotnet")``."""
        return self.config(variants=forms)

    def move_clock(self, seconds=0, *, minutes=0, hours=0, days=0):
        offset = self.config()["clock_offset_seconds"]
        step = seconds + 60 * minutes + 3600 * hours + 86400 * days
        return self.config(clock_offset_seconds=offset + step)

    def add_fault(self, kind, path=None, method=None, **options):
        """Queue a fault rule (``faults.py``): 500, 429, drop_before, drop_after or timeout."""
        return self._call(
            "POST", "faults", {"kind": kind, "path": path, "method": method, **options}
        )

    def faults(self):
        return self._call("GET", "faults")

    def clear_faults(self):
        return self._call("DELETE", "faults")

    def requests(self):
        """``{"total": n, "by_endpoint": {"GET /Client": n}, "by_status": {"200": n}}``."""
        return self._call("GET", "requests")

    def clear_requests(self):
        return self._call("DELETE", "requests")

    def add_application(self, name="Test app", permissions="all", agent_permissions="all", **extra):
        """Answers the new application, with its generated client_id and client_secret."""
        payload = {
            "name": name,
            "permissions": permissions,
            "agent_permissions": agent_permissions,
            **extra,
        }
        return self._call("POST", "applications", payload)

    def add_signin_app(self, redirect_uris, name="Customer sign-in", permissions="read:customers"):
        """An Authorisation Code (Native Application) application people sign in through
        (``signin.py``); answers it, with its client_id."""
        return self.add_application(
            name=name,
            permissions=permissions,
            authentication_method="authorization_code",
            redirect_uris=list(redirect_uris),
        )

    def add_user(self, emailaddress, password, client_id=None, **fields):
        """A Halo user who can sign in (``canaccessinvoices``, ``inactive``, ``name``...);
        answers the user as ``GET /api/Users/me`` would."""
        payload = {"emailaddress": emailaddress, "password": password, "client_id": client_id}
        return self._call("POST", "users", payload | fields)

    def webhook_deliveries(self):
        return self._call("GET", "webhook-deliveries")

    def wait_for_deliveries(self, count, *, idle=False, timeout=30.0):
        """The delivery attempts logged, once there are at least ``count`` (and, with
        ``idle``, the simulator has nothing left to send: every delivery of the changes
        made so far has been attempted). The simulator answers on the event; ``timeout``
        only ends a broken run, with an AssertionError listing what did arrive."""
        reply = self._call(
            "POST",
            "webhook-deliveries/wait",
            {"count": count, "idle": idle, "timeout": timeout},
            timeout=timeout + 30,
        )
        if not reply["done"]:
            waited = f"{count}{' and nothing left to send' if idle else ''}"
            raise AssertionError(
                f"expected {waited} webhook deliveries within {timeout:g} s, got "
                f"{len(reply['deliveries'])}: {reply['deliveries']}"
            )
        return reply["deliveries"]

    def wait_for_requests(self, answered, *, timeout=30.0):
        """The request counts, once ``answered`` API and token requests have been answered
        since they were last cleared (a slow answer included: its write is applied by then).
        ``timeout`` only ends a broken run, with an AssertionError."""
        reply = self._call(
            "POST", "requests/wait", {"answered": answered, "timeout": timeout}, timeout + 30
        )
        if not reply.pop("done"):
            raise AssertionError(
                f"expected {answered} answered requests within {timeout:g} s, got {reply}"
            )
        return reply

    def departures(self):
        """Requests that departed from Halo's document since they were last taken."""
        return self._call("GET", "departures")

    def take_departures(self):
        """The departures recorded so far, forgotten by the simulator."""
        return self._call("DELETE", "departures")

    def expire_tokens(self):
        return self._call("POST", "tokens/expire")


class RunningSimulator:
    def __init__(self, server):
        self.simulator = server.simulator
        self.base_url = server.base_url
        self.api_url = f"{self.base_url}/api"
        self.auth_url = f"{self.base_url}/auth"
        self.token_url = f"{self.auth_url}/token"
        self.tenant = self.simulator.tenant
        self.demo_app = DemoApp(self.tenant, DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
        self.control = SimControl(self.base_url)

    def token(self, scope="all", client_id=None, client_secret=None):
        """A fresh access token for the demo application (or the one given)."""
        reply = requests.post(
            self.token_url,
            params={"tenant": self.tenant},
            data={
                "grant_type": "client_credentials",
                "client_id": client_id or self.demo_app.client_id,
                "client_secret": client_secret or self.demo_app.client_secret,
                "scope": scope,
            },
            timeout=10,
        )
        reply.raise_for_status()
        return reply.json()["access_token"]

    def session(self, scope="all", client_id=None, client_secret=None):
        """A ``requests.Session`` whose every call carries a Bearer token fetched now."""
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {self.token(scope, client_id, client_secret)}"
        return http


#: Simulators started by `run_simulator` in this process, and departures left by stopped ones.
_running: set[Simulator] = set()
_left_over: list[dict[str, Any]] = []
_registry_lock = threading.Lock()


def take_departures():
    """Every departure from Halo's document recorded by this process's simulators since the
    last call (each a dict: kind, method, endpoint, detail, request), and forget them."""
    with _registry_lock:
        taken, _left_over[:] = list(_left_over), []
        for simulator in _running:
            with simulator.lock:
                taken += simulator.departures
                simulator.departures = []
    return taken


@contextmanager
def run_simulator(seed="demo", tenant=DEMO_TENANT, **options):
    """Serve a simulator on 127.0.0.1 (free port) from a background thread."""
    simulator = Simulator(tenant=tenant, seed=seed, config=Config().update(options))
    server = make_server(simulator, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, name="halo-sim", daemon=True)
    thread.start()
    with _registry_lock:
        _running.add(simulator)
    try:
        yield RunningSimulator(server)
    finally:
        server.shutdown()
        server.server_close()
        simulator.close()
        thread.join(timeout=5)
        with _registry_lock:
            _running.discard(simulator)
            _left_over.extend(simulator.departures)
