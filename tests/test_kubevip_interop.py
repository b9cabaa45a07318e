"""kube-vip itself (v1.0.0: client-go's elector) and kube-vip-metal on one Lease and one VIP, on the real
kube-apiserver: a cluster half-way through a rolling switch from one to the other. Whoever leads is crashed (SIGKILL,
cable pulled) or stopped (SIGTERM) again and again: the VIP is never on two live nodes, it is always on the Lease
holder once settled, and both implementations take the lead."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest

from kubevip_testbed.lab.cluster import LabCluster
from kubevip_testbed.peers import kubevip
from kubevip_testbed.peers.apiserver import RealApiServer
from kubevip_testbed.peers.kubevip import KubeVipNode
from kubevip_testbed.waiting import wait_for
from tests.lab_support import Sampler, settled
from tests.rig_support import require, require_rig

pytestmark = pytest.mark.kubevip

TIMERS = (3, 2, 1)  # whole seconds, as kube-vip takes them; the shortest set client-go's validation accepts
OURS, THEIRS = ("n1", "n3"), ("n2", "n4")


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
    lab, theirs = mixed
    rng = random.Random(7)
    leaders: list[str] = []
    with Sampler(lab) as sampler:
        end = time.monotonic() + 45
        while time.monotonic() < end:
            leader = settled(lab)
            leaders.append(leader)
            crash = rng.random() < 0.6
            if crash:
                sampler.dead.add(leader)
                theirs[leader].kill() if leader in theirs else lab.kill(leader)
                lab.rig.link_down(leader)
            elif leader in theirs:
                theirs[leader].terminate()  # releases the Lease, deletes the VIP, exits 2 (by design)
            else:
                assert lab.terminate(leader) == 0
            wait_for(lambda victim=leader: lab.lease_holder() not in ("", victim), timeout=4 * TIMERS[0])  # type: ignore[misc]
            # back as after a reboot: the stale VIP gone, the cable in, the process started again
            lab.rig.run(leader, ["ip", "addr", "del", f"{lab.vip}/32", "dev", "eth0"], check=False)
            lab.rig.link_up(leader)
            sampler.dead.discard(leader)
            theirs[leader].start() if leader in theirs else lab.start(leader)
            for node, peer in theirs.items():  # kube-vip exits when it loses leadership; the kubelet restarts it
                if node != leader and not peer.alive:
                    peer.start()
    print("leaders in turn:", leaders, "samples:", len(sampler.samples))
    assert len(leaders) >= 5, leaders
    assert not sampler.double_holders()
    assert set(leaders) & set(OURS) and set(leaders) & set(THEIRS), leaders  # both implementations led
    assert all(theirs[node].acquisitions() for node in set(leaders) & set(THEIRS))
