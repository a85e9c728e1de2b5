"""The operators' view of the fleet: `portal.fleet`, `fleet_status`, the admin's fleet page,
`/metrics`, the worker's wait for its broker and its heartbeat."""

from datetime import timedelta

import pytest
import requests
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from portal import fleet, ledger
from portal.management.commands import worker
from portal.models import ScheduledRun, WorkerHeartbeat
from tests import factories


def row(tenant, job="billing_sync", *, ago=timedelta(minutes=1), **fields):
    slot = timezone.now() - ago
    values = {"slot": slot, "not_before": slot, "deadline": slot + timedelta(hours=12)} | fields
    return ScheduledRun.objects.create(tenant=tenant, job=job, **values)


@pytest.fixture
def fleet_of_five(db, settings):
    now = timezone.now()
    states = {}
    for slug, fields in {
        "fine": {"status": "succeeded", "summary": "40 create", "finished": now},
        "retry": {"attempts": 1, "error": "Halo answered 503. Will retry at 10:05."},
        "dead": {
            "status": "running",
            "worker": "web-2:4242",
            "started": now - timedelta(minutes=9),
            "heartbeat": now - timedelta(seconds=settings.RUN_STALE_SECONDS + 5),
        },
        "late": {"ago": fleet.MISSED_AFTER + timedelta(minutes=1)},
        "broken": {"status": "error", "error": "Halo refused the credentials.", "finished": now},
    }.items():
        tenant = factories.tenant(slug)
        ago = fields.pop("ago", timedelta(minutes=1))
        states[slug] = row(tenant, ago=ago, **fields)
        row(tenant, ago=-timedelta(hours=23))  # tomorrow's slot, planned
    return states


def test_the_survey_says_what_each_tenant_job_needs(fleet_of_five):
    found = {job.tenant: job for job in fleet.survey().jobs}
    assert {slug: job.state for slug, job in found.items()} == {
        "fine": "ok",
        "retry": "retrying",
        "dead": "stale",
        "late": "missed",
        "broken": "failed",
    }
    assert found["dead"].detail.startswith("Running on web-2:4242, silent since")
    assert all(job.next is not None for job in found.values())


def test_fleet_status_prints_the_fleet_and_fails_on_problems(fleet_of_five, capsys):
    with pytest.raises(CommandError) as failed:
        call_command("fleet_status")
    assert failed.value.returncode == 1 and "3 job(s) need a look" in str(failed.value)
    out = capsys.readouterr().out
    assert "broken" in out and "Halo refused the credentials." in out
    with pytest.raises(CommandError):
        call_command("fleet_status", "--problems")
    listed = capsys.readouterr().out.splitlines()[1:-1]
    assert len(listed) == 3 and not any(line.startswith("fine") for line in listed)


@pytest.mark.django_db
def test_fleet_status_is_quiet_when_whole_and_refuses_unknown_jobs(capsys):
    row(factories.tenant("fine"), status="succeeded", finished=timezone.now())
    call_command("fleet_status")
    assert "1 tenant jobs: 1 ok." in capsys.readouterr().out
    with pytest.raises(CommandError) as failed:
        call_command("fleet_status", "--job", "nonsense")
    assert failed.value.returncode == 2


@pytest.mark.django_db
def test_a_silent_worker_process_fails_the_fleet(capsys, settings):
    WorkerHeartbeat.beat("portal@web-1:10", host="web-1", pid=10)
    WorkerHeartbeat.beat("portal@web-2:20", host="web-2", pid=20)
    WorkerHeartbeat.objects.filter(pid=20).update(
        seen=timezone.now() - timedelta(seconds=settings.HEALTHZ_MAX_HEARTBEAT_AGE + 1)
    )
    with pytest.raises(CommandError, match="1 worker process"):
        call_command("fleet_status")
    assert "worker web-2:20" in capsys.readouterr().out
    # Machine web-2 was replaced for good: the operator forgets it, and the fleet is whole.
    call_command("fleet_status", "--forget-silent")
    out = capsys.readouterr().out
    assert "forgot worker portal@web-2:20" in out and "web-1" not in out.split("TENANT")[0]
    assert list(WorkerHeartbeat.objects.values_list("pid", flat=True)) == [10]


