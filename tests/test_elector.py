"""The elector's guarantees, on an in-memory lock with per-candidate faults and short real timers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from generic.election import Callbacks, Elector, Timers
from kubevip_testbed.waiting import wait_for
from tests.memory_lock import MemoryStore

FAST = Timers(lease_duration=1.0, renew_deadline=0.6, retry_period=0.1)


class Recorder:
    """Leadership intervals per candidate, from the callbacks' own monotonic timestamps."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[float, str, str]] = []

    def callbacks(self, name: str) -> Callbacks:
        def mark(kind: str) -> Callable[[], None]:
            def record() -> None:
                with self.lock:
                    self.events.append((time.monotonic(), name, kind))
            return record

        return Callbacks(mark("start"), mark("stop"), lambda leader: None)

    def intervals(self) -> list[tuple[str, float, float]]:
        open_: dict[str, float] = {}
        out = []
        with self.lock:
            events = sorted(self.events)
        for at, name, kind in events:
            if kind == "start":
                open_[name] = at
            elif name in open_:
                out.append((name, open_.pop(name), at))
        out.extend((name, start, float("inf")) for name, start in open_.items())
        return out

    def overlaps(self) -> list[tuple[tuple[str, float, float], tuple[str, float, float]]]:
        spans = self.intervals()
        return [(a, b) for i, a in enumerate(spans) for b in spans[i + 1:]
                if a[0] != b[0] and a[1] < b[2] and b[1] < a[2]]




@pytest.fixture
def cluster() -> Iterator[tuple[MemoryStore, Recorder, list[Elector]]]:
    store, recorder = MemoryStore(), Recorder()
    electors: list[Elector] = []
    yield store, recorder, electors
    for elector in electors:
        elector.stop(timeout=2)


def spawn(cluster: tuple[MemoryStore, Recorder, list[Elector]], name: str, timers: Timers = FAST) -> Elector:
    store, recorder, electors = cluster
    elector = Elector(store.client(name), name, timers, recorder.callbacks(name))
    electors.append(elector)
    elector.start()
    return elector


def leaders(electors: list[Elector]) -> list[str]:
    return [e.identity for e in electors if e.is_leader]


def test_timers_invariant_is_enforced() -> None:
    with pytest.raises(ValueError):
        Timers(5, 5, 1)
    with pytest.raises(ValueError):
        Timers(5, 3, 2.5)
    assert Timers(1, 0.75, 0.2).lease_seconds == 1
    assert Timers(2.5, 2, 1).lease_seconds == 3


def test_first_candidate_creates_and_leads(cluster: tuple[MemoryStore, Recorder, list[Elector]]) -> None:
    store, recorder, _ = cluster
    a = spawn(cluster, "a")
    wait_for(lambda: a.is_leader)
    assert store.record is not None and store.record.holder == "a" and store.record.transitions == 0
    assert store.record.lease_duration_s == 1 and store.record.renew_time is not None
    wait_for(lambda: len(store.writes) >= 4)  # renews every retry period
    assert [kind for _, _, kind in recorder.events] == ["start"]


def test_simultaneous_candidates_one_winner(cluster: tuple[MemoryStore, Recorder, list[Elector]]) -> None:
    electors = [spawn(cluster, f"n{i}") for i in range(6)]
    wait_for(lambda: len(leaders(electors)) == 1)
    time.sleep(0.5)
    assert len(leaders(electors)) == 1
    _, recorder, _ = cluster
    assert not recorder.overlaps()
    assert all(e.leader == leaders(electors)[0] for e in electors)


def test_release_hands_over_at_once(cluster: tuple[MemoryStore, Recorder, list[Elector]]) -> None:
    store, recorder, _ = cluster
    slow = Timers(lease_duration=5.0, renew_deadline=3.0, retry_period=1.0)
    a = spawn(cluster, "a", slow)
    wait_for(lambda: a.is_leader)
    b = spawn(cluster, "b", slow)
    # b is running and has seen a lead (a fixed 0.3 s could end before b's first look on a busy machine, and then
    # b found the lock free at its first look after the release instead of being woken by the watch)
    wait_for(lambda: b.leader == "a", timeout=5)
    a.stop()
    took = wait_for(lambda: b.is_leader, timeout=5)
    assert took < 0.5  # the watch wakes the follower; no retry period, no lease expiry
    assert store.record is not None and store.record.holder == "b" and store.record.transitions == 1
    released = [record for _, record in store.writes if record.holder == ""]
    assert len(released) == 1
    assert not recorder.overlaps()


