"""The Elastic IP mode with real managers in the rig: the EIP and the VIP follow the leader through a crash and
a graceful hand-over, and the token never appears in any output."""

from __future__ import annotations

import pytest

from kubevip_testbed.lab.cluster import METAL_TOKEN, LabCluster
from kubevip_testbed.waiting import wait_for
from tests.realapi_support import tier_backend
from tests.rig_support import require_rig


@pytest.mark.parametrize("api", ["emulator", "kube-apiserver"])
def test_elastic_ip_follows_the_leader(api: str, request: pytest.FixtureRequest) -> None:
    require_rig()
    backend = tier_backend(request, api)
    with LabCluster(timers=(2, 1.5, 0.4), metal=True, api=backend) as lab:
        for node in lab.nodes:
            lab.start(node)
        wait_for(lambda: bool(holder := lab.lease_holder()) and lab.eip_holders() == [holder]
                 and lab.holders() == [holder], timeout=60)  # three managers starting on a busy machine
        first = lab.lease_holder()
        lab.kill(first)  # crash: nothing is unassigned by the dead node
        lab.rig.link_down(first)
        wait_for(lambda: (holder := lab.lease_holder()) not in ("", first) and lab.eip_holders() == [holder],
                 timeout=60)
        second = lab.lease_holder()
        assert lab.metal_api.emulator.assignments_of(lab.vip) == [lab.metal_devices[second]]
        assert lab.terminate(second) == 0  # graceful: its VIP leaves lo, the next leader moves the EIP
        wait_for(lambda: (holder := lab.lease_holder()) not in ("", first, second)
                 and lab.eip_holders() == [holder], timeout=60)
        third = lab.lease_holder()
        wait_for(lambda: [n for n in lab.holders() if n != first] == [third])
        lab.metal_api.emulator.assert_no_violations()
        for node in lab.nodes:
            text = lab.log_path(node).read_text()
            assert METAL_TOKEN not in text
            assert "Traceback" not in text
