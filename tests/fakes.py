"""In-process fakes of the daemon's outside world, for logic tests without namespaces or subprocesses."""

from __future__ import annotations

import threading
from typing import Any

from generic.addresses import AddressError, Addresses, Vip


class FakeAddresses(Addresses):
    """A kernel address table in memory: `held` is what is on the interfaces; `missing` interfaces refuse adds."""

    def __init__(self, interfaces: tuple[str, ...] = ("eth0", "lo")) -> None:
        super().__init__()
        self.interfaces = set(interfaces)
        self.held: set[Vip] = set()
        self.down: set[str] = set()
        self.calls: list[tuple[str, Vip]] = []
        self._guard = threading.Lock()

    def add(self, vip: Vip) -> bool:
        with self._guard:
            if vip.interface not in self.interfaces:
                raise AddressError(f"interface {vip.interface} does not exist")
            self.calls.append(("add", vip))
            added = vip not in self.held
            self.held.add(vip)
            return added

    def remove(self, vip: Vip) -> bool:
        with self._guard:
            self.calls.append(("remove", vip))
            removed = vip in self.held
            self.held.discard(vip)
            return removed

    def present(self, vip: Vip) -> bool:
        return vip in self.held

    def events(self) -> None:
        """No kernel behind it, so no change feed: the VIP controller polls, as it does where netlink has none."""
        return None

    def index(self, interface: str) -> int:
        if interface not in self.interfaces:
            raise AddressError(f"interface {interface} does not exist")
        return sorted(self.interfaces).index(interface) + 1

    def mac(self, interface: str) -> bytes:
        return bytes([2, 0, 0, 0, 0, self.index(interface)])

    def link_up(self, interface: str) -> bool:
        return interface in self.interfaces and interface not in self.down

    def default_route_interface(self, version: int = 4) -> str | None:
        return "eth0" if "eth0" in self.interfaces else None

    def close(self) -> None:
        pass


class RecordingAnnouncer:
    """An announcer that remembers what it was told, in order, and what it announces now."""

    name = "recording"

    def __init__(self) -> None:
        self.events: list[tuple[str, Vip]] = []
        self.announced: set[Vip] = set()
        self.closed = False
        self.drifted: set[Vip] = set()  # refresh() reports these once as repaired

    def announce(self, vip: Vip) -> None:
        self.events.append(("announce", vip))
        self.announced.add(vip)

    def withdraw(self, vip: Vip) -> None:
        self.events.append(("withdraw", vip))
        self.announced.discard(vip)

    def refresh(self, vip: Vip) -> bool:
        if vip in self.drifted:
            self.drifted.discard(vip)
            self.events.append(("refresh", vip))
            return True
        return False

    def close(self) -> None:
        self.closed = True
        self.announced.clear()


class RecordingSpeaker:
    """A BGP speaker (generic.bgp.speaker.Speaker) that records its settings and the whole wanted set it is
    handed."""

    def __init__(self, settings: Any) -> None:
        self.settings, self.closed = settings, False
        self.routes: dict[Any, Any] = {}

    def configure(self, settings: Any) -> None:
        self.settings = settings

    def advertise(self, routes: Any) -> None:
        self.routes = dict(routes)

    def sessions(self) -> dict[Any, Any]:
        return {}

    def close(self) -> None:
        self.routes, self.closed = {}, True
