"""Applications, scopes, bearer tokens and the per-application rate limit.

Scope umbrellas (our choice, the contract names them without defining them):

* ``all``          every scope below, including ``admin`` and ``admin:webhooks``;
* ``all:standard`` every ``read:*`` and ``edit:*`` scope, no admin ones;
* ``admin``        configuration: itself (needed to edit ``FieldInfo``) and
                   ``admin:webhooks``.

``edit:X`` does not imply ``read:X``.  Unknown names are ignored.  A token gets
requested ∩ application ∩ agent permissions, expanded; an empty result still
yields a token, whose every call then answers 403.
"""

import collections
import math
import secrets
import uuid
from dataclasses import asdict, dataclass, field

SCOPES = frozenset(
    f"{verb}:{area}"
    for verb in ("read", "edit")
    for area in ("customers", "items", "softwarelicensing", "invoices", "contracts")
) | {"admin", "admin:webhooks"}

UMBRELLAS = {
    "all": SCOPES,
    "all:standard": frozenset(s for s in SCOPES if s.startswith(("read:", "edit:"))),
    "admin": frozenset({"admin", "admin:webhooks"}),
}


def expand(names):
    """Concrete scopes meant by space-separated text or a list of names."""
    if isinstance(names, str):
        names = names.split()
    granted = set()
    for name in names:
        name = name.lower()
        granted |= UMBRELLAS.get(name, {name} & SCOPES)
    return frozenset(granted)


def new_secret():
    """Halo's secret shape: two GUIDs joined by a hyphen."""
    return f"{uuid.uuid4()}-{uuid.uuid4()}"


@dataclass
class Application:
    name: str
    client_id: str
    client_secret: str
    permissions: str = "all"
    agent_permissions: str = "all"
    #: "client_credentials" (Client ID and Secret (Services)) or "authorization_code"
    #: (Authorisation Code (Native Application): people sign in, see ``signin.py``).
    authentication_method: str = "client_credentials"
    #: The login redirect URLs an ``authorization_code`` application may send people to.
    redirect_uris: list = field(default_factory=list)

    @classmethod
    def from_json(cls, data):
        def perms(value):
            return " ".join(value) if isinstance(value, list) else str(value)

        return cls(
            name=str(data.get("name") or "Integration"),
            client_id=str(data.get("client_id") or uuid.uuid4()),
            client_secret=str(data.get("client_secret") or new_secret()),
            permissions=perms(data.get("permissions", "all")),
            agent_permissions=perms(data.get("agent_permissions", "all")),
            authentication_method=str(data.get("authentication_method") or "client_credentials"),
            redirect_uris=[str(uri) for uri in data.get("redirect_uris") or []],
        )

    def grant(self, requested):
        return expand(requested) & expand(self.permissions) & expand(self.agent_permissions)

    def to_json(self):
        return asdict(self)


@dataclass
class Token:
    client_id: str
    scopes: frozenset
    expires_at: float
    user_id: int | None = None  # the Halo user who signed in (authorization_code), if any


class Tokens:
    """Opaque bearer tokens; times come from the simulator clock."""

    def __init__(self):
        self._tokens = {}

    def issue(self, app, scopes, now, lifetime, user_id=None):
        value = secrets.token_urlsafe(32)
        self._tokens[value] = Token(app.client_id, scopes, now + lifetime, user_id)
        return value

    def valid(self, value, now):
        token = self._tokens.get(value)
        return token if token and token.expires_at > now else None

    def expire_all(self):
        for token in self._tokens.values():
            token.expires_at = 0


class RateLimiter:
    """Sliding window per application; refused calls do not use up the budget."""

    def __init__(self):
        self._calls = collections.defaultdict(collections.deque)

    def retry_after(self, key, now, limit):
        """Record a call and return None, or the seconds to wait when over ``limit``."""
        if limit is None:
            return None
        requests, seconds = limit
        calls = self._calls[key]
        while calls and calls[0] <= now - seconds:
            calls.popleft()
        if len(calls) >= requests:
            return max(1, math.ceil(calls[0] + seconds - now))
        calls.append(now)
        return None
