"""The ExaBGP speaker (generic.bgp.exabgp): its rendered configuration (golden files, each passed through
`exabgp validate`), its API commands, and its behaviour against a real BIRD 2 in the namespace rig, asserted on
the router's kernel FIB and on BIRD's own view, never only on the speaker's.

Figures (latencies, the 1,000-prefix burst, close) are printed; run with `-s` to see them.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from generic.bgp.exabgp import (
    ExaBgpSpeaker,
    KernelResolver,
    Neighbor,
    _update_prefixes,
    config_matches,
    describe_notification,
    parse_running_config,
    plan_neighbors,
    render_config,
    route_commands,
)
from generic.bgp.peers import BgpPeer
from generic.bgp.speaker import IPNetwork, Route, SessionPhase, SpeakerError, SpeakerSettings
from generic.logfmt import KeyValueFormatter
from generic.parse import IPAddress
from generic.secret import Secret
from kubevip_testbed import bird as bird_driver
from kubevip_testbed.bird import Bird, BirdPeer
from kubevip_testbed.rig import Rig, netns, processes
from kubevip_testbed.waiting import wait_for
from tests.rig_support import require

GOLDEN = Path(__file__).parent / "golden"
T = TypeVar("T")
ROUTER_AS, NODE_AS = 65000, 65001
VIP = ipaddress.ip_network("203.0.113.10/32")
VIP6 = ipaddress.ip_network("2001:db8:ffff::10/128")
GOLDEN_RELAY = ("/usr/bin/python3", "-I", "/usr/lib/python3/dist-packages/generic/bgp/exabgp_relay.py",
                "/run/kvm-bgp/api-1.sock")


def v4(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


# -- rendering (no rig) ---------------------------------------------------------------------------------------


class FixedResolver:
    """Deterministic addresses for golden files: eth0 holds .11 / ::11, and every route leaves from them."""

    def interface_address(self, name: str, family: int) -> IPAddress | None:
        if name != "eth0":
            raise SpeakerError(f"source interface {name!r} does not exist")
        return ip("198.51.100.11") if family == 4 else ip("2001:db8:100::11")

    def route_source(self, peer: IPAddress) -> IPAddress | None:
        return ip("198.51.100.11") if peer.version == 4 else ip("2001:db8:100::11")


GOLDEN_CASES: dict[str, SpeakerSettings] = {
    "exabgp-one-ipv4-peer": SpeakerSettings(v4("198.51.100.11"), 65000, (BgpPeer(ip("198.51.100.1"), 65001),)),
    "exabgp-two-peers-md5-multihop-port": SpeakerSettings(
        v4("198.51.100.11"), 65001,
        (BgpPeer(ip("198.51.100.1"), 65000, Secret("s3cr:et; pass,word")),
         BgpPeer(ip("192.0.2.1"), 65002, Secret('pa"ss\\wd {x}'), multihop=True, port=1179)),
        hold_time=9, source_ip=ip("198.51.100.11")),
    "exabgp-ipv6-peer": SpeakerSettings(v4("198.51.100.11"), 65001, (BgpPeer(ip("2001:db8:100::1"), 65000),)),
    "exabgp-source-interface": SpeakerSettings(
        v4("198.51.100.11"), 65001,
        (BgpPeer(ip("198.51.100.1"), 65001), BgpPeer(ip("2001:db8:100::1"), 65000, Secret("v6-pass"))),
        source_if="eth0"),
}


def _golden_text(name: str) -> str:
    return render_config(plan_neighbors(GOLDEN_CASES[name], FixedResolver()), GOLDEN_RELAY)


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_rendered_configuration_matches_golden(name: str) -> None:
    text = _golden_text(name)
    path = GOLDEN / f"{name}.conf"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"regenerate with UPDATE_GOLDEN=1 and review {path}"


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_configuration_passes_exabgp_validate(name: str, tmp_path: Path) -> None:
    text = (GOLDEN / f"{name}.conf").read_text()
    if not Path(GOLDEN_RELAY[0]).exists():  # `run` must name an executable that exists
        text = text.replace(GOLDEN_RELAY[0], sys.executable)
    path = tmp_path / "exabgp.conf"
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "exabgp", "validate", "-n", str(path)], capture_output=True,
                            text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("✓ neighbor") == len(GOLDEN_CASES[name].peers), output


def test_rendering_rules() -> None:
    two = _golden_text("exabgp-two-peers-md5-multihop-port")
    assert "s3cr:et" not in two and "pa\"ss" not in two  # passwords go base64-encoded: nothing to misquote
    assert 'md5-password "czNjcjpldDsgcGFzcyx3b3Jk";' in two and "md5-base64 true;" in two
    assert "outgoing-ttl 1;" in two and "outgoing-ttl 64;" in two and "connect 1179;" in two
    assert "inherit" not in two and "template" not in two  # templates overwrite neighbour values
    assert two.count("graceful-restart disable;") == 2
    same_as = _golden_text("exabgp-source-interface")
    assert "outgoing-ttl" not in same_as.split("neighbor 2001")[0]  # iBGP single hop: no TTL restriction
    assert "source-interface eth0;" in same_as and "local-address 2001:db8:100::11;" in same_as
    with pytest.raises(SpeakerError, match="has no IPv6 address"):
        class NoV6(FixedResolver):
            def interface_address(self, name: str, family: int) -> IPAddress | None:
                return None if family == 6 else super().interface_address(name, family)
        plan_neighbors(GOLDEN_CASES["exabgp-source-interface"], NoV6())
    with pytest.raises(SpeakerError, match="run"):
        render_config((), ("/usr/bin/python3", "/path with space/relay.py"))


def test_settings_and_routes_are_validated() -> None:
    peer = BgpPeer(ip("198.51.100.1"), 65000)
    with pytest.raises(ValueError, match="twice"):
        SpeakerSettings(v4("198.51.100.11"), 65001, (peer, peer))
    with pytest.raises(ValueError, match="hold time"):
        SpeakerSettings(v4("198.51.100.11"), 65001, (peer,), hold_time=2)
    with pytest.raises(ValueError, match="interface"):
        SpeakerSettings(v4("198.51.100.11"), 65001, (peer,), source_if="eth0; rm")
    with pytest.raises(ValueError, match="MED"):
        Route(med=2**32)
    secret = SpeakerSettings(v4("198.51.100.11"), 65001, (BgpPeer(ip("198.51.100.1"), 65000, Secret("hunter2")),))
    assert "hunter2" not in repr(secret) and "hunter2" not in repr(plan_neighbors(secret, FixedResolver()))


def test_route_commands_are_batched_per_family_and_med() -> None:
    prefixes = [ipaddress.ip_network(f"198.18.0.{i}/32") for i in range(250)]
    peers = [ip("198.51.100.1"), ip("198.51.100.13")]
    lines = route_commands("announce", prefixes, peers, med=7)
    assert [len(part) for _, part in lines] == [100, 100, 50]
    assert lines[0][0].startswith("neighbor 198.51.100.1 , neighbor 198.51.100.13 announce attributes "
                                  "next-hop self med 7 nlri 198.18.0.0/32 198.18.0.1/32 ")
    withdraw = route_commands("withdraw", prefixes[:2], peers[:1], med=7)
    assert withdraw == [("neighbor 198.51.100.1 withdraw attributes next-hop self nlri 198.18.0.0/32 198.18.0.1/32",
                         tuple(prefixes[:2]))]
    assert route_commands("announce", prefixes, []) == []


def test_running_configuration_check() -> None:
    """The check that a reload took effect, on the shape ExaBGP 5.0 prints (`show neighbor configuration`)."""
    settings = GOLDEN_CASES["exabgp-two-peers-md5-multihop-port"]
    neighbors = plan_neighbors(settings, FixedResolver())
    printed = []
    for n in neighbors:
        view = n.view()
        printed += [f"neighbor {n.peer.address} {{", '  description "";', "  host-name None;"]
        printed += [f"  {key} {value};" for key, value in view.items()]
        printed += ["  capability {", "    asn4 enable;", "  }", "  api {", "    processes [ kube-vip-metal ];",
                    "  }", "}"]
    running = parse_running_config(printed)
    assert config_matches(running, neighbors) == []
    changed = [Neighbor(n.peer, n.router_id, n.local_as, 30, n.local_address, n.source_if, n.ttl) for n in neighbors]
    assert config_matches(running, changed) == ["198.51.100.1: hold-time differs", "192.0.2.1: hold-time differs"]
    assert config_matches(running, neighbors[:1]) == ["192.0.2.1: still running"]
    problems = config_matches(parse_running_config(printed[:len(printed) // 2]), neighbors)
    assert problems == ["192.0.2.1: not running"]
    assert all("czNjcj" not in p for p in config_matches(running, neighbors[::-1][:1]))  # keys, never values


def test_update_messages_and_notifications_are_read() -> None:
    hops = {"198.51.100.11": [{"nlri": "203.0.113.10/32"}, {"nlri": "203.0.113.11/32"}]}
    announce = {"attribute": {"origin": "igp"}, "announce": {"ipv4 unicast": hops}}
    withdraw = {"withdraw": {"ipv6 unicast": [{"nlri": "2001:db8:ffff::10/128"}]}}
    assert set(_update_prefixes(announce)) == {VIP, ipaddress.ip_network("203.0.113.11/32")}
    assert set(_update_prefixes(withdraw)) == {VIP6}
    assert describe_notification(2, 2) == "OPEN message error (2/2: bad peer AS)"
    assert describe_notification(6, 3) == "cease (6/3: peer de-configured)"
    assert describe_notification(9, 9) == "code 9 (9/9)"


# -- against BIRD in the rig ----------------------------------------------------------------------------------


class NamespaceResolver(KernelResolver):
    """The kernel resolver, asked inside a rig namespace (where ExaBGP runs), from a thread that joined it."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def interface_address(self, name: str, family: int) -> IPAddress | None:
        return netns.call_in(self.namespace, lambda: KernelResolver.interface_address(self, name, family))

    def route_source(self, peer: IPAddress) -> IPAddress | None:
        return netns.call_in(self.namespace, lambda: KernelResolver.route_source(self, peer))


