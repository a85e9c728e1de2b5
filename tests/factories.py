"""One way to make a row of each tenant-owned model, for tests that sweep every admin.

`tests/test_admin_isolation.py` fails for a registered admin model missing here, so a new
model cannot skip the isolation tests. Rows of framework models with an admin (users, groups,
django-q's tasks and schedules) are made "for" a tenant too: they name it, so the admin URL
sweep can check that another tenant's staff never see them.
"""

from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from itertools import count
from typing import Any

from django.contrib.auth.models import Group, User
from django.utils import timezone
from django_q.models import Failure, OrmQ, Schedule, Success
from django_q.signing import SignedPackage

from billing.accounts.models import AccountSettings, HaloSignIn
from billing.invoicing import models as invoicing
from billing.models import AutoPayRule, Customer, Invoice, InvoiceLine
from billing.payments import models as payments
from billing.reminders import models as reminders
from integrations.billing_sync import models as billing_sync
from integrations.invoice_sync.models import InvoiceSyncRun, InvoiceSyncSettings, WebhookDelivery
from integrations.models import HaloConnection
from portal.models import ApiToken, Invitation, Membership, Organisation, Product, Tenant

_seq = count(1)
MAKERS: dict[type, Callable[[Tenant], Any]] = {}


def maker(model):
    def register(func):
        MAKERS[model] = func
        return func

    return register


def tenant(slug):
    return Tenant.objects.create(name=f"Tenant {slug}", slug=slug)


def make(model, tenant):
    return MAKERS[model](tenant)


@maker(Tenant)
def _tenant(tenant):
    return tenant


@maker(Organisation)
def organisation(tenant, **kwargs):
    n = next(_seq)
    fields = {"name": f"Org {n}", "external_ref": f"ORG-{n}"} | kwargs
    return Organisation.objects.create(tenant=tenant, **fields)


@maker(Product)
def product(tenant, **kwargs):
    n = next(_seq)
    fields = {"name": f"Product {n}", "sku": f"SKU-{n}", "unit_price": Decimal("1.50")} | kwargs
    return Product.objects.create(tenant=tenant, **fields)


@maker(Membership)
def membership(tenant):
    from django.contrib.auth import get_user_model

    n = next(_seq)
    user = get_user_model().objects.create_user(username=f"member{n}", email=f"m{n}@example.com")
    return Membership.objects.create(user=user, tenant=tenant, role=Membership.Role.ADMIN)


@maker(Invitation)
def invitation(tenant, email=None, role=Membership.Role.ADMIN, invited_by=None):
    """An invitation (its token is on `.token`, as only the email would carry it)."""
    found, token = Invitation.issue(
        tenant, email or f"invitee{next(_seq)}@example.com", role, invited_by
    )
    found.token = token
    return found


@maker(ApiToken)
def api_token(tenant, purpose=ApiToken.Purpose.USAGE):
    return ApiToken.issue(tenant, purpose, f"token {next(_seq)}")[0]


@maker(HaloConnection)
def halo_connection(tenant, secret="s3cret-" + "0" * 65, **kwargs):
    n = next(_seq)
    fields = {
        "name": f"Halo {n}",
        "auth_url": f"https://halo{n}.example.com/auth",
        "resource_url": f"https://halo{n}.example.com/api",
        "halo_tenant": f"halo{n}",
        "client_id": f"client-{n}",
    } | kwargs
    connection = HaloConnection(tenant=tenant, **fields)
    connection.set_secret(secret)
    connection.save()
    return connection


@maker(Customer)
def customer(tenant, **kwargs):
    n = next(_seq)
    fields = {"halo_id": n, "name": f"Customer {n}", "billing_email": f"ap{n}@example.com"}
    return Customer.objects.create(tenant=tenant, **(fields | kwargs))


@maker(Invoice)
def invoice(tenant, **kwargs):
    n = next(_seq)
    fields = {
        "halo_id": n,
        "invoice_number": str(n),
        "third_party_number": f"INV-{n:05d}",
        "total": Decimal("120.00"),
        "amount_due": Decimal("120.00"),
    }
    return Invoice.objects.create(tenant=tenant, **(fields | kwargs))


@maker(AutoPayRule)
def autopay_rule(tenant, **kwargs):
    n = next(_seq)
    fields = {"halo_subtype_id": n, "subtype_name": f"Subtype {n}"}
    return AutoPayRule.objects.create(tenant=tenant, **(fields | kwargs))


@maker(InvoiceSyncSettings)
def invoice_sync_settings(tenant, **kwargs):
    return InvoiceSyncSettings.objects.update_or_create(tenant=tenant, defaults=kwargs)[0]


