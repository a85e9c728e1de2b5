"""Turn whatever a partner pastes into a connection's two server URLs.

Halo shows the authorisation server (`https://acme.halopsa.com/auth`) and the resource
server (`.../api`); partners paste the site, either URL, with or without scheme or
trailing slashes, often into the wrong field. A bare site (or a URL ending in `/auth` or
`/api`) stands for the whole site and derives both; anything else is kept as typed.
"""

from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

SITE_SUFFIXES = ("/auth", "/api")


def normalise(value: str | None) -> str:
    """'Acme.HaloPSA.com/api/' -> 'https://acme.halopsa.com/api'; '' stays ''."""
    value = (value or "").strip()
    if not value:
        return ""
    if "://" not in value:
        value = f"https://{value}"
    parts = urlsplit(value)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), "", ""))


def site_of(url: str) -> str | None:
    """The site a normalised URL stands for, or None when it names a custom path."""
    path = urlsplit(url).path
    if not path:
        return url
    for suffix in SITE_SUFFIXES:
        if path.lower() == suffix:
            return url[: -len(suffix)]
    return None


def derive_urls(
    auth_value: str | None,
    resource_value: str | None,
    discover: Callable[[str], str | None] | None = None,
) -> tuple[str, str]:
    """(auth_url, resource_url) from the two fields as typed; blanks stay blank only when
    both are blank. `discover(site)` may answer the site's announced auth URL (or None);
    without an answer the `/auth` convention applies."""
    auth, resource = normalise(auth_value), normalise(resource_value)
    auth_site = site_of(auth) if auth else None
    resource_site = site_of(resource) if resource else None
    if resource_site or (not resource and auth_site):
        resource = f"{resource_site or auth_site}/api"
    # An auth URL typed with its /auth is kept; a bare site (or /api) asks the site.
    typed_auth = auth_site and urlsplit(auth).path.lower() == "/auth"
    site = auth_site if auth_site and not typed_auth else None
    if not auth and resource_site:
        site = resource_site
    if site:
        auth = (discover and discover(site)) or f"{site}/auth"
    return auth, resource