class Lab:
    """One rig test's pieces: BIRD instances and speakers, all stopped at the end (speakers first), and checked
    to leave nothing behind (no ExaBGP process, no work directory holding a password)."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.birds: list[Bird] = []
        self.speakers: list[ExaBgpSpeaker] = []
        self.pids: list[int] = []

    def bird(self, role: str = "router", peers: Sequence[BirdPeer] = (), port: int = 179) -> Bird:
        instance = Bird(self.rig, role, peers=peers, asn=ROUTER_AS, port=port)
        self.birds.append(instance)
        return instance.start()

    def settings(self, role: str, *peers: BgpPeer, source_if: str | None = None) -> SpeakerSettings:
        return SpeakerSettings(v4(self.rig.ipv4(role)), NODE_AS, peers, hold_time=9, source_if=source_if)

    def speaker(self, role: str, settings: SpeakerSettings, stuck_after: float = 10.0) -> ExaBgpSpeaker:
        instance = ExaBgpSpeaker(settings, command_prefix=["ip", "netns", "exec", self.rig.ns(role)],
                                 resolver=NamespaceResolver(self.rig.ns(role)), stuck_after=stuck_after)
        self.speakers.append(instance)
        return instance

    def peer(self, role: str = "router", password: str | None = None, multihop: bool = False,
             port: int = 179) -> BgpPeer:
        return BgpPeer(ip(self.rig.ipv4(role)), ROUTER_AS, Secret(password) if password else None, multihop, port)

    def close(self) -> None:
        for speaker in self.speakers:
            pid = speaker.exabgp_pid
            speaker.close()
            assert pid is None or not processes.alive(pid), f"ExaBGP {pid} outlived close()"
            assert not speaker.config_path.parent.exists(), "the speaker's work directory outlived close()"
        for instance in self.birds:
            instance.stop()
            assert not instance.dir.exists()


@pytest.fixture
def lab(rig: Rig) -> Iterator[Lab]:
    require("BIRD 2", bird_driver.missing())
    pieces = Lab(rig)
    yield pieces
    pieces.close()


def _established(speaker: ExaBgpSpeaker, peer: BgpPeer) -> bool:
    return speaker.sessions()[peer.address].established


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _formatted(caplog: pytest.LogCaptureFixture) -> str:
    formatter = KeyValueFormatter()
    return "\n".join(formatter.format(record) for record in caplog.records)


def test_route_reaches_the_router_fib_and_is_withdrawn(lab: Lab) -> None:
    router = lab.bird(peers=[BirdPeer("n1", lab.rig.ipv4("n1"), NODE_AS)])
    peer = lab.peer()
    speaker = lab.speaker("n1", lab.settings("n1", peer))
    router.wait_established("n1")
    wait_for(lambda: _established(speaker, peer), timeout=10)
    assert f"neighbor {peer.address} {{" in speaker.config_path.read_text()
    assert oct(speaker.config_path.stat().st_mode & 0o777) == "0o600"
    assert oct(speaker.config_path.parent.stat().st_mode & 0o777) == "0o700"

    announce, withdraw = [], []
    for run in range(10):
        started = time.monotonic()
        speaker.advertise({VIP: Route(med=100 - run)})
        announce.append(router.wait_fib({VIP}) - started)
        assert router.fib() == {VIP: [lab.rig.ipv4("n1")]}  # the kernel forwards to n1
        assert f"MED: {100 - run}" in router.birdc("show", "route", str(VIP), "all").replace("BGP.med", "MED")
        started = time.monotonic()
        speaker.advertise({})
        withdraw.append(router.wait_fib({VIP}, present=False) - started)
    assert router.fib() == {} and router.routes() == set()
    print(f"\nannounce -> router FIB ms: median {_ms(statistics.median(announce))} max {_ms(max(announce))}; "
          f"withdraw -> gone ms: median {_ms(statistics.median(withdraw))} max {_ms(max(withdraw))}")
    assert statistics.median(announce) < 0.1 and statistics.median(withdraw) < 0.1


def test_two_peers_both_get_the_route(lab: Lab) -> None:
    """The router (port 179, passive) and a second BIRD on n3 (port 1179, dialling too, multihop); both MD5."""
    router = lab.bird(peers=[BirdPeer("n1", lab.rig.ipv4("n1"), NODE_AS, password="one;pass word")])
    second = lab.bird("n3", port=1179, peers=[BirdPeer("n1", lab.rig.ipv4("n1"), NODE_AS, password="two:pass,@",
                                                        multihop=True, passive=False)])
    peers = (lab.peer(password="one;pass word"),
             lab.peer("n3", password="two:pass,@", multihop=True, port=1179))
    speaker = lab.speaker("n1", lab.settings("n1", *peers))
    speaker.advertise({VIP: Route()})
    for instance in (router, second):
        instance.wait_established("n1")
        instance.wait_fib({VIP})
        assert instance.fib() == {VIP: [lab.rig.ipv4("n1")]}
    assert all(state.established for state in speaker.sessions().values())
    speaker.advertise({})
    router.wait_fib({VIP}, present=False)
    second.wait_fib({VIP}, present=False)


def test_md5_match_and_mismatch(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="generic")
    router = lab.bird(peers=[BirdPeer("n1", lab.rig.ipv4("n1"), NODE_AS, password="right-one"),
                             BirdPeer("n2", lab.rig.ipv4("n2"), NODE_AS, password="right-two")])
    good = lab.speaker("n1", lab.settings("n1", lab.peer(password="right-one")), stuck_after=2.0)
    bad = lab.speaker("n2", lab.settings("n2", lab.peer(password="wrong-two")), stuck_after=2.0)
    good.advertise({VIP: Route()})
    bad.advertise({ipaddress.ip_network("203.0.113.20/32"): Route()})
    router.wait_established("n1")
    router.wait_fib({VIP})
    wait_for(lambda: any(r.getMessage() == "bgp.session_not_established" for r in caplog.records), timeout=15)
    warning = next(r for r in caplog.records if r.getMessage() == "bgp.session_not_established")
    fields = warning.kv_fields  # type: ignore[attr-defined]
    assert fields["peer"] == lab.rig.ipv4("router") and fields["md5"] is True and "password" in fields["hint"]
    assert not router.protocol("n2").established
    assert ipaddress.ip_network("203.0.113.20/32") not in router.fib()
    assert bad.sessions()[ip(lab.rig.ipv4("router"))].phase is not SessionPhase.ESTABLISHED
    text = _formatted(caplog)
    for password in ("right-one", "right-two", "wrong-two"):
        assert password not in text


def test_a_refused_session_is_reported_with_the_routers_reason(lab: Lab) -> None:
    lab.bird(peers=[BirdPeer("n1", lab.rig.ipv4("n1"), 65099)])  # the router expects another AS from n1
    peer = lab.peer()
    speaker = lab.speaker("n1", lab.settings("n1", peer))
    wait_for(lambda: "bad peer AS" in (speaker.sessions()[peer.address].last_error or ""), timeout=15)
    state = speaker.sessions()[peer.address]
    assert not state.established
    assert state.last_error == "notification received: OPEN message error (2/2: bad peer AS)"


def test_exabgp_killed_is_restarted_and_the_route_comes_back(lab: Lab) -> None:
    router = lab.bird(peers=[BirdPeer("n1", lab.rig.ipv4("n1"), NODE_AS)])
    peer = lab.peer()
    speaker = lab.speaker("n1", lab.settings("n1", peer))
    speaker.advertise({VIP: Route()})
    router.wait_fib({VIP})
    first = speaker.exabgp_pid
    assert first is not None
    killed = time.monotonic()
    os.kill(first, signal.SIGKILL)
    gone = router.wait_fib({VIP}, present=False)  # the kernel closed ExaBGP's TCP session
    back = router.wait_fib({VIP}, timeout=20)
    print(f"\nExaBGP SIGKILL: route gone after {_ms(gone - killed)} ms, back after {_ms(back - killed)} ms")
    assert speaker.exabgp_pid not in (None, first) and speaker.restarts == 1
    assert not processes.alive(first)
    wait_for(lambda: _established(speaker, peer), timeout=10)


def test_close_withdraws_at_once_and_stops_exabgp(lab: Lab) -> None:
    router = lab.bird(peers=[BirdPeer("n1", lab.rig.ipv4("n1"), NODE_AS)])
    peer = lab.peer()
    speaker = lab.speaker("n1", lab.settings("n1", peer))
    speaker.advertise({VIP: Route()})
    router.wait_fib({VIP})
    wait_for(lambda: speaker.wait_synced(0) and _established(speaker, peer), timeout=10)
    pid, workdir = speaker.exabgp_pid, speaker.config_path.parent
    assert pid is not None
    seen: list[float] = []
    polling = threading.Event()
    watcher = threading.Thread(target=lambda: seen.append(router.wait_fib({VIP}, present=False, polling=polling)))
    watcher.start()
    # the watcher polls inside the router's namespace (a fixed 0.05 s could end before it had joined it on a busy
    # machine: its first read would come after close() and measure its own start-up)
    assert polling.wait(10)
    started = time.monotonic()
    speaker.close()
    closed = time.monotonic()
    watcher.join(5)
    print(f"\nclose(): route gone from the router's FIB after {_ms(seen[0] - started)} ms, "
          f"close() returned after {_ms(closed - started)} ms")
    assert seen[0] - started < 0.1  # the issue's target: withdrawn from the router's FIB within 100 ms
    assert closed - started < 2.0
    assert not processes.alive(pid) and not workdir.exists()
    assert speaker.sessions()[peer.address].phase is SessionPhase.STOPPED
    with pytest.raises(SpeakerError):
        speaker.advertise({VIP: Route()})


# A daemon in a separate process: one speaker, one route; prints ExaBGP's PID and its work directory, then waits.
DAEMON = """
import ipaddress, sys, time
from generic.bgp.exabgp import ExaBgpSpeaker
from generic.bgp.peers import BgpPeer
from generic.bgp.speaker import Route, SpeakerSettings
ns, me, router = sys.argv[1:4]
settings = SpeakerSettings(ipaddress.IPv4Address(me), 65001, (BgpPeer(ipaddress.ip_address(router), 65000),),
                           hold_time=9, source_ip=ipaddress.ip_address(me))
