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
from kubevip_metal.daemon.modes import MODES, ModeSpec, mode_spec
from kubevip_metal.daemon.vips import VipController
from kubevip_metal.errors import FatalError, NotReady

log = get_logger("kubevip_metal.daemon")


class Daemon:
    def __init__(self, config: Config, deps: Dependencies, modes: Mapping[Mode, ModeSpec] = MODES) -> None:
        if not config.control_plane:
            raise FatalError("nothing to do: only the control plane is available in this version (--controlplane)")
        if not config.control_plane_elects:
            raise FatalError("the control plane without leader election needs BGP, which is not available yet")
        self.config, self.deps = config, deps
        self.mode = mode_spec(config, modes)
        self.api: Any = None
        self.vips = VipController(deps.addresses, [], clock=deps.clock)
        self.control_plane: ControlPlane | None = None
        self._announcing = False

    def start(self) -> None:
        """Bring up whatever is not up yet: the VIP controller (its first pass clears a crash's leftovers, before
        anything waits on the outside world), the mode's announcers, the API client, the control plane's campaign."""
        try:
            self._start()
        except AddressError as exc:
            raise NotReady(str(exc)) from None

    def _start(self) -> None:
        if self.control_plane is None:
            wanted = resolve_vips(self.config, self.deps.addresses, self.mode.default_interface)
            self.control_plane = ControlPlane(self.config, self.vips, wanted, clock=self.deps.clock)
        self.vips.start()
        if not self._announcing:
            self.vips.attach(self.mode.announcers(self.config, self.deps))
            self._announcing = True
        if self.api is None:
            self.api = self.deps.api_client()
        election = self.config.election
        self.control_plane.campaign(self.deps.lease_lock(self.api, election.namespace, election.lease_name))
        log.info("daemon.started", mode=self.config.mode, node=self.config.node_name,
                 announcers=[a.name for a in self.vips.announcers])

    def stop(self) -> None:
        """Step down and release the Lease first, then remove every VIP and close the announcers."""
        if self.control_plane is not None:
            self.control_plane.stop()
        self.vips.stop()
        self.deps.addresses.close()
