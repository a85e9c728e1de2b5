"""`POST /api/v1/halo/webhook/<tenant code>`: Halo's deliveries, stored before answering.

Answers fast: authenticate, then in one transaction store the delivery (deduplicated by its
id) and make sure a task will apply it; answer 202 (200 for a repeat). Every failed
authentication, for an unknown tenant too, gets the same 401, so no answer reveals which
tenants exist.
"""

import base64
import binascii

from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from integrations.invoice_sync import tasks
from integrations.invoice_sync.models import InvoiceSyncSettings, WebhookDelivery
from portal.api import ApiErrorSerializer
from portal.input_checks import InvalidInput, parse_json


def _basic_credentials(request):
    scheme, _, encoded = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        username, _, password = base64.b64decode(encoded.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return username, password


class HaloWebhookAuthentication(BaseAuthentication):
    """Basic credentials the portal generated when registering the tenant's webhook;
    `request.auth` is the tenant's id."""

    def authenticate(self, request):
        tenant_code = request.parser_context["kwargs"]["tenant_code"]
        tenant_id = InvoiceSyncSettings.webhook_tenant_id(tenant_code, *_basic_credentials(request))
        if tenant_id is None:
            raise AuthenticationFailed("Wrong or missing webhook credentials.")
        return (AnonymousUser(), tenant_id)

    def authenticate_header(self, request):
        return 'Basic realm="halo-webhook"'


class HasWebhookCredentials(BasePermission):
    """Only a request `HaloWebhookAuthentication` let in (it refuses the rest itself: this
    says so in the view, and the schema documents no anonymous access)."""

    def has_permission(self, request, view):
        return request.auth is not None


class HaloWebhookScheme(OpenApiAuthenticationExtension):
    target_class = HaloWebhookAuthentication
    name = "haloWebhook"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "basic",
            "description": "The credentials the portal generated when it registered the "
            "tenant's webhook in Halo.",
        }


def _parse(body):
    """The delivery as a dict with an id; `InvalidInput` (400) saying what is wrong with
    anything else, including text no database stores (`portal.input_checks.parse_json`)."""
    payload = parse_json(body)
    if not isinstance(payload, dict) or payload.get("id") in (None, "", 0):
        raise InvalidInput("Expected a Halo webhook delivery: JSON with an id.")
    for name in ("id", "event", "object_id", "timestamp"):
        value = payload.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
            raise InvalidInput(f"The delivery's {name} must be text or a whole number.")
    return payload


# -- the schema (drf-spectacular): what `_parse` takes, what the view answers ----------------

TEXT_OR_NUMBER = {"oneOf": [{"type": "string", "nullable": True}, {"type": "integer"}]}


@extend_schema_field(
    {"oneOf": [{"type": "string", "minLength": 1}, {"type": "integer", "not": {"enum": [0]}}]}
)
class DeliveryIdField(serializers.Field):
    pass


@extend_schema_field(TEXT_OR_NUMBER)
class TextOrNumberField(serializers.Field):
    pass


class HaloDeliverySerializer(serializers.Serializer):
    """What Halo posts (its own shape; other fields are kept as they are)."""

    id = DeliveryIdField(help_text="The delivery's id: a repeat of an id is a duplicate.")
    event = TextOrNumberField(required=False, help_text="e.g. `invoice updated`.")
    object_id = TextOrNumberField(required=False, help_text="The Halo record's id.")
    timestamp = TextOrNumberField(required=False)


@extend_schema_field({"type": "string", "enum": ["received", "duplicate"]})
class DeliveryStatusField(serializers.Field):
    pass


class HaloDeliveryReceivedSerializer(serializers.Serializer):
    status = DeliveryStatusField(help_text="`duplicate` when the id was received before.")
    delivery = serializers.CharField(help_text="The delivery's id, as stored.")


@extend_schema(
    summary="Receive a Halo webhook delivery",
    description="Halo's delivery is stored before the answer and applied by the worker. "
    "Authenticate with the Basic credentials the portal registered with the webhook; wrong "
    "credentials and unknown tenant codes get the same 401.",
    request={"application/json": HaloDeliverySerializer},
    responses={
        202: OpenApiResponse(HaloDeliveryReceivedSerializer, description="Stored, to be applied."),
        200: OpenApiResponse(HaloDeliveryReceivedSerializer, description="A repeat: ignored."),
        400: OpenApiResponse(ApiErrorSerializer, description="Not a delivery the portal reads."),
        401: OpenApiResponse(ApiErrorSerializer, description="Wrong or missing credentials."),
    },
    tags=["halo"],
)
class HaloWebhookView(APIView):
    authentication_classes = [HaloWebhookAuthentication]
    permission_classes = [HasWebhookCredentials]

    def post(self, request, tenant_code):
        payload = _parse(request.body)
        with transaction.atomic():
            delivery, created = WebhookDelivery.receive(request.auth, payload)
            if created:
                tasks.queue_drain(request.auth)
        return Response(
            {"status": "received" if created else "duplicate", "delivery": delivery.delivery_id},
            status=202 if created else 200,
        )