speaker = ExaBgpSpeaker(settings, command_prefix=["ip", "netns", "exec", ns])
speaker.advertise({ipaddress.ip_network("203.0.113.10/32"): Route()})
assert speaker.wait_synced(20)
print(speaker.exabgp_pid, speaker.config_path.parent, flush=True)
time.sleep(120)
"""


def test_exabgp_never_outlives_a_killed_daemon(lab: Lab) -> None:
    """SIGKILL of the daemon: the relay sees its socket close and shuts ExaBGP down, so the router drops the
    route at once; the next speaker removes the dead daemon's work directory (it holds the passwords)."""
    router = lab.bird(peers=[BirdPeer("n1", lab.rig.ipv4("n1"), NODE_AS)])
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON, lab.rig.ns("n1"), lab.rig.ipv4("n1"),
                               lab.rig.ipv4("router")], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None
        pid_text, workdir_text = daemon.stdout.readline().split()
        exabgp, workdir = int(pid_text), Path(workdir_text)
        router.wait_fib({VIP})
        killed = time.monotonic()
        daemon.kill()
        gone = router.wait_fib({VIP}, present=False, timeout=5)
        wait_for(lambda: not processes.alive(exabgp), timeout=5)
        print(f"\ndaemon SIGKILL: route gone from the router's FIB after {_ms(gone - killed)} ms, ExaBGP gone")
    finally:
        daemon.kill()
        daemon.wait(5)
    assert workdir.exists()
    lab.speaker("n2", lab.settings("n2", lab.peer()))
    assert not workdir.exists()


