"""The election as real processes on the Kubernetes API emulator and (`BOTH_APIS`) on the real kube-apiserver behind
the fault proxy, each candidate with its own token of the `kube-vip` ServiceAccount: kills, cuts, hand-overs,
conflicts, and interop with the official client-go-format elector. Never two leaders, from their own callback
times."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kubevip_testbed.election import Candidate, leaders, ours, overlaps
from kubevip_testbed.lab.api_backend import ApiBackend, EmulatorBackend
from kubevip_testbed.waiting import wait_for
from tests.election_support import official
from tests.realapi_support import tier_backend

NODES = ["n1", "n2", "n3", "n4", "n5"]
BOTH_APIS = pytest.mark.parametrize("api", ["emulator", "kube-apiserver"], indirect=True)


@pytest.fixture
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ApiBackend, dict[str, Path]]]:
    """The API backend (faults per candidate) and one kubeconfig per candidate, on loopback."""
    backend: ApiBackend = tier_backend(request) or EmulatorBackend()
    url = backend.start(NODES, socket.create_server(("127.0.0.1", 0)))
    try:
        configs = {n: tmp_path / f"{n}.kubeconfig" for n in NODES}
        for node, path in configs.items():
            backend.write_kubeconfig(node, path, url)
        yield backend, configs
    finally:
        backend.stop()


def holder(backend: ApiBackend, lease: str) -> str:
    return backend.lease_holder("kube-system", lease)


def test_random_kills_never_two_leaders(api: tuple[ApiBackend, dict[str, Path]],
                                        candidates: list[Candidate]) -> None:
    _backend, configs = api
    pool = {n: ours(n, configs[n], "kill-lease", "1,0.75,0.2") for n in NODES[:3]}
    candidates.extend(pool.values())
    for candidate in pool.values():
        candidate.start()
    wait_for(lambda: len(leaders(candidates)) == 1)
    rng = random.Random(11)
    end = time.monotonic() + 60
    samples = 0
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.5, 2.5))
        leading = leaders(candidates)
        victim = pool[leading[0]] if leading and rng.random() < 0.7 else rng.choice(list(pool.values()))
        if rng.random() < 0.75:
            victim.kill()
        else:
            victim.terminate()
        replacement = ours(victim.name, configs[victim.name], "kill-lease", "1,0.75,0.2")
        replacement.deaths = victim.deaths
        replacement.events = victim.snapshot()
        candidates.append(replacement)
        pool[victim.name] = replacement.start()
        samples += 1
        assert len(leaders(list(pool.values()))) <= 1
    assert not overlaps(candidates)
    spans = [span for c in candidates for span in c.intervals()]
    assert len(spans) >= 10, spans
    assert samples >= 20


def _sole_leader(pool: list[Candidate], other_than: Candidate | None = None, timeout: float = 20.0) -> Candidate:
    """Waits until exactly one candidate leads (and it is not `other_than`), and returns it."""
    found: list[Candidate] = []

    def one() -> bool:
        leading = [c for c in pool if c.is_leading()]  # read once per look: leadership changes meanwhile
        found[:] = leading
        return len(leading) == 1 and leading[0] is not other_than

    wait_for(one, timeout=timeout)
    return found[0]


@BOTH_APIS
def test_cut_off_leader_steps_down_before_the_lease_expires(api: tuple[ApiBackend, dict[str, Path]],
                                                            candidates: list[Candidate]) -> None:
    backend, configs = api
    timers = (2.0, 1.5, 0.4)
    pool = [ours(n, configs[n], "cut-lease", ",".join(map(str, timers))).start() for n in NODES[:3]]
    candidates.extend(pool)
    first = _sole_leader(pool)
    for outage in ("hang", "refuse"):
        current = _sole_leader(pool)
        cut = time.monotonic()
        backend.set_fault(current.name, outage=outage)
        # the cut-off leader still leads for a moment: each look reads the leaders once (they change under us)
        successor = _sole_leader(pool, other_than=current)
        stop = [e["mono"] for e in current.snapshot() if e["event"] == "stopped_leading"][-1]
        start = [e["mono"] for e in successor.snapshot() if e["event"] == "started_leading"][-1]
        assert stop <= cut + timers[1] + 0.25, (outage, stop - cut)  # stepped down by its renew deadline
        assert start > stop  # and before anyone else took over
        # the successor waited a whole lease after the last renewal it saw, so the margin between the old
        # leader's step-down (renewal + renew deadline) and the take-over is at least lease - renew deadline
        assert start - stop >= timers[0] - timers[1] - 0.05, (outage, start - stop)
        backend.clear_fault(current.name)
        time.sleep(2 * timers[0])
        assert not current.is_leading()  # healed: back as a follower, no restart, no second leader
    assert first.alive and not overlaps(candidates)


@BOTH_APIS
def test_sigterm_releases_and_hands_over_at_once(api: tuple[ApiBackend, dict[str, Path]],
                                                 candidates: list[Candidate]) -> None:
    backend, configs = api
    pool = [ours(n, configs[n], "term-lease", "5,3,1").start() for n in NODES[:3]]
    candidates.extend(pool)
    leader = _sole_leader(pool)
    # followers settled and watching: each has seen the leader (a fixed 1.5 s left one still starting on a busy
    # machine, and a follower that starts after the release takes the free Lease without the watch under test)
    for follower in pool:
        if follower is not leader:
            wait_for(lambda: any(e["event"] == "new_leader" and e["leader"] == leader.name
                                 for e in follower.snapshot()), timeout=20)  # noqa: B023 (called at once)
    sent = time.monotonic()
    assert leader.terminate() == 0
    successor = _sole_leader(pool, other_than=leader, timeout=5)  # the one the wait saw, not a second read
    start = [e["mono"] for e in successor.snapshot() if e["event"] == "started_leading"][-1]
    stop = [e["mono"] for e in leader.snapshot() if e["event"] == "stopped_leading"][-1]
    assert stop < start
    assert start - sent < 1.0  # far less than a lease (5 s): the release was seen through the watch
    assert holder(backend, "term-lease") == successor.name
    assert not overlaps(candidates)


@BOTH_APIS
def test_simultaneous_candidates_resolve_to_one(api: tuple[ApiBackend, dict[str, Path]],
                                                candidates: list[Candidate]) -> None:
    backend, configs = api
    pool = [ours(n, configs[n], "race-lease", "2,1.5,0.4") for n in NODES]
    candidates.extend(pool)
    for candidate in pool:
        candidate.start()
    wait_for(lambda: len(leaders(pool)) == 1)
    time.sleep(2)
    assert len(leaders(pool)) == 1
    assert holder(backend, "race-lease") == leaders(pool)[0]
    assert not overlaps(candidates)


def test_interop_with_the_official_elector(api: tuple[ApiBackend, dict[str, Path]],
                                           candidates: list[Candidate]) -> None:
    """client-go's record format, two implementations on one Lease, random crashes and stops: never two leaders."""
    _backend, configs = api
    makers: dict[str, Callable[[], Candidate]] = {
        "n1": lambda: ours("n1", configs["n1"], "mixed-lease", "3,2,1"),
        "n2": lambda: official("n2", configs["n2"], "mixed-lease", (3, 2, 1)),
        "n3": lambda: ours("n3", configs["n3"], "mixed-lease", "3,2,1"),
        "n4": lambda: official("n4", configs["n4"], "mixed-lease", (3, 2, 1)),
    }
    pool = {name: make().start() for name, make in makers.items()}
    candidates.extend(pool.values())
    wait_for(lambda: len(leaders(list(pool.values()))) == 1, timeout=30)
    rng = random.Random(5)
    end = time.monotonic() + 45
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.5, 2.0))
        leading = leaders(list(pool.values()))
        victim = pool[leading[0]] if leading else rng.choice(list(pool.values()))
        victim.kill()
        # the same identity comes back at once as the holder (client-go's rule), so stay away a whole lease
        time.sleep(rng.uniform(3.2, 4.5))
        replacement = makers[victim.name]()
        replacement.deaths, replacement.events = victim.deaths, victim.snapshot()
        candidates.append(replacement)
        pool[victim.name] = replacement.start()
    # ours follows the Lease by a watch and tries the moment it expires, the official one polls once a retry period,
    # so the random crashes may never let the official one win: crash both of whichever led alone, so the other
    # implementation takes over while the first comes back
    led = {span[0] for candidate in candidates for span in candidate.intervals()}
    for pair in ({"n1", "n3"}, {"n2", "n4"}):
        if not pair & led:
            winners = ({"n1", "n3"} | {"n2", "n4"}) - pair
            for name in sorted(winners):
                pool[name].kill()
            wait_for(lambda: bool(set(leaders(list(pool.values()))) & pair), timeout=15)  # noqa: B023
            for name in sorted(winners):
                replacement = makers[name]()
                replacement.deaths, replacement.events = pool[name].deaths, pool[name].snapshot()
                candidates.append(replacement)
                pool[name] = replacement.start()
            time.sleep(2.0)
    holders = {span[0] for candidate in candidates for span in candidate.intervals()}
    assert not overlaps(candidates)
    assert {"n1", "n3"} & holders and {"n2", "n4"} & holders, holders  # both implementations led
