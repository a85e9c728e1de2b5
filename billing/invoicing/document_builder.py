"""Any invoice, from Halo or the portal, as the renderer's `InvoiceDocument`.

Both sources map the same way, so every invoice gets the same telecom layout. `document_key`
hashes the normalised data a document is built from: the version key of stored PDFs (same
data, same PDF). It is computed on every request for a PDF, so it reads the lines as plain
rows and never builds the 2,500 line objects of a long invoice just to find its version.

`source_fingerprint` is the cheap check in front of that: a hash of the very rows a document
is built from, read with SQL built once per process.
"""

import dataclasses
import enum
import functools
import hashlib
import json
import logging
from datetime import date
from decimal import Decimal

from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone

from billing import pdf
from billing.models import Invoice, InvoiceLine

log = logging.getLogger(__name__)

# Everything `build_document` reads besides the lines: one query for the API's hot path.
RELATED = [
    "tenant__invoicing_settings",
    "tenant__invoice_sync_settings",
    "customer",
    "portal__organisation",
    "portal__credit_note_of",
    "portal__credit_note",
]
# What a document reads of each `billing.InvoiceLine` (see `document_line`).
LINE_FIELDS = (
    "code",
    "description",
    "long_description",
    "quantity",
    "unit_price",
    "tax_rate",
    "start_date",
    "end_date",
)
DEFAULT_INSTRUCTIONS = "Please quote invoice {number} with your payment."
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


def line_rows(invoice):
    """The invoice's lines as named rows of `LINE_FIELDS`, in order."""
    return list(invoice.lines.order_by("position", "pk").values_list(*LINE_FIELDS, named=True))


def document_line(line):
    """A `billing.InvoiceLine` (saved or not) or a `line_rows` row as a document line.

    Halo lines carry no category, so both sources derive it the same way: a line that
    takes money off is a credit, one billed for a service period is a recurring service,
    anything else is a one-off charge.
    """
    quantity, unit_price = Decimal(line.quantity), Decimal(line.unit_price)
    period = None
    if line.start_date and line.end_date and line.end_date >= line.start_date:
        period = pdf.Period(line.start_date, line.end_date)
    if quantity * unit_price < 0:
        category = pdf.Category.CREDIT
    else:
        category = pdf.Category.RECURRING if period else pdf.Category.ONE_OFF
    name = line.description or line.code or "Charge"
    return pdf.InvoiceLine(
        description=" – ".join(filter(None, [name, line.long_description.strip()])),
        product_name=name,
        sku=line.code,
        category=category,
        quantity=quantity,
        unit_price=unit_price,
        tax_rate=Decimal(line.tax_rate),
        period=period,
    )


@dataclasses.dataclass(frozen=True)
class Figures:
    """An invoice's lines and totals as every customer-facing view shows them (its PDF, pay
    page and receipt), so they always agree: each line net of tax, priced as the PDF prices
    it, and the tax and total of those lines. An invoice without lines keeps its stored
    totals (the pay page then points to the PDF for the details)."""

    lines: tuple[tuple[InvoiceLine, pdf.InvoiceLine], ...]  # (stored line, as printed)
    net: Decimal
    tax: Decimal
    total: Decimal
    tax_label: str


def figures(invoice, invoicing):
    """The `Figures` of `invoice`, with the tenant's `invoicing` settings (its tax label)."""
    stored = list(invoice.lines.order_by("position", "pk"))
    lines = tuple((line, document_line(line)) for line in stored)
    label = invoicing.tax_label or "Tax"
    if not lines:
        tax = Decimal(invoice.tax_total)
        return Figures((), Decimal(invoice.total) - tax, tax, Decimal(invoice.total), label)
    # The sums `pdf.InvoiceDocument` prints (net_total, tax_total, total_due).
    net = sum((printed.net for _, printed in lines), Decimal(0))
    tax = sum((printed.tax for _, printed in lines), Decimal(0))
    return Figures(lines, net, tax, net + tax, label)


def invoice_number(invoice):
    """The number printed on the PDF: the portal's own for portal invoices (whatever Halo
    numbers them once exported), else the tenant's choice of Halo number."""
    details = getattr(invoice, "portal", None)
    if details is not None:
        return details.number or "Draft"
    return invoice.display_number() or f"#{invoice.pk}"


def build_document(invoice, invoicing, rows):
    """The document for `invoice` and its `line_rows`, with the tenant's `invoicing` settings.

    Reads the invoice's related rows (select `RELATED` to read them in one query); raises
    ValueError for data the renderer cannot print (a bad currency code...).
    """
    tenant = invoice.tenant
    details = getattr(invoice, "portal", None)
    number = invoice_number(invoice)
    lines = tuple(document_line(row) for row in rows)
    issued_on = invoice.invoice_date or _fallback_date(invoice, details)
    if details is not None:
        period = pdf.Period(details.period_start, details.period_end)
    else:
        period = _period_of(lines) or pdf.Period(issued_on, issued_on)
    pay_link = None
    if invoicing.pay_link_in_pdf and invoice.amount_due > 0 and not invoice.voided:
        pay_link = invoice.pay_link_url or None
    return pdf.InvoiceDocument(
        branding=branding(tenant),
        customer=_customer(invoice, details),
        invoice_number=number,
        invoice_date=issued_on,
        due_date=invoice.due_date or invoicing.due_date(issued_on),
        billing_period=period,
        currency=invoice.currency or tenant.currency,
        locale=tenant.locale,
        lines=lines,
        payment=pdf.Payment(
            instructions=invoicing.payment_instructions.strip()
            or DEFAULT_INSTRUCTIONS.format(number=number),
            pay_link=pay_link,
        ),
        amount_paid=pdf.round_money(Decimal(invoice.amount_paid)),
        tax_label=invoicing.tax_label or "Tax",
        version_label=details.version_label if details is not None else _halo_label(invoice),
    )