def test_the_fleet_page_is_for_operators_only(fleet_of_five, client, django_user_model):
    operator = django_user_model.objects.create_superuser("ops", "ops@example.com", "x")
    client.force_login(operator)
    page = client.get(reverse("admin:fleet"), {"state": "problems"})
    assert page.status_code == 200
    text = page.content.decode()
    assert "dead" in text and "broken" in text and ">fine<" not in text
    from portal.models import Membership
    from tests.conftest import make_staff

    owner = make_staff("owner-fine", fleet_of_five["fine"].tenant, Membership.Role.OWNER)
    client.force_login(owner)
    assert client.get(reverse("admin:fleet")).status_code == 403


@pytest.mark.django_db
def test_metrics_need_a_token_or_an_allowed_address(client, settings):
    settings.METRICS_TOKEN = "s3cret-metrics"
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.1").status_code == 403
    wrong = client.get("/metrics", REMOTE_ADDR="192.0.2.1", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    ok = client.get("/metrics", REMOTE_ADDR="192.0.2.1", HTTP_AUTHORIZATION="Bearer s3cret-metrics")
    assert ok.status_code == 200 and ok["Content-Type"].startswith("text/plain")


@pytest.mark.django_db(transaction=True)
def test_metrics_describe_the_ledger_workers_and_halo_through_a_real_server(
    validated_server, settings
):
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1/32"]
    tenant = factories.tenant("alpha")
    row(tenant, status="running", started=timezone.now(), heartbeat=timezone.now())
    row(tenant, status="succeeded", finished=timezone.now())  # kept, not counted again
    finished = timezone.now()
    ledger.count_finished("billing_sync", "succeeded", finished - timedelta(seconds=3), finished)
    row(tenant, job="autopay", attempts=2, error="Will retry at 10:00.")
    WorkerHeartbeat.beat("portal@web-1:10", host="web-1", pid=10)
    from portal import metrics

    metrics.count(metrics.HALO_REQUESTS, 7)
    metrics.count(metrics.HALO_429S)
    text = requests.get(f"{validated_server}/metrics", timeout=10).text
    assert 'portal_ledger_runs{job="billing_sync",status="running"} 1.0' in text
    assert 'portal_ledger_runs{job="autopay",status="queued"} 1.0' in text
    assert 'status="succeeded"} 1.0' not in text.split("portal_ledger_runs_finished")[0]
    assert 'portal_ledger_runs_finished_total{job="billing_sync",status="succeeded"} 1.0' in text
    assert 'portal_ledger_retrying_runs{job="autopay"} 1.0' in text
    assert 'portal_ledger_run_duration_seconds_count{job="billing_sync"} 1.0' in text
    assert 'portal_ledger_run_duration_seconds_sum{job="billing_sync"} 3.0' in text
    assert "portal_ledger_oldest_due_seconds" in text
    assert "portal_halo_requests_total 7.0" in text and "portal_halo_rate_limited_total 1.0" in text
    assert 'portal_worker_heartbeat_age_seconds{worker="web-1:10"}' in text  # after the @
    assert "alpha" not in text  # no tenant label unless switched on


def test_the_worker_waits_for_its_broker_with_backoff(monkeypatch):
    answers = [ConnectionError("refused")] * 3 + [True]

    class Broker:
        def ping(self):
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    monkeypatch.setattr(worker, "get_broker", Broker)
    slept = []
    assert worker.wait_for_broker(0, sleep=slept.append)
    assert slept == [1.0, 2.0, 4.0]
    answers[:] = [ConnectionError("refused")] * 10
    slept.clear()
    assert not worker.wait_for_broker(10, sleep=slept.append)
    assert slept == [1.0, 2.0, 4.0]  # the next wait (8 s) would pass 10 s: it gives up


def test_a_fleet_job_row_has_no_tenant_in_the_survey(db):
    ScheduledRun.objects.create(
        job="halo_outbox",
        slot=timezone.now() - timedelta(minutes=1),
        not_before=timezone.now() - timedelta(minutes=1),
        deadline=timezone.now(),
        status="succeeded",
    )
    [job] = fleet.survey().jobs
    assert job.tenant == "(fleet)" and job.state == "ok"
    assert job.label == ledger.jobs()["halo_outbox"].label
