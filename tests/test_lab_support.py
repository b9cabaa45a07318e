"""The sampler's overlap check on hand-made read sequences: nodes are read one after another, so only the reads'
own windows say whether two nodes really held the VIP at once (tests/lab_support.py)."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from kubevip_testbed.lab.cluster import LabCluster
from tests.lab_support import Double, Read, Sampler, doubles, holds, within_stop

Truth = dict[str, list[tuple[float, float]]]  # node -> intervals [from, to) during which it really held


def simulate(truth: Truth, until: float, period: float = 0.010, read: float = 0.0003,
             order: Sequence[str] = ("A", "B"), instants: Sequence[float] = (0.5,),
             lengths: Sequence[float] = ()) -> list[Read]:
    """Sweeps as the Sampler makes them: every `period`, each node in `order` read right after the previous one;
    the kernel answers at `instants[k]` (a fraction) of read k's window; read k lasts `lengths[k]` if given."""
    reads, k, sweep = [], 0, 0.0
    while sweep < until:
        t = sweep
        for node in order:
            length = lengths[k % len(lengths)] if lengths else read
            at = t + length * instants[k % len(instants)]
            reads.append(Read(node, t, t + length, any(a <= at < b for a, b in truth.get(node, []))))
            t, k = t + length, k + 1
        sweep += period
    return reads


def naive(reads: list[Read], nodes: int = 2) -> list[list[str]]:
    """What the old check counted: sweeps that saw more than one holder."""
    sweeps = [reads[i:i + nodes] for i in range(0, len(reads), nodes)]
    return [[r.node for r in sweep if r.holding] for sweep in sweeps if sum(r.holding for r in sweep) > 1]


def test_a_clean_hand_over_read_in_an_unlucky_order_is_only_possible() -> None:
    # A lets go at 30.2 ms, B adds at 30.4 ms (0.2 ms apart); sweep 3 reads A at 30.15 ms and B at 30.45 ms
    reads = simulate({"A": [(0, 0.0302)], "B": [(0.0304, 1)]}, until=0.1)
    assert naive(reads) == [["A", "B"]]  # the old check's false double
    found = doubles(reads)
    assert [d.certain for d in found] == [False]
    (double,) = found
    assert (double.early.node, double.late.node, double.at_least) == ("A", "B", 0.0)
    assert 0.0002 < double.at_most < 0.021  # A let go in (30.0, 40.3) ms, B added in (20.3, 30.6) ms


def test_a_real_overlap_of_20_ms_is_certain_with_its_duration_bounded() -> None:
    reads = simulate({"A": [(0, 0.050)], "B": [(0.030, 1)]}, until=0.1, period=0.005)
    (double,) = doubles(reads)
    assert double.certain and (double.early.node, double.late.node) == ("A", "B")
    assert 0.010 < double.at_least <= 0.020 <= double.at_most < 0.030
    assert "certain double A->B" in str(double)


def test_a_real_overlap_between_two_reads_is_never_missed() -> None:
    # B adds at 30.6 ms, A lets go at 35 ms: no sweep sees both (A is read before B), the old check saw nothing
    reads = simulate({"A": [(0, 0.035)], "B": [(0.0306, 1)]}, until=0.1)
    assert naive(reads) == []
    (double,) = doubles(reads)
    assert not double.certain and double.at_most >= 0.0044  # reported as possible, covering the real 4.4 ms


def test_a_single_holding_read_made_while_the_other_surely_held_is_certain() -> None:
    reads = simulate({"A": [(0, 1)], "B": [(0.0202, 0.0206)]}, until=0.1)
    (b_hold,) = holds(r for r in reads if r.node == "B")
    assert b_hold.sure is None and b_hold.first == b_hold.last  # one read: held at an unknown instant within it
    (double,) = doubles(reads)
    assert double.certain and double.at_least == 0.0 and (double.early.node, double.late.node) == ("A", "B")


def test_a_single_holding_read_next_to_the_other_holders_last_read_is_only_possible() -> None:
    reads = simulate({"A": [(0, 0.0202)], "B": [(0.0504, 0.0507)]}, until=0.1)  # A gone two sweeps before B
    assert [len(holds(r for r in reads if r.node == node)) for node in "AB"] == [1, 1]
    assert doubles(reads) == []
    reads = simulate({"A": [(0, 0.0302)], "B": [(0.0304, 0.0307)]}, until=0.1)  # B read just after A's last read
    assert [d.certain for d in doubles(reads)] == [False]


def test_one_holder_alone_or_a_node_holding_twice_is_no_double() -> None:
    assert doubles(simulate({"A": [(0.0301, 0.0302)]}, until=0.1)) == []  # a single read, nobody else
    reads = simulate({"A": [(0, 0.02), (0.04, 0.06)]}, until=0.1)
    assert len(holds(reads)) == 2 and doubles(reads) == []


