"""kube-vip itself (v1.0.0: client-go's elector) and kube-vip-metal on one Lease and one VIP, on the real
kube-apiserver: a cluster half-way through a rolling switch from one to the other. Whoever leads is crashed (SIGKILL,
cable pulled) or stopped (SIGTERM) again and again: the VIP is never on two live nodes by our doing (kube-vip's own
release-before-delete is measured and printed), it is always on the Lease holder once settled, and both
implementations take the lead."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from kubevip_testbed.lab.cluster import LabCluster
from kubevip_testbed.peers import kubevip
from kubevip_testbed.peers.apiserver import RealApiServer
from kubevip_testbed.peers.kubevip import KubeVipNode
from kubevip_testbed.waiting import wait_for
from tests.lab_support import Sampler, settled, within_stop
from tests.rig_support import require, require_rig

pytestmark = pytest.mark.kubevip

TIMERS = (3, 2, 1)  # whole seconds, as kube-vip takes them; the shortest set client-go's validation accepts
OURS, THEIRS = ("n1", "n3"), ("n2", "n4")
KLOG = re.compile(r"^[IEW](\d{4}) (\d\d:\d\d:\d\d\.\d{6}) "
                  r".*(attempting to acquire|failed to renew lease|Observed a panic)")  # client-go's and kube-vip's


def _lost_leadership(peer: KubeVipNode, mono_minus_wall: float) -> list[tuple[str, float, float]]:
    """The peer's lost leaderships from its klog lines, in monotonic time: from client-go's "failed to renew
    lease" (less one retry period: a follower may take the expired Lease a little before the old leader logs that)
    to the "Observed a panic" that kube-vip's OnStoppedLeading ends with, after it deleted the VIP."""
    if not peer.log_path.exists():
        return []
    found, began, year = [], None, datetime.now().year
    for line in peer.log_path.read_text(errors="replace").splitlines():
        match = KLOG.match(line)
        if match:
            wall = datetime.strptime(f"{year}{match[1]} {match[2]}", "%Y%m%d %H:%M:%S.%f").timestamp()
            if match[3] == "attempting to acquire":  # a new process: whatever the last one began is over
                began = None
            elif match[3] == "failed to renew lease":
                began = wall + mono_minus_wall - TIMERS[2]
            elif began is not None:
                found.append((peer.node, began, wall + mono_minus_wall))
                began = None
    return found


@pytest.fixture
def mixed(real_api: RealApiServer) -> Iterator[tuple[LabCluster, dict[str, KubeVipNode]]]:
    require_rig()
    require("kube-vip", kubevip.missing())
    from kubevip_testbed.peers.lab_backend import RealApiBackend

    with LabCluster(nodes=4, timers=TIMERS, api=RealApiBackend(real_api)) as lab:
        theirs = {node: KubeVipNode(lab, node, kubevip.TESTED_VERSION, TIMERS) for node in THEIRS}
        try:
            for node in lab.nodes:
                theirs[node].start() if node in theirs else lab.start(node)
            yield lab, theirs
        finally:
            for peer in theirs.values():
                peer.kill()


