"""`/healthz` and `/readyz` (kubevip_metal.health): what each says and when, in-process and from real managers in
the rig (a manager waiting for its API server is alive but not ready; once up it is ready; by BGP, ready only with
a session Established)."""

from __future__ import annotations

import ipaddress
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from generic.bgp.speaker import SessionPhase, SessionState
from kubevip_metal.health import HealthServer, liveness, readiness
from kubevip_testbed.lab.cluster import LabCluster
from kubevip_testbed.waiting import wait_for
from tests.realapi_support import tier_backend
from tests.rig_support import require_rig

PORT = 10257


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def server() -> Iterator[tuple[HealthServer, dict[str, str | None]]]:
    verdicts: dict[str, str | None] = {"live": None, "ready": "starting"}
    found = HealthServer(0, lambda: verdicts["live"], lambda: verdicts["ready"], host="127.0.0.1").start()
    yield found, verdicts
    found.stop()


def test_the_endpoints_answer_200_or_503_with_the_reason(server: tuple[HealthServer, dict[str, str | None]]) -> None:
    health, verdicts = server
    base = f"http://127.0.0.1:{health.port}"
    assert get(f"{base}/healthz") == (200, "ok\n")
    assert get(f"{base}/readyz") == (503, "starting\n")
    verdicts["ready"] = None
    verdicts["live"] = "the VIP reconciler is not running"
    assert get(f"{base}/readyz") == (200, "ok\n")
    assert get(f"{base}/healthz") == (503, "the VIP reconciler is not running\n")
    assert get(f"{base}/other")[0] == 404


class _Speaker:
    def __init__(self, phase: SessionPhase) -> None:
        self.phase = phase

    def sessions(self) -> dict[Any, SessionState]:
        peer = ipaddress.ip_address("198.51.100.1")
        return {peer: SessionState(peer, 65000, self.phase, 0.0)}


def test_liveness_and_readiness_read_the_daemon() -> None:
    dead = SimpleNamespace(alive=lambda: False, _thread=object(), announcers=[])
    assert "reconciler" in (liveness(SimpleNamespace(vips=dead, control_plane=None, services=None)) or "")
    stuck = SimpleNamespace(elector=SimpleNamespace(alive=lambda: False))
    quiet = SimpleNamespace(elector=SimpleNamespace(heard_from_lock=lambda: 30.0,
                                                    timers=SimpleNamespace(lease_duration=5.0)))
    assert "has not answered the control-plane Lease for 30 s" in str(
        readiness(SimpleNamespace(control_plane=quiet, vips=SimpleNamespace(announcers=[])), lambda: True))
    live_vips = SimpleNamespace(alive=lambda: True, _thread=object(), announcers=[])
    assert "control-plane elector" in (liveness(SimpleNamespace(vips=live_vips, control_plane=stuck)) or "")
    assert liveness(SimpleNamespace(vips=live_vips, control_plane=None, services=None)) is None

    bgp = SimpleNamespace(speaker=_Speaker(SessionPhase.IDLE))
    daemon = SimpleNamespace(vips=SimpleNamespace(announcers=[bgp]))
    assert readiness(daemon, lambda: False) is not None and "starting" in str(readiness(daemon, lambda: False))
    assert "no BGP session is established" in str(readiness(daemon, lambda: True))
    bgp.speaker.phase = SessionPhase.ESTABLISHED
    assert readiness(daemon, lambda: True) is None


def _probe(lab: LabCluster, node: str, path: str) -> tuple[int, str]:
    code = ("import urllib.request,urllib.error,sys\n"
            f"try:\n r=urllib.request.urlopen('http://127.0.0.1:{PORT}{path}',timeout=3); print(r.status); "
            "print(r.read().decode(),end='')\n"
            "except urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode(),end='')\n"
            "except OSError as e:\n print(0); print(e)\n")
    out = lab.rig.run(node, [sys.executable, "-c", code], check=False).stdout.split("\n", 1)
    return int(out[0] or 0), out[1] if len(out) > 1 else ""


@pytest.mark.parametrize("tier", ["emulator", "kube-apiserver"])
def test_real_managers_alive_while_waiting_ready_once_up(tier: str, request: pytest.FixtureRequest) -> None:
    require_rig()
    backend = tier_backend(request, tier)
    with LabCluster(nodes=2, timers=(2.0, 1.5, 0.4), extra_args=["--healthCheckPort", str(PORT)],
                    api=backend) as lab:
        try:
            lab.api.set_fault("n1", outage="refuse")  # n1's API server does not answer yet
            for node in lab.nodes:
                lab.start(node)
            wait_for(lambda: _probe(lab, "n2", "/readyz")[0] == 200, timeout=20)
            assert _probe(lab, "n2", "/healthz") == (200, "ok\n")
            # n2 ready says nothing of n1, which may still be starting on a busy machine (a fixed 1 s was a guess):
            # its health server listening, then its elector campaigning, before the assertions on what they say
            wait_for(lambda: _probe(lab, "n1", "/healthz")[0] != 0, timeout=20)
            assert _probe(lab, "n1", "/healthz") == (200, "ok\n")  # alive: a restart would not help
            wait_for(lambda: "has not answered" in _probe(lab, "n1", "/readyz")[1], timeout=20)
            status, reason = _probe(lab, "n1", "/readyz")
            assert status == 503 and "has not answered" in reason, reason
            lab.api.clear_fault("n1")
            wait_for(lambda: _probe(lab, "n1", "/readyz")[0] == 200, timeout=40)  # the bring-up backs off
            leader = lab.lease_holder()
            lab.managers[leader].send_signal(signal.SIGUSR1)  # the state, one line, secrets masked
            # the whole line, parsed (events() skips a line still being written: a long one takes several writes)
            wait_for(lambda: any(e["event"] == "state.report" for e in lab.events(leader)), timeout=10)
            report = next(e for e in lab.events(leader) if e["event"] == "state.report")
            assert report["control_plane_leader"] is True and report["vips"] == [f"{lab.vip}/32@eth0"]
        finally:
            for node in list(lab.managers):
                lab.terminate(node)


def test_a_taken_port_is_one_clear_error() -> None:
    first = HealthServer(0, lambda: None, lambda: None, host="127.0.0.1")
    try:
        with pytest.raises(OSError, match=rf"--healthCheckPort {first.port}: cannot listen"):
            HealthServer(first.port, lambda: None, lambda: None, host="127.0.0.1")
    finally:
        first.stop()
