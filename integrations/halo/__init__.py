"""HaloPSA API client: `HaloClient(connection)` and the `HaloError` family.

    client = HaloClient(connection)                  # or HaloClient(connection, stats=...)
    for licence in client.list_licences(client_id=12):   # pages lazily; kwargs are filters
        ...
    saved = client.upsert_licences(records)       # same order as `records`, ids filled in
    client.stats.requests, client.stats.by_endpoint

Inside a web request: `HaloClient(connection, budget=web_budget())`, so a Halo that hangs
costs the page `HALO_WEB_BUDGET_SECONDS` at most (then `HaloTimedOut`).

Catch `HaloError`: `.permanent` (fix data or configuration) vs `.transient` (try later);
`str(error)` is written for partners. See `client.py` for retries and create safety.
"""

from integrations.halo.client import (
    RESOURCES,
    HaloClient,
    RequestStats,
    discover_auth_url,
    web_budget,
)
from integrations.halo.errors import (
    HaloAddressRefused,
    HaloAuthError,
    HaloBadRequest,
    HaloBudgetExhausted,
    HaloError,
    HaloInvalidClient,
    HaloNotFound,
    HaloPermissionError,
    HaloRateLimited,
    HaloRedirected,
    HaloServerError,
    HaloTimedOut,
    HaloUnavailable,
    HaloUnexpectedResponse,
    HaloWrongTenant,
)

__all__ = [
    "RESOURCES",
    "HaloAddressRefused",
    "HaloAuthError",
    "HaloBadRequest",
    "HaloBudgetExhausted",
    "HaloClient",
    "HaloError",
    "HaloInvalidClient",
    "HaloNotFound",
    "HaloPermissionError",
    "HaloRateLimited",
    "HaloRedirected",
    "HaloServerError",
    "HaloTimedOut",
    "HaloUnavailable",
    "HaloUnexpectedResponse",
    "HaloWrongTenant",
    "RequestStats",
    "discover_auth_url",
    "web_budget",
]
