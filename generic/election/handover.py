"""Handing the lock over from a holder that should not lead to a candidate that should, and never into the void.

A node's fitness comes from a health check of its own (for the control plane: its local API server's `/readyz`).
The elector asks for it; the rule below is the whole policy, kept pure so that it can be tested case by case.

**The holder.** While it is unfit it *offers* the lock (`LeaderRecord.offered`, written with its renewals) and
keeps leading: it never releases into the void. It steps down only once a fit candidate has *claimed* the offer
(`LeaderRecord.successor`, written by that candidate, compare-and-swap, holder unchanged); then it releases at once
(after its `on_stopped_leading`, so the successor never overlaps it) and the successor, watching, acquires (or
another fit candidate, if faster: the claim proves that a fit node exists, any fit node will do).

**A candidate.**

- fit (its check passed M times in a row): claims an offered lock nobody has claimed yet; takes a free or
  expired lock at once, as without a check.
- unknown (no check, or not enough results yet): never claims; takes a free or expired lock at once (a check
  that has said nothing bad is no reason to hold back an election).
- unfit (failed N times in a row): never claims; takes a free lock only once it has stayed free for a lease
  duration, and an expired one only a lease duration after it expired. A fit candidate watching takes a free lock
  within milliseconds, so a lock left alone that long means nobody fit exists: then an unfit node leads, as a last
  resort, rather than nobody.

**Why it cannot flap when every node is unfit** (a whole-cluster API outage where the Leases still work): the holder
offers, nobody fit exists to claim, so the holder keeps the lock and the VIP; no release, no election, no move. The
lock and the VIP change hands only when a node proves itself fit, and at most once per fit claimer.

**Why the VIP is never left unowned for a sick leader:** the holder keeps leading until a successor has named
itself; if that successor dies between its claim and its acquisition, the released lock is taken by another fit
candidate at once or, failing that, by an unfit one a lease duration later (the same gap as a crashed leader).
"""

from __future__ import annotations

from enum import Enum

from generic.election.lock import LeaderRecord


class Fitness(Enum):
    FIT = "fit"
    UNFIT = "unfit"
    UNKNOWN = "unknown"


class Move(Enum):
    ACQUIRE = "acquire"
    CLAIM = "claim"
    WAIT = "wait"


def may_claim(record: LeaderRecord | None, identity: str, fitness: Fitness) -> bool:
    """A fit candidate claims a lock that another holder offers and nobody has claimed."""
    return (fitness is Fitness.FIT and record is not None and bool(record.holder) and record.holder != identity
            and record.offered and not record.successor)


def candidate_move(record: LeaderRecord | None, identity: str, fitness: Fitness, unchanged_for: float,
                   lease_duration: float) -> tuple[Move, float]:
    """What a candidate does with the lock as it reads it now, and how long until that could change.

    `record` is None when the lock does not exist; `unchanged_for` is how long this candidate has seen the same
    record (or the absence) unchanged, by its own clock; `lease_duration` the longer of the record's and ours.
    """
    held = record is not None and bool(record.holder) and record.holder != identity
    if held and unchanged_for < lease_duration:  # a live holder
        if may_claim(record, identity, fitness):
            return Move.CLAIM, 0.0
        return Move.WAIT, lease_duration - unchanged_for
    # free, absent, ours from an earlier run, or expired: unfit nodes leave it to fit ones for a lease duration
    patience = 2 * lease_duration if held else lease_duration
    if fitness is Fitness.UNFIT and unchanged_for < patience:
        return Move.WAIT, patience - unchanged_for
    return Move.ACQUIRE, 0.0
