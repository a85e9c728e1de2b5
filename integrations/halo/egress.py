"""Halo URLs are typed by tenant admins: without a guard, "Test connection" would let any of
them make the portal's servers call the vendor's own network (cloud metadata, databases,
admin consoles) and read the answers back in error messages.

Every connection the Halo client opens resolves the host itself and vets every address it
resolves to before connecting, then connects only to those addresses (so a host name that
resolves differently on the second look, DNS rebinding, gains nothing): only public
(globally routable) addresses are allowed, unless `HALO_ALLOW_PRIVATE_ADDRESSES` is on
(development, the simulator on 127.0.0.1, or a self-hosted Halo inside the vendor's own
network). Nothing is ever sent towards a refused address, so the refusal reads the same
whether a service listens there or not: the check cannot be used to scan internal ports.
Redirects are never followed (a redirect could point anywhere, and would carry the token
request's secret along on a 307); the client reports them instead.

Name resolution is bounded by the connect timeout: a host whose name servers do not
answer fails like one that does not accept the connection.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as urllib3_connection

#: One answer of `socket.getaddrinfo`: family, type, protocol, canonical name, address.
AddressInfo: TypeAlias = tuple[
    socket.AddressFamily,
    socket.SocketKind,
    int,
    str,
    tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes],
]


class BlockedAddress(ValueError):
    """A Halo URL led to a private address. A ValueError, not an OSError: urllib3 retries
    connection errors, and this one will not change by retrying."""

    def __init__(self, host: str, address: str) -> None:
        self.host, self.address = host, address
        super().__init__(
            f"{host} is at {address}, a private or reserved address, which the portal does "
            "not call. Use your Halo's public address (the operator can allow private ones "
            "with HALO_ALLOW_PRIVATE_ADDRESSES for a self-hosted Halo on the portal's network)."
        )


def is_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id is not part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global or bool(settings.HALO_ALLOW_PRIVATE_ADDRESSES)


def refusal(url: str, timeout: float | None = None) -> str:
    """Why the portal would not call `url` (for forms, before anything is saved), or ''."""
    host = urlsplit(url).hostname
    if not host:
        return ""
    if timeout is None:
        timeout = settings.HALO_DISCOVERY_TIMEOUT
    try:
        addresses = {str(info[4][0]) for info in resolve(host, None, timeout)}
    except OSError:
        return ""  # unknown here and now: the connection test says so in its own words
    blocked = sorted(a for a in addresses if not is_allowed(a))
    return str(BlockedAddress(host, blocked[0])) if blocked else ""


def resolve(host: str, port: int | None, timeout: float | None = None) -> list[AddressInfo]:
    """`socket.getaddrinfo(host, port)` for TCP, giving up after `timeout` seconds (None:
    wait as long as the resolver does) with `TimeoutError`. A lookup that overruns goes on
    in a daemon thread, which the caller does not wait for."""
    if timeout is None:
        return socket.getaddrinfo(
            host, port, urllib3_connection.allowed_gai_family(), socket.SOCK_STREAM
        )
    infos: list[AddressInfo] = []
    errors: list[OSError] = []

    def lookup() -> None:
        try:
            infos.extend(
                socket.getaddrinfo(
                    host, port, urllib3_connection.allowed_gai_family(), socket.SOCK_STREAM
                )
            )
        except OSError as error:
            errors.append(error)

    thread = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(max(timeout, 0.0))
    if thread.is_alive():
        raise TimeoutError(f"{host} did not resolve within {timeout:g} s")
    if errors:
        raise errors[0]
    return infos


class _NoRedirects(requests.Session):
    """A session that never follows a redirect, whatever a caller asks: the 3xx answer is
    handed back as it is (the Halo client turns it into `HaloRedirected`)."""

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


def session() -> requests.Session:
    """A requests session whose every connection is vetted (see the module docstring)."""
    http = _NoRedirects()
    adapter = _CheckedAdapter()
    http.mount("https://", adapter)
    http.mount("http://", adapter)
    return http


if TYPE_CHECKING:
    _Connection = HTTPConnection  # what `_Checked` is mixed into
else:
    _Connection = object


class _Checked(_Connection):
    """`_new_conn` of urllib3's connections, resolving and vetting before connecting."""

    def _new_conn(self) -> socket.socket:
        timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
        started = time.monotonic()
        try:
            infos = resolve(self._dns_host, self.port, timeout)
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error
        except TimeoutError as error:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. ({error})"
            ) from error
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            if not is_allowed(address):
                raise BlockedAddress(self.host, address)  # before any packet goes there
        if timeout is not None:  # one connect timeout covers the lookup and the connect
            timeout = max(timeout - (time.monotonic() - started), 0.001)
        failure: ConnectTimeoutError | None = None
        for address in addresses:
            try:
                sock = urllib3_connection.create_connection(
                    (address, self.port),
                    timeout if timeout is not None else self.timeout,
                    source_address=self.source_address,
                    socket_options=self.socket_options,
                )
            except TimeoutError as exc:
                failure = ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out. (connect timeout={timeout})"
                )
                failure.__cause__ = exc
            except OSError as exc:
                failure = NewConnectionError(self, f"Failed to establish a new connection: {exc}")
                failure.__cause__ = exc
            else:
                sys.audit("http.client.connect", self, self.host, self.port)
                return sock
        if failure is None:  # the host resolved to no address at all
            raise NameResolutionError(self.host, self, socket.gaierror("no address"))
        raise failure


class _CheckedHTTPConnection(_Checked, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_Checked, HTTPSConnection):
    pass


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class _CheckedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _CheckedHTTPPool,
            "https": _CheckedHTTPSPool,
        }
