"""Halo URLs are typed by tenant admins: without a guard, "Test connection" would let any of
them make the portal's servers call the vendor's own network (cloud metadata, databases,
admin consoles) and read the answers back in error messages.

Every connection the Halo client opens is checked after it is made, against the address
it actually reached, so a host name that resolves differently on the second look (DNS
rebinding) gains nothing: only public (globally routable) addresses are allowed, unless
`HALO_ALLOW_PRIVATE_ADDRESSES` is on (development, the simulator on 127.0.0.1, or a
self-hosted Halo inside the vendor's own network).
"""

import ipaddress
import socket
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class BlockedAddress(ValueError):
    """A Halo URL led to a private address. A ValueError, not an OSError: urllib3 retries
    connection errors, and this one will not change by retrying."""

    def __init__(self, host, address):
        self.host, self.address = host, address
        super().__init__(
            f"{host} is at {address}, a private or reserved address, which the portal does "
            "not call. Use your Halo's public address (the operator can allow private ones "
            "with HALO_ALLOW_PRIVATE_ADDRESSES for a self-hosted Halo on the portal's network)."
        )


def is_allowed(address):
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id is not part of it
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global or settings.HALO_ALLOW_PRIVATE_ADDRESSES


def refusal(url):
    """Why the portal would not call `url` (for forms, before anything is saved), or ''."""
    host = urlsplit(url).hostname
    if not host:
        return ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return ""  # unknown here and now: the connection test says so in its own words
    blocked = sorted(a for a in addresses if not is_allowed(a))
    return str(BlockedAddress(host, blocked[0])) if blocked else ""


def session():
    """A requests session whose every connection is checked (see the module docstring)."""
    http = requests.Session()
    adapter = _CheckedAdapter()
    http.mount("https://", adapter)
    http.mount("http://", adapter)
    return http


class _Checked:
    def _new_conn(self):
        sock = super()._new_conn()
        address = sock.getpeername()[0]
        if not is_allowed(address):
            sock.close()
            raise BlockedAddress(self.host, address)
        return sock


class _CheckedHTTPConnection(_Checked, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_Checked, HTTPSConnection):
    pass


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class _CheckedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _CheckedHTTPPool,
            "https": _CheckedHTTPSPool,
        }
