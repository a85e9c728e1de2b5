"""The guided setup's steps, each worked out from what the database holds: every step is
shown to go from to-do to done, and to broken where it can break (portal.setup_checklist)."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from billing.payments.models import HaloOutbox, Payment, PaymentSettings, ProcessorEvent
from integrations.billing_sync.models import BillingSyncRun, UsageSubmission
from integrations.invoice_sync.models import InvoiceSyncRun, SyncState, WebhookDelivery
from integrations.models import HaloConnection
from portal import setup_checklist as setup
from portal.models import ApiToken
from tests import factories

pytestmark = pytest.mark.django_db

DONE, TODO, BROKEN = setup.State.DONE, setup.State.TODO, setup.State.BROKEN


@pytest.fixture
def tenant(db):
    return factories.tenant("setup")


@pytest.fixture
def connection(tenant):
    return factories.halo_connection(tenant)


def tested(connection, status=HaloConnection.TestStatus.OK, summary="All permissions present"):
    connection.test_status, connection.test_summary = status, summary
    connection.tested_at = timezone.now()
    connection.save()
    return connection


# -- billing sync ---------------------------------------------------------------------------


def test_connect_halo(tenant):
    step = setup.halo_connected(tenant)
    assert step.state == TODO and step.url.endswith("/haloconnection/add/")

    connection = factories.halo_connection(tenant, billing_sync=False)
    step = setup.halo_connected(tenant)
    assert step.state == TODO and "Switch billing sync on" in step.detail
    assert step.url.endswith(f"/haloconnection/{connection.pk}/change/")

    connection.billing_sync = True
    connection.save()
    assert setup.halo_connected(tenant).state == DONE

    # The secret bound to another host cannot be sent: broken until entered again.
    connection.auth_url = "https://elsewhere.example.com/auth"
    connection.save()
    step = setup.halo_connected(tenant)
    assert step.state == BROKEN and "entered for" in step.detail


def test_connection_test_result(tenant, connection):
    assert setup.connection_tested(tenant).state == TODO
    tested(connection, HaloConnection.TestStatus.FAILED, "Missing permission: read:customers")
    step = setup.connection_tested(tenant)
    assert step.state == BROKEN and "Missing permission: read:customers" in step.detail
    tested(connection)
    assert setup.connection_tested(tenant).state == DONE


def test_organisations_mapped(tenant):
    step = setup.organisations_mapped(tenant)
    assert step.state == TODO and "No organisations yet" in step.detail

    org = factories.organisation(tenant)
    assert "Refresh from Halo" in setup.organisations_mapped(tenant).detail

    client = factories.halo_client_record(tenant)
    factories.usage_count(tenant, organisation=org)
    step = setup.organisations_mapped(tenant)
    assert step.state == TODO and "0 of" in step.detail and "1 with usage are not" in step.detail

    mapping = factories.organisation_mapping(tenant, organisation=org, halo_client=client)
    step = setup.organisations_mapped(tenant)
    assert step.state == DONE and step.detail.startswith("1 of ")

    client.missing = True
    client.save()
    step = setup.organisations_mapped(tenant)
    assert step.state == BROKEN and str(mapping) in step.detail


def test_products_mapped(tenant):
    product = factories.product(tenant)
    item = factories.halo_item_record(tenant)
    factories.usage_count(tenant, product=product)
    assert setup.products_mapped(tenant).state == TODO
    factories.product_mapping(tenant, product=product, halo_item=item)
    assert setup.products_mapped(tenant).state == DONE
    item.inactive = True
    item.save()
    assert setup.products_mapped(tenant).state == BROKEN


def test_usage_received(tenant):
    assert setup.usage_received(tenant).state == TODO
    token = factories.api_token(tenant, ApiToken.Purpose.USAGE)
    UsageSubmission.objects.record(
        tenant,
        [(factories.organisation(tenant), factories.product(tenant), 3)],
        source=UsageSubmission.Source.API,
        token=token,
    )
    step = setup.usage_received(tenant)
    assert step.state == DONE and "API, 1 rows" in step.detail

    token.revoked = True
    token.save()
    step = setup.usage_received(tenant)
    assert step.state == BROKEN and "No usage token works" in step.detail


def test_sync_previewed(tenant):
    assert setup.sync_previewed(tenant).state == TODO
    run = factories.billing_sync_run(
        tenant, dry_run=True, status=BillingSyncRun.Status.PREVIEWED, counts={"create": 4}
    )
    step = setup.sync_previewed(tenant)
    assert step.state == DONE and step.detail.startswith("Previewed") and "4 create" in step.detail

    factories.billing_sync_run(tenant, status=BillingSyncRun.Status.ERROR, error="No connection")
    step = setup.sync_previewed(tenant)
    assert step.state == BROKEN and "No connection" in step.detail
    assert run.pk  # the earlier preview does not hide the failure after it


def test_sync_scheduled(tenant):
    assert setup.sync_scheduled(tenant).state == TODO
    factories.billing_sync_settings(tenant, schedule="daily", schedule_hour=3)
    step = setup.sync_scheduled(tenant)
    assert step.state == DONE and "03:00 (Europe/London)" in step.detail

    factories.billing_sync_run(
        tenant, trigger=BillingSyncRun.Trigger.SCHEDULE, status=BillingSyncRun.Status.FAILED
    )
    assert setup.sync_scheduled(tenant).state == BROKEN


# -- invoice sync ---------------------------------------------------------------------------


def test_invoice_sync_settings_need_a_connection_then_a_save(tenant):
    step = setup.invoice_sync_settings(tenant)
    assert step.state == TODO and step.detail.startswith("First: Add your Halo API application")

    factories.halo_connection(tenant)
    row = factories.invoice_sync_settings(tenant)
    assert setup.invoice_sync_settings(tenant).state == TODO  # defaults nobody chose

    LogEntry.objects.create(
        user=factories.staff_user(tenant),
        content_type=ContentType.objects.get_for_model(row),
        object_id=str(row.pk),
        object_repr=str(row),
        action_flag=CHANGE,
    )
    assert setup.invoice_sync_settings(tenant).state == DONE


def test_initial_sync(tenant):
    assert setup.initial_sync(tenant).state == TODO
    factories.sync_run(tenant, status=InvoiceSyncRun.Status.ERROR, error="Halo answered 500")
    step = setup.initial_sync(tenant)
    assert step.state == BROKEN and "Halo answered 500" in step.detail

    SyncState.for_tenant(tenant).complete_initial()
    factories.invoice(tenant)
    step = setup.initial_sync(tenant)
    assert step.state == DONE and "1 invoices from Halo" in step.detail


def test_webhook(tenant):
    assert setup.webhook_registered(tenant).state == TODO
    factories.invoice_sync_settings(tenant, webhook_registered=timezone.now())
    step = setup.webhook_registered(tenant)
    assert step.state == DONE and "no delivery yet" in step.detail

    failed = factories.webhook_delivery(tenant)
    WebhookDelivery.objects.filter(pk=failed.pk).update(
        status=WebhookDelivery.Status.FAILED, error="bad body"
    )
    step = setup.webhook_registered(tenant)
    assert step.state == BROKEN and "bad body" in step.detail

    factories.webhook_delivery(tenant)  # a later one, received
    step = setup.webhook_registered(tenant)
    assert step.state == DONE and "last delivery just now" in step.detail


# -- PDFs -----------------------------------------------------------------------------------


def test_pdf_secret_created_then_used_by_halo(tenant):
    assert setup.pdf_secret(tenant).state == TODO
    assert "?purpose=pdf" in setup.pdf_secret(tenant).url
    token = factories.api_token(tenant, ApiToken.Purpose.PDF)
    assert setup.pdf_secret(tenant).state == DONE
    assert setup.pdf_secret_in_halo(tenant).state == TODO

    ApiToken.authenticate(ApiToken.issue(tenant, "pdf", "x")[1], "pdf")  # Halo fetches
    assert setup.pdf_secret_in_halo(tenant).state == DONE

    # Rotated, and Halo still sends the old one after it expired: broken.
    ApiToken.objects.filter(tenant=tenant).update(revoked=True)
    ApiToken.objects.filter(pk=token.pk).update(revoked=False)
    used = ApiToken.objects.exclude(last_used=None).get()
    used.expires = timezone.now() - timedelta(days=1)
    used.save()
    step = setup.pdf_secret_in_halo(tenant)
    assert step.state == BROKEN and "revoked" in step.detail


# -- payments -------------------------------------------------------------------------------


def test_processor(tenant, settings):
    assert setup.processor_configured(tenant).state == TODO
    row = factories.payment_settings(tenant)
    settings.PAYMENTS_TEST_PROCESSOR = True
    step = setup.processor_configured(tenant)
    assert step.state == TODO and "test processor takes no real money" in step.detail

    row.processor = PaymentSettings.Processor.STRIPE
    row.save()
    step = setup.processor_configured(tenant)
    assert step.state == BROKEN and "Stripe secret key" in step.detail

    row.set_stripe_secrets("sk_test_abc", "whsec_abc")
    row.save()
    step = setup.processor_configured(tenant)
    assert (
        step.state == DONE and "test mode" in step.detail and "no webhook event yet" in step.detail
    )

    factories.processor_event(tenant, state=ProcessorEvent.State.FAILED, outcome="unreadable")
    assert setup.processor_configured(tenant).state == BROKEN


def test_payments_on_the_connection(tenant):
    assert setup.payments_on_connection(tenant).state == TODO
    connection = factories.halo_connection(tenant)
    assert "Switch payments on" in setup.payments_on_connection(tenant).detail
    connection.payments = True
    connection.save()
    assert setup.payments_on_connection(tenant).state == DONE


def test_pay_link_in_email_ticks_when_a_customer_starts_paying(tenant):
    assert setup.pay_link_in_email(tenant).state == TODO
    factories.payment(tenant, kind=Payment.Kind.AUTOPAY)  # not from a link
    assert setup.pay_link_in_email(tenant).state == TODO
    factories.payment(tenant, kind=Payment.Kind.PAY_PAGE)
    assert setup.pay_link_in_email(tenant).state == DONE


def test_pay_buttons_are_optional(tenant):
    step = setup.pay_buttons(tenant)
    assert step.optional and step.state == TODO
    factories.payment_settings(tenant, halo_pay_buttons=True)
    invoice = factories.invoice(tenant)
    step = setup.pay_buttons(tenant)
    assert step.state == TODO and "0 of 1 unpaid" in step.detail

    invoice.pay_link_url = "https://portal.example.com/pay/x/invoice/abc"
    invoice.save()
    assert setup.pay_buttons(tenant).state == DONE

    HaloOutbox.objects.create(
        tenant=tenant,
        kind=HaloOutbox.Kind.PAY_LINK,
        invoice=factories.invoice(tenant),
        status=HaloOutbox.Status.FAILED,
        last_error="Halo refused it",
    )
    step = setup.pay_buttons(tenant)
    assert step.state == BROKEN and "Halo refused it" in step.detail


# -- jobs -----------------------------------------------------------------------------------


def test_a_job_points_at_its_first_step_not_done(tenant, connection):
    jobs = {job.key: job for job in setup.checklist(tenant)}
    assert list(jobs) == ["billing_sync", "invoice_sync", "pdfs", "payments"]
    billing = jobs["billing_sync"]
    assert billing.done_count == 1 and not billing.complete
    assert billing.next_step.title == "Test the connection"
    assert billing.after(billing.steps[0]).title == "Test the connection"

    tested(connection)
    billing = setup.checklist(tenant)[0]
    assert billing.done_count == 2
    assert billing.next_step.title == "Map organisations to Halo clients"


def test_a_steps_page_says_which_step_it_is_and_what_comes_next(personas):
    connection = factories.halo_connection(personas.tenant_a)
    owner = personas.client(personas.owner_a)
    change = f"/admin/integrations/haloconnection/{connection.pk}/change/"
    page = owner.get(change).content.decode()
    assert "Setup · Billing sync, step 2 of 7: Test the connection (to do)" in page
    assert "Next: Map organisations to Halo clients →" in page

    tested(connection)
    page = owner.get(change).content.decode()
    assert "step 2 of 7: Test the connection (done)" in page

    # Pages no step leads to, and other tenants, get no pointer.
    assert "Setup ·" not in owner.get("/admin/billing/invoice/").content.decode()
    other = personas.client(personas.owner_b).get(change)
    assert other.status_code == 404 and "Setup ·" not in other.content.decode()


def test_settings_never_saved_but_synced_count_as_chosen(tenant):
    """An initial sync that ran with the defaults (no one opened the form) is done too."""
    factories.halo_connection(tenant)
    SyncState.for_tenant(tenant).complete_initial()
    step = setup.invoice_sync_settings(tenant)
    assert step.state == DONE and "all dates" in step.detail
