import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from portal.models import Membership, Organisation, Product, Tenant, WorkerHeartbeat

ROOT = Path(__file__).resolve().parent.parent


def run_manage(*args, **env):
    full_env = {
        **os.environ,
        "SECRET_KEY": "x" * 50,
        "FIELD_ENCRYPTION_KEY": "",
        "ALLOWED_HOSTS": "portal.example.com",
        "DEBUG": "false",
        **env,
    }
    full_env["FIELD_ENCRYPTION_KEY"] = env.get(
        "FIELD_ENCRYPTION_KEY", "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg="
    )
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("missing", "check_id"),
    [
        ("SECRET_KEY", "portal.E001"),
        ("FIELD_ENCRYPTION_KEY", "portal.E002"),
        ("ALLOWED_HOSTS", "portal.E003"),
    ],
)
def test_missing_production_setting_fails_check_deploy(missing, check_id):
    result = run_manage("check", "--deploy", **{missing: ""})
    assert result.returncode != 0
    assert f"({check_id}) {missing} is not set." in result.stderr


def test_missing_production_setting_fails_at_start_without_debug():
    result = run_manage("migrate", "--check", SECRET_KEY="")
    assert result.returncode != 0
    assert "(portal.E001) SECRET_KEY is not set." in result.stderr


def test_invalid_encryption_key_is_reported():
    result = run_manage("check", FIELD_ENCRYPTION_KEY="not-a-key")
    assert result.returncode != 0
    assert "portal.E004" in result.stderr


def test_complete_production_settings_pass_the_portal_checks():
    result = run_manage("check", "--deploy", "--fail-level", "ERROR")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "portal.E00" not in result.stderr, result.stderr


def _snapshot():
    return {
        model.__name__: sorted(map(repr, model.objects.values()))
        for model in (Tenant, Membership, Organisation, Product)
    } | {
        "users": sorted(
            map(
                repr,
                __import__("django.contrib.auth")
                .contrib.auth.get_user_model()
                .objects.values("username", "password", "is_staff"),
            )
        )
    }


def test_demo_twice_leaves_the_same_data(db, capsys):
    call_command("demo")
    first = _snapshot()
    out = capsys.readouterr().out
    assert "demo@acme.example / acme-demo-2026" in out
    call_command("demo")
    assert _snapshot() == first
    tenant = Tenant.objects.get(slug="acme")
    assert tenant.organisations.count() == 8 and tenant.products.count() == 5
    assert tenant.logo


@pytest.mark.django_db
def test_healthz_ok_with_fresh_heartbeat(client, monkeypatch):
    beaten = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: beaten)
    WorkerHeartbeat.beat("portal")
    monkeypatch.setattr(timezone, "now", lambda: beaten + timezone.timedelta(seconds=42))
    response = client.get(reverse("healthz"))
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["checks"]["worker"]["heartbeat_age_seconds"] == 42


@pytest.mark.django_db
def test_healthz_reports_missing_or_stale_worker(client):
    body = client.get(reverse("healthz")).json()
    assert body["checks"]["worker"]["ok"] is False
    WorkerHeartbeat.objects.create(
        cluster="portal", seen=timezone.now() - timezone.timedelta(hours=1)
    )
    response = client.get(reverse("healthz"))
    assert response.status_code == 503
    assert "heartbeat too old" in response.json()["checks"]["worker"]["detail"]


@pytest.mark.django_db
def test_healthz_reports_unreachable_broker(client, monkeypatch):
    from django_q.brokers import redis_broker
    from django_q.conf import Conf

    WorkerHeartbeat.beat("portal")
    monkeypatch.setattr(Conf, "REDIS", "redis://127.0.0.1:1/0")
    monkeypatch.setattr("portal.health_checks.get_broker", lambda: redis_broker.Redis("portal"))
    response = client.get(reverse("healthz"))
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["broker"] == {"ok": False, "detail": "unreachable: ConnectionError"}
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_heartbeat_schedule_exists_once():
    from django_q.models import Schedule

    from portal.schedules import ensure_schedules

    ensure_schedules()
    ensure_schedules()
    assert (
        Schedule.objects.filter(name="portal.heartbeat", func="portal.tasks.heartbeat").count() == 1
    )


@pytest.mark.django_db
def test_per_tenant_rows_are_made_once_and_read_fresh_unless_cached(
    personas, django_assert_num_queries
):
    from billing.invoicing.models import InvoicingSettings
    from integrations.invoice_sync.models import InvoiceSyncSettings

    tenant = personas.tenant_a
    fresh = InvoiceSyncSettings.for_tenant(tenant)
    assert InvoiceSyncSettings.for_tenant(tenant).pk == fresh.pk
    InvoiceSyncSettings.objects.filter(pk=fresh.pk).update(halo_role="secondary")
    assert InvoiceSyncSettings.for_tenant(tenant).halo_role == "secondary"  # a sync run's read

    cached = InvoicingSettings.for_tenant(tenant)
    with django_assert_num_queries(0):
        assert InvoicingSettings.for_tenant(tenant) is cached  # a PDF request's reads
    assert InvoicingSettings.objects.filter(tenant=tenant).count() == 1
    assert InvoicingSettings.for_tenant(personas.tenant_b).tenant_id == personas.tenant_b.pk


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lines(stream):
    """The lines a process writes, through a queue (None at the end): read in a thread, so
    a test waits for a line with a timeout and the process never blocks on a full pipe."""
    lines = queue.Queue()

    def read():
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _wait_for_lines(lines, *wanted, timeout=60):
    """Read `lines` until every text in `wanted` has appeared in one; fails the test, with
    what was seen, when the output ends first or `timeout` passes with none new."""
    missing, seen = list(wanted), []
    while missing:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        if line is None:
            pytest.fail(f"never printed {missing}; printed:\n" + "".join(seen))
        seen.append(line)
        missing = [text for text in missing if text not in line]


