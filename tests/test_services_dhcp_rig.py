"""Services asking for `0.0.0.0`, with real managers (`--services`, ARP) in the namespace rig and Debian's dnsmasq
in the router namespace as the LAN's DHCP server: the Service's holder (the Services Lease's, or its own Lease's
with --servicesElection) leases an address from dnsmasq's range for the Service, renews it at T1, serves it (the
client reaches it), writes it to the status and to `kube-vip.io/requestedIP`; the holder's crash, then the next
one's SIGTERM (a release), give the next holder the same address; deleting the Service releases it (dnsmasq's
lease file loses it) and removes it from every node."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from kubevip_testbed.ddns import POOL, DhcpDnsmasq
from kubevip_testbed.dns import dnsmasq_missing
from kubevip_testbed.lab.cluster import LabCluster
from kubevip_testbed.waiting import wait_for, wait_for_value
from tests.rig_support import require, require_rig
from tests.test_services_rig import NAMESPACE, TIMERS, Api


class DhcpServicesLab(LabCluster):
    """A LabCluster (`--services`, a static control-plane VIP) with dnsmasq leasing on the LAN."""

    def __init__(self, extra: list[str]) -> None:
        super().__init__(vip="198.51.100.10", timers=TIMERS, extra_args=["--services", *extra])
        self.dhcp: DhcpDnsmasq | None = None
        self.service_lease = ("kube-system", "plndr-svcs-lock")

    def service_holder(self) -> str:
        return self.api.lease_holder(*self.service_lease)

    def _set_up(self) -> None:
        super()._set_up()
        self.dhcp = DhcpDnsmasq(self.rig, self.workdir / "dhcp", t1=4, t2=8).start()

    def down(self) -> None:
        if self.dhcp is not None:
            self.dhcp.stop()
        super().down()


# who holds the Service: the Services Lease's holder (ARP), or its own Lease's (--servicesElection)
HOLDERS = {"services-lease": ([], ("kube-system", "plndr-svcs-lock")),
           "per-service": (["--servicesElection"], (NAMESPACE, "kubevip-web"))}


@pytest.fixture(params=sorted(HOLDERS))
def lab(request: pytest.FixtureRequest) -> Iterator[tuple[DhcpServicesLab, Api]]:
    require_rig()
    require("dnsmasq", dnsmasq_missing())
    extra, lease = HOLDERS[request.param]
    with DhcpServicesLab(extra) as opened:
        assert isinstance(opened, DhcpServicesLab)
        cluster = opened
        cluster.service_lease = lease
        api = Api(cluster)
        try:
            yield cluster, api
        finally:
            for node in list(cluster.managers):
                cluster.terminate(node)
            api.close()


def _in_pool(address: str) -> bool:
    low, high = (ipaddress.IPv4Address(a) for a in POOL)
    return low <= ipaddress.IPv4Address(address) <= high


def _status(api: Api, name: str) -> list[str]:
    with contextlib.suppress(client.ApiException):
        return api.status_ips(name)
    return []


def _annotation(api: Api, name: str, key: str) -> str | None:
    annotations = api.core.read_namespaced_service(name, NAMESPACE).metadata.annotations or {}
    return annotations.get(key)


def _running_holders(lab: DhcpServicesLab, address: str) -> list[str]:
    return [n for n in lab.holders(address) if n in lab.managers]  # a crashed node's copy stays in its namespace


def _dump(lab: DhcpServicesLab) -> None:
    for node in lab.nodes:
        print(node, lab.log_path(node).read_text()[-8000:] if lab.log_path(node).exists() else "(no log)")
    if lab.dhcp is not None and lab.dhcp.log.exists():
        print("dnsmasq", lab.dhcp.log.read_text()[-6000:])


def test_a_dhcp_service_is_leased_served_kept_across_a_crash_and_released_on_delete(
        lab: tuple[DhcpServicesLab, Api]) -> None:
    cluster, api = lab
    dhcp = cluster.dhcp
    assert dhcp is not None
    for node in cluster.nodes:
        cluster.start(node)
    api.service("web", "0.0.0.0")
    api.endpoints("web", ["n1", "n2", "n3"])
    try:
        wait_for(lambda: len(_status(api, "web")) == 1, timeout=30)
        (address,) = _status(api, "web")
        assert _in_pool(address)
        holder = cluster.service_holder()
        wait_for(lambda: _running_holders(cluster, address) == [holder], timeout=10)
        assert cluster.rig.run("client", ["ping", "-c1", "-W1", address], check=False).returncode == 0
        assert cluster.node_of_mac(cluster.client_mac(address)) == holder
        # dnsmasq writes its lease file after it has sent the ACK: the manager may have served the address first
        wait_for(lambda: any(f" {address} " in line for line in dhcp.leased()), timeout=10)
        leased = [line for line in dhcp.leased() if f" {address} " in line]
        assert len(leased) == 1 and " web " in leased[0]  # the Service's host name, option 12
        wait_for(lambda: _annotation(api, "web", "kube-vip.io/requestedIP") == address, timeout=10)

        def renewed() -> list[dict[str, Any]]:
            return [e for e in cluster.events(holder)
                    if e["event"] == "ddns.renewed" and e.get("service") == "default/web"]

        wait_for(lambda: bool(renewed()), timeout=30)  # T1 = 4 s: renewed while held
        assert renewed()[-1]["address"] == address

        cluster.rig.link_down(holder)  # a crash of the holder: no release
        cluster.kill(holder)
        # the holder seen by the wait: a Lease read after it could name another holder (or none)
        successor = wait_for_value(lambda: now if (now := cluster.service_holder()) != holder else None, timeout=30)
        wait_for(lambda: _running_holders(cluster, address) == [successor], timeout=30)
        wait_for(lambda: cluster.rig.run("client", ["ping", "-c1", "-W1", address], check=False).returncode == 0,
                 timeout=10)
        assert _status(api, "web") == [address]
        wait_for(lambda: _annotation(api, "web", "kube-vip.io/vipHost") == successor, timeout=10)
        bound = [e for e in cluster.events(successor) if e["event"] == "ddns.bound" and e.get("service")]
        assert bound and bound[-1]["address"] == address and bound[-1]["service"] == "default/web"

        # graceful: SIGTERM withdraws and releases (dnsmasq forgets the lease); the last node asks for the
        # recorded address and gets it back
        assert cluster.terminate(successor) == 0
        assert [e for e in cluster.events(successor) if e["event"] == "ddns.released"]
        (last,) = [n for n in cluster.nodes if n in cluster.managers]
        wait_for(lambda: _running_holders(cluster, address) == [last], timeout=30)
        asked = [e for e in cluster.events(last) if e["event"] == "ddns.asking"]
        assert asked and asked[-1]["address"] == address
        wait_for(lambda: cluster.rig.run("client", ["ping", "-c1", "-W1", address], check=False).returncode == 0,
                 timeout=10)
        wait_for(lambda: _annotation(api, "web", "kube-vip.io/vipHost") == last, timeout=10)

        api.delete("web")
        wait_for(lambda: _running_holders(cluster, address) == [], timeout=10)  # gone from every node
        wait_for(lambda: not any(f" {address} " in line for line in dhcp.leased()), timeout=10)  # released
        # logged once the RELEASE is sent: dnsmasq may have dropped the lease before the line is written
        wait_for(lambda: [e for e in cluster.events(last) if e["event"] == "ddns.released"], timeout=10)
    except AssertionError:
        _dump(cluster)
        raise
