"""The tenant's own systems talk to billing sync: `POST /api/v1/usage` reports current usage
counts; `POST /api/v1/organisations` and `/products` onboard the catalogue in bulk (upserts by
external reference / SKU, `integrations.billing_sync.onboarding`). Each request is all or
nothing, takes an idempotency key, and is authenticated by a usage API token."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from integrations.billing_sync import onboarding
from integrations.billing_sync.models import (
    BillingSyncSettings,
    IdempotencyConflict,
    OnboardingRejected,
    OnboardingSubmission,
    UsageSubmission,
)
from integrations.billing_sync.serializers import (
    OrganisationImportErrorSerializer,
    OrganisationImportRequestSerializer,
    OrganisationImportResponseSerializer,
    ProductImportErrorSerializer,
    ProductImportRequestSerializer,
    ProductImportResponseSerializer,
    UsageErrorSerializer,
    UsageRequestSerializer,
    UsageResponseSerializer,
    validate_usage,
)
from portal.api import HasTenantToken, TenantTokenAuthentication, TokenRateThrottle, TokenScheme
from portal.input_checks import StrictJSONParser, header_text
from portal.models import ApiToken


class UsageTokenAuthentication(TenantTokenAuthentication):
    purpose = ApiToken.Purpose.USAGE


class UsageTokenScheme(TokenScheme):
    target_class = UsageTokenAuthentication
    name = "usageToken"
    description = "A usage API token, created under API tokens in the admin."


class UsageThrottle(TokenRateThrottle):
    scope = "usage"
    rate = "120/min"


class OnboardingThrottle(UsageThrottle):
    """The usage API's rate, counted apart: onboarding does not eat the usage budget."""

    scope = "onboarding"


IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="Optional; the same as `idempotency_key` in the body.",
)


class InvalidRequest(Exception):
    """A request refused as a whole before its rows are read: 400 with this detail."""


def idempotency_key(request, body_key):
    """The request's idempotency key ('' for none), from the body or the header, which must
    agree; raises `InvalidRequest` for a key of the wrong type or length."""
    header_key = header_text(request, "Idempotency-Key")
    if body_key is not None and (isinstance(body_key, bool) or not isinstance(body_key, str | int)):
        raise InvalidRequest("idempotency_key must be text or a whole number.")
    key = "" if body_key is None else str(body_key).strip()
    if header_key and key and header_key != key:
        raise InvalidRequest("The Idempotency-Key header and idempotency_key differ.")
    key = key or header_key
    if len(key) > 100:
        raise InvalidRequest("The idempotency key is longer than 100 characters.")
    return key


class UsageView(APIView):
    authentication_classes = [UsageTokenAuthentication]
    permission_classes = [HasTenantToken]
    throttle_classes = [UsageThrottle]
    parser_classes = [StrictJSONParser]  # text no database stores: 400, never 500

    @extend_schema(
        operation_id="report_usage",
        summary="Report current usage counts",
        description="Sets the count of each product each organisation uses now. The request "
        "is validated as a whole: if any row is bad, nothing is saved and every bad row is "
        "listed. An unknown organisation is such an error, unless the tenant's billing sync "
        "settings say *usage API creates unknown organisations*: then it is created (named "
        "by the row's `organisation_name`, else its reference) and listed in "
        "`created_organisations`. Authenticate with a usage API token: "
        "`Authorization: Bearer <token>`.",
        request=UsageRequestSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            201: UsageResponseSerializer,
            200: UsageResponseSerializer,
            400: UsageErrorSerializer,
            401: UsageErrorSerializer,
            409: UsageErrorSerializer,
            429: OpenApiResponse(UsageErrorSerializer, description="Rate limit (per token)."),
        },
        examples=[
            OpenApiExample(
                "Two counts",
                value={
                    "usage": [
                        {"organisation": "NW-1001", "product": "EDR-STD", "quantity": 42},
                        {"organisation": "CD-1002", "product": "BKP-1TB", "quantity": 3},
                    ],
                    "idempotency_key": "rmm-export-2026-11-22",
                },
                request_only=True,
            )
        ],
        tags=["usage"],
    )
    def post(self, request):
        body = request.data
        rows, key = (
            (body.get("usage"), body.get("idempotency_key"))
            if isinstance(body, dict)
            else (body, None)
        )
        try:
            key = idempotency_key(request, key)
        except InvalidRequest as error:
            return _invalid(str(error))
        try:
            creates = BillingSyncSettings.for_tenant(request.tenant).usage_creates_organisations
            resolved, errors = validate_usage(request.tenant, rows, create_organisations=creates)
        except serializers.ValidationError as error:
            return _invalid(str(error.detail[0]))
        if errors:
            return _invalid(
                f"{len(errors)} of {len(rows)} rows are invalid; nothing was saved.", errors
            )
        try:
            submission, replayed = UsageSubmission.objects.record(
                request.tenant,
                resolved,
                source=UsageSubmission.Source.API,
                key=key,
                token=request.auth,
            )
        except IdempotencyConflict as conflict:
            return Response(
                {"error": "conflict", "detail": str(conflict)}, status=status.HTTP_409_CONFLICT
            )
        changes = submission.changes.select_related("organisation", "product")
        return Response(
            {
                "submission": submission.pk,
                "rows": submission.rows,
                "changed": submission.changed,
                "replayed": replayed,
                "changes": [
                    {
                        "organisation": change.organisation.external_ref,
                        "product": change.product.sku,
                        "previous": change.previous,
                        "quantity": change.new,
                    }
                    for change in changes
                ],
                "created_organisations": submission.created_organisations,
            },
            status=status.HTTP_200_OK if replayed else status.HTTP_201_CREATED,
        )


