"""One exception family for every way a Halo call can fail.

Each error knows what the portal was doing (`attempted`), the call (`method`, `endpoint`,
`status`) and whatever Halo said (`halo_message`, parsed from any of Halo's error-body
shapes); `str(err)` is a sentence a partner can act on. `.permanent` errors (400/401/403/404)
will fail the same way again until someone changes data or configuration; `.transient`
ones (429, 5xx, network) are worth retrying later.
"""

import json
from typing import Self, TypedDict, Unpack

import requests

APP_PERMISSIONS = "Configuration > Integrations > HaloPSA API > {app} > Permissions"
AGENT_PERMISSIONS = "Configuration > Teams & Agents > Agents > {agent} > Permissions"


class CallDetails(TypedDict, total=False):
    """The keyword arguments every `HaloError` takes: the call and what it was for."""

    status: int | None
    method: str
    endpoint: str
    attempted: str
    url: str


class HaloError(Exception):
    permanent = False
    transient = False
    #: True when Halo may have applied the call although no answer arrived (lost response).
    ambiguous = False
    headline = "Halo call failed while trying to {attempted}{detail}."

    def __init__(
        self,
        halo_message: str = "",
        *,
        status: int | None = None,
        method: str = "",
        endpoint: str = "",
        attempted: str = "",
        url: str = "",
    ) -> None:
        self.halo_message = halo_message
        self.status = status
        self.method = method
        self.endpoint = endpoint
        self.attempted = attempted or "call Halo"
        self.url = url
        self.reason = ""
        self.permission = ""  # the Halo permission a 403 lacked, when the client knows it
        self.notes_text: list[str] = []
        super().__init__(halo_message)

    def note(self, text: str) -> Self:
        """Add a sentence to the message (retries made, what was not retried); returns self."""
        self.notes_text.append(text)
        return self

    @property
    def call(self) -> str:
        status = f"{self.status} on " if self.status else ""
        return f"{status}{self.method} {self.endpoint}".strip()

    def __str__(self) -> str:
        detail = f" ({self.call})" if self.call else ""
        if self.halo_message:
            detail += f": Halo said “{self.halo_message}”"
        text = self.headline.format(
            attempted=self.attempted,
            detail=detail,
            url=self.url,
            reason=self.reason,
            permission=self.permission or "the missing permission",
        )
        return " ".join([text, *self.notes_text])


class HaloAuthError(HaloError):
    permanent = True
    headline = (
        "Halo refused the portal's credentials while trying to {attempted}{detail}. "
        "Check the client ID and secret of the Halo connection and run Test connection."
    )


class HaloInvalidClient(HaloAuthError):
    headline = (
        "Halo rejected the client ID or secret (invalid_client){detail}. Copy the secret "
        "again from Configuration > Integrations > HaloPSA API > <application> in Halo, paste "
        "it into “Replace secret” on the Halo connection, save and test again."
    )


class HaloPermissionError(HaloError):
    permanent = True
    headline = (
        "Halo denied permission to {attempted}{detail}. In Halo, tick {permission} under "
        + APP_PERMISSIONS.format(app="<application>")
        + " and on the application's login agent, then run Test connection."
    )


class HaloNotFound(HaloError):
    permanent = True
    headline = "Halo has no such record: could not {attempted}{detail}."


class HaloBadRequest(HaloError):
    permanent = True
    headline = (
        "Halo rejected the data sent to {attempted}{detail}. Correct it in the portal or "
        "in Halo, then try again."
    )


class HaloUnexpectedResponse(HaloError):
    """Halo answered 2xx with something the client cannot use (not JSON, ids missing)."""

    headline = "Halo's answer could not be used to {attempted}{detail}."


class HaloRateLimited(HaloError):
    transient = True

    def __init__(
        self,
        halo_message: str = "",
        *,
        retry_after: float | None = None,
        **kwargs: Unpack[CallDetails],
    ) -> None:
        super().__init__(halo_message, **kwargs)
        self.retry_after = retry_after

    headline = (
        "Halo's rate limit (300 requests per 5 minutes) stopped the portal while trying to "
        "{attempted}{detail}. It will retry later; nothing was changed by this call."
    )


