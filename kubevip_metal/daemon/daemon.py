"""The composition root: the one object that is given the outside world (`Dependencies`) and the validated
`Config`, and starts and stops the components in order.

    daemon = Daemon(config, production(config))
    daemon.start()   # raises NotReady (call again later) or FatalError (give up)
    ...
    daemon.stop()    # step down, release the Lease, remove every VIP

`start` is safe to call again after a `NotReady`: each component is kept once it is up, and the next call picks
up where the last one failed. One Kubernetes API client serves every elector of the process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from generic.addresses import AddressError
from generic.logfmt import get_logger
from kubevip_metal.config import Config, Mode
from kubevip_metal.daemon.controlplane import ControlPlane, resolve_vips
from kubevip_metal.daemon.dependencies import Dependencies
from kubevip_metal.daemon.modes import MODES, Announcement, ModeFactory, announcement_for
from kubevip_metal.daemon.vips import VipController
from kubevip_metal.errors import FatalError, NotReady

log = get_logger("kubevip_metal.daemon")


class Daemon:
    def __init__(self, config: Config, deps: Dependencies, modes: Mapping[Mode, ModeFactory] = MODES) -> None:
        if not config.control_plane:
            raise FatalError("nothing to do: only the control plane is available in this version (--controlplane)")
        if not config.control_plane_elects:
            raise FatalError("the control plane without leader election needs BGP, which is not available yet")
        self.config, self.deps, self.modes = config, deps, modes
        self.api: Any = None
        self.announcement: Announcement | None = None
        self.vips: VipController | None = None
        self.control_plane: ControlPlane | None = None

    def start(self) -> None:
        """Bring up whatever is not up yet: API client, announcers, VIP controller, control plane."""
        try:
            self._start()
        except AddressError as exc:
            raise NotReady(str(exc)) from None

    def _start(self) -> None:
        if self.api is None:
            self.api = self.deps.api_client()
        if self.announcement is None:
            self.announcement = announcement_for(self.config, self.deps, self.modes)
        if self.vips is None:
            self.vips = VipController(self.deps.addresses, self.announcement.announcers, clock=self.deps.clock)
        if self.control_plane is None:
            wanted = resolve_vips(self.config, self.deps.addresses, self.announcement.default_interface)
            lock = self.deps.lease_lock(self.api, self.config.election.namespace, self.config.election.lease_name)
            self.control_plane = ControlPlane(self.config, self.vips, wanted, lock, clock=self.deps.clock)
        self.vips.start()
        self.control_plane.campaign()
        log.info("daemon.started", mode=self.config.mode, node=self.config.node_name,
                 announcers=[a.name for a in self.announcement.announcers])

    def stop(self) -> None:
        """Step down and release the Lease first, then remove every VIP and close the announcers."""
        if self.control_plane is not None:
            self.control_plane.stop()
        if self.vips is not None:
            self.vips.stop()
        elif self.announcement is not None:
            for announcer in self.announcement.announcers:
                announcer.close()
        self.deps.addresses.close()
