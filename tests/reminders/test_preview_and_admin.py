"""Tomorrow's preview is what goes out tomorrow; the settings form; staff's opt-out toggle,
the reminder log and Send again; the schedule and the command."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from billing.models import Invoice
from billing.reminders import dunning, tasks
from billing.reminders.models import Reminder, ReminderOptOut, ReminderSettings
from tests import factories
from tests.reminders.conftest import DUE, at, open_invoice

PREVIEW = "admin:reminders_remindersettings_preview"


def keys(dues):
    return sorted((due.invoice.pk, due.step, due.to) for due in dues)


def sent_keys(reminders):
    return sorted((r.invoice_id, r.step, r.to) for r in reminders)


@pytest.fixture
def invoices(tenant):
    """Invoices in every state around tomorrow (DUE + 7 is tomorrow for step 7)."""
    return {
        "step 7": open_invoice(tenant),
        "step 1": open_invoice(tenant, due=DUE + timedelta(days=6)),
        "step -3": open_invoice(tenant, due=DUE + timedelta(days=10)),
        "step 14": open_invoice(tenant, due=DUE - timedelta(days=7)),
        # Step 7 is today; not sent today, it would still be due tomorrow (catch-up).
        "today only": open_invoice(tenant, due=DUE - timedelta(days=1)),
        "opted out": open_invoice(tenant, customer=factories.customer(tenant, name="Quiet Ltd")),
        "no address": open_invoice(tenant, customer=factories.customer(tenant, billing_email="")),
        "paid": open_invoice(tenant, payment_status=Invoice.PaymentStatus.PAID),
    }


@pytest.mark.parametrize("hour", [7, 11], ids=["before today's run", "after today's run"])
def test_preview_matches_what_goes_out_the_next_day(tenant, invoices, mailoutbox, hour):
    ReminderOptOut.objects.create(tenant=tenant, customer=invoices["opted out"].customer)
    today = at(6, hour)  # tomorrow is DUE + 7
    dunning.send_due_reminders(tenant, today)

    shown = dunning.preview(tenant, today)
    assert shown.tomorrow == DUE + timedelta(days=7)
    expected = {"step 7": 7, "step 1": 1, "step -3": -3, "step 14": 14}
    assert keys(shown.tomorrow_sends) == sorted(
        (invoices[name].pk, step, invoices[name].customer.billing_email)
        for name, step in expected.items()
    )
    assert {due.invoice.pk: due.skip for due in shown.tomorrow_skips} == {
        invoices["opted out"].pk: "The customer opted out of reminders",
        invoices["no address"].pk: "The customer has no billing email in Halo",
    }
    # Today's run (at 09:00 if the preview was made before) then tomorrow's.
    dunning.send_due_reminders(tenant, at(6, 11))
    sent_tomorrow = dunning.send_due_reminders(tenant, at(7, 9, 30))
    assert sent_keys(sent_tomorrow) == keys(shown.tomorrow_sends)
    assert all(r.status == Reminder.Status.SENT for r in sent_tomorrow)


def test_preview_page_lists_tomorrow_for_the_active_tenant(personas, monkeypatch):
    tenant = personas.tenant_a
    ReminderSettings.objects.create(tenant=tenant, enabled=True)
    tomorrow = timezone.now().astimezone(tenant.tz).date() + timedelta(days=1)
    mine = open_invoice(tenant, due=tomorrow - timedelta(days=1))  # step 1 tomorrow
    ReminderSettings.objects.create(tenant=personas.tenant_b, enabled=True)
    theirs = open_invoice(personas.tenant_b, due=tomorrow - timedelta(days=1))

    page = personas.client(personas.owner_a).get(reverse(PREVIEW))
    assert page.status_code == 200
    text = page.content.decode()
    assert "Going out tomorrow (1)" in text
    for shown in (mine.display_number(), mine.customer.name, mine.customer.billing_email):
        assert shown in text
    assert "1 day overdue" in text
    assert "Stop reminders for this customer" in text
    assert theirs.customer.billing_email not in text
    viewer_page = personas.client(personas.viewer_a).get(reverse(PREVIEW)).content.decode()
    assert mine.customer.billing_email in viewer_page
    assert "Stop reminders for this customer" not in viewer_page

    email = personas.client(personas.viewer_a).get(
        reverse(PREVIEW), {"invoice": mine.pk, "step": 1}
    )
    assert email.status_code == 200 and b"1 day overdue" in email.content
    text_email = personas.client(personas.viewer_a).get(
        reverse(PREVIEW), {"invoice": mine.pk, "step": 1, "format": "text"}
    )
    assert text_email["Content-Type"].startswith("text/plain")
    assert f"Subject: Reminder: invoice {mine.display_number()}" in text_email.content.decode()
    # Another tenant's invoice, or a step not in the schedule: not found, not a crash.
    client_b = personas.client(personas.owner_b)
    assert client_b.get(reverse(PREVIEW), {"invoice": mine.pk, "step": 1}).status_code == 404
    for bad in ({"invoice": mine.pk, "step": 2}, {"invoice": mine.pk, "step": "x"}):
        assert personas.client(personas.owner_a).get(reverse(PREVIEW), bad).status_code == 404
    not_an_id = personas.client(personas.owner_a).get(reverse(PREVIEW), {"invoice": "x"})
    assert not_an_id.status_code == 404


def test_staff_stop_a_customers_reminders_from_the_preview(personas):
    tenant = personas.tenant_a
    ReminderSettings.objects.create(tenant=tenant, enabled=True)
    customer = factories.customer(tenant)
    data = {"do": "opt_out", "customer": customer.pk}

    assert personas.client(personas.viewer_a).post(reverse(PREVIEW), data).status_code == 403
    assert personas.client(personas.owner_b).post(reverse(PREVIEW), data).status_code == 404
    assert not ReminderOptOut.objects.exists()

    response = personas.client(personas.owner_a).post(reverse(PREVIEW), data)
    assert response.status_code == 302
    opt_out = ReminderOptOut.objects.get(customer=customer)
    assert opt_out.source == ReminderOptOut.Source.STAFF
    assert opt_out.created_by == personas.owner_a
    # The toggle back: delete the opt-out in the admin.
    client = personas.client(personas.owner_a)
    url = reverse("admin:reminders_reminderoptout_delete", args=[opt_out.pk])
    assert client.post(url, {"post": "yes"}).status_code == 302
    assert not ReminderOptOut.objects.exists()


def test_staff_opt_out_form(personas):
    customer = factories.customer(personas.tenant_a)
    client = personas.client(personas.owner_a)
    url = reverse("admin:reminders_reminderoptout_add")
    assert client.post(url, {"customer": customer.pk, "note": "In dispute"}).status_code == 302
    opt_out = ReminderOptOut.objects.get()
    assert (opt_out.tenant, opt_out.source, opt_out.created_by) == (
        personas.tenant_a,
        ReminderOptOut.Source.STAFF,
        personas.owner_a,
    )
    # Twice: a form error, not a crash. Another tenant's customer: refused.
    assert client.post(url, {"customer": customer.pk}).status_code == 200
    foreign = factories.customer(personas.tenant_b)
    assert client.post(url, {"customer": foreign.pk}).status_code == 200
    assert ReminderOptOut.objects.count() == 1


def settings_form(**changes):
    return {
        "enabled": "on",
        "steps": "-3, 1, 7, 14",
        "send_hour": "9",
        "from_name": "",
        "reply_to": "",
        "payment_notice_to": "owners",
        "payment_notice_emails": "",
    } | changes


def test_settings_form(personas):
    client = personas.client(personas.owner_a)
    client.get(reverse("admin:reminders_remindersettings_changelist"))
    options = ReminderSettings.objects.get(tenant=personas.tenant_a)
    assert options.enabled is False and options.steps == [-3, 1, 7, 14]
    url = reverse("admin:reminders_remindersettings_change", args=[options.pk])
    assert b"-3, 1, 7, 14" in client.get(url).content

    response = client.post(url, settings_form(steps="14; -5 2", payment_notices="on"))
    assert response.status_code == 302
    options.refresh_from_db()
    assert options.enabled and options.steps == [-5, 2, 14] and options.payment_notices

    for steps, error in (
        ("soon", "whole numbers"),
        ("1, 1", "once"),
        ("1, 500", "between"),
        ("", "at least one"),
        (", ".join(str(n) for n in range(11)), "At most 10"),
    ):
        page = client.post(url, settings_form(steps=steps))
        assert page.status_code == 200, steps
        assert error in page.content.decode(), steps
    bad_list = settings_form(payment_notices="on", payment_notice_to="list")
    assert "at least one address" in client.post(url, bad_list).content.decode()
    bad_list["payment_notice_emails"] = "ok@example.com, not an address"
    assert "is not an email address" in client.post(url, bad_list).content.decode()
    options.refresh_from_db()
    assert options.steps == [-5, 2, 14]


def test_reminder_log_send_again(personas, mailoutbox, tasks_inline, requests_commit):
    tenant = personas.tenant_a
    ReminderSettings.objects.create(tenant=tenant, enabled=True)
    failed = factories.reminder(tenant, status=Reminder.Status.FAILED, error="SMTP down")
    sent = factories.reminder(tenant)
    changelist = reverse("admin:reminders_reminder_changelist")
    action = {"action": "send_again", "_selected_action": [failed.pk, sent.pk]}

    personas.client(personas.viewer_a).post(changelist, action)
    assert not mailoutbox
    response = personas.client(personas.owner_a).post(changelist, action, follow=True)
    assert "1 reminder(s) are being sent again" in response.content.decode()
    assert "1 skipped" in response.content.decode()
    failed.refresh_from_db()
    assert failed.status == Reminder.Status.SENT and failed.attempts == 2
    assert [m.to for m in mailoutbox] == [[failed.to]]


def test_health_row_shows_failures(personas):
    from portal.health import tenant_health

    tenant = personas.tenant_a
    (row,) = [r for r in tenant_health(tenant) if r.label == "Reminders"]
    assert row.status == "idle"
    ReminderSettings.objects.create(tenant=tenant, enabled=True)
    factories.reminder(tenant, status=Reminder.Status.FAILED)
    (row,) = [r for r in tenant_health(tenant) if r.label == "Reminders"]
    assert row.status == "error" and "1 failed" in row.text


def test_schedule_starts_each_tenant_from_its_local_hour(
    tenant, queued, django_capture_on_commit_callbacks
):
    sydney = factories.tenant("sydney")
    sydney.time_zone = "Australia/Sydney"
    sydney.save()
    ReminderSettings.objects.create(tenant=sydney, enabled=True)
    off = factories.tenant("off")
    ReminderSettings.objects.create(tenant=off, enabled=False)

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.start_reminder_runs(at(1, 8)) == 1  # 08:00 London is evening in Sydney
    assert queued == [("billing.reminders.tasks.send_tenant_reminders", sydney.pk)]
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.start_reminder_runs(at(1, 9)) == 2
    assert sorted(args[1] for args in queued[1:]) == sorted([tenant.pk, sydney.pk])
    from datetime import UTC, datetime

    from portal import ledger

    job = ledger.jobs()["reminders"]
    after = datetime(2026, 12, 1, 9, 7, tzinfo=UTC)
    assert job.next_slot(None, after) == datetime(2026, 12, 1, 9, 15, tzinfo=UTC)


def test_command_dry_run_and_send(tenant, mailoutbox, monkeypatch):
    invoice = open_invoice(tenant, due=timezone.localdate() - timedelta(days=1))
    ten_today = at(timezone.localdate(), 10)
    monkeypatch.setattr("django.utils.timezone.now", lambda: ten_today)
    out = StringIO()
    call_command("send_reminders", "--dry-run", stdout=out)
    assert f"invoice {invoice.display_number()} (1 day overdue): would send to" in out.getvalue()
    assert not mailoutbox and not Reminder.objects.exists()

    out = StringIO()
    call_command("send_reminders", "--tenant", "acme", stdout=out)
    assert "acme: 1 of 1 sent." in out.getvalue()
    assert len(mailoutbox) == 1
    call_command("send_reminders", stdout=StringIO())
    assert len(mailoutbox) == 1
    with pytest.raises(CommandError, match="No tenant"):
        call_command("send_reminders", "--tenant", "nope")
