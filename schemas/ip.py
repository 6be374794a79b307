"""The rules for client IP addresses: kept only truncated to /24 (IPv4) or /48 (IPv6); a
list of networks (the trusted proxies) read from text."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_IPV4 = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")


def _ipv4_octets(address: str) -> tuple[int, int, int, int] | None:
    """Parse dotted IPv4 quickly (web-event batches carry one per line); None if it is not."""
    match = _IPV4.match(address)
    if match is None:
        return None
    parts = match.groups()
    # Like ipaddress: no octet above 255 and no leading zeros (ambiguous octal).
    if any(len(p) > 1 and p[0] == "0" for p in parts):
        return None
    octets = tuple(int(p) for p in parts)
    if any(o > 255 for o in octets):
        return None
    return octets  # type: ignore[return-value]


@lru_cache(maxsize=65536)
def truncated_ip(address: str | None) -> str | None:
    """The /24 or /48 network of an address, or None when it is not an IP address."""
    if not address:
        return None
    octets = _ipv4_octets(address)
    if octets is not None:
        return f"{octets[0]}.{octets[1]}.{octets[2]}.0/24"
    if ":" not in address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def is_ip_address(address: str) -> bool:
    return truncated_ip(address) is not None


def parse_networks(text: str) -> tuple[Network, ...]:
    """`10.0.0.0/8, 192.0.2.7` → networks; a ValueError names the item that is not one."""
    networks: list[Network] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from exc
    return tuple(networks)