@maker(InvoiceSyncRun)
def sync_run(tenant, **kwargs):
    """A run that has started (finish it to record how it went)."""
    fields = {
        "kind": InvoiceSyncRun.Kind.NEW,
        "trigger": InvoiceSyncRun.Trigger.SCHEDULE,
        "status": InvoiceSyncRun.Status.RUNNING,
        "started": timezone.now(),
    } | kwargs
    return InvoiceSyncRun.objects.create(tenant=tenant, **fields)


@maker(WebhookDelivery)
def webhook_delivery(tenant, **kwargs):
    n = next(_seq)
    payload = {"id": f"delivery-{n}", "event": "invoice updated", "object_id": n}
    return WebhookDelivery.receive(tenant.pk, payload | kwargs)[0]


# -- billing sync -------------------------------------------------------------------------


@maker(billing_sync.BillingSyncSettings)
def billing_sync_settings(tenant, **kwargs):
    return billing_sync.BillingSyncSettings.objects.update_or_create(
        tenant=tenant, defaults=kwargs
    )[0]


@maker(billing_sync.HaloClientRecord)
def halo_client_record(tenant, **kwargs):
    n = next(_seq)
    fields = {"halo_id": 10_000 + n, "name": f"Halo Client {n}"} | kwargs
    return billing_sync.HaloClientRecord.objects.create(tenant=tenant, **fields)


@maker(billing_sync.HaloItemRecord)
def halo_item_record(tenant, **kwargs):
    n = next(_seq)
    fields = {"halo_id": 20_000 + n, "name": f"Halo Item {n}", "sku": f"ITEM-{n}"} | kwargs
    return billing_sync.HaloItemRecord.objects.create(tenant=tenant, **fields)


@maker(billing_sync.OrganisationMapping)
def organisation_mapping(tenant, **kwargs):
    fields = {
        "organisation": kwargs.pop("organisation", None) or organisation(tenant),
        "halo_client": kwargs.pop("halo_client", None) or halo_client_record(tenant),
    }
    return billing_sync.OrganisationMapping.objects.create(tenant=tenant, **fields, **kwargs)


@maker(billing_sync.ProductMapping)
def product_mapping(tenant, **kwargs):
    fields = {
        "product": kwargs.pop("product", None) or product(tenant),
        "halo_item": kwargs.pop("halo_item", None) or halo_item_record(tenant),
    }
    return billing_sync.ProductMapping.objects.create(tenant=tenant, **fields, **kwargs)


@maker(billing_sync.UsageCount)
def usage_count(tenant, quantity=5, **kwargs):
    fields = {
        "organisation": kwargs.pop("organisation", None) or organisation(tenant),
        "product": kwargs.pop("product", None) or product(tenant),
    }
    return billing_sync.UsageCount.objects.create(tenant=tenant, quantity=quantity, **fields)


@maker(billing_sync.UsageChange)
def usage_change(tenant):
    submission, _ = billing_sync.UsageSubmission.objects.record(
        tenant,
        [(organisation(tenant), product(tenant), 7)],
        source=billing_sync.UsageSubmission.Source.ADMIN,
    )
    return submission.changes.get()


@maker(billing_sync.OnboardingSubmission)
def onboarding_submission(tenant):
    from integrations.billing_sync import onboarding

    submission, _ = billing_sync.OnboardingSubmission.objects.record(
        tenant,
        onboarding.ORGANISATIONS,
        [{"external_ref": f"ONB-{next(_seq)}", "name": "Onboarded"}],
        source=billing_sync.OnboardingSubmission.Source.API,
    )
    return submission


@maker(billing_sync.BillingSyncRun)
def billing_sync_run(tenant, **kwargs):
    fields = {
        "trigger": billing_sync.BillingSyncRun.Trigger.MANUAL,
        "status": billing_sync.BillingSyncRun.Status.SUCCEEDED,
    } | kwargs
    return billing_sync.BillingSyncRun.objects.create(tenant=tenant, **fields)


@maker(billing_sync.SyncResult)
def billing_sync_result(tenant, **kwargs):
    fields = {
        "run": kwargs.pop("run", None) or billing_sync_run(tenant),
        "organisation_name": "Org",
        "product_sku": "SKU",
        "action": billing_sync.SyncResult.Action.CREATE,
        "outcome": billing_sync.SyncResult.Outcome.DONE,
    } | kwargs
    return billing_sync.SyncResult.objects.create(**fields)


# -- payments -----------------------------------------------------------------------------


