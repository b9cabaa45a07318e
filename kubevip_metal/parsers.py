"""Parsers for single configuration values.

Each takes the text a person typed (flag or environment variable) and returns a typed value, or raises
`ValueError` whose message is the reason alone ("not an AS number (1-4294967295)"); the caller adds the
flag name and the value, so every message has the same shape.
"""

from __future__ import annotations

import ipaddress
import math
import re
import uuid

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_IFNAME_BAD = re.compile(r"[\s/:]")


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool, which kube-vip uses for every boolean environment variable."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("not a boolean (true/false, 1/0, t/f)")


def parse_asn(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError("not an AS number (1-4294967295)")
    value = int(text)
    if not 1 <= value <= 4294967295:
        raise ValueError("not an AS number (1-4294967295)")
    return value


def parse_seconds(text: str) -> float:
    """A positive duration in seconds; fractions allowed ("0.75"), Go-style "5s" too."""
    body = text[:-1] if text.endswith("s") and not text.endswith("ms") else text
    scale = 1.0
    if text.endswith("ms"):
        body, scale = text[:-2], 0.001
    try:
        value = float(body) * scale
    except ValueError:
        raise ValueError("not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive number of seconds")
    if value > 86400:
        raise ValueError("must be at most 86400 seconds")
    return value


def parse_int(text: str, low: int, high: int, what: str = "a number") -> int:
    stripped = text.strip()
    if not stripped.isascii() or not stripped.lstrip("-").isdigit() or len(stripped) > 12:
        raise ValueError(f"not {what} ({low}-{high})")
    value = int(stripped)
    if not low <= value <= high:
        raise ValueError(f"not {what} ({low}-{high})")
    return value


def parse_port(text: str) -> int:
    return parse_int(text, 1, 65535, "a TCP port")


def parse_ip(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError("not an IP address") from None


def parse_ipv4(text: str) -> ipaddress.IPv4Address:
    address = parse_ip(text)
    if not isinstance(address, ipaddress.IPv4Address):
        raise ValueError("not an IPv4 address (a BGP router ID is a dotted quad)")
    return address


def is_dns_name(text: str) -> bool:
    """RFC 1123 host name with at least one non-numeric top label, so "10.0.0" is not mistaken for a name."""
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if not all(_HOST_LABEL.match(label) for label in labels):
        return False
    return not labels[-1].isdigit()


def parse_dns_label(text: str) -> str:
    """A Kubernetes namespace-style name (RFC 1123 label)."""
    if not _LABEL.match(text):
        raise ValueError("not a valid name (lower-case letters, digits and '-', at most 63)")
    return text


def parse_dns_subdomain(text: str) -> str:
    """A Kubernetes object name (RFC 1123 subdomain)."""
    if len(text) > 253 or not all(_LABEL.match(part) for part in text.split(".")):
        raise ValueError("not a valid Kubernetes name (lower-case RFC 1123 subdomain)")
    return text


def parse_interface(text: str) -> str:
    """A Linux interface name: 1-15 bytes, no whitespace, '/' or ':'."""
    if not 1 <= len(text.encode()) <= 15 or _IFNAME_BAD.search(text) or text in {".", ".."}:
        raise ValueError("not a Linux interface name (1-15 characters, no spaces, '/' or ':')")
    return text


def parse_uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ValueError("not a UUID") from None


def parse_listen_address(text: str) -> tuple[str, int]:
    """`host:port` or `:port` (all addresses), as Go's net/http takes it."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError("not a listen address (host:port or :port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        parse_ip(host)
    elif host:
        try:
            parse_ip(host)
        except ValueError:
            if not is_dns_name(host):
                raise ValueError("not a listen address (host:port or :port)") from None
    return host, parse_port(port)


def parse_choice(text: str, choices: tuple[str, ...]) -> str:
    if text not in choices:
        raise ValueError("must be one of " + ", ".join(choices))
    return text
