"""The local API server health check: its flags, the state machine (injected results and clock), the HTTP check
against real local servers (plain, TLS verified with a CA, TLS unverified), and ControlPlane's use of it."""

from __future__ import annotations

import ipaddress
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from generic.election.elector import Latency
from generic.election.handover import Fitness
from kubevip_metal.config import Command, ConfigError, Given, build_config
from kubevip_metal.daemon.localhealth import CheckState, HttpCheck, LocalHealth, State
from kubevip_metal.parsers import parse_health_check_address

BASE = {"controlplane": "true", "arp": "true", "address": "192.0.2.10", "nodeName": "n1"}


def config(**extra: str) -> Any:
    given = {k: Given(f"--{k}", v) for k, v in {**BASE, **extra}.items()}
    return build_config(given, Command.MANAGER)


@pytest.mark.parametrize(("text", "url"), [
    ("6443", "https://127.0.0.1:6443/readyz"),
    (":8443", "https://127.0.0.1:8443/readyz"),
    ("https://10.0.0.1:6443", "https://10.0.0.1:6443/readyz"),
    ("https://10.0.0.1:6443/", "https://10.0.0.1:6443/readyz"),
    ("http://[::1]:8080/livez?verbose", "http://[::1]:8080/livez?verbose"),
    ("https://node.example:6443/readyz?exclude=etcd", "https://node.example:6443/readyz?exclude=etcd"),
])
def test_address_forms(text: str, url: str) -> None:
    assert parse_health_check_address(text) == url


