"""Is this address this machine? The one check, for URLs (a local endpoint needs no key) and for
bare host names (the simulator answers only loopback callers unless told otherwise)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlparse


def is_loopback_host(host: str) -> bool:
    """True for 'localhost' and loopback IP literals (127.0.0.0/8, ::1, bracketed or not)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """True for http(s)://localhost... and loopback IP literals."""
    return is_loopback_host(urlparse(url).hostname or "")