def branding(tenant):
    return pdf.Branding(
        display_name=tenant.brand_name,
        accent_colour=tenant.accent_colour,
        logo=_logo(tenant.logo.name) if tenant.logo else None,
        address_lines=tuple(tenant.address_lines()),
        support_email=tenant.support_email or None,
        support_phone=tenant.support_phone or None,
    )


def document_key(invoice, invoicing, rows):
    """SHA-256 of the normalised data of `build_document(invoice, invoicing, rows)`: the
    document without its lines, plus the line rows. The document is a function of both, so
    equal keys mean equal PDFs; Decimal exponents (42 and 42.0000) and the logo's identity
    (hashed by content) do not change the key."""
    data = [
        _plain(build_document(invoice, invoicing, ())),
        # Rows take the fast path: thousands of them are hashed on every request.
        [[v.normalize() if isinstance(v, Decimal) else v for v in row] for row in rows],
    ]
    canonical = json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def source_fingerprint(invoice_id):
    """SHA-256 of every row `build_document` and `line_rows` read for the invoice (all
    columns of the invoice, of its `RELATED` rows and its lines), or None when there is no
    such invoice. Any change to any of them changes it. Costs two plain queries: no ORM
    query building, which is most of the cost of reading the same rows as models."""
    invoice_sql, lines_sql = _fingerprint_sql()
    with connection.cursor() as cursor:
        cursor.execute(invoice_sql, [invoice_id])
        rows = cursor.fetchall()
        if not rows:
            return None
        cursor.execute(lines_sql, [invoice_id])
        lines = cursor.fetchall()
    return hashlib.sha256(repr((rows, lines)).encode()).hexdigest()


@functools.cache
def _fingerprint_sql():
    """The two queries of `source_fingerprint`: the invoice LEFT JOINed along each `RELATED`
    path (derived from the models, so they cannot drift apart), and its lines."""
    qn = connection.ops.quote_name
    aliases, joins = {"": ("t0", Invoice)}, []
    for path in RELATED:
        names = path.split("__")
        for depth in range(1, len(names) + 1):
            prefix = "__".join(names[:depth])
            if prefix in aliases:
                continue
            parent, model = aliases["__".join(names[: depth - 1])]
            field = model._meta.get_field(names[depth - 1])
            alias = f"t{len(aliases)}"
            if field.concrete:  # a foreign key or one-to-one on the parent
                on = f"{alias}.{qn(field.target_field.column)} = {parent}.{qn(field.column)}"
            else:  # a reverse one-to-one: the key is on the related row
                forward = field.field
                on = f"{alias}.{qn(forward.column)} = {parent}.{qn(forward.target_field.column)}"
            table = qn(field.related_model._meta.db_table)
            joins.append(f"LEFT JOIN {table} {alias} ON {on}")
            aliases[prefix] = (alias, field.related_model)
    # Only quoted names from the models' own metadata go into the text; values are parameters.
    columns = ", ".join(f"{alias}.*" for alias, _ in aliases.values())
    invoice_sql = (
        f"SELECT {columns} FROM {qn(Invoice._meta.db_table)} t0 {' '.join(joins)} "  # noqa: S608
        f"WHERE t0.{qn(Invoice._meta.pk.column)} = %s"
    )
    line = InvoiceLine._meta
    line_columns = ", ".join(qn(line.get_field(name).column) for name in LINE_FIELDS)
    order = ", ".join(qn(line.get_field(name).column) for name in ("position", "id"))
    lines_sql = (
        f"SELECT {line_columns} FROM {qn(line.db_table)} "  # noqa: S608
        f"WHERE {qn(line.get_field('invoice').column)} = %s ORDER BY {order}"
    )
    return invoice_sql, lines_sql


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


@functools.lru_cache(maxsize=64)
def _logo(name):
    """A stored logo's bytes, read once per process (uploads never overwrite a name).
    None for a missing file or a format the renderer cannot embed."""
    try:
        with default_storage.open(name) as file:
            data = file.read()
    except OSError:
        log.warning("Tenant logo %s is missing: invoices are rendered without it", name)
        return None
    if not data.startswith(_IMAGE_MAGIC):
        log.warning("Tenant logo %s is not PNG or JPEG: invoices are rendered without it", name)
        return None
    return data


def _customer(invoice, details):
    customer = invoice.customer
    contact = (
        tuple(filter(None, [customer.billing_contact, customer.billing_email])) if customer else ()
    )
    if details is not None:
        organisation = details.organisation
        return pdf.Customer(organisation.name, organisation.external_ref, contact)
    if customer is not None:
        return pdf.Customer(customer.name, customer.account_ref, contact)
    return pdf.Customer("Customer", "")


def _fallback_date(invoice, details):
    """An invoice date for invoices without one: today for a draft, else when created."""
    if details is not None and details.is_draft:
        return timezone.localdate(timezone=invoice.tenant.tz)
    return (invoice.halo_created or invoice.created).date()


def _period_of(lines):
    periods = [line.period for line in lines if line.period]
    if not periods:
        return None
    return pdf.Period(min(p.start for p in periods), max(p.end for p in periods))


def _halo_label(invoice):
    # The renderer asks for payment of any balance: a void invoice must say not to pay.
    return "Void – do not pay" if invoice.voided else None