class OnboardingView(APIView):
    """Upsert a list of organisations or products (`catalogue`), all or nothing."""

    catalogue: onboarding.Catalogue
    authentication_classes = [UsageTokenAuthentication]
    permission_classes = [HasTenantToken]
    throttle_classes = [OnboardingThrottle]
    parser_classes = [StrictJSONParser]

    def post(self, request):
        body = request.data
        if not isinstance(body, dict):
            return _invalid(
                f"Send an object with the list of {self.catalogue.noun_plural} as "
                f"`{self.catalogue.noun_plural}`."
            )
        try:
            key = idempotency_key(request, body.get("idempotency_key"))
            submission, replayed = OnboardingSubmission.objects.record(
                request.tenant,
                self.catalogue,
                body.get(self.catalogue.noun_plural),
                source=OnboardingSubmission.Source.API,
                key=key,
                token=request.auth,
            )
        except InvalidRequest as error:
            return _invalid(str(error))
        except OnboardingRejected as rejected:
            return _invalid(rejected.detail, rejected.rows)
        except IdempotencyConflict as conflict:
            return Response(
                {"error": "conflict", "detail": str(conflict)}, status=status.HTTP_409_CONFLICT
            )
        return Response(
            {
                "submission": submission.pk,
                "rows": submission.rows,
                "created": submission.added,
                "updated": submission.updated,
                "unchanged": submission.unchanged,
                "mapped": submission.mapped,
                "replayed": replayed,
                "results": submission.results,
            },
            status=status.HTTP_200_OK if replayed else status.HTTP_201_CREATED,
        )


def onboarding_schema(catalogue, request, response, error, example):
    plural = catalogue.noun_plural
    return extend_schema(
        operation_id=f"import_{plural}",
        summary=f"Create or update {plural}",
        description=f"Creates each {catalogue.noun} whose `{catalogue.key}` the tenant does "
        f"not have yet and updates the others (matched case-insensitively); fields a row "
        f"leaves out stay as they are. Optionally maps each to a Halo "
        f"{catalogue.record_model.noun} by Halo id or exact name. The request is validated "
        "as a whole: if any row is bad, nothing is saved and every bad row is listed. Up to "
        f"{onboarding.MAX_ROWS:,} rows per request. Authenticate with a usage API token: "
        "`Authorization: Bearer <token>`.",
        request=request,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            201: response,
            200: OpenApiResponse(response, description="A retry: the first answer again."),
            400: error,
            401: error,
            409: OpenApiResponse(error, description="The key was used for other rows."),
            429: OpenApiResponse(error, description="Rate limit (per token)."),
        },
        examples=[OpenApiExample(f"Two {plural}", value=example, request_only=True)],
        tags=["onboarding"],
    )


class OrganisationsView(OnboardingView):
    catalogue = onboarding.ORGANISATIONS

    @onboarding_schema(
        onboarding.ORGANISATIONS,
        OrganisationImportRequestSerializer,
        OrganisationImportResponseSerializer,
        OrganisationImportErrorSerializer,
        {
            "organisations": [
                {"external_ref": "NW-1001", "name": "Northwind Traders", "halo_client": "12"},
                {"external_ref": "CD-1002", "name": "Contoso Dental", "active": False},
            ],
            "idempotency_key": "crm-export-2026-11-22",
        },
    )
    def post(self, request):
        return super().post(request)


class ProductsView(OnboardingView):
    catalogue = onboarding.PRODUCTS

    @onboarding_schema(
        onboarding.PRODUCTS,
        ProductImportRequestSerializer,
        ProductImportResponseSerializer,
        ProductImportErrorSerializer,
        {
            "products": [
                {"sku": "EDR-STD", "name": "EDR Standard", "unit_price": "4.50"},
                {"sku": "BKP-1TB", "name": "Backup 1 TB", "unit_price": 12, "halo_item": "Backup"},
            ],
            "idempotency_key": "price-list-2026-12",
        },
    )
    def post(self, request):
        return super().post(request)


def _invalid(detail, rows=None):
    body = {"error": "invalid", "detail": detail}
    if rows:
        body["rows"] = rows
    return Response(body, status=status.HTTP_400_BAD_REQUEST)