def test_a_leader_that_could_not_let_go_keeps_the_lock_until_it_expires() -> None:
    store = MemoryStore()
    slow = Timers(lease_duration=5.0, renew_deadline=3.0, retry_period=1.0)
    stopped = threading.Event()
    callbacks = Callbacks(on_stopped_leading=stopped.set, may_release=lambda: False)
    a = Elector(store.client("a"), "a", slow, callbacks)
    a.start()
    wait_for(lambda: a.is_leader)
    a.stop()
    assert stopped.is_set()  # it stepped down ...
    assert store.record is not None and store.record.holder == "a"  # ... but did not hand over what it still held
    assert not [record for _, record in store.writes if record.holder == ""]


def test_cut_off_leader_steps_down_before_anyone_takes_over(
        cluster: tuple[MemoryStore, Recorder, list[Elector]]) -> None:
    _store, recorder, _ = cluster
    a = spawn(cluster, "a")
    wait_for(lambda: a.is_leader)
    b = spawn(cluster, "b")
    time.sleep(0.3)
    assert isinstance(a.lock, object)
    a.lock.fault = "refuse"  # type: ignore[attr-defined]
    cut = time.monotonic()
    wait_for(lambda: b.is_leader, timeout=5)
    # is_leader turns true just before b's start callback runs: wait for the callback's record too
    wait_for(lambda: any(s[0] == "b" for s in recorder.intervals()), timeout=5)
    (a_span,) = [s for s in recorder.intervals() if s[0] == "a"]
    (b_span,) = [s for s in recorder.intervals() if s[0] == "b"]
    assert a_span[2] <= cut + FAST.renew_deadline + 0.1  # stepped down by its deadline
    assert b_span[1] >= a_span[2] + (FAST.lease_duration - FAST.renew_deadline) - 0.15  # margin kept
    assert not recorder.overlaps()
    # heal: a stays a follower, because b holds a live lease
    a.lock.fault = None  # type: ignore[attr-defined]
    time.sleep(1.5)
    assert leaders([a, b]) == ["b"] and not recorder.overlaps()


def test_hanging_requests_do_not_delay_the_step_down(cluster: tuple[MemoryStore, Recorder, list[Elector]]) -> None:
    _, recorder, _ = cluster
    a = spawn(cluster, "a")
    wait_for(lambda: a.is_leader)
    a.lock.fault = "hang"  # type: ignore[attr-defined]
    cut = time.monotonic()
    wait_for(lambda: not a.is_leader, timeout=5)
    assert time.monotonic() - cut <= FAST.renew_deadline + 0.1
    wait_for(lambda: any(kind == "stop" for _, _, kind in recorder.events))


def test_rejoins_only_through_a_fresh_election(cluster: tuple[MemoryStore, Recorder, list[Elector]]) -> None:
    store, recorder, _ = cluster
    a = spawn(cluster, "a")
    wait_for(lambda: a.is_leader)
    a.lock.fault = "refuse"  # type: ignore[attr-defined]
    wait_for(lambda: not a.is_leader, timeout=5)
    a.lock.fault = None  # type: ignore[attr-defined]
    wait_for(lambda: a.is_leader, timeout=5)  # nobody else: it takes the lock again, as a new term
    # on_started_leading runs on the callback thread after is_leader turns true: wait for its record too
    wait_for(lambda: [kind for _, name, kind in list(recorder.events) if name == "a"] == ["start", "stop", "start"],
             timeout=5)
    assert store.record is not None and store.record.holder == "a"


def test_lost_answer_does_not_extend_the_term(cluster: tuple[MemoryStore, Recorder, list[Elector]]) -> None:
    a = spawn(cluster, "a")
    wait_for(lambda: a.is_leader)
    a.lock.commit_then_fail = True  # type: ignore[attr-defined]
    start = time.monotonic()
    wait_for(lambda: not a.is_leader, timeout=5)
    assert time.monotonic() - start <= FAST.renew_deadline + 0.1


def test_random_faults_never_two_leaders(cluster: tuple[MemoryStore, Recorder, list[Elector]]) -> None:
    import random

    _store, recorder, _ = cluster
    electors = [spawn(cluster, f"n{i}") for i in range(3)]
    rng = random.Random(7)
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        victim = rng.choice(electors)
        victim.lock.fault = rng.choice([None, None, "refuse", "hang"])  # type: ignore[attr-defined]
        time.sleep(rng.uniform(0.05, 0.8))
        assert len(leaders(electors)) <= 1
    assert not recorder.overlaps()
    assert len(recorder.intervals()) >= 2
