"""Traffic blocks as nftables rulesets, rendered whole from the set of blocks a host should have.

Rendering the complete table each time and loading it in one transaction makes `block` idempotent (the same
block twice is one rule) and leaves no half-applied state. The preferred family is `netdev`, hooked on the
host's `eth0` ingress and egress: a dropped packet vanishes on the wire, so the host sees what a partition
looks like (TCP retries, then time-outs) rather than a local EPERM from an output hook. Kernels before 5.16
have no egress hook; there the `inet` family (input/output) stands in, and a sender may then see EPERM.

ARP and IPv6 neighbour discovery always pass, as through a firewall: a block hides the host's IP traffic,
not its presence on the link, and lifting it works at once instead of waiting out failed neighbour entries.
(`Rig.link_down` is the lever for losing the link itself.)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

TABLE = "kvm_block"
_NEIGHBOUR_DISCOVERY = "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept"
Family = Literal["netdev", "inet"]
FAMILIES: tuple[Family, ...] = ("netdev", "inet")


@dataclass(frozen=True, order=True)
class Block:
    """Drop everything to and from `host`, or only TCP to and from `host`'s port `port`."""

    host: str
    port: int | None = None

    @classmethod
    def of(cls, host: str, port: int | None) -> Block:
        address = ipaddress.ip_address(host)  # ValueError for a name or a typo, before nft sees it
        if port is not None and not 1 <= port <= 65535:
            raise ValueError(f"TCP port {port} out of range 1-65535")
        return cls(str(address), port)

    def rules(self) -> tuple[str, str]:
        """(incoming rule, outgoing rule)."""
        proto = "ip6" if ipaddress.ip_address(self.host).version == 6 else "ip"
        incoming = f"{proto} saddr {self.host}"
        outgoing = f"{proto} daddr {self.host}"
        if self.port is not None:
            incoming += f" tcp sport {self.port}"
            outgoing += f" tcp dport {self.port}"
        return f"{incoming} drop", f"{outgoing} drop"


def _chain(name: str, hook: str, device: str | None, rules: list[str]) -> str:
    on_device = f' device "{device}"' if device else ""
    body = "".join(f"    {rule}\n" for rule in rules)
    return (f"  chain {name} {{\n    type filter hook {hook}{on_device} priority -500; policy accept;\n"
            f"{body}  }}\n")


def clear(family: Family) -> str:
    """Remove the table if present (declaring it first makes the delete succeed when it is absent)."""
    return f"table {family} {TABLE} {{}}\ndelete table {family} {TABLE}\n"


def ruleset(blocks: Iterable[Block], family: Family, device: str) -> str:
    """The whole table for `blocks`, replacing any earlier version of it atomically."""
    pairs = [block.rules() for block in sorted(blocks)]
    incoming = [_NEIGHBOUR_DISCOVERY, *(pair[0] for pair in pairs)]
    outgoing = [_NEIGHBOUR_DISCOVERY, *(pair[1] for pair in pairs)]
    if family == "netdev":
        chains = _chain("ingress", "ingress", device, incoming) + _chain("egress", "egress", device, outgoing)
    else:
        chains = _chain("input", "input", None, incoming) + _chain("output", "output", None, outgoing)
    return clear(family) + f"table {family} {TABLE} {{\n{chains}}}\n"
