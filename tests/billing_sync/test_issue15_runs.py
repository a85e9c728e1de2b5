"""How runs read in the admin (issue 15): a billing sync run staff approved no longer says
"Awaiting approval", and runs say how long they took ("under a second", not "0.0 s").
Runs go through the Halo simulator over HTTP."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse

from integrations.billing_sync import runner
from integrations.billing_sync.models import BillingSyncRun
from integrations.invoice_sync.runner import run_sync
from portal.models import Membership
from portal.runs import describe_duration
from tests.conftest import make_staff

Status = BillingSyncRun.Status


@pytest.fixture
def owner(mapped):
    user = make_staff("owner", mapped.tenant, Membership.Role.OWNER)
    client = Client()
    client.force_login(user)
    return client


def badges(client, url):
    """The status badges of a run list, top (newest) first."""
    html = client.get(url).content.decode()
    return re.findall(r'<td class="field-status_badge"><span[^>]*>([^<]+)</span>', html)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "under a second"),
        (0.04, "under a second"),
        (0.999, "under a second"),
        (4.24, "4.2 s"),
        (42.4, "42 s"),
        (60, "1 min"),
        (185, "3 min 5 s"),
        (7200, "2 h"),
        (7440, "2 h 4 min"),
    ],
)
def test_durations_read_as_people_say_them(seconds, text):
    assert describe_duration(timedelta(seconds=seconds)) == text


def test_an_approved_run_says_approved_not_awaiting_approval(mapped, owner):
    mapped.settings.approval_required = True
    mapped.settings.save()
    held = mapped.sync(BillingSyncRun.Trigger.SCHEDULE)
    assert held.status == Status.AWAITING_APPROVAL
    runs = reverse("admin:billing_sync_billingsyncrun_changelist")
    assert badges(owner, runs) == ["Awaiting approval"]

    approval, _ = runner.approve(held, background=False)
    approval.refresh_from_db()

    assert approval.status == Status.SUCCEEDED
    assert badges(owner, runs) == ["Succeeded", "Approved"]
    page = owner.get(reverse("admin:billing_sync_billingsyncrun_change", args=[held.pk]))
    html = page.content.decode()
    assert "Awaiting approval" not in html and ">Approved</span>" in html
    approval_url = reverse("admin:billing_sync_billingsyncrun_change", args=[approval.pk])
    assert f'Its held rows were approved: <a href="{approval_url}">' in html


def test_a_run_held_for_approval_and_not_approved_still_awaits_it(mapped, owner):
    mapped.settings.approval_required = True
    mapped.settings.save()
    mapped.sync(BillingSyncRun.Trigger.SCHEDULE)
    mapped.sync(BillingSyncRun.Trigger.SCHEDULE)
    runs = reverse("admin:billing_sync_billingsyncrun_changelist")
    assert badges(owner, runs) == ["Awaiting approval", "Awaiting approval"]


def test_runs_say_how_long_they_took(mapped, owner, sim):
    run = mapped.sync()
    run.finished = run.started + timedelta(milliseconds=40)  # as fast as on this machine
    run.save()
    html = owner.get(reverse("admin:billing_sync_billingsyncrun_changelist")).content.decode()
    assert '<td class="field-took">under a second</td>' in html
    assert "0.0 s" not in html

    invoice_run = run_sync(mapped.tenant, "initial", "cli")
    invoice_run.finished = invoice_run.started + timedelta(seconds=3, milliseconds=240)
    invoice_run.save()
    html = owner.get(reverse("admin:invoice_sync_invoicesyncrun_changelist")).content.decode()
    assert '<td class="field-took">3.2 s</td>' in html
