"""The client's address: the TCP peer, or what a trusted reverse proxy says it forwarded.

X-Forwarded-For and Forwarded are believed only when the peer is inside
TALLENNE_TRUSTED_PROXIES, and then read from the right: the first hop that is not itself a
trusted proxy is the client. Login throttling, the audit trail and the logs all use it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

from schemas.ip import Network
from service.http.keys import CLIENT_ADDRESS, TRUSTED_PROXIES


def _address(hop: str) -> str:
    """An address from a forwarded hop: quotes, brackets and a port taken off."""
    hop = hop.strip().strip('"')
    if hop.startswith("["):
        return hop[1:].split("]", 1)[0]
    if hop.count(":") == 1:  # IPv4 with a port
        return hop.split(":", 1)[0]
    return hop


def _trusted(address: str | None, networks: Sequence[Network]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _forwarded_hops(request: web.Request) -> list[str]:
    """The addresses a proxy chain reports, the original client first."""
    if request.headers.get("Forwarded"):
        return [_address(str(element["for"])) for element in request.forwarded
                if "for" in element]
    hops: list[str] = []
    for header in request.headers.getall("X-Forwarded-For", []):
        hops.extend(_address(part) for part in header.split(",") if part.strip())
    return hops


def client_address(request: web.Request) -> str | None:
    """The calling client's IP address (full; callers truncate it before keeping it)."""
    known: str | None = request.get(CLIENT_ADDRESS)
    if known is not None:
        return known
    networks = request.app.get(TRUSTED_PROXIES, ())
    address = request.remote
    if networks and _trusted(address, networks):
        hops = _forwarded_hops(request)
        for hop in reversed(hops):
            address = hop
            if not _trusted(hop, networks):
                break
    if address is not None:
        request[CLIENT_ADDRESS] = address
    return address