class HaloBudgetExhausted(HaloRateLimited):
    """The portal's own rate budget (`HALO_RATE_LIMIT`) had no slot within the retry budget."""

    headline = (
        "The portal paused its calls to Halo to stay under Halo's rate limit: Halo's "
        "rolling window had no room to {attempted} soon enough. This call was not sent; "
        "what was written before it stands."
    )


class HaloServerError(HaloError):
    transient = True
    ambiguous = True
    headline = (
        "Halo had an internal error while trying to {attempted}{detail}. This is usually temporary."
    )


class HaloWrongTenant(HaloServerError):
    """Halo answers a bare 500 to a token request naming an unknown tenant."""

    headline = (
        "Halo answered the token request with an internal error{detail}: check the tenant "
        "name on the Halo connection (the 'acme' of acme.halopsa.com; leave it blank for "
        "self-hosted Halo)."
    )


class HaloAddressRefused(HaloError):
    """The URL leads to an address the portal does not call (`egress`): fix the URL."""

    permanent = True
    headline = "Did not {attempted}: {reason}"

    def __init__(self, reason: str, **kwargs: Unpack[CallDetails]) -> None:
        super().__init__("", **kwargs)
        self.reason = reason


class HaloRedirected(HaloError):
    """Halo answered a redirect. The portal follows none (`egress`): a redirect could lead
    anywhere, the secret of a token request with it. The URL on the connection is wrong."""

    permanent = True
    headline = (
        "Halo answered a redirect{detail} to {reason}, and the portal does not follow "
        "redirects. Could not {attempted}. Put the address of your Halo itself on the Halo "
        "connection (for example https:// rather than http://) and test it again."
    )

    def __init__(self, location: str, **kwargs: Unpack[CallDetails]) -> None:
        super().__init__("", **kwargs)
        self.reason = location or "no address"


class HaloUnavailable(HaloError):
    transient = True
    headline = "Cannot reach {url}: {reason}. Could not {attempted}."

    def __init__(
        self,
        reason: str,
        *,
        ambiguous: bool = False,
        settle: float = 0.0,
        **kwargs: Unpack[CallDetails],
    ) -> None:
        super().__init__("", **kwargs)
        self.reason = reason
        self.ambiguous = ambiguous
        #: Seconds an unanswered request may still need to land in Halo (after a read timeout).
        self.settle = settle


class _UnavailableDetails(CallDetails, total=False):
    ambiguous: bool
    settle: float


class HaloTimedOut(HaloUnavailable):
    """A page's time for Halo (`HALO_WEB_BUDGET_SECONDS`) ran out: the page answers now
    rather than hold the web worker. `reason` is the budget ("8 s")."""

    headline = (
        "Halo did not answer within {reason}, the longest a page waits for it, so the portal "
        "stopped trying to {attempted}. Try again in a moment."
    )

    def __init__(
        self, reason: str, *, asked: bool = True, **kwargs: Unpack[_UnavailableDetails]
    ) -> None:
        super().__init__(reason, **kwargs)
        if not asked:  # the page's budget went on earlier calls (other connections, say)
            self.headline = (
                "The portal did not {attempted}: this page's {reason} for Halo were spent on "
                "the calls before it. Try again in a moment."
            )


def halo_message(response: requests.Response, limit: int = 300) -> str:
    """Halo's own words from an error body of any shape; '' for an empty body."""
    text = (response.text or "").strip()
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    if isinstance(body, dict):
        fields = {str(k).lower(): v for k, v in body.items()}
        error, description = fields.get("error"), fields.get("error_description")
        if error and description:
            return f"{description} ({error})"[:limit]
        for name in ("errormessage", "message", "error_description", "error", "title"):
            if fields.get(name):
                return str(fields[name])[:limit]
        return ""
    if isinstance(body, str):
        return body[:limit]
    if text.startswith("<"):
        return ""  # an HTML error page says nothing useful
    return text[:limit]


def error_for_status(status: int) -> type[HaloError]:
    """The HaloError subclass for an HTTP status of a resource call."""
    if status == 400 or status == 409 or status == 422:
        return HaloBadRequest
    return {
        401: HaloAuthError,
        403: HaloPermissionError,
        404: HaloNotFound,
        429: HaloRateLimited,
    }.get(status, HaloServerError if status >= 500 else HaloBadRequest)
