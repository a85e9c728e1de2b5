"""Bearer tokens of a connection, shared by every worker process through Django's cache.

The cache key holds the connection id and a hash of everything that decides the token or
where it is sent (both URLs, tenant, client id, secret, scopes): editing the connection
starts afresh, and the key never contains the secret. The token itself is stored
encrypted (`portal.crypto`), since the default cache is a database table.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.core.cache import cache

from portal import crypto
from portal.crypto import Masked

if TYPE_CHECKING:
    from integrations.models import HaloConnection

#: Refresh this long before Halo says the token expires.
EARLY_REFRESH = 60


@dataclass
class Token:
    access_token: str = field(repr=False)
    expires_at: float
    reply: dict[str, Any]  # Halo's reply without the token: token_type, expires_in, scope

    def fresh(self, now: float) -> bool:
        return now < self.expires_at - EARLY_REFRESH


class TokenCache:
    def __init__(
        self, connection: HaloConnection, *, clock: Callable[[], float] = time.time
    ) -> None:
        """`clock`: seconds since the epoch (expiry times are shared with other processes
        through the cache); tests pass one they move by hand."""
        self.clock = clock
        parts = (
            connection.auth_url,
            connection.resource_url,  # where the token goes: a move starts afresh
            connection.halo_tenant,
            connection.client_id,
            connection.secret,
            connection.scopes,
        )
        fingerprint = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
        self.key = f"halo:token:{connection.pk}:{fingerprint}"
        self._token: Token | None = None

    def current(self, stale: str | None = None) -> Token | None:
        """A fresh token from this process or the shared cache, other than `stale`."""
        now = self.clock()
        if self._token and self._token.fresh(now) and self._token.access_token != stale:
            return self._token
        entry = cache.get(self.key)
        if entry:
            plain = Masked(crypto.decrypt(entry["token"]))
            token = Token(plain, entry["expires_at"], entry["reply"])
            if token.fresh(now) and token.access_token != stale:
                self._token = token
                return token
        return None

    def store(self, reply: Mapping[str, Any]) -> Token:
        lifetime = float(reply.get("expires_in") or 3600)
        info = {k: v for k, v in reply.items() if k != "access_token"}
        token = Token(Masked(reply["access_token"]), self.clock() + lifetime, info)
        timeout = max(1, int(lifetime - EARLY_REFRESH))
        entry = {"token": crypto.encrypt(token.access_token), "expires_at": token.expires_at}
        cache.set(self.key, entry | {"reply": info}, timeout)
        self._token = token
        return token