@maker(payments.PaymentSettings)
def payment_settings(tenant, **kwargs):
    return payments.PaymentSettings.objects.update_or_create(tenant=tenant, defaults=kwargs)[0]


@maker(payments.PayPage)
def pay_page(tenant, **kwargs):
    return payments.PayPage.for_invoice(kwargs.pop("invoice", None) or invoice(tenant))


@maker(payments.Payment)
def payment(tenant, **kwargs):
    n = next(_seq)
    target = kwargs.pop("invoice", None) or invoice(tenant)
    fields = {
        "invoice_ref": target.display_number(),
        "idempotency_key": f"key-{n}",
        "processor": "test",
        "amount": target.amount_due,
        "currency": target.currency or tenant.currency,
    } | kwargs
    return payments.Payment.objects.create(tenant=tenant, invoice=target, **fields)


@maker(payments.HaloOutbox)
def halo_outbox(tenant, **kwargs):
    fields = {"kind": payments.HaloOutbox.Kind.PAYMENT}
    if "invoice" not in kwargs:
        fields["payment"] = kwargs.pop("payment", None) or payment(tenant, status="succeeded")
    return payments.HaloOutbox.objects.create(tenant=tenant, **(fields | kwargs))


@maker(payments.SavedPaymentMethod)
def saved_payment_method(tenant, **kwargs):
    from django.utils import timezone

    n = next(_seq)
    fields = {
        "customer": kwargs.pop("customer", None) or customer(tenant),
        "processor": "test",
        "reference": f"test_pm_4242_{n}",
        "brand": "Visa",
        "last4": "4242",
        "consent_text": "I authorise charges for auto-pay invoices.",
        "consented_at": timezone.now(),
    } | kwargs
    return payments.SavedPaymentMethod.objects.create(tenant=tenant, **fields)


@maker(payments.AutoPaySkip)
def autopay_skip(tenant, **kwargs):
    target = kwargs.pop("invoice", None) or invoice(tenant, autopay_rule=autopay_rule(tenant))
    return payments.AutoPaySkip.objects.create(tenant=tenant, invoice=target, **kwargs)


@maker(payments.AutoPayAttempt)
def autopay_attempt(tenant, **kwargs):
    from django.utils import timezone

    target = kwargs.pop("invoice", None) or invoice(tenant, autopay_rule=autopay_rule(tenant))
    fields = {"day": timezone.localdate()} | kwargs
    return payments.AutoPayAttempt.objects.create(tenant=tenant, invoice=target, **fields)


@maker(payments.ProcessorEvent)
def processor_event(tenant, **kwargs):
    n = next(_seq)
    fields = {
        "processor": "stripe",
        "event_id": f"evt_{n}",
        "type": "checkout.session.completed",
        "payload": {"id": f"evt_{n}"},
    } | kwargs
    return payments.ProcessorEvent.objects.create(tenant=tenant, **fields)


@maker(payments.PayLinkAlert)
def pay_link_alert(tenant, **kwargs):
    moment = timezone.now()
    fields = {
        "started": moment,
        "last_seen": moment,
        "reason": "20 pay-link misses from 203.0.113.9 within 10 minutes",
        "addresses": {"203.0.113.9": 20},
    } | kwargs
    return payments.PayLinkAlert.objects.create(tenant=tenant, **fields)


# -- reminders ----------------------------------------------------------------------------


@maker(reminders.ReminderSettings)
def reminder_settings(tenant, **kwargs):
    return reminders.ReminderSettings.objects.update_or_create(tenant=tenant, defaults=kwargs)[0]


@maker(reminders.Reminder)
def reminder(tenant, **kwargs):
    target = kwargs.pop("invoice", None) or invoice(
        tenant, customer=customer(tenant), due_date=timezone.localdate()
    )
    fields = {
        "customer": target.customer,
        "step": 1,
        "due_date": target.due_date,
        "day": target.due_date + timedelta(days=1),
        "to": target.customer.billing_email if target.customer else "",
        "status": reminders.Reminder.Status.SENT,
    } | kwargs
    return reminders.Reminder.objects.create(tenant=tenant, invoice=target, **fields)


@maker(reminders.ReminderOptOut)
def reminder_opt_out(tenant, **kwargs):
    fields = {"customer": kwargs.pop("customer", None) or customer(tenant)} | kwargs
    return reminders.ReminderOptOut.objects.create(tenant=tenant, **fields)


@maker(reminders.PaymentNotice)
def payment_notice(tenant, **kwargs):
    fields = {"payment": kwargs.pop("payment", None) or payment(tenant, status="succeeded")}
    return reminders.PaymentNotice.objects.create(tenant=tenant, **(fields | kwargs))


