"""The Equinix Metal Elastic IP as an announcer: on Metal's layer-3 network a VIP "is announced" by assigning the
Elastic IP to this device through the API, so that Metal routes it here.

`announce` makes the EIP wanted here (the `ElasticIp` controller assigns it, idempotently, retrying, and keeps it
assigned while wanted); `withdraw` stops wanting it (a follower never writes: the next leader moves it);
`close` stops the controller. The address itself is held on `lo` by the VIP controller, like any other.
"""

from __future__ import annotations

from generic.addresses import Vip
from generic.logfmt import get_logger
from kubevip_metal.metal.eip import ElasticIp

log = get_logger("kubevip_metal.metal.announcer")


class ElasticIpAnnouncer:
    name = "metal-eip"

    def __init__(self, eips: list[ElasticIp]) -> None:
        self._eips = {eip.address: eip for eip in eips}
        self._started = False

    @property
    def elastic_ips(self) -> list[ElasticIp]:
        return list(self._eips.values())

    def start(self) -> None:
        if not self._started:
            for eip in self._eips.values():
                eip.start()
            self._started = True

    def _eip(self, vip: Vip) -> ElasticIp | None:
        eip = self._eips.get(vip.address)
        if eip is None:
            log.error("eip.unknown_address", vip=str(vip), reason="not an Elastic IP this node was set up for")
        return eip

    def announce(self, vip: Vip) -> None:
        eip = self._eip(vip)
        if eip is not None:
            eip.set_leading(True)

    def withdraw(self, vip: Vip) -> None:
        eip = self._eips.get(vip.address)
        if eip is not None:
            eip.set_leading(False)

    def refresh(self, vip: Vip) -> bool:
        return False  # each ElasticIp re-checks the API on its own period (5 s) and repairs a moved assignment

    def close(self) -> None:
        for eip in self._eips.values():
            eip.set_leading(False)
            eip.stop()
