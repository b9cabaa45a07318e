"""Parsers for single configuration values: one home for every flag's and variable's syntax.

Each takes the text a person typed (flag or environment variable) and returns a typed value, or raises
`ValueError` whose message is the reason alone ("not an AS number (1-4294967295)"); the caller (config.py) adds
the flag name and the value, so every message has the same shape. The primitives shared with `generic/` (booleans,
numbers, AS numbers, ports, IPs) live in `generic.parse` and are re-exported here.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from generic.parse import IPAddress, parse_asn, parse_bool, parse_int, parse_ip, parse_port

__all__ = ["IPAddress", "parse_asn", "parse_bool", "parse_int", "parse_ip", "parse_port"]

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_IFNAME_BAD = re.compile(r"[\s/:]")


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



def parse_path(text: str) -> Path:
    if "\x00" in text:
        raise ValueError("not a file path")
    path = Path(text)
    if not path.is_absolute():
        raise ValueError("must be an absolute path")
    return path


def parse_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("not an http(s) URL")
    return text.rstrip("/")


def parse_health_check_address(text: str) -> str:
    """`--controlPlaneHealthCheckAddress`: a port (`6443`, `:6443`) means the local API server's
    `https://127.0.0.1:PORT/readyz`; an http(s) URL without a path gets `/readyz`. No credentials in the URL (they
    would reach the logs), no fragment."""
    port_text = text[1:] if text.startswith(":") else text
    if port_text.isdigit():
        return f"https://127.0.0.1:{parse_port(port_text)}/readyz"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not a port or an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (/readyz is readable without them)")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    if port == 0:
        raise ValueError("has an invalid port")
    path = parts.path if parts.path not in ("", "/") else "/readyz"
    return parts._replace(path=path).geturl()


def parse_log_level(text: str) -> int:
    names = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
             "error": logging.ERROR}
    if text.lower() in names:
        return names[text.lower()]
    try:
        number = parse_int(text, -8, 12, "a log level")
    except ValueError:
        raise ValueError("not a log level (debug, info, warning, error, or slog's -4, 0, 4, 8)") from None
    # kube-vip passes Go slog levels: -4 debug, 0 info, 4 warn, 8 error
    if number <= -4:
        return logging.DEBUG
    if number <= 0:
        return logging.INFO
    if number <= 4:
        return logging.WARNING
    return logging.ERROR


def parse_health_port(text: str) -> int:
    port = parse_int(text, 0, 65535, "a port")
    if 0 < port <= 1024:
        raise ValueError("must be 0 (off) or above 1024")
    return port


def parse_etcd_endpoints(text: str) -> tuple[str, ...]:
    endpoints = tuple(part.strip() for part in text.split(",") if part.strip())
    for endpoint in endpoints:
        target = endpoint
        if "://" in endpoint:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("not an etcd endpoint (host:port or http(s)://host:port)")
            target = parts.netloc
        parse_listen_address(target)
        if target.startswith(":"):
            raise ValueError("an etcd endpoint needs a host")
    if not endpoints:
        raise ValueError("no endpoint")
    return endpoints


def parse_vip_address(text: str) -> tuple[tuple[IPAddress, ...], str | None]:
    """IPs (at most one per family) or one DNS name."""
    parts = [part.strip() for part in text.split(",")]
    addresses: list[IPAddress] = []
    for part in parts:
        try:
            addresses.append(ipaddress.ip_address(part))
        except ValueError:
            if len(parts) == 1 and is_dns_name(part):
                return (), part.rstrip(".").lower()
            raise ValueError("not an IP address or a DNS name") from None
    if len({a.version for a in addresses}) != len(addresses):
        raise ValueError("at most one IPv4 and one IPv6 address")
    for address in addresses:
        if address.is_unspecified or address.is_multicast or address.is_loopback or address.is_link_local:
            raise ValueError("a VIP must be a unicast address (not loopback, link-local, multicast or 0.0.0.0)")
    return tuple(addresses), None


def parse_prefixes(text: str, addresses: tuple[IPAddress, ...]) -> tuple[int, int]:
    """`v4,v6` prefix lengths, or one length for the family of the addresses."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) == 2:
        return parse_int(parts[0], 1, 32, "an IPv4 prefix length"), parse_int(
            parts[1], 1, 128, "an IPv6 prefix length")
    if len(parts) != 1:
        raise ValueError("one prefix length, or 'v4,v6'")
    if addresses and all(a.version == 6 for a in addresses):
        return 32, parse_int(parts[0], 1, 128, "an IPv6 prefix length")
    return parse_int(parts[0], 1, 32, "an IPv4 prefix length"), 128


def parse_image(text: str) -> str:
    if not text or any(c.isspace() for c in text) or len(text) > 512:
        raise ValueError("not a container image reference")
    return text


def parse_class_name(text: str) -> str:
    name, _, path = text.rpartition("/")
    if not path or (name and not is_dns_name(name)):
        raise ValueError("not a loadBalancerClass (domain/name)")
    return text
