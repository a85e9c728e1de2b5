"""Facts about an incoming request that several features need."""

from django.conf import settings


def client_address(request):
    """The client's address: the connection's, or with `PAYMENTS_PROXIES` reverse proxies
    in front, the one the outermost proxy saw (clients can forge X-Forwarded-For)."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    forwarded = [address.strip() for address in forwarded if address.strip()]
    if settings.PAYMENTS_PROXIES and forwarded:
        return forwarded[-min(settings.PAYMENTS_PROXIES, len(forwarded))]
    return request.META.get("REMOTE_ADDR", "")
