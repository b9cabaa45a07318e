"""The Elastic IP mode with real managers in the rig: the EIP and the VIP follow the leader through a crash and
a graceful hand-over, and the token never appears in any output."""

from __future__ import annotations

import pytest

from kubevip_testbed.lab.cluster import METAL_TOKEN, LabCluster
from kubevip_testbed.waiting import wait_for, wait_for_value
from tests.realapi_support import tier_backend
from tests.rig_support import require_rig


@pytest.mark.parametrize("api", ["emulator", "kube-apiserver"])
def test_elastic_ip_follows_the_leader(api: str, request: pytest.FixtureRequest) -> None:
    require_rig()
    backend = tier_backend(request, api)
    with LabCluster(timers=(2, 1.5, 0.4), metal=True, api=backend) as lab:
        for node in lab.nodes:
            lab.start(node)
        def leading(*gone: str, vip_too: bool = False) -> str | None:
            """The Lease holder when the EIP (and, with `vip_too`, the VIP) is on it alone: the value the wait
            saw, since a second read of the Lease could name another holder or none."""
            holder = lab.lease_holder()
            if holder in ("", *gone) or lab.eip_holders() != [holder]:
                return None
            return holder if not vip_too or lab.holders() == [holder] else None

        first = wait_for_value(lambda: leading(vip_too=True), timeout=60)  # three managers starting, busy machine
        lab.kill(first)  # crash: nothing is unassigned by the dead node
        lab.rig.link_down(first)
        second = wait_for_value(lambda: leading(first), timeout=60)
        assert lab.metal_api.emulator.assignments_of(lab.vip) == [lab.metal_devices[second]]
        assert lab.terminate(second) == 0  # graceful: its VIP leaves lo, the next leader moves the EIP
        third = wait_for_value(lambda: leading(first, second), timeout=60)
        wait_for(lambda: [n for n in lab.holders() if n != first] == [third])
        lab.metal_api.emulator.assert_no_violations()
        for node in lab.nodes:
            text = lab.log_path(node).read_text()
            assert METAL_TOKEN not in text
            assert "Traceback" not in text
