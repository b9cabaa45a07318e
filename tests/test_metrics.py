"""kubevip_metal.metrics: the collector reads the daemon's state at scrape time (fakes here); the server serves
it, and a taken port is one error line, not a crash. Then two real managers in the rig, scraped during a
failover."""

from __future__ import annotations

import ipaddress
import json
import socket
import urllib.request
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from generic.bgp.speaker import SessionPhase, SessionState
from generic.election.elector import Latency
from generic.logfmt import JsonFormatter
from kubevip_metal import __version__
from kubevip_metal.metal import retry
from kubevip_metal.metrics import DaemonCollector, serve
from kubevip_metal.services.dhcp import LeaseCounts
from kubevip_metal.services.model import ServiceKey


@dataclass
class FakeElector:
    is_leader: bool = False
    changes: int = 0
    renew_latency: Latency = field(default_factory=Latency)


class FakeSpeaker:
    def __init__(self, sessions: dict[Any, SessionState]) -> None:
        self._sessions = sessions

    def sessions(self) -> dict[Any, SessionState]:
        return self._sessions


def _daemon(**over: Any) -> Any:
    config = SimpleNamespace(node_name="n1", election=SimpleNamespace(lease_name="plndr-cp-lock",
                                                                      services_lease_name="plndr-svcs-lock"))
    daemon = SimpleNamespace(config=config, control_plane=None, services=None,
                             vips=SimpleNamespace(repairs=0, announcers=[]))
    for key, value in over.items():
        setattr(daemon, key, value)
    return daemon


def _samples(daemon: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in registry.collect() for s in
            family.samples}


def test_leadership_transitions_and_renew_latency_per_lease() -> None:
    cp = FakeElector(is_leader=True, changes=3)
    for seconds in (0.003, 0.02, 7.0):
        cp.renew_latency.observe(seconds)
    svcs = FakeElector(is_leader=False, changes=2)
    daemon = _daemon(control_plane=SimpleNamespace(elector=cp),
                     services=SimpleNamespace(elector=svcs, serving=dict, elections=None,
                                              dhcp=None))
    got = _samples(daemon)
    assert got[("kube_vip_is_leader", (("lease_name", "plndr-cp-lock"), ("node", "n1")))] == 1
    assert got[("kube_vip_is_leader", (("lease_name", "plndr-svcs-lock"), ("node", "n1")))] == 0
    assert got[("kube_vip_leader_election_transitions_total", (("lease_name", "plndr-cp-lock"),))] == 3
    assert got[("kube_vip_leader_election_transitions_total", (("lease_name", "plndr-svcs-lock"),))] == 2
    cp_lease = ("lease_name", "plndr-cp-lock")
    assert got[("kube_vip_lease_renew_duration_seconds_count", (cp_lease,))] == 3
    assert got[("kube_vip_lease_renew_duration_seconds_bucket", (("le", "0.005"), cp_lease))] == 1
    assert got[("kube_vip_lease_renew_duration_seconds_bucket", (("le", "0.025"), cp_lease))] == 2
    assert got[("kube_vip_lease_renew_duration_seconds_bucket", (("le", "5.0"), cp_lease))] == 2
    assert got[("kube_vip_lease_renew_duration_seconds_bucket", (("le", "+Inf"), cp_lease))] == 3
    assert got[("kube_vip_lease_renew_duration_seconds_sum", (cp_lease,))] == pytest.approx(7.023)
    assert got[("kube_vip_build_info", (("build", "kube-vip-metal"), ("node", "n1"), ("version", __version__)))] == 1


def test_no_elector_no_leadership_series() -> None:
    got = _samples(_daemon(control_plane=SimpleNamespace(elector=None)))
    assert not [key for key in got if key[0] == "kube_vip_is_leader"]
    assert got[("kube_vip_vip_repairs_total", ())] == 0


