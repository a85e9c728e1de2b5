"""Which PDF an invoice gets: `resolve_pdf`, the one resolver the API, pay pages, the admin
and export all use.

Two sources:

* "portal": the telecom layout rendered from the invoice's current data (portal invoices,
  and Halo invoices from their synced data). Rendered once per version of the data
  (`document_builder.document_key`), stored, and served byte for byte after that.
* "halo": the PDF attached to the invoice in Halo (`pdf_attachment_id`, else its newest PDF
  attachment), fetched through the Halo client and cached as a version; Halo is asked
  again after `INVOICE_PDF_HALO_TTL` seconds, within `INVOICE_PDF_HALO_BUDGET` seconds in
  all (capped by `HALO_WEB_BUDGET_SECONDS`: a customer's page waits on it).

The preferred source goes first. When it cannot give a PDF (a rendering error, Halo
unreachable or holding none) the other is used, the answer says why (`fallback_reason`),
and so does the served log in the admin.

`serve_pdf` puts a shortcut in front of the resolver for the PDF API, which Halo may call
often: the portal PDF last served for an invoice is remembered in the cache under the
fingerprint of the rows it was made from (`document_builder.source_fingerprint`) and of the code
that made it. While those rows are unchanged it is served without building anything.
"""

import functools
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.core.cache import cache

from billing import pdf
from billing.invoicing import document_builder
from billing.invoicing.document_builder import (
    RELATED,
    build_document,
    document_key,
    invoice_number,
    line_rows,
    source_fingerprint,
)
from billing.invoicing.models import InvoicingSettings, PdfServed, PdfVersion
from billing.models import Invoice
from billing.pdf import render_invoice_pdf
from integrations.halo import HaloClient, HaloError, web_budget
from integrations.models import HaloConnection
from portal import formats

log = logging.getLogger(__name__)

# Plain text, not the TextChoices members: they end up in HTTP headers, where WSGI servers
# accept only `str` itself (wsgiref's validator answered every repeat PDF request 500).
PORTAL, HALO = PdfVersion.Source.PORTAL.value, PdfVersion.Source.HALO.value
HALO_INVOICE_ATTACHMENT = 3  # Halo's attachment owner type for invoices


class PdfUnavailable(Exception):
    """No source could produce the invoice's PDF; the message says why for each."""


class _SourceFailed(Exception):
    """One source could not produce the PDF (the next one may)."""


@dataclass(frozen=True)
class ResolvedPdf:
    content: bytes
    source: str  # "portal" or "halo"
    filename: str
    etag: str  # quoted SHA-256 of the bytes
    last_modified: datetime
    version: PdfVersion | None
    fallback_reason: str = ""


def resolve_pdf(invoice, channel, prefer=PORTAL, fallback=True):
    """The PDF to serve for `invoice` on `channel` (a `PdfServed.Channel`), from the
    `prefer`red source or, with `fallback`, the other. Raises `PdfUnavailable`."""
    if prefer not in _SOURCES:
        raise ValueError(f"prefer must be one of {', '.join(_SOURCES)}, not {prefer!r}")
    details = getattr(invoice, "portal", None)
    if details is not None and details.is_draft:
        raise PdfUnavailable(f"{details} is a draft: it has no PDF until it is issued.")
    order = [prefer, *(s for s in _SOURCES if s != prefer and fallback)]
    reasons = []
    for source in order:
        try:
            version, note = _SOURCES[source](invoice)
        except _SourceFailed as error:
            reasons.append(f"{PdfVersion.Source(source).label}: {error}")
            continue
        reason = "; ".join(filter(None, [*reasons, note]))
        if reason:
            log.warning("Invoice %s PDF on %s from %s: %s", invoice.pk, channel, source, reason)
        PdfServed.record(version, channel, reason)
        return ResolvedPdf(
            content=bytes(version.content),
            source=version.source,
            filename=pdf_filename(invoice),
            etag=version.etag,
            last_modified=version.created,
            version=version,
            fallback_reason=reason,
        )
    raise PdfUnavailable("; ".join(reasons))


def serve_pdf(invoice_id, channel):
    """`resolve_pdf` (portal first, with fallback) for an invoice id, skipping the work
    while the invoice's data is what its remembered PDF was made from; None when the
    invoice is gone (deleted since its id was looked up)."""
    before = source_fingerprint(invoice_id)
    if before is not None and (known := cache.get(_remembered_key(before))):
        if (content := _stored_content(known["version"])) is not None:
            version = PdfVersion(
                pk=known["version"],
                invoice_id=invoice_id,
                number=known["number"],
                source=PORTAL,
                sha256=known["sha256"],
                created=known["created"],
            )
            PdfServed.record(version, channel)
            return ResolvedPdf(
                content, PORTAL, known["filename"], version.etag, version.created, version
            )
    invoice = Invoice.objects.select_related(*RELATED).filter(pk=invoice_id).first()
    if invoice is None:
        return None
    resolved = resolve_pdf(invoice, channel)
    # Remembered only when the data did not change while it was read (else a PDF of the
    # old data could be remembered under the new data's fingerprint).
    if resolved.source == PORTAL and not resolved.fallback_reason:
        if before is not None and before == source_fingerprint(invoice_id):
            known = {
                "version": resolved.version.pk,
                "number": resolved.version.number,
                "sha256": resolved.version.sha256,
                "created": resolved.version.created,
                "filename": resolved.filename,
            }
            cache.set(_remembered_key(before), known, REMEMBER_FOR)
    return resolved


