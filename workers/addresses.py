"""Where a webhook may connect: the host is resolved and each address checked in the
connection itself (an httpcore network backend), so a DNS answer that changes between a check
and the connect (rebinding) cannot reach an internal service. TLS still verifies the host name:
only the address connected to is chosen here."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The kinds refused, the narrowest first (a loopback address is private too, for one).
REFUSED_KINDS = ("unspecified", "loopback", "link_local", "multicast", "reserved", "private")


class AddressRefused(httpcore.ConnectError):
    """Every address of the host is one a webhook may not reach."""


def refusal(address: IPAddress) -> str | None:
    """Why a webhook may not connect to `address` (e.g. `loopback`), or None if it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for kind in REFUSED_KINDS:
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if not address.is_global:
        return "not-global"  # e.g. shared address space (100.64.0.0/10)
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """The host's addresses, in the resolver's order, each once."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    found = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    return list(dict.fromkeys(found))


class CheckedBackend(httpcore.NetworkBackend):
    """Connects to the first allowed address of the host; refuses non-public ones unless
    `allow_private` (local development)."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        refused: list[str] = []
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in resolve(host, port):
            reason = None if self.allow_private else refusal(address)
            if reason is not None:
                refused.append(reason)
                continue
            try:
                return self.inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        if failure is not None:
            raise failure
        # The kinds only, not the addresses: a tenant learns nothing of the internal DNS.
        kinds = ", ".join(dict.fromkeys(refused))
        raise AddressRefused(f"refused to connect to {host}: not a public address ({kinds})")

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("a webhook never connects to a unix socket")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def checked_transport(allow_private: bool) -> httpx.HTTPTransport:
    """An httpx transport whose every connection goes through `CheckedBackend`, with the
    default certificate checks."""
    transport = httpx.HTTPTransport(retries=0)
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        network_backend=CheckedBackend(allow_private),
        retries=0,
    )
    return transport
