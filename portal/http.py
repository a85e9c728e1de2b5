"""Facts about an incoming request that several features need."""

from urllib.parse import urlsplit

from django.conf import settings


def client_address(request):
    """The client's address: the connection's, or with `PAYMENTS_PROXIES` reverse proxies
    in front, the one the outermost proxy saw (clients can forge X-Forwarded-For)."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    forwarded = [address.strip() for address in forwarded if address.strip()]
    if settings.PAYMENTS_PROXIES and forwarded:
        return forwarded[-min(settings.PAYMENTS_PROXIES, len(forwarded))]
    return request.META.get("REMOTE_ADDR", "")


def from_another_site(request):
    """A browser says this request comes from a page of another site: `Sec-Fetch-Site:
    cross-site`, or an `Origin` that is neither this host nor `PORTAL_BASE_URL`'s. The
    portal's own forms post from its own pages, framed inside Halo's portal or not; a
    client that sends neither header is not a browser, and other checks apply to it."""
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    own = {f"{request.scheme}://{request.get_host()}"}
    base = urlsplit(settings.PORTAL_BASE_URL)
    if base.scheme and base.netloc:
        own.add(f"{base.scheme}://{base.netloc}")
    return origin not in own
