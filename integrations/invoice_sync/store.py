"""Halo records into billing rows: one writer for syncs and webhooks alike.

Rules every path shares: rows are keyed by (tenant, Halo id) and upserted in bulk; a record
older than the stored copy (by Halo's `last_modified`) is skipped, so a late webhook never
undoes newer data; a new invoice dated before the created-since cut-off is not pulled (ones
already held keep updating, never left stale); lines are replaced when a record has them;
an invoice the portal issued itself and exported to Halo only takes its payment state back.
"""

import logging
from collections import Counter, defaultdict
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.utils import timezone

from billing.models import AutoPayRule, Contract, Customer, Invoice, InvoiceLine
from integrations.halo import HaloNotFound
from integrations.halo.records import linked_item_id
from integrations.invoice_sync.models import InvoiceSyncSettings

log = logging.getLogger(__name__)

CENT = Decimal("0.01")
TEN_THOUSANDTH = Decimal("0.0001")

CUSTOMER_FIELDS = [
    "name",
    "account_ref",
    "billing_email",
    "billing_first_name",
    "billing_last_name",
    "inactive",
    "custom_fields",
    "halo_last_modified",
    "synced",
]
#: What Halo may change on an invoice the portal issued (and exported to Halo).
PAYMENT_FIELDS = [
    "amount_paid",
    "amount_due",
    "payment_status",
    "date_paid",
    "voided",
    "deleted_in_halo",
    "pay_link_url",
    "halo_last_modified",
    "synced",
]
#: What a sync writes of each invoice line (compared to tell a changed invoice).
LINE_FIELDS = [
    "position",
    "halo_id",
    "item_halo_id",
    "code",
    "description",
    "long_description",
    "quantity",
    "unit_price",
    "net_amount",
    "tax_rate",
    "tax_amount",
    "total",
    "start_date",
    "end_date",
]
CONTRACT_FIELDS = ["client_halo_id", "ref", "subtype_id", "subtype_name", "active"]
INVOICE_FIELDS = [
    "customer",
    "invoice_number",
    "third_party_number",
    "reference",
    "invoice_date",
    "due_date",
    "date_paid",
    "halo_created",
    "halo_last_modified",
    "currency",
    "total",
    "tax_total",
    "amount_paid",
    "amount_due",
    "payment_status",
    "posted",
    "voided",
    "deleted_in_halo",
    "contract_halo_id",
    "contract_subtype_id",
    "contract_subtype_name",
    "autopay_rule",
    "pay_link_url",
    "synced",
]


def halo_datetime(value):
    """Halo's zone-less ISO text (UTC) as an aware datetime; None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def halo_date(value):
    parsed = halo_datetime(value)
    return parsed.date() if parsed else None


def to_halo(moment):
    """An aware datetime as Halo writes them (UTC, no zone), for query parameters."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat()


def last_modified(record):
    return halo_datetime(record.get("last_modified"))


def _decimal(value, places=CENT):
    try:
        return Decimal(str(0 if value is None else value)).quantize(places)
    except (InvalidOperation, ValueError):
        return Decimal(0).quantize(places)


def _int(value):
    """A Halo id; None for absent, unreadable or 0 (Halo's "none")."""
    try:
        return int(value) or None
    except (TypeError, ValueError):
        return None


def _text(value, length):
    return "" if value is None else str(value)[:length]


def _by_id(records):
    """Records with an id (as an int), one per id (the last wins)."""
    by_id = {_int(r.get("id")): r for r in records}
    by_id.pop(None, None)
    return [record | {"id": halo_id} for halo_id, record in by_id.items()]


def _older(record, stored_modified):
    modified = last_modified(record)
    return bool(modified and stored_modified and modified < stored_modified)


def customer_fields(record):
    return {
        "name": _text(record.get("name") or f"Client {record['id']}", 255),
        # The number the customer's accounts know them by (never Halo's internal id).
        "account_ref": _text(
            str(record.get("accountsid") or "").strip() or str(record.get("ref") or "").strip(),
            100,
        ),
        "billing_email": _text(record.get("accountsemailaddress"), 254),
        "billing_first_name": _text(record.get("accountsfirstname"), 100),
        "billing_last_name": _text(record.get("accountslastname"), 100),
        "inactive": bool(record.get("inactive")),
        "custom_fields": record.get("customfields") or [],
        "halo_last_modified": last_modified(record),
    }


