"""HaloPSA API client: `HaloClient(connection)` and the `HaloError` family."""

from integrations.halo.client import RESOURCES, HaloClient, RequestStats, discover_auth_url
from integrations.halo.errors import (
    HaloAuthError,
    HaloBadRequest,
    HaloBudgetExhausted,
    HaloError,
    HaloInvalidClient,
    HaloNotFound,
    HaloPermissionError,
    HaloRateLimited,
    HaloServerError,
    HaloUnavailable,
    HaloUnexpectedResponse,
    HaloWrongTenant,
)

__all__ = [
    "RESOURCES",
    "HaloAuthError",
    "HaloBadRequest",
    "HaloBudgetExhausted",
    "HaloClient",
    "HaloError",
    "HaloInvalidClient",
    "HaloNotFound",
    "HaloPermissionError",
    "HaloRateLimited",
    "HaloServerError",
    "HaloUnavailable",
    "HaloUnexpectedResponse",
    "HaloWrongTenant",
    "RequestStats",
    "discover_auth_url",
]
