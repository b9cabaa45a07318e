"""The hand-over from an unfit leader (its own API server sick) to a fit candidate: the rule case by case, then real
electors on the in-memory lock (short real timers), then the Lease annotations that carry it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from generic.election import Callbacks, Elector, LeaderRecord, Timers
from generic.election.handover import Fitness, Move, candidate_move
from generic.election.lease_lock import OFFERED, SUCCESSOR, _metadata, record_from_lease
from kubevip_testbed.waiting import wait_for
from tests.memory_lock import MemoryStore

FAST = Timers(lease_duration=1.0, renew_deadline=0.6, retry_period=0.1)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def held(holder: str = "a", offered: bool = False, successor: str = "") -> LeaderRecord:
    return LeaderRecord(holder, 5, NOW, NOW, 3, offered=offered, successor=successor)


FREE = LeaderRecord("", 1, NOW, NOW, 3)


@pytest.mark.parametrize(("record", "fitness", "unchanged", "move", "wait"), [
    # a live holder: only a fit candidate claims, and only an offer nobody has claimed
    (held(), Fitness.FIT, 1.0, Move.WAIT, 4.0),
    (held(offered=True), Fitness.FIT, 1.0, Move.CLAIM, 0.0),
    (held(offered=True), Fitness.UNKNOWN, 1.0, Move.WAIT, 4.0),
    (held(offered=True), Fitness.UNFIT, 1.0, Move.WAIT, 4.0),
    (held(offered=True, successor="c"), Fitness.FIT, 1.0, Move.WAIT, 4.0),
    (held("b", offered=True), Fitness.FIT, 1.0, Move.CLAIM, 0.0),
    # free or absent: at once unless unfit, then after a lease duration (nobody fit took it)
    (FREE, Fitness.FIT, 0.0, Move.ACQUIRE, 0.0),
    (FREE, Fitness.UNKNOWN, 0.0, Move.ACQUIRE, 0.0),
    (FREE, Fitness.UNFIT, 2.0, Move.WAIT, 3.0),
    (FREE, Fitness.UNFIT, 5.0, Move.ACQUIRE, 0.0),
    (None, Fitness.UNFIT, 1.0, Move.WAIT, 4.0),
    (None, Fitness.UNKNOWN, 0.0, Move.ACQUIRE, 0.0),
    # expired: at once unless unfit, then a lease duration after it expired
    (held(), Fitness.UNKNOWN, 5.0, Move.ACQUIRE, 0.0),
    (held(), Fitness.UNFIT, 6.0, Move.WAIT, 4.0),
    (held(), Fitness.UNFIT, 10.0, Move.ACQUIRE, 0.0),
    # our own record from an earlier run counts as free
    (held("me"), Fitness.UNFIT, 1.0, Move.WAIT, 4.0),
    (held("me"), Fitness.FIT, 0.0, Move.ACQUIRE, 0.0),
])
def test_candidate_move(record: LeaderRecord | None, fitness: Fitness, unchanged: float, move: Move,
                        wait: float) -> None:
    got_move, got_wait = candidate_move(record, "me" if record is None or record.holder != "b" else "a", fitness,
                                        unchanged, 5.0)
    assert got_move is move and got_wait == pytest.approx(wait)


class Node:
    """One candidate with a settable fitness and its leadership intervals."""

    def __init__(self, store: MemoryStore, name: str, events: list[tuple[float, str, str]],
                 fitness: Fitness = Fitness.UNKNOWN) -> None:
        self.name, self.fitness, self._events = name, fitness, events

        def mark(kind: str) -> Callable[[], None]:
            return lambda: events.append((time.monotonic(), name, kind))

        callbacks = Callbacks(mark("start"), mark("stop"), fitness=lambda: self.fitness)
        self.elector = Elector(store.client(name), name, FAST, callbacks)
        self.elector.offer(fitness is Fitness.UNFIT)  # as ControlPlane.campaign does

    def set(self, fitness: Fitness) -> None:
        """What ControlPlane does on a change of its check."""
        self.fitness = fitness
        self.elector.offer(fitness is Fitness.UNFIT)


def overlaps(events: list[tuple[float, str, str]]) -> list[tuple[str, str]]:
    open_: dict[str, float] = {}
    spans = []
    for at, name, kind in sorted(events):
        if kind == "start":
            open_[name] = at
        elif name in open_:
            spans.append((name, open_.pop(name), at))
    spans += [(name, at, float("inf")) for name, at in open_.items()]
    return [(a[0], b[0]) for i, a in enumerate(spans) for b in spans[i + 1:]
            if a[0] != b[0] and a[1] < b[2] and b[1] < a[2]]


@pytest.fixture
def cluster() -> Iterator[tuple[MemoryStore, list[tuple[float, str, str]], Callable[..., Node]]]:
    store = MemoryStore()
    events: list[tuple[float, str, str]] = []
    nodes: list[Node] = []
    lock = threading.Lock()

    def node(name: str, fitness: Fitness = Fitness.UNKNOWN) -> Node:
        with lock:
            made = Node(store, name, events, fitness)
            nodes.append(made)
        made.elector.start()
        return made

    yield store, events, node
    for made in nodes:
        made.elector.stop(timeout=2)


def leader(*nodes: Node) -> list[str]:
    return [n.name for n in nodes if n.elector.is_leader]


def test_unfit_leader_hands_over_to_the_fit_candidate_without_overlap(cluster: tuple[MemoryStore, list[
        tuple[float, str, str]], Callable[..., Node]]) -> None:
    store, events, node = cluster
    a = node("a", Fitness.FIT)
    wait_for(lambda: a.elector.is_leader)
    b, c = node("b", Fitness.FIT), node("c", Fitness.UNFIT)
    time.sleep(0.3)
    a.set(Fitness.UNFIT)
    wait_for(lambda: b.elector.is_leader, timeout=3)
    assert leader(a, b, c) == ["b"]
    # on_started_leading runs on the callback thread after is_leader turns true: without b's start the overlap
    # check below would look at a's interval alone
    wait_for(lambda: any(name == "b" and kind == "start" for _, name, kind in list(events)), timeout=3)
    assert not overlaps(events)
    claims = [r for _, r in store.writes if r.holder == "a" and r.successor == "b"]
    releases = [r for _, r in store.writes if r.holder == ""]
    assert len(claims) == 1 and len(releases) == 1 and not releases[0].successor and not releases[0].offered
    # a stays out while b is fine, and c (unfit) never took the released lock
    time.sleep(3 * FAST.lease_duration)
    assert leader(a, b, c) == ["b"]
    assert not [r for _, r in store.writes if r.holder == "c"]
    assert store.record is not None and not store.record.offered and not store.record.successor


def test_when_every_node_is_unfit_nobody_yields(cluster: tuple[MemoryStore, list[tuple[float, str, str]],
                                                                Callable[..., Node]]) -> None:
    store, events, node = cluster
    a = node("a")
    wait_for(lambda: a.elector.is_leader)
    b, c = node("b", Fitness.UNFIT), node("c", Fitness.UNFIT)
    a.set(Fitness.UNFIT)
    wait_for(lambda: store.record is not None and store.record.offered)
    time.sleep(5 * FAST.lease_duration)
    assert leader(a, b, c) == ["a"]
    assert [kind for _, name, kind in events if name == "a"] == ["start"]
    assert not [r for _, r in store.writes if r.holder != "a" or r.successor]
    # then one node heals: it claims the offer and leads; the first, still unfit, does not take it back
    b.set(Fitness.FIT)
    wait_for(lambda: b.elector.is_leader, timeout=3)
    time.sleep(2 * FAST.lease_duration)
    assert leader(a, b, c) == ["b"] and not overlaps(events)


def test_a_leader_that_recovers_withdraws_its_offer_and_any_claim(cluster: tuple[MemoryStore, list[
        tuple[float, str, str]], Callable[..., Node]]) -> None:
    store, _events, node = cluster
    a = node("a")
    wait_for(lambda: a.elector.is_leader)
    a.set(Fitness.UNFIT)
    wait_for(lambda: store.record is not None and store.record.offered)
    a.set(Fitness.FIT)
    wait_for(lambda: store.record is not None and not store.record.offered)
    b = node("b", Fitness.FIT)
    time.sleep(3 * FAST.lease_duration)
    assert leader(a, b) == ["a"]
    assert not [r for _, r in store.writes if r.successor]


def test_unfit_candidates_take_a_free_lock_only_after_a_lease_duration(cluster: tuple[MemoryStore, list[
        tuple[float, str, str]], Callable[..., Node]]) -> None:
    store, _events, node = cluster
    a = node("a", Fitness.UNFIT)
    started = time.monotonic()
    took = wait_for(lambda: a.elector.is_leader, timeout=5)  # the lock does not exist: a last resort, later
    assert took >= FAST.lease_duration - 0.05, took
    assert time.monotonic() - started >= FAST.lease_duration - 0.05
    assert store.record is not None and store.record.offered  # an unfit leader offers from its first write


def test_a_fit_node_does_not_wait(cluster: tuple[MemoryStore, list[tuple[float, str, str]],
                                                  Callable[..., Node]]) -> None:
    _store, _events, node = cluster
    a = node("a", Fitness.FIT)
    # below the unfit node's wait (a lease duration, the test above) with the same slack: half of it was tight
    # for a thread start and a first write on a busy machine
    assert wait_for(lambda: a.elector.is_leader, timeout=5) < FAST.lease_duration - 0.05


def test_annotations_carry_the_offer_and_the_claim_and_nothing_else() -> None:
    record = LeaderRecord("a", 5, NOW, NOW, 1, offered=True, successor="b")
    metadata = _metadata(record, {"name": "x", "annotations": {"other": "kept"}})
    assert metadata["annotations"] == {"other": "kept", OFFERED: "true", SUCCESSOR: "b"}
    parsed = record_from_lease({"metadata": metadata, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 5,
                                                               "leaseTransitions": 1}})
    assert parsed.offered and parsed.successor == "b"
    plain = _metadata(LeaderRecord("a", 5, NOW, NOW, 1), metadata)
    assert plain["annotations"] == {"other": "kept"}
    assert "annotations" not in _metadata(LeaderRecord("a", 5, NOW, NOW, 1), {"name": "x"})


def test_a_claimer_that_vanishes_leaves_the_lock_to_an_unfit_node_a_lease_duration_later(cluster: tuple[
        MemoryStore, list[tuple[float, str, str]], Callable[..., Node]]) -> None:
    """The one gap the rule allows: a fit node claims, then dies before it acquires. The released lock is not left
    free for good: an unfit node takes it a lease duration later, as after a crashed leader."""
    import dataclasses

    store, events, node = cluster
    a = node("a")
    wait_for(lambda: a.elector.is_leader)
    c = node("c", Fitness.UNFIT)
    a.set(Fitness.UNFIT)
    wait_for(lambda: store.record is not None and store.record.offered)
    ghost = store.client("ghost")
    found = ghost.get(1.0)
    assert found is not None
    ghost.update(dataclasses.replace(found[0], successor="ghost"), found[1], 1.0)  # claims, then is never seen again
    wait_for(lambda: store.record is not None and store.record.holder == "", timeout=3)
    released = time.monotonic()
    wait_for(lambda: a.elector.is_leader or c.elector.is_leader, timeout=5)
    assert time.monotonic() - released >= FAST.lease_duration - 0.1
    assert len(leader(a, c)) == 1 and not overlaps(events)
