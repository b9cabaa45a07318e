"""The control-plane VIP: present on this node exactly while it leads, and kept that way.

Desired state lives here (one boolean: leading or not); election callbacks flip it and apply it at once, and a
reconciler compares the kernel with it every `period` seconds and repairs drift both ways, logging each repair:
a leader whose VIP was deleted re-adds it and announces again; a follower holding the VIP (a leftover from a
crash, a partition, a hand-added address) removes it. On stop the VIP is withdrawn before the Lease is released.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable

from generic.addresses import Addresses, Vip
from generic.announce import Announcer
from generic.logfmt import get_logger
from kubevip_metal.config import Config, DnsMode, Mode

log = get_logger("kubevip_metal.controlplane")

RECONCILE_SECONDS = 1.0


class VipSetupError(Exception):
    """The VIP cannot be placed yet (no interface, name does not resolve); the manager retries."""


def resolve_vips(config: Config, addresses: Addresses) -> list[Vip]:
    """The configured VIP(s) on the configured interface, or on the default route's interface."""
    ips = list(config.vip.addresses)
    if config.vip.dns_name:
        ips = _resolve(config.vip.dns_name, config.vip.dns_mode)
    vips = []
    for ip in ips:
        default = "lo" if config.mode is Mode.METAL_EIP else addresses.default_route_interface(ip.version)
        interface = config.vip.interface or default
        if interface is None:
            raise VipSetupError(f"no --interface given and no IPv{ip.version} default route to pick one from")
        prefix = config.vip.prefix_v4 if ip.version == 4 else config.vip.prefix_v6
        vips.append(Vip(ip, prefix, interface))
    return vips


def _resolve(name: str, mode: DnsMode) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        answers = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise VipSetupError(f"cannot resolve {name}: {exc}") from None
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for answer in answers:
        ip = ipaddress.ip_address(str(answer[4][0]))
        if ip not in found:
            found.append(ip)
    v4 = [found[i] for i, ip in enumerate(found) if ip.version == 4][:1]
    v6 = [found[i] for i, ip in enumerate(found) if ip.version == 6][:1]
    choices: dict[DnsMode, list[ipaddress.IPv4Address | ipaddress.IPv6Address]] = {
        DnsMode.FIRST: found[:1], DnsMode.IPV4: v4, DnsMode.IPV6: v6, DnsMode.DUAL: v4 + v6}
    chosen = choices[mode]
    if not chosen:
        raise VipSetupError(f"{name} has no {mode.value} address")
    return chosen


class ControlPlaneVip:
    """Holds the VIPs while leading; a reconciler thread repairs drift every `period` seconds."""

    def __init__(self, vips: list[Vip], announcer: Announcer, period: float = RECONCILE_SECONDS,
                 followers: list[Callable[[bool], None]] | None = None,
                 stoppers: list[Callable[[], None]] | None = None) -> None:
        """`followers` are told of every change of leadership (the Metal Elastic IP follows the leader);
        `stoppers` run once at the end."""
        self.vips, self.announcer, self.period = vips, announcer, period
        self.followers, self.stoppers = followers or [], stoppers or []
        self._leading = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reconcile_loop, name="cp-reconciler", daemon=True)

    def start(self) -> None:
        """Clear anything a previous crash left, then keep reconciling."""
        for vip in self.vips:
            if self.announcer.withdraw(vip):
                log.warning("vip.leftover_removed", vip=str(vip))
        self._thread.start()

    def set_leading(self, leading: bool) -> None:
        with self._lock:
            self._leading = leading
            for vip in self.vips:
                if leading:
                    self.announcer.announce(vip)
                else:
                    self.announcer.withdraw(vip)
        for follower in self.followers:
            follower(leading)
        log.info("controlplane.leading" if leading else "controlplane.following", vips=[str(v) for v in self.vips],
                 mono=round(time.monotonic(), 6))

    def reconcile(self) -> int:
        """One pass; returns the number of repairs."""
        repairs = 0
        with self._lock:
            for vip in self.vips:
                try:
                    if self.announcer.ensure(vip, self._leading):
                        repairs += 1
                        log.warning("reconcile.repaired", vip=str(vip), leading=self._leading)
                except Exception as exc:
                    log.error("reconcile.failed", vip=str(vip), error=str(exc))
        return repairs

    def _reconcile_loop(self) -> None:
        while not self._stop.wait(self.period):
            self.reconcile()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._leading = False
            for follower in self.followers:
                follower(False)
            for stopper in self.stoppers:
                stopper()
            for vip in self.vips:
                self.announcer.withdraw(vip)
