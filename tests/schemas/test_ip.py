"""Client IPs are stored only as their /24 or /48 network."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.ip import is_ip_address, truncated_ip


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("192.0.2.200", "192.0.2.0/24"),
        ("10.1.2.3", "10.1.2.0/24"),
        ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
    ],
)
def test_addresses_are_truncated(address: str, network: str) -> None:
    assert truncated_ip(address) == network


@pytest.mark.parametrize("value", ["", "x", "1.2.3", "256.1.1.1", "01.2.3.4", "1.2.3.4.5",
                                   "2001:db8::zz", "1.2.3.4/24"])
def test_non_addresses_are_refused(value: str) -> None:
    assert truncated_ip(value) is None
    assert not is_ip_address(value) if value else True


@given(st.ip_addresses())
def test_fast_path_agrees_with_the_standard_library(ip: ipaddress.IPv4Address
                                                    | ipaddress.IPv6Address) -> None:
    prefix = 24 if ip.version == 4 else 48
    expected = str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
    assert truncated_ip(str(ip)) == expected
