"""The address policy for URL inputs: which hosts and resolved addresses a worker may fetch from.

Fetching a URL is a request made on the user's behalf, so a target that is loopback, private,
link-local (cloud metadata), CGNAT, multicast, reserved or unspecified is refused unless the user
allows private URLs. GuardedResolver applies the policy inside aiohttp's connector, so the address
checked is the address connected to; inputs/fetch.py builds the connector and follows redirects.
"""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from beam_caption.inputs.images import ImageError

# Names that reach metadata services or this machine without a "private" address being obvious.
_BLOCKED_HOSTNAMES = frozenset(
    {"localhost", "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
     "instance-data.ec2.internal"}
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def forbidden_reason(address: str) -> str | None:
    """Why a resolved IP address must not be fetched ("loopback", "private", ...), or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address embedded in IPv6 (mapped, NAT64, 6to4, Teredo) is judged as IPv4.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return forbidden_reason(str(embedded))
    checks = (
        (ip in _METADATA_ADDRESSES, "cloud metadata"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "shared (CGNAT)"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "non-global"),
    )
    return next((reason for hit, reason in checks if hit), None)


def check_hostname(host: str) -> None:
    """Refuse names that point at this machine or a metadata service, before any lookup."""
    name = host.rstrip(".").lower()
    if name in _BLOCKED_HOSTNAMES or name.endswith(".localhost"):
        raise ImageError("forbidden_address", f"refusing to fetch from host {name!r}", stage="read")


def check_address(host: str, address: str) -> None:
    """Refuse a resolved (or literal) address that is not public."""
    reason = forbidden_reason(address)
    if reason:
        raise ImageError(
            "forbidden_address",
            f"refusing to fetch from {host!r}: it resolves to a {reason} address ({address})",
            stage="read",
        )


class GuardedResolver(AbstractResolver):
    """Resolves with `inner`, then refuses the lookup if any address is not public.

    Installed in the connector, so the connection goes to exactly the addresses checked here.
    """

    def __init__(self, inner: AbstractResolver, *, allow_private: bool) -> None:
        self._inner = inner
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve `host` and check every address it maps to."""
        if not self._allow_private:
            check_hostname(host)
        results = await self._inner.resolve(host, port, family)
        if not self._allow_private:
            for result in results:
                check_address(host, result["host"])
        return results

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self._inner.close()


class GuardedConnector(aiohttp.TCPConnector):
    """A TCPConnector whose resolver enforces the address policy (a marker for fetch_url)."""

    def __init__(self, *, guards_addresses: bool, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.guards_addresses = guards_addresses
