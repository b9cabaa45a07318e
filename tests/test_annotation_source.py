"""The node-annotation source over real HTTP against the Kubernetes API emulator: the Node read by name and
watched, changes delivered live, problems kept out (last good settings kept), the watch resumed after a cut."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from generic.logfmt import JsonFormatter
from generic.secret import Secret
from kubevip_metal.errors import NotReady
from kubevip_metal.peering.annotation_source import AnnotationSource
from kubevip_metal.peering.settings import Discovered
from kubevip_testbed.emulators.kubeapi import KubeApiEmulator
from kubevip_testbed.nodes import replace_node_annotations
from kubevip_testbed.waiting import wait_for
from tests.kubeapi_support import EmulatedApi

P = "metal.equinix.com"


def ccm(password: str, peers: tuple[str, ...] = ("169.254.255.1", "169.254.255.2")) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, address in enumerate(peers):
        out |= {f"{P}/bgp-peers-{n}-node-asn": "65000", f"{P}/bgp-peers-{n}-peer-asn": "65530",
                f"{P}/bgp-peers-{n}-peer-ip": address, f"{P}/bgp-peers-{n}-src-ip": "10.70.17.3",
                f"{P}/bgp-peers-{n}-bgp-pass": base64.b64encode(password.encode()).decode()}
    return out


@pytest.fixture
def emulator() -> Iterator[tuple[KubeApiEmulator, Any, Any]]:
    """The emulator, the daemon's client (identity n1) and an admin client for the test's own writes."""
    with EmulatedApi(["n1", "admin"]) as api:
        yield api.kube, api.client("n1"), api.client("admin")


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """The captured records as the manager writes them (one JSON object per line, fields included)."""
    return "\n".join(JsonFormatter().format(record) for record in caplog.records)


class Changes:
    def __init__(self) -> None:
        self.seen: list[Discovered] = []
        self.event = threading.Condition()

    def __call__(self, found: Discovered) -> None:
        with self.event:
            self.seen.append(found)
            self.event.notify_all()

    def passwords(self) -> list[list[str | None]]:
        return [[p.password.reveal() if isinstance(p.password, Secret) else None for p in d.peers]
                for d in self.seen]


def test_a_missing_node_or_missing_annotations_are_not_ready_and_say_what_is_missing(
        emulator: tuple[KubeApiEmulator, Any, Any]) -> None:
    _kube, daemon, admin = emulator
    source = AnnotationSource(daemon, "n1", P)
    with pytest.raises(NotReady, match="cannot read node 'n1': HTTP 404"):
        source.first()
    replace_node_annotations(admin, "n1", P, {"other.example/x": "1"})
    with pytest.raises(NotReady, match=r"waiting for the BGP annotations of node 'n1'.*bgp-peers-N-"):
        source.first()
    replace_node_annotations(admin, "n1", P, {f"{P}/bgp-peers-0-peer-ip": "169.254.255.1"})
    with pytest.raises(NotReady, match="bgp-peers-0-peer-asn"):
        source.first()


def test_changes_arrive_live_and_problems_keep_the_last_good_settings(
        emulator: tuple[KubeApiEmulator, Any, Any], caplog: pytest.LogCaptureFixture) -> None:
    kube, daemon, admin = emulator
    replace_node_annotations(admin, "n1", P, ccm("first-pw"))
    source = AnnotationSource(daemon, "n1", P)
    first = source.first()
    assert [str(p.address) for p in first.peers] == ["169.254.255.1", "169.254.255.2"]
    assert (first.local_as, str(first.router_id)) == (65000, "10.70.17.3")
    changes = Changes()
    source.start(changes)
    try:
        replace_node_annotations(admin, "n1", P, ccm("rotated-pw"))  # a rotated password
        wait_for(lambda: changes.passwords()[-1:] == [["rotated-pw", "rotated-pw"]], timeout=10)
        count = len(changes.seen)
        with caplog.at_level(logging.WARNING):
            broken = ccm("rotated-pw") | {f"{P}/bgp-peers-1-peer-asn": "not-an-as"}
            replace_node_annotations(admin, "n1", P, broken)
            wait_for(lambda: f"{P}/bgp-peers-1-peer-asn" in logged(caplog), timeout=10)
            replace_node_annotations(admin, "n1", P, {})  # the annotations removed
            wait_for(lambda: "annotations missing" in logged(caplog), timeout=10)
        assert len(changes.seen) == count  # neither reached the speaker: the last good settings stay
        assert "rotated-pw" not in logged(caplog)
        assert base64.b64encode(b"rotated-pw").decode() not in logged(caplog)

        kube.set_fault("n1", outage="refuse")  # the watch is cut and cannot reconnect for a while
        replace_node_annotations(admin, "n1", P, ccm("during-the-cut", ("169.254.255.1",)))
        kube.clear_fault("n1")
        wait_for(lambda: changes.passwords()[-1:] == [["during-the-cut"]], timeout=20)  # seen once back
    finally:
        source.close()
