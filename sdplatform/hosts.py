"""Who is calling and where Pictor lives: the client's address and the base of absolute URLs.

Both come from configuration, never from what a client may forge. Absolute URLs use
PICTOR_BASE_URL (required in production); the request's Host is only a fallback in the embedded
mode, where ALLOWED_HOSTS guards it. X-Forwarded-For is read only when PICTOR_TRUSTED_PROXY says
a proxy in front of Pictor sets it; otherwise any client could pick its own address.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest

UNKNOWN_ADDRESS = "unknown"


def base_url(request: HttpRequest | None = None) -> str:
    """Scheme and host for absolute URLs, without a trailing slash."""
    if settings.PICTOR_BASE_URL or request is None:
        return settings.PICTOR_BASE_URL
    return request.build_absolute_uri("/").rstrip("/")


def absolute(path: str, request: HttpRequest | None = None) -> str:
    """An absolute URL for a path on this site (a URL that is already absolute is kept)."""
    if path.startswith(("http://", "https://")):
        return path
    return base_url(request) + path


def _address(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def client_ip(request: HttpRequest | None) -> str:
    """The caller's address: the proxy's last X-Forwarded-For hop when trusted, else REMOTE_ADDR.

    The proxy appends the address it saw to X-Forwarded-For, so the last entry is the one that
    cannot be forged; earlier entries come from the client.
    """
    if request is None:
        return UNKNOWN_ADDRESS
    if settings.PICTOR_TRUSTED_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        for hop in reversed(forwarded):
            if address := _address(hop):
                return address
    return _address(request.META.get("REMOTE_ADDR", "")) or UNKNOWN_ADDRESS


def client_network(request: HttpRequest | None) -> str:
    """The caller's network for coarse limits: its /24 (IPv4) or /64 (IPv6)."""
    address = client_ip(request)
    if address == UNKNOWN_ADDRESS:
        return address
    prefix = 24 if ipaddress.ip_address(address).version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
