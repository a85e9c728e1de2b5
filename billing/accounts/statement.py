"""A customer's account as their account page shows it: every invoice, the statement and the
saved card, read in a fixed handful of queries whatever the number of invoices.

Queries: the invoices (with their pay pages' tokens and portal credit-note numbers, one
query, read as plain rows: see `ListedInvoice`), pay pages still missing (only the first
time), which open invoices have a payment under way (and those few as models), the payments
received, and the saved cards. Money and dates are formatted here
with the tenant's locale (`billing.payments.display`, which uses `portal.formats`), so the
template only places text.
"""

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import F, Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from billing.models import AGEING_BUCKETS, Customer, Invoice, InvoiceFacts, ageing_bucket_of
from billing.payments import display
from billing.payments.models import (
    Balance,
    Payment,
    PaymentAllocation,
    PayPage,
    SavedPaymentMethod,
)
from portal.models import Tenant

#: Ageing buckets: (label, first day overdue, last day overdue or None), the invoice list's.
BUCKETS = tuple((bucket.label, bucket.first, bucket.last) for bucket in AGEING_BUCKETS)
#: What `Balance` reads of an invoice with a payment under way (its timestamps and Halo's
#: extras cost more to load than the rest of the row).
INVOICE_FIELDS = (
    *("tenant", "source", "customer", "halo_id", "invoice_number", "third_party_number"),
    *("invoice_date", "due_date", "currency", "total", "amount_paid", "amount_due"),
    *("payment_status", "voided", "deleted_in_halo", "posted", "autopay_rule"),
)
PAYMENT_STATUS = dict(Invoice.PaymentStatus.choices)
PAYMENT_FIELDS = (
    *("succeeded_at", "created", "invoice_ref", "amount", "currency", "refunded_amount"),
    *("card_brand", "card_last4", "kind", "public_id", "status", "failure_message"),
)
#: How far back the statement lists payments received, and invoices already settled (all
#: of them on request).
PAYMENTS_SHOWN = RECENT = timedelta(days=365)


bucket_of = ageing_bucket_of


class ListedInvoice(InvoiceFacts):
    """An invoice as the page lists it: its fields (one `values_list` row), its pay page's
    token and the numbers of the credit notes around it. Not a model: a model per row
    costs more than the rest of the page, and `InvoiceFacts` gives the same rules."""

    tenant: Tenant  # display_number reads the tenant's settings
    pk: int
    source: str
    halo_id: int | None
    invoice_number: str
    third_party_number: str
    invoice_date: date | None
    due_date: date | None
    currency: str
    total: Decimal
    amount_paid: Decimal
    amount_due: Decimal
    payment_status: str
    voided: bool
    autopay_rule_id: int | None
    pay_token: str | None
    credits_number: str | None
    credited_by_number: str | None
    __slots__ = tuple(__annotations__)
    #: What the statement's query already decided (it lists neither invoices deleted in
    #: Halo nor portal drafts), so not read per row.
    deleted_in_halo, posted = False, True

    def __init__(self, tenant, values):
        self.tenant = tenant
        for name, value in zip(self.__slots__[1:], values, strict=True):
            setattr(self, name, value)


@dataclass
class InvoiceRow:
    invoice: ListedInvoice
    number: str
    kind: str  # open, overdue, paid, voided, credit
    status: str
    invoice_date: str
    due_date: str
    total: str
    due: str
    due_amount: Decimal
    pay_url: str
    pdf_url: str
    note: str = ""
    in_flight: bool = False


@dataclass(frozen=True)
class Settled:
    """The balance of an open invoice with no payment under way: its amount due."""

    due: Decimal
    in_flight: None = None


@dataclass
class CurrencyTotals:
    """What is owed in one currency, aged by days past the due date."""

    currency: str
    balance: Decimal = Decimal(0)
    overdue: Decimal = Decimal(0)
    buckets: list = field(default_factory=lambda: [Decimal(0)] * len(BUCKETS))


