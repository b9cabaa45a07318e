"""VIP addresses on an interface, through netlink (pyroute2).

A VIP is added as a /32 or /128 (or the configured prefix) with `preferred_lft 0`: the address is
"deprecated", so the kernel answers for it and accepts its traffic but never picks it as the source of the
node's own connections (which would break them when the VIP moves). IPv6 VIPs are added with NODAD, so they
are usable at once instead of sitting tentative for a second, and a DAD-failed copy is replaced.
Every call is idempotent: adding a present VIP or removing an absent one is not an error.

`AddressEvents` is the kernel's change feed for the same table: a reconciler blocks on it instead of polling.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from generic.logfmt import get_logger

log = get_logger("generic.addresses")

IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
# rtnetlink multicast groups (linux/rtnetlink.h): links, IPv4 and IPv6 addresses
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
NETLINK_ROUTE = 0


@dataclass(frozen=True)
class Vip:
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    prefixlen: int
    interface: str

    def __str__(self) -> str:
        return f"{self.address}/{self.prefixlen}@{self.interface}"


class AddressError(Exception):
    """The kernel refused an address change (missing interface, permissions)."""


@dataclass
class _Snapshot:
    """One batch's view of the kernel: interface indexes, and every address by (address, interface index)."""

    indexes: dict[str, int] = field(default_factory=dict)
    entries: dict[tuple[str, int], list[Any]] | None = None
    links_up: dict[str, bool] = field(default_factory=dict)
    macs: dict[str, bytes] = field(default_factory=dict)


class _Added:
    """What a batch's snapshot records for an address we just added (it looks like a netlink entry)."""

    def __init__(self, index: int, prefixlen: int) -> None:
        self._fields = {"index": index, "prefixlen": prefixlen, "flags": 0}

    def __getitem__(self, name: str) -> Any:
        return self._fields[name]

    def get_attr(self, _name: str, default: Any = None) -> Any:
        return default


