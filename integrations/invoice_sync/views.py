"""`POST /api/v1/halo/webhook/<tenant code>`: Halo's deliveries, stored before answering.

Answers fast: authenticate, then in one transaction store the delivery (deduplicated by its
id) and make sure a task will apply it; answer 202 (200 for a repeat). Every failed
authentication, for an unknown tenant too, gets the same 401, so no answer reveals which
tenants exist.
"""

import base64
import binascii
import json

from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.response import Response
from rest_framework.views import APIView

from integrations.invoice_sync import tasks
from integrations.invoice_sync.models import InvoiceSyncSettings, WebhookDelivery


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


def _parse(body):
    """The delivery as a dict with an id, or None for anything else."""
    if b"\\u0000" in body:  # a NUL no database JSON column accepts
        return None
    try:
        payload = json.loads(body, parse_constant=_refuse)
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) and payload.get("id") else None


def _refuse(constant):
    raise ValueError(f"{constant} is not JSON")


class HaloWebhookView(APIView):
    authentication_classes = [HaloWebhookAuthentication]
    permission_classes = []

    def post(self, request, tenant_code):
        payload = _parse(request.body)
        if payload is None:
            return Response(
                {
                    "error": "invalid",
                    "detail": "Expected a Halo webhook delivery: JSON with an id.",
                },
                status=400,
            )
        with transaction.atomic():
            delivery, created = WebhookDelivery.receive(request.auth, payload)
            if created:
                tasks.queue_drain(request.auth)
        return Response(
            {"status": "received" if created else "duplicate", "delivery": delivery.delivery_id},
            status=202 if created else 200,
        )
