"""Resolving a host name to the address(es) a mode wants, with a deadline and the answer's TTL.

`getaddrinfo` has neither: its timeout is resolv.conf's (5 s per server, two tries, by default) and it hides the
TTL. dnspython asks the node's resolver (/etc/resolv.conf, as kube-vip's Go resolver does) or given nameservers,
under one deadline for the whole lookup, and tells the TTL, so a follower can ask again when the answer expires
instead of guessing. It is imported on the first lookup only: a daemon whose `--address` is an IP never loads it.

The modes are kube-vip's `dns_mode`:

| mode    | queries     | the address(es)                                        |
|---------|-------------|--------------------------------------------------------|
| `first` | A, then AAAA only when there is no A | the first answer (IPv4 before IPv6) |
| `ipv4`  | A           | the first A                                            |
| `ipv6`  | AAAA        | the first AAAA                                         |
| `dual`  | A and AAAA  | the first of each; a missing family is a failure       |

"The first" of several records of one family is the lowest address, not the first on the wire: servers rotate
a record set's order, and a VIP that followed the rotation would move at every lookup (and each node would
pick its own).

`/etc/hosts` is not consulted: a name the VIP follows lives in DNS, where it can change.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from generic.parse import IPAddress

MODES = ("first", "ipv4", "ipv6", "dual")
TIMEOUT = 2.0  # seconds for a whole lookup (both queries, every nameserver)


@dataclass(frozen=True)
class Answer:
    addresses: tuple[IPAddress, ...]  # what the mode chose, IPv4 before IPv6
    ttl: float | None  # seconds the answer may be kept (the smallest record set's TTL); None: not told

    def __str__(self) -> str:
        return ",".join(str(ip) for ip in self.addresses)


class LookupFailed(Exception):
    """No usable answer: the name does not exist, has no address of the mode, or no nameserver answered in time.
    The message is one line for a log (`cannot resolve NAME: REASON`)."""


Lookup = Callable[[str, str], Answer]  # (name, mode) -> answer, or LookupFailed


class DnsResolver:
    """A `Lookup` through dnspython. `nameservers` None: the node's /etc/resolv.conf (read at each lookup, so a
    changed resolv.conf is followed); otherwise those servers on `port`. No cache of its own: every lookup asks."""

    def __init__(self, timeout: float = TIMEOUT, nameservers: Sequence[str] | None = None, port: int = 53,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if timeout <= 0:
            raise ValueError("the lookup timeout must be positive")
        self.timeout, self.nameservers, self.port, self._clock = timeout, list(nameservers or ()), port, clock

    def __call__(self, name: str, mode: str) -> Answer:
        if mode not in MODES:
            raise ValueError(f"DNS mode {mode!r}: one of {', '.join(MODES)}")
        resolver = self._resolver(name)
        deadline = self._clock() + self.timeout
        found: dict[str, list[IPAddress]] = {"A": [], "AAAA": []}
        ttls: list[float] = []
        wanted = {"first": ("A", "AAAA"), "ipv4": ("A",), "ipv6": ("AAAA",), "dual": ("A", "AAAA")}[mode]
        for rdtype in wanted:
            if mode == "first" and found["A"]:
                break
            left = deadline - self._clock()
            if left <= 0:
                raise LookupFailed(f"cannot resolve {name}: no answer within {self.timeout:g} s")
            addresses, ttl = self._query(resolver, name, rdtype, left)
            found[rdtype] = addresses
            if ttl is not None and addresses:
                ttls.append(ttl)
        return Answer(choose(name, found["A"], found["AAAA"], mode), min(ttls) if ttls else None)

    def _resolver(self, name: str) -> Any:
        import dns.resolver

        try:
            resolver = dns.resolver.Resolver(configure=not self.nameservers)
        except dns.resolver.NoResolverConfiguration as exc:
            raise LookupFailed(f"cannot resolve {name}: no nameserver in /etc/resolv.conf ({exc})") from None
        if self.nameservers:
            resolver.nameservers = list(self.nameservers)
            resolver.port = self.port
        resolver.cache = None
        resolver.timeout = self.timeout  # per try; the lifetime below bounds the whole query
        return resolver

    def _query(self, resolver: Any, name: str, rdtype: str, lifetime: float) -> tuple[list[IPAddress], float | None]:
        import dns.exception
        import dns.resolver

        try:
            answer = resolver.resolve(name, rdtype, lifetime=lifetime, search=True, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            raise LookupFailed(f"cannot resolve {name}: no such name (NXDOMAIN)") from None
        except dns.exception.Timeout:
            raise LookupFailed(f"cannot resolve {name}: no answer within {self.timeout:g} s") from None
        except dns.resolver.NoNameservers as exc:
            raise LookupFailed(f"cannot resolve {name}: every nameserver failed ({_one_line(exc)})") from None
        except (dns.exception.DNSException, OSError) as exc:
            raise LookupFailed(f"cannot resolve {name}: {_one_line(exc)}") from None
        if answer.rrset is None:
            return [], None
        # servers rotate the order of a record set, so "the first" is the lowest: stable across lookups, and the
        # same on every node (a follower and the leader pick alike without talking)
        return sorted(ipaddress.ip_address(rdata.address) for rdata in answer.rrset), float(answer.rrset.ttl)


def choose(name: str, v4: Sequence[IPAddress], v6: Sequence[IPAddress], mode: str) -> tuple[IPAddress, ...]:
    """The address(es) `mode` takes from the answers; LookupFailed when it finds none."""
    first = [*v4[:1], *v6[:1]][:1]
    chosen = {"first": first, "ipv4": list(v4[:1]), "ipv6": list(v6[:1]), "dual": [*v4[:1], *v6[:1]]}[mode]
    if not chosen or (mode == "dual" and len(chosen) < 2):
        missing = "an IPv4 and an IPv6" if mode == "dual" else {"first": "an", "ipv4": "an IPv4",
                                                                "ipv6": "an IPv6"}[mode]
        raise LookupFailed(f"cannot resolve {name}: no {missing} address (dnsMode {mode})")
    return tuple(chosen)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