def payment_status(record, paid, due):
    """Halo's `paymentstatus`, or when it is missing or unknown, what the amounts say."""
    try:
        return Invoice.HALO_PAYMENT_STATUS[int(record.get("paymentstatus"))]
    except (KeyError, TypeError, ValueError):
        if due <= 0:
            return Invoice.PaymentStatus.PAID
        return Invoice.PaymentStatus.PARTLY_PAID if paid > 0 else Invoice.PaymentStatus.UNPAID


def invoice_fields(record, currency):
    total, paid = _decimal(record.get("total")), _decimal(record.get("amountpaid"))
    due = _decimal(record["amountdue"]) if record.get("amountdue") is not None else total - paid
    return {
        "invoice_number": _text(record.get("invoicenumber"), 64),
        "third_party_number": _text(record.get("thirdpartyinvoicenumber"), 64),
        "reference": _text(record.get("reference"), 255),
        "invoice_date": halo_date(record.get("invoice_date")),
        "due_date": halo_date(record.get("duedate")),
        "date_paid": halo_datetime(record.get("datepaid")),
        "halo_created": halo_datetime(record.get("date_created")),
        "halo_last_modified": last_modified(record),
        "currency": currency,
        "total": total,
        "tax_total": _decimal(record.get("tax_total")),
        "amount_paid": paid,
        "amount_due": due,
        "payment_status": payment_status(record, paid, due),
        "posted": bool(record.get("posted")),
        "voided": bool(record.get("voided")),
        "deleted_in_halo": False,
        "contract_halo_id": _int(record.get("contract_id")),
        "pay_link_url": _text(record.get("generic_online_invoice_payment_url"), 500),
    }


def line_rows(invoice_id, lines):
    return [
        InvoiceLine(
            invoice_id=invoice_id,
            position=position,
            halo_id=_int(line.get("id")),
            item_halo_id=linked_item_id(line),
            code=_text(line.get("item_code"), 100),
            description=_text(line.get("item_shortdescription"), 500),
            long_description=_text(line.get("item_longdescription"), 10_000),
            quantity=_decimal(line.get("qty_order"), TEN_THOUSANDTH),
            unit_price=_decimal(line.get("unit_price"), TEN_THOUSANDTH),
            net_amount=_decimal(line.get("net_amount")),
            tax_rate=_decimal(line.get("tax_rate"), TEN_THOUSANDTH),
            tax_amount=_decimal(line.get("tax_amount")),
            total=_decimal(line.get("total_price")),
            start_date=halo_date(line.get("startdate")),
            end_date=halo_date(line.get("enddate")),
        )
        for position, line in enumerate(lines or [])
        if isinstance(line, dict)
    ]


