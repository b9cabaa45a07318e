"""BGP as an announcer: a VIP is announced by advertising its host route (/32 or /128, next hop this node) to
every peer of the speaker; the address itself is held on `lo` by the VIP controller, so the node answers it.

The announcer keeps the set of announced VIPs and always hands the speaker the whole set (the speaker diffs, and
replays it after ExaBGP or a session comes back), so a missed withdrawal or a restart cannot leave a route behind.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from generic.addresses import Vip
from generic.bgp.speaker import IPNetwork, Route, Speaker
from generic.logfmt import get_logger

log = get_logger("generic.bgp.announcer")


def host_route(vip: Vip) -> IPNetwork:
    """The VIP's host route, whatever the prefix length it is held with on the interface."""
    return ipaddress.ip_network(f"{vip.address}/{vip.address.max_prefixlen}")


class BgpAnnouncer:
    name = "bgp"

    def __init__(self, speaker: Speaker, med: Callable[[Vip], int | None] | None = None) -> None:
        """`med` gives each route's MED when it is (re-)announced; None leaves it out."""
        self.speaker = speaker
        self._med = med or (lambda _vip: None)
        self._routes: dict[IPNetwork, Route] = {}
        self._held = 0  # inside hold()/flush(): changes are collected and handed to the speaker once
        self._dirty = False

    def hold(self) -> None:
        """Collect the announcements and withdrawals that follow until `flush` (the VIP controller applying a
        burst, e.g. 10,000 Service VIPs): the speaker then gets the whole set once, one UPDATE burst."""
        self._held += 1

    def flush(self) -> None:
        self._held = max(0, self._held - 1)
        if not self._held and self._dirty:
            self._dirty = False
            self.speaker.advertise(dict(self._routes))

    def _changed(self) -> None:
        if self._held:
            self._dirty = True
        else:
            self.speaker.advertise(dict(self._routes))

    def announce(self, vip: Vip) -> None:
        self._routes[host_route(vip)] = Route(self._med(vip))
        self._changed()
        log.info("vip.announced", vip=str(vip), via="bgp")

    def withdraw(self, vip: Vip) -> None:
        if self._routes.pop(host_route(vip), None) is not None:
            self._changed()

    def refresh(self, vip: Vip) -> bool:
        """A MED that changed since the route was announced is re-advertised; the speaker repairs the rest."""
        route = Route(self._med(vip))
        if self._routes.get(host_route(vip)) == route:
            return False
        self._routes[host_route(vip)] = route
        self._changed()
        return True

    def close(self) -> None:
        self._routes.clear()
        self.speaker.close()  # withdraws everything and makes sure it left, then stops