def test_repairs_garp_bgp_sessions_eip_moves_and_metal_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    peer = ipaddress.ip_address("198.51.100.1")
    speaker = FakeSpeaker({peer: SessionState(peer, 65001, SessionPhase.ESTABLISHED, 0.0)})
    eip = SimpleNamespace(address=ipaddress.ip_address("147.75.100.10"), moves=2)
    announcers = [SimpleNamespace(name="garp", sent=7), SimpleNamespace(name="bgp", speaker=speaker),
                  SimpleNamespace(name="metal-eip", _eips={eip.address: eip})]
    monkeypatch.setattr(retry, "errors_by_status", {"503": 4, "network": 1})
    got = _samples(_daemon(vips=SimpleNamespace(repairs=5, announcers=announcers)))
    assert got[("kube_vip_vip_repairs_total", ())] == 5
    assert got[("kube_vip_garp_sent_total", ())] == 7
    assert got[("kube_vip_manager_bgp_session_info", (("peer", "198.51.100.1"), ("state", "established")))] == 1
    assert got[("kube_vip_manager_bgp_session_info", (("peer", "198.51.100.1"), ("state", "idle")))] == 0
    assert got[("kube_vip_metal_eip_moves_total", (("address", "147.75.100.10"),))] == 2
    assert got[("kube_vip_metal_api_errors_total", (("status", "503"),))] == 4
    assert got[("kube_vip_metal_api_errors_total", (("status", "network"),))] == 1


def test_ddns_lease_state() -> None:
    ddns = SimpleNamespace(address=ipaddress.ip_address("198.51.100.150"), leases=2, renewals=7, expiries=1)
    got = _samples(_daemon(ddns=ddns))
    assert got[("kube_vip_ddns_lease_bound", ())] == 1
    assert got[("kube_vip_ddns_leases_total", ())] == 2
    assert got[("kube_vip_ddns_renewals_total", ())] == 7
    assert got[("kube_vip_ddns_expiries_total", ())] == 1
    ddns.address = None
    assert _samples(_daemon(ddns=ddns))[("kube_vip_ddns_lease_bound", ())] == 0
    assert not [key for key in _samples(_daemon()) if key[0].startswith("kube_vip_ddns")]  # without --ddns


def test_services_served_per_namespace_and_per_service_leases() -> None:
    serving = {ServiceKey("a", "s1"): True, ServiceKey("a", "s2"): False, ServiceKey("b", "s3"): True}
    services = SimpleNamespace(serving=lambda: serving, elections=SimpleNamespace(leading_count=lambda: 2),
                               elector=None, dhcp=None)
    got = _samples(_daemon(services=services))
    assert got[("kube_vip_active_services", (("namespace", "a"),))] == 1
    assert got[("kube_vip_active_services", (("namespace", "b"),))] == 1
    assert got[("kube_vip_service_leases_held", ())] == 2
    assert not [key for key in got if key[0].startswith("kube_vip_service_dhcp")]  # no 0.0.0.0 Service seen

    counts = LeaseCounts(bound=3, waiting=1, leases=5, renewals=9, expiries=2)
    services.dhcp = SimpleNamespace(counts=lambda: counts)
    got = _samples(_daemon(services=services))
    assert got[("kube_vip_service_dhcp_leases_bound", ())] == 3
    assert got[("kube_vip_service_dhcp_waiting", ())] == 1
    assert got[("kube_vip_service_dhcp_leases_total", ())] == 5
    assert got[("kube_vip_service_dhcp_renewals_total", ())] == 9
    assert got[("kube_vip_service_dhcp_expiries_total", ())] == 2


def test_metal_errors_are_counted_by_status_per_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "errors_by_status", {})

    class Refused(Exception):
        status = 503

    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Refused()
        return "ok"

    assert retry.call("op", flaky, sleep=lambda _s: None) == "ok"
    assert retry.errors_by_status == {"503": 2}


