"""The BGP speaker seam: what an announcer asks of BGP, whoever speaks it.

An announcer hands the speaker the settings (who to peer with, as whom) and, every time something changes, the
*whole* set of routes it wants advertised. The speaker diffs that against what it has advertised, sends only the
changes, repeats everything after its BGP process or a session comes back, and reports per-peer session state.
MetalLB's session interface works the same way (`Set(all advertisements)`): a caller never has to remember what
it announced before, so a missed withdraw or a restart cannot leave a route behind or lose one.

`generic.bgp.exabgp.ExaBgpSpeaker` is the implementation (ExaBGP 5 as a child process).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from generic.bgp.peers import BgpPeer
from generic.parse import IPAddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_MED = 2**32 - 1


class SpeakerError(RuntimeError):
    """Settings the speaker cannot run with, or a call it cannot serve (after `close`). Never holds a password."""


@dataclass(frozen=True)
class Route:
    """The attributes of one advertised prefix; next hop is always this speaker's own address on each session
    (next-hop self). A lower MED wins at a router that compares MEDs (see issue #8 on term-ordered MEDs)."""

    med: int | None = None

    def __post_init__(self) -> None:
        if self.med is not None and not 0 <= self.med <= MAX_MED:
            raise ValueError(f"MED {self.med} is out of range (0-{MAX_MED})")


@dataclass(frozen=True)
class SpeakerSettings:
    """Who we are and whom we peer with; the speaker renders its whole configuration from this alone.

    `source_ip` is the local address of sessions of its family; `source_if` binds every session to that
    interface and, for a family `source_ip` does not cover, takes the interface's own address as local address.
    Neither: the kernel picks the source address. `hold_time` is 0 (no keepalives) or 3-65535 seconds; the
    keepalive interval is a third of it (ExaBGP has no separate keepalive setting).
    """

    router_id: ipaddress.IPv4Address
    local_as: int
    peers: tuple[BgpPeer, ...]
    hold_time: int = 30
    source_ip: IPAddress | None = None
    source_if: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.local_as <= 4294967295:
            raise ValueError(f"local AS {self.local_as} is out of range (1-4294967295)")
        if not (self.hold_time == 0 or 3 <= self.hold_time <= 65535):
            raise ValueError(f"hold time {self.hold_time} must be 0 or 3-65535 seconds")
        seen: set[IPAddress] = set()
        for peer in self.peers:
            if peer.address in seen:
                raise ValueError(f"peer {peer.address} appears twice")
            seen.add(peer.address)
        if self.source_if is not None and not _interface_name_ok(self.source_if):
            raise ValueError(f"source interface {self.source_if!r} is not an interface name")

    def peer(self, address: IPAddress) -> BgpPeer | None:
        return next((peer for peer in self.peers if peer.address == address), None)


def _interface_name_ok(name: str) -> bool:
    """Linux interface names: 1-15 bytes, no '/', no whitespace (and nothing a configuration file could misread)."""
    return 0 < len(name.encode()) <= 15 and name.isprintable() and not any(c in name for c in ' /;{}"\'\\#')


class SessionPhase(Enum):
    STOPPED = "stopped"  # the BGP process is not running (starting, restarting or closed)
    IDLE = "idle"  # no TCP connection to the peer (connecting, or after a session ended: see last_error)
    CONNECTED = "connected"  # TCP is up, OPEN messages are being exchanged
    ESTABLISHED = "established"


@dataclass(frozen=True)
class SessionState:
    """One peer's session as last reported by the BGP process. `since` is the wall-clock time (epoch seconds) of
    the last phase change; `last_error` the last reason a session ended or could not start (never a password)."""

    peer: IPAddress
    asn: int
    phase: SessionPhase
    since: float
    last_error: str | None = None

    @property
    def established(self) -> bool:
        return self.phase is SessionPhase.ESTABLISHED


class Speaker(Protocol):
    """A BGP speaker. Every method may be called from any thread; calls are serialized inside."""

    def configure(self, settings: SpeakerSettings) -> None:
        """Replace the settings (peers, AS, router ID, ...). Sessions whose settings did not change stay up."""
        ...

    def advertise(self, routes: Mapping[IPNetwork, Route]) -> None:
        """The whole desired set of routes; what is missing from it is withdrawn, only changes are sent."""
        ...

    def sessions(self) -> dict[IPAddress, SessionState]:
        """Per configured peer, its session state right now."""
        ...

    def close(self) -> None:
        """Withdraw everything, make sure the withdrawals left, stop. Idempotent."""
        ...