# -- invoicing ----------------------------------------------------------------------------


@maker(AccountSettings)
def account_settings(tenant, **kwargs):
    fields = {"halo_portal_origins": "https://support.example.com"} | kwargs
    return AccountSettings.objects.update_or_create(tenant=tenant, defaults=fields)[0]


@maker(HaloSignIn)
def halo_signin(tenant, **kwargs):
    fields = {"enabled": True, "client_id": f"signin-{next(_seq)}"} | kwargs
    return HaloSignIn.objects.update_or_create(tenant=tenant, defaults=fields)[0]


@maker(invoicing.InvoicingSettings)
def invoicing_settings(tenant, **kwargs):
    return invoicing.InvoicingSettings.objects.update_or_create(tenant=tenant, defaults=kwargs)[0]


@maker(invoicing.BillingRun)
def billing_run(tenant, **kwargs):
    start = kwargs.pop("period_start", None) or date(2020, 1, 1) + timedelta(days=40 * next(_seq))
    fields = {"period_start": start, "period_end": start + timedelta(days=29)} | kwargs
    return invoicing.BillingRun.objects.create(tenant=tenant, **fields)


def invoice_line(**kwargs):
    """An unsaved line: three seats of a monthly service at £4.50, 20 % tax."""
    fields = {
        "code": "EDR-STD",
        "description": "Endpoint Protection",
        "quantity": Decimal(3),
        "unit_price": Decimal("4.50"),
        "tax_rate": Decimal(20),
        "start_date": date(2026, 10, 1),
        "end_date": date(2026, 10, 31),
    } | kwargs
    return InvoiceLine(**fields)


@maker(invoicing.PortalInvoice)
def portal_invoice(tenant, *, issue=True, lines=None, **kwargs):
    """A portal invoice for October 2026, issued unless `issue=False`."""
    details = invoicing.PortalInvoice.objects.create_draft(
        kwargs.pop("organisation", None) or organisation(tenant),
        date(2026, 10, 1),
        date(2026, 10, 31),
        **kwargs,
    )
    details.set_lines(lines if lines is not None else [invoice_line()])
    if issue:
        invoicing.PortalInvoice.objects.filter(pk=details.pk).issue()
    return invoicing.PortalInvoice.objects.select_related("invoice").get(pk=details.pk)


@maker(invoicing.OneOffCharge)
def one_off_charge(tenant, **kwargs):
    fields = {
        "organisation": kwargs.pop("organisation", None) or organisation(tenant),
        "description": f"Setup fee {next(_seq)}",
        "unit_price": Decimal("25.00"),
    } | kwargs
    return invoicing.OneOffCharge.objects.create(tenant=tenant, **fields)


@maker(invoicing.PdfServed)
def pdf_served(tenant, **kwargs):
    from billing.invoicing.pdfs import resolve_pdf

    details = portal_invoice(tenant)
    version = resolve_pdf(details.invoice, invoicing.PdfServed.Channel.ADMIN).version
    return version.deliveries.get()


@maker(invoicing.InvoicePdf)
def invoice_pdf(tenant, **kwargs):
    return invoicing.InvoicePdf.objects.get(pk=invoice(tenant, **kwargs).pk)


# -- framework rows that name a tenant (auth, django-q) -----------------------------------


@maker(User)
def staff_user(tenant):
    return membership(tenant).user


@maker(Group)
def group(tenant):
    return Group.objects.create(name=f"Group {next(_seq)} of {tenant.name}")


@maker(Schedule)
def schedule(tenant):
    return Schedule.objects.create(
        name=f"tenant-{tenant.slug}-{next(_seq)}",
        func="portal.tasks.heartbeat",
        schedule_type=Schedule.DAILY,
    )


def _task(tenant, model, success):
    n = next(_seq)
    now = timezone.now()
    return model.objects.create(
        id=f"{n:032x}",
        name=f"task-{tenant.slug}-{n}",
        func="portal.tasks.heartbeat",
        args=(tenant.pk,),
        started=now,
        stopped=now,
        success=success,
    )


@maker(Success)
def succeeded_task(tenant):
    return _task(tenant, Success, success=True)


@maker(Failure)
def failed_task(tenant):
    return _task(tenant, Failure, success=False)


@maker(OrmQ)
def queued_task(tenant):
    n = next(_seq)
    package = {"id": f"{n:032x}", "name": f"queued-{tenant.slug}-{n}", "func": "print"}
    return OrmQ.objects.create(key="portal", payload=SignedPackage.dumps(package))
