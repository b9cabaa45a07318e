"""The VIP controller: owners, reference counts, the order of hold and announce, and drift repaired both ways."""

from __future__ import annotations

import ipaddress

from generic.addresses import Vip
from kubevip_metal.daemon.vips import VipController
from tests.fakes import FakeAddresses, RecordingAnnouncer

CP_VIP = Vip(ipaddress.ip_address("192.0.2.10"), 32, "eth0")
OTHER = Vip(ipaddress.ip_address("192.0.2.20"), 32, "eth0")


def _controller() -> tuple[VipController, FakeAddresses, RecordingAnnouncer]:
    addresses, announcer = FakeAddresses(), RecordingAnnouncer()
    return VipController(addresses, [announcer], period=3600), addresses, announcer


def test_a_shared_address_stays_until_the_last_owner_lets_go() -> None:
    vips, addresses, announcer = _controller()
    vips.claim("control-plane", [CP_VIP], active=True)
    vips.claim("service:default/web", [CP_VIP], active=True)
    assert addresses.held == {CP_VIP} and announcer.announced == {CP_VIP}
    assert announcer.events.count(("announce", CP_VIP)) == 1  # the second owner changes nothing on the wire
    vips.release("control-plane")
    assert addresses.held == {CP_VIP} and announcer.announced == {CP_VIP}
    assert ("withdraw", CP_VIP) not in announcer.events
    assert vips.reconcile() == 0  # and the reconciler agrees: still wanted
    vips.claim("service:default/web", [CP_VIP], active=False)  # the Service's own election is lost
    assert addresses.held == set() and announcer.announced == set()


def test_an_owner_releases_only_its_own_vips() -> None:
    vips, addresses, announcer = _controller()
    vips.claim("control-plane", [CP_VIP], active=True)
    vips.claim("service:default/web", [OTHER], active=True)
    vips.release("service:default/web")
    assert addresses.held == {CP_VIP} and announcer.announced == {CP_VIP}


def test_hold_then_announce_and_withdraw_then_drop() -> None:
    journal: list[str] = []

    class Addresses(FakeAddresses):
        def add(self, vip: Vip) -> bool:
            journal.append("add")
            return super().add(vip)

        def remove(self, vip: Vip) -> bool:
            journal.append("remove")
            return super().remove(vip)

    class Announcer(RecordingAnnouncer):
        def announce(self, vip: Vip) -> None:
            journal.append("announce")
            super().announce(vip)

        def withdraw(self, vip: Vip) -> None:
            journal.append("withdraw")
            super().withdraw(vip)

    vips = VipController(Addresses(), [Announcer()], period=3600)
    vips.claim("control-plane", [CP_VIP], active=True)
    vips.claim("control-plane", [CP_VIP], active=False)
    assert journal == ["add", "announce", "withdraw", "remove"]


def test_reconciler_repairs_drift_both_ways() -> None:
    vips, addresses, announcer = _controller()
    vips.claim("control-plane", [CP_VIP], active=True)
    addresses.held.clear()  # deleted by hand on the leader
    assert vips.reconcile() == 1
    assert CP_VIP in addresses.held and announcer.events[-1] == ("announce", CP_VIP)  # a fresh burst after re-adding
    vips.claim("control-plane", [CP_VIP], active=False)
    addresses.held.add(CP_VIP)  # added by hand on a follower
    assert vips.reconcile() == 1 and addresses.held == set()
    assert vips.reconcile() == 0


def test_announcer_drift_is_repaired_and_counted() -> None:
    vips, _addresses, announcer = _controller()
    vips.claim("control-plane", [CP_VIP], active=True)
    announcer.drifted.add(CP_VIP)  # e.g. the link came back up: the announcer re-announces
    assert vips.reconcile() == 1 and vips.repairs == 1
    assert vips.reconcile() == 0


def test_start_removes_leftovers_of_owners_that_do_not_want_them() -> None:
    vips, addresses, _announcer = _controller()
    addresses.held.add(CP_VIP)  # a crash left it
    vips.claim("control-plane", [CP_VIP], active=False)
    vips.start()
    assert addresses.held == set()
    vips.stop()


