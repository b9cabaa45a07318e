"""The Equinix Metal API as a source of BGP settings (`--metal --bgp`): this device's neighbours, read at start,
again every `REFRESH_SECONDS`, and at once on leadership, so a change on the Metal side (a project password set,
a session added for another family) re-peers the speaker without a restart.

What is read and how (sessions created when missing, every neighbour, every peer IP) is
kubevip_metal.metal.bgp's. A failed re-read keeps the last good settings and says so once per distinct error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from generic.logfmt import get_logger
from kubevip_metal.config import Config
from kubevip_metal.errors import DaemonError
from kubevip_metal.metal.bgp import discover_bgp
from kubevip_metal.metal.client import Device
from kubevip_metal.metal.setup import locate
from kubevip_metal.peering.settings import Discovered

log = get_logger("kubevip_metal.metal.bgp")

REFRESH_SECONDS = 60.0  # one GET of the neighbours per node per minute: cheap, and a change is seen soon


def session_families(config: Config) -> tuple[int, ...]:
    """IPv4 always (Metal's local BGP), plus IPv6 when a VIP is IPv6: a session for each family we announce."""
    return tuple(sorted({4} | {address.version for address in config.vip.addresses}))


class MetalBgpSource:
    name = "metal-api"

    def __init__(self, config: Config, client: Any, *, interval: float = REFRESH_SECONDS,
                 discover: Callable[..., Discovered] = discover_bgp) -> None:
        self.config, self.client = config, client
        self.interval, self._discover = interval, discover
        self._where: tuple[str, Device] | None = None
        self._last: Discovered | None = None
        self._problem: str | None = None
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._on_change: Callable[[Discovered], None] | None = None

    def _read(self) -> Discovered:
        if self._where is None:
            self._where = locate(self.config, self.client)
        project_id, device = self._where
        return self._discover(self.client, project_id, device, session_families(self.config))

    def first(self) -> Discovered:
        self._last = self._read()  # MetalSetupPending (NotReady) or MetalSetupFatal go to the manager
        return self._last

    def start(self, on_change: Callable[[Discovered], None]) -> None:
        self._on_change = on_change
        self._thread = threading.Thread(target=self._run, name="metal-bgp-refresh", daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(1.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                found = self._read()
            except (DaemonError, Exception) as exc:
                problem = str(exc)
                if problem != self._problem:
                    self._problem = problem
                    log.warning("bgp.metal_refresh_failed", error=problem, effect="keeping the last good BGP settings")
                continue
            if self._problem is not None:
                log.info("bgp.metal_refresh_good_again")
                self._problem = None
            if found != self._last:
                self._last = found
                if self._on_change is not None:
                    self._on_change(found)