class Statement:
    """Everything on one customer's account page, as of the tenant's local `today`."""

    def __init__(self, customer: Customer, today: date, every_invoice: bool = False):
        """`every_invoice`: list every invoice ever sent; by default the open ones and those
        of the last `RECENT` (the statement's totals cover every open invoice either way)."""
        self.customer = customer
        self.every_invoice = every_invoice
        self.tenant = tenant = customer.tenant
        self.today = today
        self.today_text = display.day(today, tenant)
        # Hundreds of rows repeat the same few amounts and dates: format each once, and
        # build URLs from their prefix (reverse() per row costs more than the row).
        self._money: dict[tuple[Decimal, str], str] = {}
        self._days: dict[date | None, str] = {}
        self._pay_prefix = reverse("payments:pay", args=[tenant.slug, "TOKEN"]).removesuffix(
            "TOKEN"
        )
        self._receipt_prefix = reverse("payments:payment", args=[tenant.slug, "ID"]).removesuffix(
            "ID"
        )
        sent = Invoice.objects.filter(
            tenant=tenant, customer=customer, deleted_in_halo=False
        ).exclude(source=Invoice.Source.PORTAL, posted=False)  # drafts are not issued yet
        shown = sent
        if not every_invoice:
            recent = Q(invoice_date__gte=today - RECENT) | Q(invoice_date=None)
            shown = sent.unpaid() | sent.filter(recent)  # one WHERE, OR-ed: no subquery
        invoices = [
            ListedInvoice(tenant, values)
            for values in shown.annotate(
                pay_token=F("pay_page__token"),
                credits_number=F("portal__credit_note_of__number"),
                credited_by_number=F("portal__credit_note__number"),
            )
            .order_by("-invoice_date", "-pk")
            .values_list(*ListedInvoice.__slots__[1:])
        ]
        self._pay_pages(invoices)
        balances = self._balances(invoices)
        self.invoices = [self._row(invoice, balances.get(invoice.pk)) for invoice in invoices]
        self.open = [row for row in self.invoices if row.due_amount > 0]
        self.credit_notes = [row for row in self.invoices if row.kind == "credit"]
        self.totals = self._totals()
        self.payments = self._payments()
        self.refunded = [p for p in self.payments if p["refunded"]]
        self._cards()
        self.older = 0 if every_invoice else sent.count() - len(invoices)

    # -- reading ------------------------------------------------------------------------------
    def _pay_pages(self, invoices):
        """Every invoice's pay-page token (its page is made the first time it is listed)."""
        missing = {invoice.pk: invoice for invoice in invoices if invoice.pay_token is None}
        if missing:
            models = Invoice.objects.filter(pk__in=missing).only("tenant", "customer")
            for invoice_id, page in PayPage.objects.for_invoices(models).items():
                missing[invoice_id].pay_token = page.token

    def _balances(self, invoices):
        """What each open invoice still owes (closed ones owe nothing): its `Balance`, for
        the few with a payment in flight or not yet recorded (one query finds them, one more
        reads them as models for `Balance`); an open invoice without any owes its amount
        due, which is what `Balance` answers for it."""
        open_ = {invoice.pk: invoice for invoice in invoices if invoice.is_open}
        balances: dict[int, Balance | Settled] = {
            pk: Settled(invoice.amount_due) for pk, invoice in open_.items()
        }
        if not open_:
            return balances
        # What `Balance` counts: payments in flight or not yet recorded, and the same of the
        # invoice's shares in payments for several invoices.
        live = [*Payment.IN_FLIGHT, Payment.Status.SUCCEEDED]
        payments = Payment.objects.filter(invoice__in=open_).filter(
            Q(status__in=Payment.IN_FLIGHT) | Q(status=Payment.Status.SUCCEEDED, recorded=None)
        )
        shares = PaymentAllocation.objects.filter(
            invoice__in=open_, payment__status__in=live, recorded=None
        )
        busy = set(
            payments.order_by()
            .values_list("invoice_id", flat=True)
            .union(shares.order_by().values_list("invoice_id", flat=True))
        )
        if busy:
            for invoice in Invoice.objects.filter(pk__in=busy).only(*INVOICE_FIELDS).order_by():
                invoice.tenant = self.tenant
                balances[invoice.pk] = Balance(invoice)
        return balances

    def _payments(self):
        """Payments received in the last `PAYMENTS_SHOWN`; and, read with them, the newest
        auto-pay charge (`self._last_autopay`), which the saved card's section reports when
        it failed."""
        since = datetime.combine(self.today - PAYMENTS_SHOWN, time(), tzinfo=self.tenant.tz)
        shares = PaymentAllocation.objects.all()
        received = [Payment.Status.SUCCEEDED, Payment.Status.REFUNDED]
        found = (
            Payment.objects.filter(tenant=self.tenant)
            .filter(
                Q(status__in=received) | Q(status=Payment.Status.FAILED, kind=Payment.Kind.AUTOPAY)
            )
            # One invoice's payments, and payments for several of the customer's invoices.
            .filter(
                Q(invoice__customer=self.customer)
                | Q(pk__in=shares.filter(invoice__customer=self.customer).values("payment_id"))
            )
            .filter(Q(succeeded_at__gte=since) | Q(succeeded_at=None, created__gte=since))
            .order_by("-succeeded_at", "-created")
            .values(*PAYMENT_FIELDS)  # shown, not acted on: no models to build
        )
        tz = self.tenant.tz
        rows, automatic = [], []
        for p in found:
            if p["kind"] == Payment.Kind.AUTOPAY:
                automatic.append(p)
            if p["status"] not in received:
                continue
            rows.append(
                {
                    "when": self.day(timezone.localdate(p["succeeded_at"] or p["created"], tz)),
                    "invoice": p["invoice_ref"],
                    "amount": self.money(p["amount"], p["currency"]),
                    "card": f"{p['card_brand']} •••• {p['card_last4']}" if p["card_last4"] else "",
                    "refunded": self.money(p["refunded_amount"], p["currency"])
                    if p["refunded_amount"]
                    else "",
                    "automatic": p["kind"] == Payment.Kind.AUTOPAY,
                    "receipt_url": self._receipt_prefix + p["public_id"],
                }
            )
        self._last_autopay = max(automatic, key=lambda p: p["created"], default=None)
        return rows

    def _cards(self):
        methods = list(
            SavedPaymentMethod.objects.filter(tenant=self.tenant, customer=self.customer).order_by(
                "-active", "-consented_at"
            )[:2]
        )
        self.card = methods[0] if methods and methods[0].active else None
        self.last_revoked = next((m for m in methods if not m.active and m.revoked), None)
        self.autopay_failed = None
        if self.card is not None:
            self.card_consented = display.moment(self.card.consented_at, self.tenant)
            last = self._last_autopay
            # The newest auto-pay charge failed, and on this card (not one since replaced).
            if last and last["status"] == Payment.Status.FAILED:
                if last["created"] >= self.card.consented_at:
                    self.autopay_failed = {
                        "when": display.moment(last["created"], self.tenant),
                        "invoice": last["invoice_ref"],
                        "amount": self.money(last["amount"], last["currency"]),
                        "reason": last["failure_message"] or "The card was declined.",
                    }
        if self.last_revoked is not None:
            self.revoked_on = display.moment(self.last_revoked.revoked, self.tenant)
        self.has_autopay = self.card is not None or any(
            row.invoice.autopay_rule_id for row in self.invoices
        )

    # -- shaping ------------------------------------------------------------------------------
    def _row(self, invoice, balance):
        due = balance.due if balance is not None else Decimal(0)
        note = ""
        if invoice.credits_number is not None or invoice.total < 0:
            kind, status = "credit", "Credit note"
            if invoice.credits_number is not None:
                note = f"Credits invoice {invoice.credits_number}"
        elif invoice.voided:
            kind, status = "voided", "Voided"
            if invoice.credited_by_number is not None:
                note = f"Cancelled by credit note {invoice.credited_by_number}"
        elif not invoice.is_open:
            kind, status = "paid", "Paid"
        elif invoice.due_date and invoice.due_date < self.today:
            kind, status = "overdue", "Overdue"
        else:
            kind = "open"
            status = "Open"
            if invoice.amount_paid:
                status = PAYMENT_STATUS.get(invoice.payment_status, status)
        if kind in ("open", "overdue") and due <= 0:
            kind, status = "paid", "Paid, being recorded"
        return InvoiceRow(
            invoice=invoice,
            number=invoice.display_number(),
            kind=kind,
            status=status,
            invoice_date=self.day(invoice.invoice_date),
            due_date=self.day(invoice.due_date),
            total=self.money(invoice.total, invoice.currency),
            due=self.money(due, invoice.currency),
            due_amount=due,
            pay_url=self._pay_prefix + invoice.pay_token,
            pdf_url=self._pay_prefix + invoice.pay_token + "/pdf",
            note=note,
            in_flight=balance is not None and balance.in_flight is not None,
        )

    def _totals(self):
        by_currency = {}
        for row in self.open:
            invoice = row.invoice
            currency = invoice.currency or self.tenant.currency
            totals = by_currency.setdefault(currency, CurrencyTotals(currency))
            totals.balance += row.due_amount
            overdue_days = (self.today - invoice.due_date).days if invoice.due_date else 0
            totals.buckets[bucket_of(overdue_days)] += row.due_amount
            if overdue_days > 0:
                totals.overdue += row.due_amount
        if not by_currency:
            by_currency[self.tenant.currency] = CurrencyTotals(self.tenant.currency)
        tenant = self.tenant
        return [
            {
                "currency": totals.currency,
                "balance": display.money(totals.balance, totals.currency, tenant),
                "balance_amount": totals.balance,
                "overdue": display.money(totals.overdue, totals.currency, tenant),
                "overdue_amount": totals.overdue,
                "buckets": [
                    {"label": label, "amount": display.money(amount, totals.currency, tenant)}
                    for (label, _first, _last), amount in zip(BUCKETS, totals.buckets, strict=True)
                ],
            }
            for totals in sorted(by_currency.values(), key=lambda t: t.currency)
        ]

    def money(self, amount, currency):
        key = (amount, currency)
        if key not in self._money:
            self._money[key] = display.money(amount, currency, self.tenant)
        return self._money[key]

    def day(self, value):
        if value not in self._days:
            self._days[value] = display.day(value, self.tenant)
        return self._days[value]

    # -- links --------------------------------------------------------------------------------
    def pay_several_url(self, token):
        """The checkout for several invoices at once (`payments:pay_several`), when it exists
        and more than one invoice is open."""
        if len([row for row in self.open if not row.in_flight]) < 2:
            return ""
        try:
            return reverse("payments:pay_several", args=[self.tenant.slug, token])
        except NoReverseMatch:
            return ""