REMEMBER_FOR = 24 * 3600  # seconds; a miss only costs the full resolution


def _remembered_key(fingerprint):
    return f"invoicing:pdf:{_code_version()}:{fingerprint}"


@functools.cache
def _code_version():
    """Hash of the code that turns rows into a PDF: a deploy changing it forgets what was
    remembered, as a renderer or mapping change may change the PDF of the same rows."""
    sources = [
        document_builder.__file__,
        formats.__file__,
        *sorted(Path(pdf.__file__).parent.glob("*.py")),
    ]
    return hashlib.sha256(b"".join(Path(s).read_bytes() for s in sources)).hexdigest()[:16]


def _stored_content(version_id):
    content = PdfVersion.objects.filter(pk=version_id).values_list("content", flat=True)
    found = next(iter(content.order_by()), None)
    return bytes(found) if found is not None else None


def store_portal_pdf(invoice, *, force=False):
    """`(version, created)` of the invoice's current data, rendered and stored if new.

    `force` renders again although a version exists (say, after a renderer upgrade): the
    same bytes keep that version, different ones make the next.
    """
    invoicing, rows = InvoicingSettings.for_tenant(invoice.tenant), line_rows(invoice)
    key = document_key(invoice, invoicing, rows)
    if not force and (version := PdfVersion.objects.current(invoice, PORTAL, key)):
        return version, False
    doc = build_document(invoice, invoicing, rows)
    return PdfVersion.objects.store(invoice, PORTAL, key, render_invoice_pdf(doc))


def preview_pdf(invoice):
    """Render without storing: drafts, which change until they are issued."""
    invoicing = InvoicingSettings.for_tenant(invoice.tenant)
    return render_invoice_pdf(build_document(invoice, invoicing, line_rows(invoice)))


def pdf_filename(invoice):
    number = invoice_number(invoice).replace("/", "-").replace("\\", "-")
    return f"Invoice {number}.pdf"


def _from_portal(invoice):
    try:
        version, _ = store_portal_pdf(invoice)
    except Exception as error:  # bad data or a renderer bug: another source may still serve
        log.exception("Rendering the PDF of invoice %s failed", invoice.pk)
        raise _SourceFailed(f"rendering failed ({type(error).__name__}: {error})") from error
    return version, ""


def _from_halo(invoice):
    """The cached Halo PDF while fresh, else fetched again; a stale copy beats none."""
    if invoice.halo_id is None:
        raise _SourceFailed("the invoice is not in Halo")
    cached = invoice.pdf_versions.filter(source=HALO).order_by("-number").first()
    checked = f"invoicing:halo-pdf-checked:{invoice.pk}"
    if cached is not None and cache.get(checked):
        return cached, ""
    try:
        version = _fetch_from_halo(invoice, cached)
    except (HaloError, _SourceFailed) as error:
        if cached is None:
            raise _SourceFailed(str(error)) from error
        return cached, f"Halo: {error} Served the copy fetched {cached.created:%Y-%m-%d %H:%M} UTC."
    cache.set(checked, True, settings.INVOICE_PDF_HALO_TTL)
    return version, ""


def _fetch_from_halo(invoice, cached):
    connection = HaloConnection.objects.for_feature(invoice.tenant, "invoice_sync")
    if connection is None:
        raise _SourceFailed("no active Halo connection with invoice sync switched on")
    client = HaloClient(connection, budget=web_budget(settings.INVOICE_PDF_HALO_BUDGET))
    attachment_id = halo_pdf_attachment_id(client, invoice.halo_id)
    if attachment_id is None:
        raise _SourceFailed(f"Halo has no PDF attached to invoice {invoice.halo_id}")
    if cached is not None and cached.halo_attachment_id == attachment_id:
        return cached
    content, _, _ = client.get_attachment_bytes(attachment_id)
    if not content.startswith(b"%PDF-"):
        raise _SourceFailed(f"Halo attachment {attachment_id} is not a PDF")
    version, _ = PdfVersion.objects.store(
        invoice, HALO, f"attachment:{attachment_id}", content, halo_attachment_id=attachment_id
    )
    return version


def halo_pdf_attachment_id(client, halo_invoice_id):
    """The invoice's PDF in Halo: its `pdf_attachment_id`, else its newest PDF attachment."""
    record = client.get_invoice(halo_invoice_id, includedetails=False) or {}
    if record.get("pdf_attachment_id"):
        return int(record["pdf_attachment_id"])
    attachments = client.list_attachments(type=HALO_INVOICE_ATTACHMENT, unique_id=halo_invoice_id)
    ids = [int(a["id"]) for a in attachments if str(a.get("filename", "")).lower().endswith(".pdf")]
    return max(ids, default=None)


_SOURCES = {PORTAL: _from_portal, HALO: _from_halo}