def test_live_repeering_keeps_the_unchanged_session(lab: Lab) -> None:
    """Adding a peer (and removing it again) reloads ExaBGP in place: the router's session never flaps."""
    router = lab.bird(peers=[BirdPeer("n1", lab.rig.ipv4("n1"), NODE_AS, password="r-pass")])
    second = lab.bird("n3", peers=[BirdPeer("n1", lab.rig.ipv4("n1"), NODE_AS)])
    first_peer, second_peer = lab.peer(password="r-pass"), lab.peer("n3")
    speaker = lab.speaker("n1", lab.settings("n1", first_peer))
    speaker.advertise({VIP: Route(med=5)})
    router.wait_established("n1")
    router.wait_fib({VIP})
    before, pid = router.protocol("n1"), speaker.exabgp_pid

    samples: list[bird_driver.Protocol] = []
    stop = threading.Event()

    def sample() -> None:  # watch the router's session through the whole change, not only before and after
        while not stop.is_set():
            samples.append(router.protocol("n1"))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        started = time.monotonic()
        speaker.configure(lab.settings("n1", first_peer, second_peer))
        second.wait_established("n1")
        added = second.wait_fib({VIP}) - started
        wait_for(lambda: speaker.reloads == 1 and _established(speaker, second_peer), timeout=10)
        speaker.configure(lab.settings("n1", first_peer))
        second.wait_fib({VIP}, present=False)
        wait_for(lambda: speaker.reloads == 2 and second_peer.address not in speaker.sessions(), timeout=10)
        time.sleep(0.2)
    finally:
        stop.set()
        sampler.join()
    print(f"\nlive re-peering: new peer had the route {_ms(added)} ms after configure(); router samples: "
          f"{len(samples)}, all established since {before.since}")
    assert samples and all(s.established and s.same_session(before) for s in samples)
    assert router.protocol("n1").same_session(before) and speaker.exabgp_pid == pid and speaker.restarts == 0
    assert router.fib() == {VIP: [lab.rig.ipv4("n1")]}
    assert not second.protocol("n1").established


