"""`POST /api/v1/usage`: a tenant's system reports current usage counts, all or nothing."""

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

from integrations.billing_sync.models import IdempotencyConflict, UsageSubmission
from integrations.billing_sync.serializers import (
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
        "listed. Authenticate with a usage API token: `Authorization: Bearer <token>`.",
        request=UsageRequestSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Optional; the same as `idempotency_key` in the body.",
            )
        ],
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
        header_key = header_text(request, "Idempotency-Key")
        if key is not None and (isinstance(key, bool) or not isinstance(key, str | int)):
            return _invalid("idempotency_key must be text or a whole number.")
        key = "" if key is None else str(key).strip()
        if header_key and key and header_key != key:
            return _invalid("The Idempotency-Key header and idempotency_key differ.")
        key = key or header_key
        if len(key) > 100:
            return _invalid("The idempotency key is longer than 100 characters.")
        try:
            resolved, errors = validate_usage(request.tenant, rows)
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
            },
            status=status.HTTP_200_OK if replayed else status.HTTP_201_CREATED,
        )


def _invalid(detail, rows=None):
    body = {"error": "invalid", "detail": detail}
    if rows:
        body["rows"] = rows
    return Response(body, status=status.HTTP_400_BAD_REQUEST)
