import http.server
import json
import threading

import pytest
import requests

from integrations.halo_sim.testing import run_simulator


@pytest.fixture(scope="session")
def running_simulator():
    with run_simulator() as sim:
        yield sim


@pytest.fixture
def sim(running_simulator):
    """The shared simulator, reset to the demo seed and start-up config."""
    running_simulator.control.reset()
    return running_simulator


@pytest.fixture
def api(sim):
    """A session for the demo application with every scope."""
    with sim.session() as http:
        yield http


class _Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.server.gate.wait(timeout=30)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append(
            {"authorization": self.headers.get("Authorization"), "json": json.loads(body)}
        )
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    """A webhook receiver on a free port: ``.url``, ``.received`` (list of requests) and
    ``.gate``, an Event: cleared, the receiver holds each delivery until it is set again."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []
    server.gate = threading.Event()
    server.gate.set()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.gate.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def token_for(sim):
    """``token_for(permissions, agent_permissions, scope)``: a token of a new application."""

    def make(permissions="all", agent_permissions="all", scope="all"):
        app = sim.control.add_application(
            permissions=permissions, agent_permissions=agent_permissions
        )
        reply = requests.post(
            sim.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": app["client_id"],
                "client_secret": app["client_secret"],
                "scope": scope,
            },
            timeout=5,
        )
        assert reply.status_code == 200, reply.text
        return reply.json()

    return make