@pytest.mark.parametrize(("extra", "message"), [
    ({"controlPlaneHealthCheckAddress": "ftp://x"}, '--controlPlaneHealthCheckAddress "ftp://x": not a port or an '
                                                    'http(s) URL'),
    ({"controlPlaneHealthCheckAddress": "localhost:6443"}, "not a port or an http(s) URL"),
    ({"controlPlaneHealthCheckAddress": "70000"}, "not a TCP port"),
    ({"controlPlaneHealthCheckAddress": "https://x:99999/"}, "has an invalid port"),
    ({"controlPlaneHealthCheckAddress": "https://x/#a"}, "fragment"),
    ({"controlPlaneHealthCheckAddress": "6443", "controlPlaneHealthCheckCAPath": "/nonexistent/ca.crt"},
     '--controlPlaneHealthCheckCAPath "/nonexistent/ca.crt": not a readable PEM CA file'),
    ({"controlPlaneHealthCheckAddress": "http://127.0.0.1:1/readyz", "controlPlaneHealthCheckCAPath": "/x"},
     "a CA file needs an https health check URL"),
    ({"controlPlaneHealthCheckCAPath": "/x"}, "needs --controlPlaneHealthCheckAddress"),
    ({"controlPlaneHealthCheckAddress": "6443", "controlPlaneHealthCheckFailureThreshold": "0"},
     '--controlPlaneHealthCheckFailureThreshold "0": not a count (1-100)'),
    ({"controlPlaneHealthCheckAddress": "6443", "controlPlaneHealthCheckSuccessThreshold": "101"},
     "--controlPlaneHealthCheckSuccessThreshold"),
    ({"controlPlaneHealthCheckAddress": "6443", "controlPlaneHealthCheckPeriodSeconds": "-1"},
     "--controlPlaneHealthCheckPeriodSeconds"),
    ({"controlPlaneHealthCheckAddress": "6443", "controlPlaneHealthCheckTimeoutSeconds": "x"},
     "--controlPlaneHealthCheckTimeoutSeconds"),
])
def test_bad_values_are_one_line_naming_the_flag(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(**extra)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as caught:
        config(controlPlaneHealthCheckAddress="https://admin:hunter2@127.0.0.1:6443/readyz")
    assert "hunter2" not in str(caught.value) and "--controlPlaneHealthCheckAddress" in str(caught.value)


def test_env_names_and_defaults() -> None:
    from kubevip_metal.config import given_from_env

    env = {"control_plane_health_check_address": "6443", "control_plane_health_check_period_seconds": "2",
           "control_plane_health_check_timeout_seconds": "1", "control_plane_health_check_failure_threshold": "4",
           "control_plane_health_check_success_threshold": "5"}
    given = {k: Given(f"--{k}", v) for k, v in BASE.items()} | given_from_env(env)
    settings = build_config(given, Command.MANAGER).local_health
    assert settings is not None
    assert (settings.url, settings.period, settings.timeout, settings.failure_threshold,
            settings.success_threshold) == ("https://127.0.0.1:6443/readyz", 2.0, 1.0, 4, 5)
    defaults = config(controlPlaneHealthCheckAddress="6443").local_health
    assert (defaults.period, defaults.timeout, defaults.failure_threshold, defaults.success_threshold) == (5, 3, 3, 2)
    assert config().local_health is None


def test_state_machine_hysteresis() -> None:
    machine = CheckState(failure_threshold=3, success_threshold=2)
    assert machine.state is State.UNKNOWN
    assert [machine.observe("HTTP 500"), machine.observe("HTTP 500")] == [None, None]
    assert machine.observe(None) is None  # a success breaks the run of failures
    assert [machine.observe("x"), machine.observe("x"), machine.observe("x")] == [None, None, State.UNHEALTHY]
    assert machine.observe(None) is None
    assert machine.state.value == "unhealthy"
    assert machine.observe("x") is None and machine.observe(None) is None
    assert machine.observe(None) is State.HEALTHY
    assert (machine.checks, machine.failures, machine.last_problem) == (10, 6, None)
    assert machine.observe("x") is None and machine.state.value == "healthy"  # one failure is not three


def test_state_maps_to_fitness() -> None:
    assert [s.fitness for s in State] == [Fitness.UNKNOWN, Fitness.FIT, Fitness.UNFIT]


def test_loop_runs_the_probe_every_period_and_reports_changes() -> None:
    results = iter([None, None, "HTTP 503", "HTTP 503"] + [None] * 1000)
    changes: list[State] = []
    done = threading.Event()

    def probe() -> str | None:
        return next(results)

    def changed(state: State) -> None:
        changes.append(state)
        if len(changes) == 3:
            done.set()

    health = LocalHealth(probe, changed, period=0.01, failure_threshold=2, success_threshold=2)
    health.start()
    assert done.wait(5)
    health.stop()
    assert changes == [State.HEALTHY, State.UNHEALTHY, State.HEALTHY]
    assert not health.alive()


def test_a_probe_that_raises_counts_as_a_failure() -> None:
    def probe() -> str | None:
        raise RuntimeError("boom")

    changes: list[State] = []
    health = LocalHealth(probe, changes.append, period=0.01, failure_threshold=2, success_threshold=1)
    health.start()
    try:
        from kubevip_testbed.waiting import wait_for

        wait_for(lambda: changes == [State.UNHEALTHY], timeout=5)
        assert health.snapshot().last_problem == "check failed: RuntimeError"
    finally:
        health.stop()


class _Handler(BaseHTTPRequestHandler):
    status = 200
    hang = threading.Event()

    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            self.hang.wait(5)
        body = b"ok" if self.path.startswith(("/readyz", "/slow")) else b"not found"
        self.send_response(self.status if self.path.startswith(("/readyz", "/slow")) else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    _Handler.hang.set()
    httpd.shutdown()
    httpd.server_close()
    _Handler.status, _Handler.hang = 200, threading.Event()


def test_http_check_statuses(server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    check = HttpCheck(f"http://127.0.0.1:{port}/readyz", timeout=2)
    assert check() is None
    _Handler.status = 503
    assert check() == "HTTP 503"
    assert HttpCheck(f"http://127.0.0.1:{port}/other", timeout=2)() == "HTTP 404"
    assert HttpCheck(f"http://127.0.0.1:{port}/slow", timeout=0.2)() == "timed out"


def test_http_check_refused() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert HttpCheck(f"http://127.0.0.1:{port}/readyz", timeout=1)() == "ConnectionRefusedError"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from kubevip_testbed.peers.pki import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"), ["192.0.2.1"])  # no 127.0.0.1: loopback is checked as kubernetes


def _tls(server: ThreadingHTTPServer, cert: Path, key: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)


def test_https_check_verifies_with_the_ca_and_the_name_kubernetes(pki: Any, tmp_path: Path) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _tls(httpd, pki.serving_cert, pki.serving_key)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        port = httpd.server_address[1]
        assert HttpCheck(f"https://127.0.0.1:{port}/readyz", 2, pki.ca_cert)() is None
        assert HttpCheck(f"https://127.0.0.1:{port}/readyz", 2)() is None  # no CA: not verified
        from kubevip_testbed.peers.pki import make_pki

        other = make_pki(tmp_path / "other", ["192.0.2.1"])
        problem = HttpCheck(f"https://127.0.0.1:{port}/readyz", 2, other.ca_cert)()
        assert problem is not None and problem.startswith("certificate not trusted")
    finally:
        httpd.shutdown()
        httpd.server_close()


def _fed(*results: str | None) -> LocalHealth:
    health = LocalHealth(lambda: None, lambda state: None, period=1, failure_threshold=2, success_threshold=2)
    for problem in results:
        health.observe(problem)
    return health


def test_metrics_show_the_state_the_counts_and_the_offer() -> None:
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    from kubevip_metal.metrics import DaemonCollector

    health = _fed(None, "HTTP 503", "HTTP 503")
    elector = SimpleNamespace(is_leader=True, changes=1, offering=True,
                              renew_latency=Latency())
    daemon = SimpleNamespace(config=SimpleNamespace(node_name="n1", election=SimpleNamespace(
        lease_name="plndr-cp-lock", services_lease_name="plndr-svcs-lock")),
        control_plane=SimpleNamespace(elector=elector, local_health=health), services=None,
        vips=SimpleNamespace(repairs=0, announcers=[]))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon))
    got = {(s.name, tuple(s.labels.items())): s.value for f in registry.collect() for s in f.samples}
    assert got[("kube_vip_control_plane_health_check_state", (("state", "unhealthy"),))] == 1
    assert got[("kube_vip_control_plane_health_check_state", (("state", "healthy"),))] == 0
    assert got[("kube_vip_control_plane_health_checks_total", ())] == 3
    assert got[("kube_vip_control_plane_health_check_failures_total", ())] == 2
    assert got[("kube_vip_control_plane_lease_offered", ())] == 1
    daemon.control_plane = SimpleNamespace(elector=elector)  # no check configured: no series
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon))
    assert not [s for f in registry.collect() for s in f.samples if "health_check" in s.name]