class AddressEvents:
    """The kernel's notifications of address and link changes (rtnetlink multicast), as a wake-up for a reconciler.

    Only *that* something changed matters: the reconciler then reads the table itself (through `Addresses`), so
    the messages are drained and never parsed. That is why this is a bare `AF_NETLINK` socket from the standard
    library rather than a pyroute2 object: pyroute2 0.9's synchronous API runs an asyncio loop per call, and a
    blocked `select()` on one socket costs nothing while nothing changes. A receive buffer overflow (ENOBUFS, a
    burst of thousands of changes) is itself a change. `interrupt()` wakes a waiter from another thread.
    """

    GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            self._sock.bind((0, self.GROUPS))
            self._sock.setblocking(False)
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self._sock.close()
            raise

    def wait(self, timeout: float | None) -> bool:
        """Block until the kernel reports a change (True) or `timeout` seconds pass or `interrupt()` (False);
        everything pending is drained, so a burst of changes is one wake-up."""
        sock = self._sock.fileno()
        ready, _, _ = select.select([sock, self._wake_r], [], [], timeout)
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
        return sock in ready and self.drain()

    def drain(self) -> bool:
        """Read whatever is pending without blocking; True if anything was."""
        changed = False
        while True:
            try:
                if not self._sock.recv(65536):
                    return changed
                changed = True
            except BlockingIOError:
                return changed
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:  # overflowed: changes were lost, which is a change
                    raise
                changed = True

    def interrupt(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        self._sock.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class Addresses:
    """Add, remove and list addresses; one netlink socket, opened lazily, used under the caller's lock."""

    def __init__(self) -> None:
        self._ipr: Any = None
        self._batch: _Snapshot | None = None

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Within it, presence checks use one dump of every address (taken on first use, then kept up to date by
        our own adds and removes) instead of one dump per VIP: a pass over 10,000 Service VIPs costs one netlink
        dump, not 10,000 dumps of 10,000 addresses. Nested uses share the outer one."""
        if self._batch is not None:
            yield
            return
        self._batch = _Snapshot()
        try:
            yield
        finally:
            self._batch = None

    def _netlink(self) -> Any:
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def events(self) -> AddressEvents | None:
        """A change feed of this table (None: there is none, the caller polls). Each call opens a new one."""
        return AddressEvents()

    def index(self, interface: str) -> int:
        batch = self._batch
        if batch is not None and interface in batch.indexes:
            return batch.indexes[interface]
        found = self._netlink().link_lookup(ifname=interface)
        if not found:
            raise AddressError(f"interface {interface} does not exist")
        if batch is not None:
            batch.indexes[interface] = int(found[0])
        return int(found[0])

    def _entries(self, vip: Vip) -> list[Any]:
        family = socket.AF_INET if vip.address.version == 4 else socket.AF_INET6
        try:
            index = self.index(vip.interface)
        except AddressError:
            return []
        batch = self._batch
        if batch is not None:
            if batch.entries is None:
                batch.entries = {}
                for entry in self._netlink().get_addr():
                    for name in ("IFA_ADDRESS", "IFA_LOCAL"):
                        found = entry.get_attr(name)
                        if found:
                            key = (str(found), int(entry["index"]))
                            if entry not in batch.entries.setdefault(key, []):
                                batch.entries[key].append(entry)
            return list(batch.entries.get((str(vip.address), index), []))
        return [entry for entry in self._netlink().get_addr(family=family, index=index)
                if entry.get_attr("IFA_ADDRESS") == str(vip.address)
                or entry.get_attr("IFA_LOCAL") == str(vip.address)]

    def _note(self, vip: Vip, index: int, entry: Any | None) -> None:
        """Keep the batch's snapshot true to our own change (None: removed)."""
        batch = self._batch
        if batch is not None and batch.entries is not None:
            if entry is None:
                batch.entries.pop((str(vip.address), index), None)
            else:
                batch.entries[(str(vip.address), index)] = [entry]

    @staticmethod
    def _usable(entries: list[Any]) -> bool:
        return any(not (entry.get_attr("IFA_FLAGS", entry["flags"]) & IFA_F_DADFAILED) for entry in entries)

    def present(self, vip: Vip) -> bool:
        """True when the VIP is on its interface and usable (not DAD-failed)."""
        return self._usable(self._entries(vip))

    def add(self, vip: Vip) -> bool:
        """Make the VIP present; returns True if anything changed (one netlink dump when nothing does)."""
        entries = self._entries(vip)
        if self._usable(entries):
            return False
        if entries:  # a DAD-failed IPv6 copy: replace it
            self.remove(vip)
        options: dict[str, Any] = {"preferred": 0}
        if vip.address.version == 6:
            options["flags"] = IFA_F_NODAD
        index = self.index(vip.interface)
        try:
            self._netlink().addr("replace", index=index, address=str(vip.address), prefixlen=vip.prefixlen,
                                 **options)
        except Exception as exc:
            raise AddressError(f"cannot add {vip}: {exc}") from None
        self._note(vip, index, _Added(index, vip.prefixlen))
        return True

    def remove(self, vip: Vip) -> bool:
        """Make the VIP absent; returns True if it was there."""
        removed = False
        for entry in self._entries(vip):
            try:
                self._netlink().addr("del", index=entry["index"], address=str(vip.address),
                                     prefixlen=entry["prefixlen"])
                removed = True
            except Exception as exc:
                if getattr(exc, "code", None) != errno.EADDRNOTAVAIL:
                    raise AddressError(f"cannot remove {vip}: {exc}") from None
            self._note(vip, int(entry["index"]), None)
        return removed

    def link_up(self, interface: str) -> bool:
        """Carrier and admin state up (a pulled cable or `ip link set down` make this False); read once per
        interface within a batch (a pass over 1,000 VIPs on one interface asked the kernel 1,000 times)."""
        batch = self._batch
        if batch is not None and interface in batch.links_up:
            return batch.links_up[interface]
        try:
            link = self._netlink().get_links(self.index(interface))[0]
        except (AddressError, IndexError):
            return False
        up = bool(link.get_attr("IFLA_OPERSTATE") in ("UP", "UNKNOWN") and link["flags"] & 1)
        if batch is not None:
            batch.links_up[interface] = up
        return up

    def mac(self, interface: str) -> bytes:
        """The interface's hardware address, read once per interface within a batch (taking 1,000 Service VIPs
        asked the kernel for the same link 1,000 times, as long as the adds themselves took)."""
        batch = self._batch
        if batch is not None and interface in batch.macs:
            return batch.macs[interface]
        link = self._netlink().get_links(self.index(interface))[0]
        mac = bytes.fromhex(str(link.get_attr("IFLA_ADDRESS")).replace(":", ""))
        if batch is not None:
            batch.macs[interface] = mac
        return mac

    def default_route_interface(self, version: int = 4) -> str | None:
        """The interface of the default route (kube-vip's choice when --interface is not given)."""
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        for route in self._netlink().get_default_routes(family=family):
            index = route.get_attr("RTA_OIF")
            if index is None:
                multipath = route.get_attr("RTA_MULTIPATH") or []
                index = multipath[0]["oif"] if multipath else None
            if index is not None:
                return str(self._netlink().get_links(index)[0].get_attr("IFLA_IFNAME"))
        return None