class Writer:
    """Writes one tenant's Halo records; `counts` add up what it did (InvoiceSyncRun field names).

    `client` (a HaloClient, optional) lets it read contracts it has not seen yet.
    """

    def __init__(self, tenant, client=None):
        self.tenant = tenant
        self.client = client
        self.cutoff = InvoiceSyncSettings.for_tenant(tenant).cutoff
        self.rules = AutoPayRule.enabled_by_subtype(tenant)
        self.counts = Counter()
        #: Invoices read again and stored as they were (not in `counts`: no run field).
        self.unchanged = 0
        self._missing_contracts = set()

    @transaction.atomic
    def customers(self, records):
        records = _by_id(records)
        held = dict(
            Customer.objects.select_for_update()
            .filter(tenant=self.tenant, halo_id__in=[r["id"] for r in records])
            .values_list("halo_id", "halo_last_modified")
        )
        now = timezone.now()
        rows = [
            Customer(tenant=self.tenant, halo_id=r["id"], synced=now, **customer_fields(r))
            for r in records
            if not _older(r, held.get(r["id"]))
        ]
        Customer.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["tenant", "halo_id"],
            update_fields=CUSTOMER_FIELDS,
        )
        self.counts["customers_saved"] += len(rows)

    @transaction.atomic
    def contracts(self, records):
        """Store contracts; invoices under one whose subtype changed are re-flagged."""
        records = _by_id(records)
        before = {
            halo_id: subtype
            for halo_id, *subtype in Contract.objects.filter(
                tenant=self.tenant, halo_id__in=[r["id"] for r in records]
            ).values_list("halo_id", "subtype_id", "subtype_name")
        }
        rows = [
            Contract(
                tenant=self.tenant,
                halo_id=r["id"],
                client_halo_id=_int(r.get("client_id")),
                ref=_text(r.get("ref"), 100),
                subtype_id=_int(r.get("subtype")),
                subtype_name=_text(r.get("subtype_name"), 100),
                active=r.get("active") is not False,
            )
            for r in records
        ]
        Contract.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["tenant", "halo_id"],
            update_fields=CONTRACT_FIELDS,
        )
        for row in rows:
            if row.halo_id in before and before[row.halo_id] != [row.subtype_id, row.subtype_name]:
                Invoice.objects.filter(tenant=self.tenant, contract_halo_id=row.halo_id).update(
                    contract_subtype_id=row.subtype_id,
                    contract_subtype_name=row.subtype_name,
                    autopay_rule=self.rules.get(row.subtype_id),
                )
        self.counts["contracts_saved"] += len(rows)

    def prepare(self, records):
        """Read from Halo the contracts these invoices name that the portal has not seen
        (network calls: keep them outside the transaction storing the records)."""
        wanted = {_int(r.get("contract_id")) for r in records} - {None} - self._missing_contracts
        if self.client is not None and any(r.get("currency_code") is not None for r in records):
            self.client.currencies()  # Halo's currency ids, read (or cached) before storing
        if not wanted or self.client is None:
            return
        known = Contract.objects.filter(tenant=self.tenant, halo_id__in=wanted)
        fetched = []
        for contract_id in sorted(wanted - set(known.values_list("halo_id", flat=True))):
            try:
                fetched.append(self.client.get_contract(contract_id))
            except HaloNotFound:
                self._missing_contracts.add(contract_id)
        if fetched:
            self.contracts(fetched)

    @transaction.atomic
    def invoices(self, records):
        """Upsert Halo's invoices. An invoice the portal issued and exported to Halo
        (`source=portal`) keeps its content: only its payment state comes back from Halo."""
        records = _by_id(records)
        held = {
            halo_id: (pk, modified, source)
            for halo_id, pk, modified, source in Invoice.objects.select_for_update()
            .filter(tenant=self.tenant, halo_id__in=[r["id"] for r in records])
            .values_list("halo_id", "pk", "halo_last_modified", "source")
        }
        fresh = [r for r in records if not self._skip_invoice(r, held)]
        self.counts["invoices_skipped"] += len(records) - len(fresh)
        if not fresh:
            return
        issued_by_portal = {
            i for i, (_, _, source) in held.items() if source != Invoice.Source.HALO
        }
        mirrored, issued = [], []
        for row, record in zip(self._invoice_rows(fresh), fresh, strict=True):
            if row.halo_id in issued_by_portal:
                row.pk = held[row.halo_id][0]
                issued.append(row)
            else:
                mirrored.append((row, record))
        # Before writing: what differs from the stored copy (a re-read changes nothing).
        changed = self._changed(issued, PAYMENT_FIELDS, held) | self._changed(
            [row for row, _ in mirrored], INVOICE_FIELDS, held, {r.halo_id: h for r, h in mirrored}
        )
        Invoice.objects.bulk_update(issued, PAYMENT_FIELDS)
        Invoice.objects.bulk_create(
            [row for row, _ in mirrored],
            update_conflicts=True,
            unique_fields=["tenant", "halo_id"],
            update_fields=INVOICE_FIELDS,
        )
        self._replace_lines(mirrored)
        created = sum(r["id"] not in held for r in fresh)
        self.counts["invoices_created"] += created
        self.counts["invoices_updated"] += len(changed)
        self.unchanged += len(fresh) - created - len(changed)

    def _changed(self, rows, fields, held, records=None):
        """Halo ids of the stored invoices among `rows` whose `fields` (but `synced`), or
        whose lines when their Halo record (`records[halo id]`) has lines, differ from
        `rows`."""
        names = [Invoice._meta.get_field(name).attname for name in fields if name != "synced"]
        stored = {
            halo_id: tuple(values)
            for halo_id, *values in Invoice.objects.filter(
                tenant=self.tenant, halo_id__in=[row.halo_id for row in rows if row.halo_id in held]
            ).values_list("halo_id", *names)
        }
        changed = {
            row.halo_id
            for row in rows
            if row.halo_id in stored
            and stored[row.halo_id] != tuple(getattr(row, name) for name in names)
        }
        lines = {
            held[row.halo_id][0]: (row.halo_id, records[row.halo_id]["lines"])
            for row in rows
            if records and row.halo_id in stored and row.halo_id not in changed
            and "lines" in records[row.halo_id]
        }  # fmt: skip
        if lines:
            before = defaultdict(list)
            for invoice_id, *values in (
                InvoiceLine.objects.filter(invoice_id__in=lines)
                .order_by("invoice_id", "position", "pk")
                .values_list("invoice_id", *LINE_FIELDS)
            ):
                before[invoice_id].append(tuple(values))
            for invoice_id, (halo_id, halo_lines) in lines.items():
                after = [
                    tuple(getattr(line, name) for name in LINE_FIELDS)
                    for line in line_rows(invoice_id, halo_lines)
                ]
                if after != before[invoice_id]:
                    changed.add(halo_id)
        return changed

    def _invoice_rows(self, records):
        customers = self._customer_ids(records)
        contracts = {
            halo_id: (subtype_id, name)
            for halo_id, subtype_id, name in Contract.objects.filter(
                tenant=self.tenant, halo_id__in={_int(r.get("contract_id")) for r in records}
            ).values_list("halo_id", "subtype_id", "subtype_name")
        }
        now = timezone.now()
        rows = []
        for record in records:
            fields = invoice_fields(record, self._currency(record))
            subtype_id, subtype_name = contracts.get(fields["contract_halo_id"], (None, ""))
            rows.append(
                Invoice(
                    tenant=self.tenant,
                    source=Invoice.Source.HALO,
                    halo_id=record["id"],
                    customer_id=customers.get(_int(record.get("client_id"))),
                    contract_subtype_id=subtype_id,
                    contract_subtype_name=subtype_name,
                    autopay_rule=self.rules.get(subtype_id),
                    synced=now,
                    **fields,
                )
            )
        return rows

    def _currency(self, record):
        """The ISO code of a Halo invoice's currency: Halo sends the id of one of its
        currencies (`currency_code`), or nothing for the base currency."""
        currency_id = record.get("currency_code")
        if currency_id is None:
            return self.tenant.currency
        code = self.client.currency_code(currency_id) if self.client else None
        if not code or len(code) != 3:
            log.warning(
                "Halo invoice %s of %s names currency %r, which Halo's /Currency does not "
                "list with an ISO code; stored in the tenant's currency %s",
                record.get("id"), self.tenant.slug, currency_id, self.tenant.currency,
            )  # fmt: skip
            return self.tenant.currency
        return code

    def mark_deleted(self, halo_ids):
        marked = Invoice.objects.filter(tenant=self.tenant, halo_id__in=halo_ids).update(
            deleted_in_halo=True, synced=timezone.now()
        )
        self.counts["invoices_deleted"] += marked

    def _skip_invoice(self, record, held):
        if record["id"] in held:
            return _older(record, held[record["id"]][1])
        dated = halo_date(record.get("invoice_date") or record.get("date_created"))
        return bool(self.cutoff and dated and dated < self.cutoff)

    def _customer_ids(self, records):
        """Halo client id -> Customer pk; a client not synced yet gets a row named as the
        invoice names it, which the next client sync completes."""
        names = {_int(r.get("client_id")): r.get("client_name") for r in records}
        names.pop(None, None)
        customers = Customer.objects.filter(tenant=self.tenant, halo_id__in=names)
        ids = dict(customers.values_list("halo_id", "pk"))
        missing = [
            Customer(
                tenant=self.tenant,
                halo_id=halo_id,
                name=_text(names[halo_id] or f"Client {halo_id}", 255),
            )
            for halo_id in names.keys() - ids.keys()
        ]
        if missing:
            Customer.objects.bulk_create(missing, ignore_conflicts=True)
            ids = dict(customers.values_list("halo_id", "pk"))
        return ids

    def _replace_lines(self, rows_and_records):
        with_lines = [(row, r["lines"]) for row, r in rows_and_records if "lines" in r]
        if not with_lines:
            return
        InvoiceLine.objects.filter(invoice_id__in=[row.pk for row, _ in with_lines]).delete()
        InvoiceLine.objects.bulk_create(
            [line for row, lines in with_lines for line in line_rows(row.pk, lines)]
        )
