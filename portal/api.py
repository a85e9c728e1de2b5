"""Shared DRF pieces: one error shape for every API answer, token authentication and a
per-token rate limit (input checks: `portal.input_checks`)."""

import logging
import threading

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import exception_handler as drf_exception_handler

from portal import counters
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

    purpose: ApiToken.Purpose | None = None

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


class TokenScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme of a `TenantTokenAuthentication` subclass: subclass
    with `target_class`, `name` and `description`."""

    description = ""

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": self.description}


# -- the OpenAPI schema (drf-spectacular) ------------------------------------------------------


def api_paths_only(endpoints, **kwargs):
    """Preprocessing hook: the schema documents the API under /api/ and the pay link Halo's
    invoices carry (`in_api_schema = True` on its view), not the customer pages behind it."""
    return [
        (path, regex, method, callback)
        for path, regex, method, callback in endpoints
        if path.startswith("/api/")
        or getattr(getattr(callback, "cls", None), "in_api_schema", False)
    ]


class ApiErrorSerializer(serializers.Serializer):
    """The shape of every API error (`exception_handler`): for the schema."""

    error = serializers.CharField(help_text="A code: invalid, authentication_failed, throttled…")
    detail = serializers.CharField(help_text="What is wrong, for people.")


class HasTenantToken(BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.auth, ApiToken)


class WindowThrottle(SimpleRateThrottle):
    """A fixed-window rate limit shared by every worker, at one cache update per block.

    DRF's `SimpleRateThrottle` rewrites the list of a client's request times in the cache on
    every request: a write per API call (a database write on the default cache) and work
    that grows with the rate. Here the rate's budget is counted per window of its period:
    each process claims a block of the window's budget from one shared counter and spends it
    in memory. Small rates get blocks of one and are exact. A process's unspent claim is
    lost to the others until the window ends, so busy workers may refuse up to
    (workers - 1) * block requests early, never let more through. The counter is
    `portal.counters`: Redis's `INCRBY`, or one atomic upsert in the database (the database
    cache's own `incr` reads then writes, so two racing claims could both be granted).
    """

    BLOCKS_PER_WINDOW = 50
    #: (key, window) -> requests this process may still let through
    _claims: dict[tuple[str, int], int] = {}
    _lock = threading.Lock()

    def allow_request(self, request, view):
        if self.rate is None or (key := self.get_cache_key(request, view)) is None:
            return True
        self.now = self.timer()
        window = int(self.now // self.duration)
        self.window_end = (window + 1) * self.duration
        with self._lock:
            left = self._claims.get((key, window), 0) or self._claim(f"{key}:{window}")
            if left <= 0:
                return False
            if len(self._claims) > 10_000:
                self._claims.clear()  # old windows' leftovers: dropping them only refuses sooner
            self._claims[(key, window)] = left - 1
        return True

    def _claim(self, counter):
        """Up to a block of the window's budget from the shared counter."""
        block = max(1, self.num_requests // self.BLOCKS_PER_WINDOW)
        claimed = counters.incr(counter, block, ttl=int(self.duration) + 1)
        return max(0, min(block, self.num_requests - (claimed - block)))

    def wait(self):
        return max(0.0, self.window_end - self.now)

    @classmethod
    def forget_claims(cls):
        """Drop this process's claims (tests that clear the cache start afresh)."""
        with cls._lock:
            cls._claims.clear()


class TokenRateThrottle(WindowThrottle):
    """Per-token rate limit (the scope's rate comes from settings)."""

    def get_cache_key(self, request, view):
        if not isinstance(request.auth, ApiToken):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}
