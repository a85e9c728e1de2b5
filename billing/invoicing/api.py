"""`GET /api/v1/invoices/<ref>/pdf`: an invoice's PDF for Halo and payment portals.

Authenticated with the tenant's PDF secret. The ref is looked up in the secret's tenant only,
so another tenant's invoice is a 404 like one that does not exist. Stored PDFs are served
with an ETag (the SHA-256 of the bytes) for cheap revalidation.
"""

from django.conf import settings
from django.db.models import Q
from django.http import HttpResponse
from django.utils.cache import get_conditional_response
from django.utils.http import content_disposition_header, http_date
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.invoicing.models import PdfServed
from billing.invoicing.pdfs import PdfUnavailable, serve_pdf
from billing.models import Invoice, InvoiceNumberField, number_field
from portal.api import HasTenantToken, TenantTokenAuthentication, TokenRateThrottle, TokenScheme
from portal.models import ApiToken

MAX_HALO_ID = 2**31 - 1  # Halo ids are 32-bit; longer digit strings are numbers, not ids


class PdfTokenAuthentication(TenantTokenAuthentication):
    purpose = ApiToken.Purpose.PDF


class PdfSecretScheme(TokenScheme):
    target_class = PdfTokenAuthentication
    name = "pdfSecret"
    description = (
        "The tenant's PDF secret: an API token with purpose Invoice PDF API, created under "
        "API tokens in the admin and pasted into Halo."
    )


class PdfThrottle(TokenRateThrottle):
    scope = "invoice_pdf"

    def get_rate(self):
        return settings.INVOICE_PDF_RATE  # read per request: tests and deployments set it


def find_invoice_id(tenant, ref):
    """The id of the tenant's invoice `ref` names, or None.

    `ref` is read first as the tenant's number setting says (Halo invoice id, or the
    invoice number: Halo's third-party number, which portal invoices share), then as the
    other; a reading matching several invoices names none. One query fetches the
    candidates of both readings; the setting is read only when both find some.
    """
    ref = ref.strip()
    if not ref:
        return None
    as_id = int(ref) if ref.isascii() and ref.isdigit() and int(ref) <= MAX_HALO_ID else None
    either = Q(third_party_number=ref)
    if as_id is not None:
        either |= Q(halo_id=as_id)
    invoices = Invoice.objects.filter(either, tenant=tenant).order_by()
    candidates = list(invoices.values_list("pk", "third_party_number", "halo_id"))
    by_number = [pk for pk, number, _ in candidates if number == ref]
    by_id = [pk for pk, _, halo_id in candidates if as_id is not None and halo_id == as_id]
    readings = [by_number, by_id]
    if by_number and by_id and number_field(tenant) != InvoiceNumberField.THIRD_PARTY:
        readings.reverse()
    found = next((reading for reading in readings if reading), [])
    return found[0] if len(found) == 1 else None


class PdfErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    detail = serializers.CharField()


def _error(code, detail, http_status):
    return Response({"error": code, "detail": detail}, status=http_status)


class InvoicePdfView(APIView):
    authentication_classes = [PdfTokenAuthentication]
    permission_classes = [HasTenantToken]
    throttle_classes = [PdfThrottle]

    def perform_content_negotiation(self, request, force=False):
        # Halo asks for application/pdf; errors are JSON whatever the Accept header says.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="invoice_pdf",
        summary="Download an invoice's PDF",
        description=(
            "The invoice's PDF, the same bytes every time until the invoice changes. "
            "`ref` is the Halo invoice ID or the invoice number (the tenant's invoice number "
            "setting decides which is tried first; the other is tried when it finds nothing). "
            "Authenticate with the tenant's PDF secret: `Authorization: Bearer <secret>`, "
            "created under API tokens (purpose: Invoice PDF API). Send `If-None-Match` with "
            "the last ETag to get 304 when nothing changed. `X-Invoice-PDF-Source` says "
            "where the PDF came from: `portal` (rendered by the portal) or `halo` (the PDF "
            "attached in Halo, used when rendering failed)."
        ),
        parameters=[
            OpenApiParameter(
                "ref",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                description="Halo invoice ID or invoice number.",
            ),
            OpenApiParameter(
                "If-None-Match",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                required=False,
                description="The ETag of a copy you hold.",
            ),
        ],
        responses={
            (200, "application/pdf"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="The PDF. Headers: ETag, Last-Modified, Content-Disposition "
                "(the file name), X-Invoice-PDF-Source (portal or halo), X-Invoice-PDF-Version.",
            ),
            304: OpenApiResponse(description="Not modified: your copy (If-None-Match) is current."),
            401: OpenApiResponse(PdfErrorSerializer, description="Missing or invalid secret."),
            404: OpenApiResponse(PdfErrorSerializer, description="No such invoice."),
            429: OpenApiResponse(PdfErrorSerializer, description="Rate limit (per secret)."),
            503: OpenApiResponse(
                PdfErrorSerializer, description="No PDF can be produced right now."
            ),
        },
        tags=["invoices"],
    )
    def get(self, request, ref):
        invoice_id = find_invoice_id(request.tenant, ref)
        try:
            resolved = invoice_id and serve_pdf(invoice_id, PdfServed.Channel.API)
        except PdfUnavailable as unavailable:
            return _error("unavailable", str(unavailable), status.HTTP_503_SERVICE_UNAVAILABLE)
        if not resolved:
            detail = "No invoice matches this reference."
            return _error("not_found", detail, status.HTTP_404_NOT_FOUND)
        response = HttpResponse(
            resolved.content,
            content_type="application/pdf",
            headers={
                "ETag": resolved.etag,
                "Last-Modified": http_date(resolved.last_modified.timestamp()),
                "Content-Disposition": content_disposition_header(False, resolved.filename),
                "Cache-Control": "private, no-cache",
                "X-Invoice-PDF-Source": resolved.source,
                "X-Invoice-PDF-Version": str(resolved.version.number),
            },
        )
        return get_conditional_response(
            request,
            etag=resolved.etag,
            last_modified=int(resolved.last_modified.timestamp()),
            response=response,
        )