def test_mixed_cluster_never_puts_the_vip_on_two_nodes(mixed: tuple[LabCluster, dict[str, KubeVipNode]]) -> None:
    """Never two holders by our doing; kube-vip's own order (release, then delete) is measured, not hidden.

    kube-vip v1.0.0 on SIGTERM releases the Lease *before* it deletes the VIP: client-go v0.33.3's
    `LeaderElector.Run` defers `OnStoppedLeading`, and `renew` ends with `release()` when `ReleaseOnCancel` is set
    (tools/leaderelection/leaderelection.go); kube-vip sets it and deletes the VIP in `OnStoppedLeading`, then
    panics (exit 2) (pkg/cluster/clusterLeaderElection.go). Our followers watch the Lease and take a released one
    at once (watch event, GET, PUT, netlink add), so when kube-vip is descheduled between its release and its
    netlink delete for longer than that, both nodes hold the VIP for that long. Ours withdraws the VIP before it
    releases (generic/election/elector.py `_shutdown`), and on a lost renewal steps down a whole
    `lease - renew` before anyone may take over, so ours is never the one late to let go.

    Measured on this rig (2 cores): only a log line and two context cancels lie between kube-vip's release and
    its netlink delete, and in 80 SIGTERM hand-overs from kube-vip to ours (half with the cores saturated) ours
    added the VIP a median 30-120 ms after kube-vip had deleted it: none surely doubled. With kube-vip's socket()
    calls slowed by 200 ms (strace fault injection) every hand-over did, for 0.26-0.39 s. On a *lost* renewal it is
    far longer: client-go steps down retry + renew (here 3 s, the lease duration) after its last renewal, then
    `release()` waits up to the renew deadline on a hanging API server before `OnStoppedLeading` runs: with kube-vip's
    API connection hung, ours took the expired Lease and both held the VIP for 1.9-2.0 s (3 of 3).

    So a double counts against the test only when it surely happened (the sampler's per-node read windows) and
    kube-vip's order cannot explain it: the late one to let go is ours, or a kube-vip outside its SIGTERM-to-exit
    window and outside a lost leadership its own log shows. The explained ones are printed with their duration."""
    mono_minus_wall = time.monotonic() - time.time()
    lab, theirs = mixed
    leaders: list[str] = []
    stopped: list[tuple[str, float, float]] = []  # kube-vip SIGTERMs: node, monotonic time sent, exited
    with Sampler(lab) as sampler:
        end = time.monotonic() + 45
        while time.monotonic() < end:
            leader = settled(lab)
            leaders.append(leader)
            crash = len(leaders) % 2 == 1  # a crash, then a SIGTERM, in turn (seed 7's draws gave 2 SIGTERMs in 16)
            if crash:
                sampler.dead.add(leader)
                theirs[leader].kill() if leader in theirs else lab.kill(leader)
                lab.rig.link_down(leader)
            elif leader in theirs:
                sent = time.monotonic()
                theirs[leader].terminate()  # releases the Lease, deletes the VIP, exits 2 (by design)
                stopped.append((leader, sent, time.monotonic()))
            else:
                assert lab.terminate(leader) == 0
            # failure latency only (12 s was tight for a take-over with two implementations starting on a busy machine)
            wait_for(lambda victim=leader: lab.lease_holder() not in ("", victim), timeout=30)  # type: ignore[misc]
            # back as after a reboot: the stale VIP gone, the cable in, the process started again
            lab.rig.run(leader, ["ip", "addr", "del", f"{lab.vip}/32", "dev", "eth0"], check=False)
            lab.rig.link_up(leader)
            sampler.dead.discard(leader)
            theirs[leader].start() if leader in theirs else lab.start(leader)
            for node, peer in theirs.items():  # kube-vip exits when it loses leadership; the kubelet restarts it
                if node != leader and not peer.alive:
                    print(f"kube-vip on {node} had exited by itself (lost leadership): restarted")
                    peer.start()
    print("leaders in turn:", leaders, "kube-vip SIGTERMs:", len(stopped), "hand-overs:", len(leaders) - 1)
    print(sampler.report())
    doubles = sampler.double_holders()
    stopped += [stop for peer in theirs.values() for stop in _lost_leadership(peer, mono_minus_wall)]
    theirs_late = [double for double in doubles if within_stop(double, stopped)]  # kube-vip let go late
    for double in theirs_late:
        print("kube-vip let go of the Lease before it deleted the VIP:", double)
    assert len(leaders) >= 5, leaders
    assert [double for double in doubles if double not in theirs_late] == [], sampler.report()
    assert set(leaders) & set(OURS) and set(leaders) & set(THEIRS), leaders  # both implementations led
    assert all(theirs[node].acquisitions() for node in set(leaders) & set(THEIRS))