def test_a_thousand_prefixes_reach_the_fib_in_one_burst(lab: Lab) -> None:
    router = lab.bird(peers=[BirdPeer("n1", lab.rig.ipv4("n1"), NODE_AS)])
    peer = lab.peer()
    speaker = lab.speaker("n1", lab.settings("n1", peer))
    router.wait_established("n1")
    wait_for(lambda: _established(speaker, peer), timeout=10)
    prefixes: dict[IPNetwork, Route] = {
        ipaddress.ip_network(f"198.18.{i // 250}.{i % 250}/32"): Route() for i in range(1000)}
    started = time.monotonic()
    speaker.advertise(prefixes)
    queued = time.monotonic() - started
    arrived = router.wait_fib(set(prefixes), timeout=30) - started
    assert router.route_count() == 1000
    started = time.monotonic()
    speaker.advertise({})
    left = router.wait_fib(set(prefixes), present=False, timeout=30) - started
    print(f"\n1,000 prefixes: advertise() returned after {_ms(queued)} ms, all in the router's FIB after "
          f"{_ms(arrived)} ms, all withdrawn after {_ms(left)} ms")
    assert queued < 0.5 and arrived < 5 and left < 5


def test_ipv6_peer_and_source_interface(lab: Lab) -> None:
    """An IPv6 session announces a /128 with next-hop self; sessions from --sourceIF use eth0's addresses."""
    router = lab.bird(peers=[BirdPeer("n1", lab.rig.ipv4("n1"), NODE_AS),
                             BirdPeer("n1v6", lab.rig.ipv6("n1"), NODE_AS)])
    peers = (lab.peer(), BgpPeer(ip(lab.rig.ipv6("router")), ROUTER_AS))
    speaker = lab.speaker("n1", lab.settings("n1", *peers, source_if="eth0"))
    speaker.advertise({VIP: Route(), VIP6: Route(med=3)})
    wait_for(lambda: speaker.exabgp_pid is not None and speaker.config_path.exists())
    assert f"local-address {lab.rig.ipv6('n1')};" in speaker.config_path.read_text()
    router.wait_fib({VIP6})
    router.wait_fib({VIP})
    assert router.fib(6) == {VIP6: [lab.rig.ipv6("n1")]}
    assert router.fib(4) == {VIP: [lab.rig.ipv4("n1")]}
    assert router.routes("n1v6") == {VIP6} and router.routes("n1") == {VIP}  # each family on its own session
    speaker.advertise({VIP: Route()})
    router.wait_fib({VIP6}, present=False)
