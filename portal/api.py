"""Shared DRF pieces: one error shape for every API answer."""

import logging

from django.contrib.auth.models import AnonymousUser
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import exception_handler as drf_exception_handler

from portal.models import ApiToken

log = logging.getLogger(__name__)


def exception_handler(exc, context):
    """DRF's handler, with every error body shaped `{"error": ..., "detail": ...}`."""
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(data, dict) and "detail" in data and len(data) == 1:
        response.data = {"error": getattr(exc, "default_code", "error"), "detail": data["detail"]}
    else:
        response.data = {"error": "invalid", "detail": data}
    return response


class TenantTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <token>` for one token purpose; sets `request.tenant`.

    Subclass with `purpose` per API, so a usage token can never fetch PDFs and vice versa.
    """

    purpose = None

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        token = ApiToken.authenticate(value.strip(), self.purpose)
        if token is None:
            raise AuthenticationFailed("Invalid, expired or revoked token.")
        request.tenant = token.tenant
        return (AnonymousUser(), token)

    def authenticate_header(self, request):
        return 'Bearer realm="portal"'


class HasTenantToken(BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.auth, ApiToken)


class TokenRateThrottle(SimpleRateThrottle):
    """Per-token rate limit (the scope's rate comes from settings)."""

    def get_cache_key(self, request, view):
        if not isinstance(request.auth, ApiToken):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}
