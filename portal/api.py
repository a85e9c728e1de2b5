"""Shared DRF pieces: one error shape for every API answer, JSON and header checks that
keep out what no database stores, token authentication and a per-token rate limit."""

import json
import logging
import math
import threading

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiViewExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed, ParseError
from rest_framework.parsers import JSONParser
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


# -- input no database stores ---------------------------------------------------------------

#: Deeper than any body the portal takes (usage rows, Halo deliveries, processor events are a
#: handful of levels): deeper JSON is refused before anything reads it recursively.
MAX_JSON_DEPTH = 32


class InvalidInput(ParseError):
    """A body or header the portal cannot take as it stands: 400, and nothing is stored."""

    default_code = "invalid"


def text_problem(text):
    """Why `text` cannot be stored as it is (in text or JSON, on SQLite and PostgreSQL), or
    ''. The answer never quotes the text: it may not even be encodable."""
    if "\x00" in text:
        return "contains a NUL character (U+0000), which cannot be stored"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            code = ord(text[error.start])
            return f"contains a lone surrogate (U+{code:04X}), which is not Unicode text"
    return ""


def check_json(value, max_depth=MAX_JSON_DEPTH):
    """Raise `InvalidInput` naming the first place in decoded JSON `value` holding text no
    database stores (in a key or a string), a number JSON cannot hold (an overflowing
    float is infinite), or nesting deeper than `max_depth`. Iterative: never recurses."""
    stack = [(value, 1, ())]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            if problem := text_problem(item):
                raise InvalidInput(f"{json_path(path)} {problem}.")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInput(f"{json_path(path)} is a number too large for JSON.")
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise InvalidInput(f"The JSON is nested more than {max_depth} levels deep.")
            children = list(item.items() if isinstance(item, dict) else enumerate(item))
            for key, _ in children:
                if isinstance(key, str) and (problem := text_problem(key)):
                    raise InvalidInput(f"A key in {json_path(path)} {problem}.")
            stack.extend((child, depth + 1, (*path, key)) for key, child in reversed(children))
    return value


def json_path(path):
    """`usage[2].organisation` for the path `("usage", 2, "organisation")`."""
    if not path:
        return "The body"
    text = ""
    for key in path:
        if isinstance(key, int):
            text += f"[{key}]"
        elif key.isidentifier() and len(key) <= 40:
            text += f".{key}" if text else key
        else:
            text += f"[{json.dumps(key[:40], ensure_ascii=False)}]"
    return text


def parse_json(body, encoding="utf-8"):
    """Decoded JSON from `body` (bytes), checked by `check_json`; raises `InvalidInput` with
    what is wrong for anything else."""
    try:
        text = body.decode(encoding)
    except (UnicodeDecodeError, LookupError) as error:
        raise InvalidInput(f"The body is not valid JSON: not {encoding} text ({error}).") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidInput(f"The JSON is nested more than {MAX_JSON_DEPTH} levels deep.") from None
    except ValueError as error:  # bad syntax, NaN, or an integer of too many digits
        raise InvalidInput(f"The body is not valid JSON: {error}.") from None
    return check_json(value)


def _refuse_constant(constant):
    raise ValueError(f"{constant} is not a JSON value")


class StrictJSONParser(JSONParser):
    """DRF's JSON parser, answering 400 (never 500) for input no database stores: see
    `parse_json`."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        return parse_json(stream.read() if stream is not None else b"", encoding)


def header_text(request, name, max_length=None):
    """Header `name` stripped ('' when absent); `InvalidInput` when it holds what no
    database stores or control characters, or is longer than `max_length`."""
    value = request.headers.get(name, "").strip()
    problem = text_problem(value)
    if not problem and any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        problem = "contains a control character"
    if problem:
        raise InvalidInput(f"The {name} header {problem}.")
    if max_length is not None and len(value) > max_length:
        raise InvalidInput(f"The {name} header is longer than {max_length} characters.")
    return value


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


class TokenScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme of a `TenantTokenAuthentication` subclass: subclass
    with `target_class`, `name` and `description`."""

    description = ""

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": self.description}


# -- the OpenAPI schema (drf-spectacular) ------------------------------------------------------


def api_paths_only(endpoints, **kwargs):
    """Preprocessing hook: the schema documents the API under /api/, not the customer pages
    that are DRF views too (the pay link)."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/api/")]


class HaloWebhookScheme(OpenApiAuthenticationExtension):
    target_class = "integrations.invoice_sync.views.HaloWebhookAuthentication"
    name = "haloWebhook"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "basic",
            "description": "The credentials the portal generated when it registered the "
            "tenant's webhook in Halo.",
        }


class HaloWebhookSchema(OpenApiViewExtension):
    """What Halo posts to the webhook: a delivery of its own shape, not a serializer's."""

    target_class = "integrations.invoice_sync.views.HaloWebhookView"

    def view_replacement(self):
        delivery = OpenApiResponse(OpenApiTypes.OBJECT, description="status and delivery id")

        @extend_schema(
            summary="Receive a Halo webhook delivery",
            request=OpenApiTypes.OBJECT,
            responses={202: delivery, 200: delivery},
        )
        class Documented(self.target_class):
            pass

        return Documented


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
    (workers - 1) * block requests early, never let more through; except that the
    database cache's increments are not atomic (Redis's are), so two racing claims can
    both be granted.
    """

    BLOCKS_PER_WINDOW = 50
    _claims = {}  # (key, window) -> requests this process may still let through
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
        self.cache.add(counter, 0, self.duration + 1)
        try:
            claimed = self.cache.incr(counter, block)
        except ValueError:  # the counter expired between add and incr
            self.cache.set(counter, block, self.duration + 1)
            claimed = block
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
