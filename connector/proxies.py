"""Trust ``X-Forwarded-For`` / ``X-Forwarded-Proto`` only from ``FLAVOURS_TRUSTED_PROXIES``.

Behind a TLS-terminating proxy the receiver sees plain HTTP from the proxy's address. When the
direct peer is a trusted proxy, the client address is the right-most forwarded address that is
not itself a trusted proxy, and the scheme is the one the proxy reports. From anyone else the
headers are ignored, so a client cannot claim HTTPS or another address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from core.settings import IpNetwork


class TrustedProxyMiddleware:
    """WSGI middleware applying forwarded headers from trusted proxies only."""

    def __init__(self, app: Callable[..., Any], trusted: Iterable[IpNetwork]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    def is_trusted(self, address: str | None) -> bool:
        """Whether ``address`` is one of the trusted proxies."""
        if not address or not self.trusted:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if self.is_trusted(environ.get("REMOTE_ADDR")):
            hops = [h.strip() for h in environ.get("HTTP_X_FORWARDED_FOR", "").split(",")]
            for hop in reversed([h for h in hops if h]):
                environ["REMOTE_ADDR"] = hop
                if not self.is_trusted(hop):
                    break
            proto = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
        return self.app(environ, start_response)