def test_a_dead_node_counts_from_its_first_zero_width_read() -> None:
    reads = [Read("A", 0.000, 0.001, True), Read("B", 0.001, 0.002, False),
             Read("A", 0.010, 0.010, False), Read("B", 0.011, 0.012, True),  # A marked dead: not read at all
             Read("A", 0.020, 0.020, False), Read("B", 0.021, 0.022, True)]
    (a_hold, _b_hold) = holds(reads)
    assert a_hold.maybe == (0.000, 0.010)
    assert [d.certain for d in doubles(reads)] == [False]


def test_a_double_is_within_a_stop_only_if_the_early_node_was_being_stopped_all_along() -> None:
    # A holds until 50 ms, B from 30 ms: a certain double of about 20 ms with A late to let go
    (double,) = doubles(simulate({"A": [(0, 0.050)], "B": [(0.030, 1)]}, until=0.1, period=0.005))
    assert within_stop(double, [("A", 0.028, 0.060)])  # A was told to stop at 28 ms and had exited by 60 ms
    assert not within_stop(double, [("B", 0.028, 0.060)])  # the one stopped must be the one late to let go
    assert not within_stop(double, [("A", 0.040, 0.060)])  # B surely held before A was told to stop
    assert not within_stop(double, [("A", 0.010, 0.040)])  # A surely held after its stop was over
    assert not within_stop(double, [])


def test_report_lists_certain_and_possible_doubles() -> None:
    sampler = Sampler(cast(LabCluster, SimpleNamespace(vip="198.51.100.10")))
    sampler.reads = simulate({"A": [(0, 0.050)], "B": [(0.030, 1)], "C": [(0.0502, 1)]}, until=0.1, period=0.005,
                             order=("A", "B", "C"))
    report = sampler.report()
    assert "certain doubles: 2" in report and "certain double A->B" in report and "certain double B->C" in report
    assert [str(d) for d in sampler.double_holders()] == [line.strip() for line in report.splitlines()
                                                          if line.strip().startswith("certain double ")]
    assert sampler.possible_doubles() and "possible doubles: 1" in report  # A->C: C added 0.2 ms after A let go


_nodes = ("A", "B", "C")


@st.composite
def _truths(draw: st.DrawFn) -> Truth:
    """Up to three holds per node, every hold and every gap at least 30 ms (no flap between two reads)."""
    truth: Truth = {}
    for node in _nodes:
        edges = sorted(draw(st.lists(st.floats(0.0, 0.5), max_size=6, unique=True)))
        edges = [e for i, e in enumerate(edges) if i == 0 or e - edges[i - 1] >= 0.03]
        truth[node] = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=False)]
    return truth


def _overlaps(truth: Truth, span: dict[str, tuple[float, float]]) -> list[tuple[str, str, float, float]]:
    found = []
    for i, x in enumerate(_nodes):
        for y in _nodes[i + 1:]:
            for a0, a1 in truth[x]:
                for b0, b1 in truth[y]:
                    lo = max(a0, b0, span[x][0], span[y][0])
                    hi = min(a1, b1, span[x][1], span[y][1])
                    if hi > lo:
                        found.append((x, y, lo, hi))
    return found


def _pair(double: Double) -> set[str]:
    return {double.early.node, double.late.node}


@settings(max_examples=300, deadline=None)
@given(_truths(), st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20),
       st.lists(st.floats(0.00005, 0.003), min_size=1, max_size=20))
def test_certain_doubles_are_real_and_every_real_overlap_is_reported(
        truth: Truth, instants: list[float], lengths: list[float]) -> None:
    """Whatever instant of its window each read saw and however long reads took: a certain double is a real
    one, every real overlap lies within a reported double of that pair, and one longer than three sweeps is
    certain."""
    reads = simulate(truth, until=0.6, period=0.005, order=_nodes, instants=instants, lengths=lengths)
    span = {n: (min(r.start for r in reads if r.node == n), max(r.end for r in reads if r.node == n)) for n in _nodes}
    real = _overlaps(truth, span)
    found = doubles(reads)
    for double in found:
        if double.certain:
            assert any({x, y} == _pair(double) for x, y, _lo, _hi in real), double
    sweep = 0.005 + 3 * 0.003
    for x, y, lo, hi in real:
        covering = [d for d in found if _pair(d) == {x, y} and d.since <= lo
                    and hi <= min(d.early.maybe[1], d.late.maybe[1])]
        assert covering, (x, y, lo, hi)
        if hi - lo > 3 * sweep:
            assert any(d.certain and d.at_least >= hi - lo - 2 * sweep for d in covering), (x, y, lo, hi)