def test_an_address_dropped_from_a_claim_goes_unless_another_owner_wants_it() -> None:
    vips, addresses, _announcer = _controller()
    vips.claim("control-plane", [CP_VIP, OTHER], active=True)
    vips.claim("service:default/web", [OTHER], active=True)
    vips.claim("control-plane", [CP_VIP], active=True)  # e.g. a DNS name now resolves to one address only
    assert addresses.held == {CP_VIP, OTHER}
    vips.release("service:default/web")
    assert addresses.held == {CP_VIP}


def test_a_failed_add_is_retried_by_the_reconciler() -> None:
    vips, addresses, announcer = _controller()
    addresses.interfaces.discard("eth0")  # not up yet
    vips.claim("control-plane", [CP_VIP], active=True)
    assert addresses.held == set() and announcer.announced == set()
    addresses.interfaces.add("eth0")
    assert vips.reconcile() == 1
    assert addresses.held == {CP_VIP} and announcer.announced == {CP_VIP}


def test_stop_leaves_nothing_and_closes_the_announcers() -> None:
    vips, addresses, announcer = _controller()
    vips.claim("control-plane", [CP_VIP], active=True)
    vips.claim("service:default/web", [OTHER], active=True)
    vips.start()
    vips.stop()
    assert addresses.held == set() and announcer.closed


def test_garp_burst_has_a_follow_up_after_the_renew_deadline() -> None:
    """The announcer's schedule: at once, the burst, then one more at the follow-up (the daemon passes the renew
    deadline + 0.5 s, after which a kube-vip that lost its renewal has stopped announcing)."""
    import time

    from generic.announce import GarpAnnouncer

    class Sender:
        def __init__(self) -> None:
            self.at: list[float] = []

        def send(self, _interface: str, _mac: bytes, _vip: object) -> None:
            self.at.append(time.monotonic())

        def close(self) -> None:
            pass

    sender = Sender()
    announcer = GarpAnnouncer(60.0, FakeAddresses(), follow_up=1.3)
    announcer._garp = sender  # type: ignore[assignment]
    start = time.monotonic()
    announcer.announce(CP_VIP)
    time.sleep(1.6)
    announcer.close()
    offsets = [round(at - start, 1) for at in sender.at]
    assert len(offsets) == 6 and offsets[0] == 0.0 and 1.2 <= offsets[-1] <= 1.5, offsets


def test_garp_repeats_of_many_vips_share_wakeups_and_keep_their_rate() -> None:
    """VIPs taken at different moments are each repeated once per rate, and the repeats fall on a 100 ms grid,
    so the announcer's thread wakes a few times per rate instead of once per VIP (1,000 VIPs at 3 s: 333 times
    a second)."""
    import itertools
    import threading
    import time

    from generic.announce import REPEAT_GRID, GarpAnnouncer

    class Sender:
        def __init__(self) -> None:
            self.sent: list[tuple[float, object]] = []
            self.lock = threading.Lock()

        def send(self, _interface: str, _mac: bytes, vip: object) -> None:
            with self.lock:
                self.sent.append((time.monotonic(), vip))

        def close(self) -> None:
            pass

    sender = Sender()
    announcer = GarpAnnouncer(1.0, FakeAddresses())
    announcer.burst = (0.0,)  # the takeover burst is tested above: only the periodic repeats here
    announcer._garp = sender  # type: ignore[assignment]
    vips = [Vip(ipaddress.ip_address("100.64.0.0") + i, 32, "eth0") for i in range(60)]
    for vip in vips:  # taken over 1.5 s, 25 ms apart
        announcer.announce(vip)
        time.sleep(0.025)
    time.sleep(2.0)
    announcer.close()
    taken = {address: at for at, address in reversed(sender.sent)}  # each VIP's first announcement
    repeats = sorted(((at, address) for at, address in sender.sent if at > taken[address]), key=lambda r: r[0])
    per_vip: dict[object, list[float]] = {}
    for at, address in repeats:
        per_vip.setdefault(address, []).append(at)
    assert set(per_vip) == {vip.address for vip in vips}
    for address, ats in per_vip.items():  # once per rate (within the grid), never faster
        gaps = [b - a for a, b in itertools.pairwise([taken[address], *ats])]
        assert all(1.0 - 0.02 <= gap <= 1.0 + REPEAT_GRID + 0.1 for gap in gaps), (address, gaps)
    wakeups = 1 + sum(1 for (a, _), (b, _) in itertools.pairwise(repeats) if b - a > 0.02)
    assert wakeups <= 3.5 / REPEAT_GRID, f"{wakeups} separate wake-ups for {len(repeats)} repeats"