def test_devstack_stops_everything_it_started_on_sigterm(tmp_path):
    """The quick start's one command runs three processes: a supervisor's stop (or `kill`)
    must stop them all, as Ctrl-C does, not leave a server holding the port."""
    database = f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    env = {"DEBUG": "true", "PORTAL_DATA_DIR": str(tmp_path), "DATABASE_URL": database}
    assert run_manage("migrate", "--noinput", **env).returncode == 0
    web, halo = _free_port(), _free_port()
    full_env = {**os.environ, "SECRET_KEY": "x" * 50, "FIELD_ENCRYPTION_KEY": "", **env}
    full_env["PYTHONUNBUFFERED"] = "1"  # each line as it is written, children's too
    command = ["manage.py", "devstack", "--addr", f"127.0.0.1:{web}", "--halo-port", str(halo)]
    stack = subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the clean-up reaches grandchildren
    )
    children = []
    try:
        # Both servers say so once they listen (runserver after binding its port).
        _wait_for_lines(
            _lines(stack.stdout),
            f"Starting development server at http://127.0.0.1:{web}/",
            f"Halo simulator for tenant 'acme' at http://127.0.0.1:{halo}",
        )
        children = Path(f"/proc/{stack.pid}/task/{stack.pid}/children").read_text().split()
        assert len(children) == 3
        socket.create_connection(("127.0.0.1", web), timeout=5).close()

        stack.send_signal(signal.SIGTERM)

        assert stack.wait(timeout=30) == 0
        assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in children)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", web), timeout=0.5)
    finally:  # nothing left behind, whatever failed
        with contextlib.suppress(OSError):
            os.killpg(stack.pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)
        stack.wait(timeout=30)


def _zombie(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_migrate_alone_gives_a_working_cache(tmp_path):
    """The documented production steps are migrate, then start: nothing else run by hand.
    The default cache is a database table (Halo tokens, rate budgets), made by migrate."""
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        "PORTAL_DATA_DIR": str(tmp_path),
        "REDIS_URL": "",
    }
    migrated = run_manage("migrate", "--noinput", **env)
    assert migrated.returncode == 0, migrated.stderr
    probe = (
        "from django.core.cache import cache; cache.set('probe', 'kept'); print(cache.get('probe'))"
    )
    used = run_manage("shell", "-c", probe, **env)
    assert used.returncode == 0, used.stderr
    assert used.stdout.strip().splitlines()[-1] == "kept"


def test_the_documented_production_steps_serve_the_console(tmp_path):
    """README's Production: migrate, then gunicorn, nothing else run by hand. Static files
    (the admin's styles) are served by the app, and the login page renders."""
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'portal.sqlite3'}",
        "PORTAL_DATA_DIR": str(tmp_path),
        "REDIS_URL": "",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    }
    assert run_manage("migrate", "--noinput", **env).returncode == 0
    port = _free_port()
    full_env = {
        **os.environ,
        "SECRET_KEY": "x" * 50,
        "DEBUG": "false",
        "FIELD_ENCRYPTION_KEY": "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg=",
        **env,
    }
    gunicorn = Path(sys.executable).with_name("gunicorn")
    server = subprocess.Popen(
        [str(gunicorn), "portal.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        https = {"X-Forwarded-Proto": "https"}
        _wait_for_lines(_lines(server.stderr), "Booting worker")  # its worker is up
        health = requests.get(f"{base}/healthz", timeout=30)
        assert health.status_code in (200, 503)  # 503 only for the worker not yet running
        css = requests.get(f"{base}/static/admin/css/base.css", headers=https, timeout=10)
        assert css.status_code == 200 and "text/css" in css.headers["Content-Type"]
        login = requests.get(f"{base}/admin/login/", headers=https, timeout=10)
        assert login.status_code == 200 and "/static/admin/css/base.css" in login.text
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_running_portal_does_not_import_the_simulator():
    """Only the simulator's own command, the demo command and tests import it."""
    probe = (
        "import sys; from portal.wsgi import application; from django.urls import get_resolver; "
        "get_resolver().url_patterns; "
        "print(sorted(m for m in sys.modules if m.startswith('integrations.halo_sim')))"
    )
    env = {**os.environ, "DEBUG": "true", "SECRET_KEY": "x" * 50, "FIELD_ENCRYPTION_KEY": ""}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_from_another_site_reads_what_browsers_say(rf, settings):
    from portal.http import from_another_site

    settings.PORTAL_BASE_URL = "https://portal.example.com"
    settings.ALLOWED_HOSTS = ["internal", "portal.example.com"]
    own = {"HTTP_HOST": "internal:8000"}
    assert not from_another_site(rf.post("/", **own))  # no browser headers: not a browser
    assert not from_another_site(rf.post("/", HTTP_ORIGIN="http://internal:8000", **own))
    assert not from_another_site(rf.post("/", HTTP_ORIGIN="https://portal.example.com", **own))
    assert from_another_site(rf.post("/", HTTP_ORIGIN="https://evil.example", **own))
    assert from_another_site(rf.post("/", HTTP_SEC_FETCH_SITE="cross-site", **own))
    assert not from_another_site(rf.post("/", HTTP_SEC_FETCH_SITE="same-origin", **own))
