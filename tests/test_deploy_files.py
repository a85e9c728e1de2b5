"""deploy/: the production env file, the systemd units and the Prometheus rules hold what
the portal really reads, runs and exports; and the worker unit's stop (SIGTERM to the main
process only, KillMode=mixed) is django-q2's graceful stop."""

import configparser
import importlib.util
import os
import re
import signal

import pytest
import yaml
from cryptography.fernet import Fernet
from django.core.management import get_commands
from django.urls import reverse
from django.utils import timezone
from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry

from portal.metrics import PortalCollector
from portal.models import WorkerHeartbeat
from tests.test_deploy_settings import ROOT, manage
from tests.test_worker_processes import due_slot, shared, slow_world, wait_for, workers

DEPLOY = ROOT / "deploy"
__all__ = ["shared", "slow_world"]  # fixtures of tests/test_worker_processes.py


def variables(path):
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def unit(name):
    parser = configparser.RawConfigParser(strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(DEPLOY / name)
    return parser


def test_the_production_env_file_names_only_settings_the_portal_documents():
    documented = variables(ROOT / ".env.example")
    production = variables(DEPLOY / "portal.env.example")
    assert set(production) <= set(documented), set(production) - set(documented)
    assert {"DATABASE_URL", "REDIS_URL", "METRICS_TOKEN"} <= set(production)


def test_the_production_env_file_alone_passes_check_deploy(tmp_path):
    """Read as the units read it (PORTAL_ENV_FILE), with the secrets it leaves blank filled
    in: nothing else is needed for `check --deploy` to be clean."""
    text = (DEPLOY / "portal.env.example").read_text()
    filled = {
        "SECRET_KEY": "production-" + Fernet.generate_key().decode(),
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "METRICS_TOKEN": "metrics-" + Fernet.generate_key().decode(),
    }
    for key, value in filled.items():
        text = re.sub(rf"^{key}=$", f"{key}={value}", text, flags=re.MULTILINE)
    env_file = tmp_path / "portal.env"
    env_file.write_text(text)
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    result = manage(
        keep | {"PORTAL_ENV_FILE": str(env_file)}, "check", "--deploy", "--fail-level", "WARNING"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_the_units_run_the_portals_own_commands():
    web = unit("portal-web.service")["Service"]
    gunicorn = web["ExecStart"].split()
    assert gunicorn[0].endswith("/gunicorn")
    assert importlib.util.find_spec(gunicorn[1]) is not None  # portal.wsgi
    worker = unit("portal-worker@.service")["Service"]
    python, script, command = worker["ExecStart"].split()
    assert python.endswith("/python")
    assert (script, command) == ("manage.py", "worker") and command in get_commands()
    for service in (web, worker):
        assert service["Environment"] == "PORTAL_ENV_FILE=/etc/halo-portal/portal.env"
        assert service["KillMode"] == "mixed"  # see the graceful-stop tests below
    assert worker["Restart"] == "always"


@pytest.mark.django_db
def test_the_alert_rules_and_scrape_config_use_what_metrics_exports():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PortalCollector())
    exported = set(re.findall(r"^# TYPE (\S+) ", generate_latest(registry).decode(), re.M))
    rules = yaml.safe_load((DEPLOY / "prometheus/portal-alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in alerts} == {"PortalFleetBehind", "PortalWorkerSilent"}
    for rule in alerts:
        used = set(re.findall(r"\bportal_[a-z_]+\b", rule["expr"]))
        assert used and used <= exported, used - exported
        assert rule["for"] and rule["labels"]["severity"] and rule["annotations"]["summary"]
    scrape = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["metrics_path"] == reverse("metrics")
    assert job["authorization"]["type"] == "Bearer"


def _running(row):
    def check():
        row.refresh_from_db()
        return row.status == "running" and row.worker

    return check


@pytest.mark.postgres
def test_sigterm_to_the_workers_main_process_lets_its_run_finish(slow_world):
    """What systemd does with KillMode=mixed: the run the worker holds completes, the
    worker exits 0 and says goodbye (its heartbeat row goes)."""
    from portal import ledger

    row = due_slot(slow_world.tenant)
    with workers(1) as (worker,):
        ledger.tick()
        wait_for(_running(row), what="the worker to claim the slot")
        signalled = timezone.now()
        worker.send_signal(signal.SIGTERM)  # the main process only
        assert worker.wait(timeout=120) == 0
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("succeeded", 1)
    assert row.finished > signalled  # it finished after the stop was asked for
    assert slow_world.halo_counts() == slow_world.wanted()
    assert not WorkerHeartbeat.objects.filter(pid=worker.pid).exists()


@pytest.mark.django_db
def test_forget_dead_deletes_only_this_machines_rows_of_processes_gone():
    seen = timezone.now()
    for cluster, host, pid in (("a", "here", 101), ("b", "here", 102), ("c", "there", 101)):
        WorkerHeartbeat.objects.create(cluster=cluster, host=host, pid=pid, seen=seen)
    WorkerHeartbeat.objects.create(cluster="portal", seen=seen)  # the schedule's row

    assert WorkerHeartbeat.objects.forget_dead("here", alive=lambda pid: pid == 102) == 1
    assert set(WorkerHeartbeat.objects.values_list("cluster", flat=True)) == {"b", "c", "portal"}


@pytest.mark.postgres
def test_a_worker_restarted_after_a_kill_clears_its_dead_predecessors_row(shared):
    """What systemd's Restart=always does after a SIGKILL: the new process removes the
    killed one's heartbeat row, so the fleet reads whole again without anyone's help."""
    with workers(1) as (first,):
        wait_for(lambda: WorkerHeartbeat.objects.filter(pid=first.pid).exists(), what="a beat")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    assert WorkerHeartbeat.objects.filter(pid=first.pid).exists()  # no goodbye
    with workers(1) as (second,):
        wait_for(
            lambda: (
                WorkerHeartbeat.objects.filter(pid=second.pid).exists()
                and not WorkerHeartbeat.objects.filter(pid=first.pid).exists()
            ),
            what="the new worker to replace the dead one's row",
        )
