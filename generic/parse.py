"""Parsers for the value types every layer shares (booleans, numbers, AS numbers, ports, IP addresses).

Each takes the text a person typed and returns a typed value, or raises `ValueError` whose message is the reason
alone ("not an AS number (1-4294967295)"); the caller adds the name of the setting and the value, so every message
has the same shape. kube-vip-metal's flag-specific parsers build on these (kubevip_metal/parsers.py).
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool, which kube-vip uses for every boolean environment variable."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("not a boolean (true/false, 1/0, t/f)")


def parse_int(text: str, low: int, high: int, what: str = "a number") -> int:
    stripped = text.strip()
    if not stripped.isascii() or not stripped.lstrip("-").isdigit() or len(stripped) > 12:
        raise ValueError(f"not {what} ({low}-{high})")
    value = int(stripped)
    if not low <= value <= high:
        raise ValueError(f"not {what} ({low}-{high})")
    return value


def parse_asn(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError("not an AS number (1-4294967295)")
    value = int(text)
    if not 1 <= value <= 4294967295:
        raise ValueError("not an AS number (1-4294967295)")
    return value


def parse_port(text: str) -> int:
    return parse_int(text, 1, 65535, "a TCP port")


def parse_ip(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError("not an IP address") from None
