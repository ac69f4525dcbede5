"""Where webhooks may go: public addresses only, unless private ones are allowed.

A webhook URL is an organization admin's input, and the server sends to it from inside the
network it runs in. Without a guard, a URL such as http://169.254.169.254/ or
http://10.0.0.5:5432/ lets a tenant probe or reach what only the server can reach. The guard
checks the host when a channel is saved (a clear 422) and, because a name may resolve
differently later (DNS rebinding), again at every connection: the webhook client's network
backend resolves the name itself, refuses if any address is not public, and connects to the
address it checked. TLS still verifies the certificate against the URL's host name.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from fleetcore.config import Settings


class ForbiddenAddress(httpcore.ConnectError):
    """The host is, or resolves to, an address webhooks may not reach."""


# IPv6 ranges Python 3.11's is_global calls global that a webhook must not reach.
_NOT_PUBLIC_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/96",  # IPv4-compatible (deprecated), and :: and ::1 with it
        "64:ff9b:1::/48",  # local-use NAT64: where the IPv4 sits depends on the local setup
        "fec0::/10",  # site-local (deprecated): routed inside the site only
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 address carries to (mapped, NAT64, 6to4, Teredo), if any."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _NAT64:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)  # the relay server and the client: both are reached
    return None


def is_public(address: str) -> bool:
    """True for a globally routable unicast address (not loopback, private, link-local, ...);
    an IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4, Teredo) is judged by it."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return all(v4.is_global and not v4.is_multicast for v4 in embedded)
        if any(ip in net for net in _NOT_PUBLIC_V6):
            return False
    return ip.is_global and not ip.is_multicast


def private_allowed(settings: Settings) -> bool:
    """The setting, or by default: allowed except in production."""
    allowed = settings.webhook_allow_private_networks
    return settings.environment != "production" if allowed is None else allowed


async def public_addresses(host: str, port: int) -> list[str]:
    """The host's addresses, all of them public; ForbiddenAddress names the first that is not."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise httpcore.ConnectError(f"cannot resolve {host}: {error.strerror}") from error
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        if not is_public(address):
            raise ForbiddenAddress(
                f"{host} resolves to {address}, which is not a public address "
                "(FLEETCORE_WEBHOOK_ALLOW_PRIVATE_NETWORKS allows it)"
            )
    return addresses


async def check_url(url: str) -> str | None:
    """Why a webhook may not be sent to `url` (checked when a channel is saved), or None. A
    name that does not resolve now is accepted: the check at every connection still holds."""
    parsed = httpx.URL(url)
    try:
        await public_addresses(
            parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)
        )
    except ForbiddenAddress as error:
        return str(error)
    except httpcore.ConnectError:
        return None
    return None


class _PublicOnly(httpcore.AsyncNetworkBackend):
    """Resolves, checks and connects to the checked address (no second lookup to race)."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await public_addresses(host, port)
        return await self._inner.connect_tcp(
            addresses[0],
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise ForbiddenAddress("webhooks do not connect to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's CA bundle, loaded once: loading takes tens of milliseconds (each app's
    dispatcher paid it at start), and a context is safe to share between clients."""
    return httpx.create_ssl_context(trust_env=False)


def webhook_client(settings: Settings) -> httpx.AsyncClient:
    """The client webhooks are sent with: no redirects, no proxy from the environment, and
    (unless private networks are allowed) connections to public addresses only."""
    transport = httpx.AsyncHTTPTransport(verify=_tls_context(), trust_env=False)
    if not private_allowed(settings):
        # httpx builds its httpcore pool without a way to pass a network backend; the pool
        # is pinned (uv.lock) and tests/test_notifications.py fails if this stops working.
        pool: Any = transport._pool
        pool._network_backend = _PublicOnly(pool._network_backend)
    return httpx.AsyncClient(
        transport=transport,
        timeout=settings.notification_timeout_s,
        follow_redirects=False,
        trust_env=False,
    )