def test_server_serves_metrics_and_a_taken_port_is_one_error_line(caplog: pytest.LogCaptureFixture) -> None:
    daemon = _daemon(control_plane=SimpleNamespace(elector=FakeElector(is_leader=True, changes=1)))
    server = serve(("127.0.0.1", 0), daemon)
    assert server is not None
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
        families = {f.name for f in text_string_to_metric_families(body)}
        assert {"kube_vip_is_leader", "kube_vip_build_info", "process_cpu_seconds"} <= families
        assert 'kube_vip_is_leader{lease_name="plndr-cp-lock",node="n1"} 1.0' in body
        assert serve(("127.0.0.1", server.port), daemon) is None
        lines = [JsonFormatter().format(r) for r in caplog.records if r.getMessage() == "metrics.unavailable"]
        assert len(lines) == 1 and f"127.0.0.1:{server.port}: the port is in use" in lines[0], lines
    finally:
        server.close()
    with socket.socket() as probe:  # closed: the port is free again (for a server: the client's TIME_WAIT stays)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", server.port))


# -- the rig: two real managers, scraped from the client during a failover --------------------------------------

SCRAPE = """
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())
"""


def _scrape(lab: Any, node: str, check: bool = True) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The node's samples; with `check` False, none while its metrics server does not answer (yet)."""
    url = f"http://{lab.rig.ipv4(node)}:2112/metrics"
    result = lab.rig.run("client", ["python3", "-c", SCRAPE, url], check=check)
    if result.returncode != 0 and not check:
        return {}
    assert result.returncode == 0, result
    text = result.stdout if isinstance(result.stdout, str) else result.stdout.decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text)
            for s in f.samples}


def _leading(sample: dict[tuple[str, tuple[tuple[str, str], ...]], float], node: str) -> float:
    return sample[("kube_vip_is_leader", (("lease_name", "plndr-cp-lock"), ("node", node)))]


TRANSITIONS = ("kube_vip_leader_election_transitions_total", (("lease_name", "plndr-cp-lock"),))
GARP = ("kube_vip_garp_sent_total", ())


@pytest.mark.parametrize("tier", ["emulator", "kube-apiserver"])
def test_rig_two_managers_scraped_during_a_failover(tier: str, request: pytest.FixtureRequest) -> None:
    from tests.rig_support import require_rig

    require_rig()
    from kubevip_testbed.lab.cluster import LabCluster
    from kubevip_testbed.waiting import wait_for
    from tests.lab_support import settled
    from tests.realapi_support import tier_backend

    backend = tier_backend(request, tier)
    with LabCluster(nodes=2, timers=(2.0, 1.5, 0.4), api=backend) as lab:
        for node in lab.nodes:  # each manager its own listen address (argv's last --prometheusHTTPServer wins)
            lab.extra_args = ["--prometheusHTTPServer", f"{lab.rig.ipv4(node)}:2112"]
            lab.start(node)
        leader = settled(lab)
        other = next(n for n in lab.nodes if n != leader)
        wait_for(lambda: _scrape(lab, leader)[GARP] > 0)
        # the follower may still be starting once the leader leads: its metrics server up, its elector known
        wait_for(lambda: (("kube_vip_is_leader", (("lease_name", "plndr-cp-lock"), ("node", other)))
                          in _scrape(lab, other, check=False)), timeout=20)
        before = {node: _scrape(lab, node) for node in lab.nodes}
        assert _leading(before[leader], leader) == 1 and _leading(before[other], other) == 0
        assert before[leader][TRANSITIONS] == 1 and before[other][TRANSITIONS] == 0
        assert before[other][GARP] == 0

        lab.rig.block(leader, lab.rig.ipv4("router"), 6443)  # cut from the API: it steps down, alive
        wait_for(lambda: lab.lease_holder() == other, timeout=15)
        wait_for(lambda: _scrape(lab, other)[GARP] > 0 and _leading(_scrape(lab, leader), leader) == 0)
        after = {node: _scrape(lab, node) for node in lab.nodes}
        lab.rig.unblock(leader)
        assert _leading(after[other], other) == 1 and _leading(after[leader], leader) == 0
        assert after[leader][TRANSITIONS] == 2 and after[other][TRANSITIONS] == 1  # gained + lost; gained
        assert after[other][GARP] > 0
        renews = ("kube_vip_lease_renew_duration_seconds_count", (("lease_name", "plndr-cp-lock"),))
        assert after[leader][renews] > 0
        print(json.dumps({n: {"before": before[n][GARP], "after": after[n][GARP]} for n in lab.nodes}))