def test_readiness_fails_while_unhealthy_and_liveness_while_the_loop_is_gone() -> None:
    from types import SimpleNamespace

    from kubevip_metal.health import liveness, readiness

    health = _fed("HTTP 503", "HTTP 503")
    daemon = SimpleNamespace(control_plane=SimpleNamespace(elector=None, local_health=health),
                             vips=SimpleNamespace(announcers=[]), services=None)
    assert readiness(daemon, lambda: True) == "this node's API server fails its health check (HTTP 503)"
    assert liveness(daemon) == "the local API server health check is not running"  # never started
    health.observe(None)
    health.observe(None)
    assert readiness(daemon, lambda: True) is None
    health.start()
    try:
        assert liveness(daemon) is None
    finally:
        health.stop()


def test_control_plane_offers_while_unhealthy_and_bgp_without_election_follows_the_check() -> None:
    """ControlPlane's wiring, with a fake VIP controller: by election the state becomes the elector's offer and
    fitness; without (BGP, every node) the VIPs are wanted exactly while healthy."""
    from types import SimpleNamespace

    from generic.addresses import Vip
    from kubevip_metal.daemon.controlplane import OWNER, ControlPlane
    from tests.memory_lock import MemoryStore

    claims: list[bool] = []
    vips = SimpleNamespace(claim=lambda owner, wanted, active: claims.append(active) if owner == OWNER else None,
                           release=lambda owner: None)
    vip = [Vip(ipaddress.ip_address("192.0.2.10"), 32, "eth0")]
    elects = config(controlPlaneHealthCheckAddress="6443", leaseDuration="1", leaseRenewDuration="0.6",
                    leaseRetry="0.1")
    plane = ControlPlane(elects, vips, vip)  # type: ignore[arg-type]
    plane.check_local_health(lambda: "HTTP 503")
    assert plane.local_health is not None
    from kubevip_testbed.waiting import wait_for

    wait_for(lambda: plane._fitness() is Fitness.UNFIT, timeout=30)
    plane.campaign(MemoryStore().client("n1"))
    try:
        assert plane.elector is not None and plane.elector.offering
    finally:
        plane.stop()

    bgp = config(arp="false", bgp="true", bgppeers="198.51.100.1:65001::false",
                 controlPlaneHealthCheckAddress="6443", controlPlaneHealthCheckPeriodSeconds="0.01")
    results = iter([None, None, "x", "x", "x"] + [None] * 10000)
    claims.clear()
    plane = ControlPlane(bgp, vips, vip)  # type: ignore[arg-type]
    plane.check_local_health(lambda: next(results))
    try:
        wait_for(lambda: claims[1:] == [True, False, True], timeout=10)
    finally:
        plane.stop()


def test_stop_does_not_wait_for_a_hanging_check() -> None:
    """SIGTERM's two seconds: a check stuck up to its own timeout is left to end on its own (a daemon thread)."""
    import time

    release = threading.Event()

    def probe() -> str | None:
        release.wait(10)
        return None

    health = LocalHealth(probe, lambda state: None, period=1, failure_threshold=1, success_threshold=1)
    health.start()
    time.sleep(0.05)
    started = time.monotonic()
    health.stop()
    assert time.monotonic() - started < 0.5
    release.set()
