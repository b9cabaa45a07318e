"""The elector: acquire, renew until the deadline, step down, campaign again. client-go's algorithm.

## Why two nodes never both lead (the split-brain argument)

Invariant relied on: `lease_duration > renew_deadline > 1.2 * retry_period` (checked in `Timers`), every write
to the lock is compare-and-swap on its version, and all clocks involved run at about the same *rate*
(monotonic clocks; wall-clock timestamps in the Lease are never trusted for decisions).

1. The leader notes `renewed_at`, the monotonic time at which it *sent* its last successful acquire/renew
   request. The server committed that write at some later instant `t_w >= renewed_at`.
2. A watchdog thread ends the leader's term at `renewed_at + renew_deadline`, whatever the renew thread is
   doing (a request may hang; the watchdog does not wait for it). `on_stopped_leading` runs right then,
   before the lock is released or could expire.
3. Another candidate may take a held lock only after it has seen the *same* record, unchanged, for a full
   lease duration on its own monotonic clock, counted from when it first saw that record. It cannot have
   seen the record before it was written, so it takes over at the earliest at
   `t_w + lease_duration >= renewed_at + lease_duration > renewed_at + renew_deadline`.
4. So the old leader has stepped down `lease_duration - renew_deadline` (2 s at 5/3/1) before anyone else
   may acquire. Simultaneous candidates race on compare-and-swap: one write wins, the others get a conflict.

A released lock (holder "") is taken at once: the releaser ran `on_stopped_leading` *before* writing the
release (client-go releases first, which leaves a short overlap; we do not). A hand-over (`handover.py`: an unfit
leader offers, a fit candidate claims) ends the same way: the leader steps down, then releases, then the claimer
acquires; the claim itself never changes the holder, so the argument above is untouched. Followers watch the lock, so
they see the release without waiting a retry period. Losing leadership never ends the process: the elector
goes back to being a candidate and can only lead again through a fresh acquisition.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from generic.election.handover import Fitness, Move, candidate_move, may_claim
from generic.election.lock import LeaderRecord, Lock, LockConflict, LockUnavailable
from generic.logfmt import get_logger

log = get_logger("generic.election")

JITTER_FACTOR = 1.2  # client-go's: renew_deadline must exceed retry_period by this factor


class TimerError(ValueError):
    """The timers break the invariant; `field` is the one that must shrink, `limit` what it must stay below."""

    def __init__(self, field: str, limit: float, message: str) -> None:
        super().__init__(message)
        self.field, self.limit = field, limit


@dataclass(frozen=True)
class Timers:
    """The election's three timers, checked here and only here (the configuration, the lab and the CLI of
    `python -m generic.election` all build one, and turn a `TimerError` into their own wording)."""

    lease_duration: float
    renew_deadline: float
    retry_period: float

    def __post_init__(self) -> None:
        if not min(self.lease_duration, self.renew_deadline, self.retry_period) > 0:
            raise TimerError("retry_period", 0, "timers must be positive")
        if not self.lease_duration > self.renew_deadline:
            raise TimerError("renew_deadline", self.lease_duration,
                             f"renew_deadline must be less than lease_duration ({self.lease_duration:g} s)")
        if not self.renew_deadline > JITTER_FACTOR * self.retry_period:
            limit = self.renew_deadline / JITTER_FACTOR
            raise TimerError("retry_period", limit,
                             f"retry_period must be less than renew_deadline / {JITTER_FACTOR} ({limit:.3g} s)")

    @property
    def lease_seconds(self) -> int:
        """The whole seconds written into the Lease: rounded up, so others never wait less than we promise."""
        return max(1, math.ceil(self.lease_duration))


def _noop() -> None:
    return None


def _noop_leader(_identity: str) -> None:
    return None


def _always() -> bool:
    return True


def _unknown() -> Fitness:
    return Fitness.UNKNOWN


@dataclass
class Callbacks:
    """Run in order on one callback thread; keep them quick (they delay each other, never the renewals)."""

    on_started_leading: Callable[[], None] = _noop
    on_stopped_leading: Callable[[], None] = _noop
    on_new_leader: Callable[[str], None] = _noop_leader
    # asked once on_stopped_leading has run at shutdown: False keeps the lock held (it then expires as after a
    # crash), for a leader that could not give up what it held (a VIP the kernel refused to remove)
    may_release: Callable[[], bool] = _always
    # asked before every attempt as a candidate (`handover.py`): unknown behaves exactly as client-go
    fitness: Callable[[], Fitness] = _unknown


def _utcnow() -> datetime:
    return datetime.now(UTC)


RENEW_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Latency:
    """Durations of one kind of request, in fixed buckets (plain numbers, for a metrics exporter to read)."""

    def __init__(self, buckets: tuple[float, ...] = RENEW_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)  # per bucket, not cumulative; a duration above the last is only counted
        self.count = 0
        self.total = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        with self._lock:
            self.count += 1
            self.total += seconds
            for i, bound in enumerate(self.buckets):
                if seconds <= bound:
                    self.counts[i] += 1
                    break

    def snapshot(self) -> tuple[list[int], int, float]:
        """(per-bucket counts, count, sum), consistent with each other."""
        with self._lock:
            return list(self.counts), self.count, self.total


@dataclass
class _State:
    leading: bool = False
    term: int = 0
    renewed_at: float = 0.0
    version: str | None = None
    record: LeaderRecord | None = None
    observed_at: float = 0.0
    reported_leader: str = ""
    step_down_reason: str | None = None


class Elector:
    """Campaigns for `lock` as `identity` until `stop()`; calls back on every change of leadership."""

    def __init__(self, lock: Lock, identity: str, timers: Timers, callbacks: Callbacks | None = None, *,
                 clock: Callable[[], float] = time.monotonic, now: Callable[[], datetime] = _utcnow) -> None:
        if not identity:
            raise ValueError("an elector needs a non-empty identity")
        self.lock, self.identity, self.timers = lock, identity, timers
        self.callbacks = callbacks or Callbacks()
        self._clock, self._now = clock, now
        self._state = _State()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._callback_queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._watch_current = False  # the lock's change feed is connected: no need to poll it
        self._offering = False  # this node is unfit: its records offer the lock to a fit successor
        self._absent_since: float | None = None  # when we first found the lock missing (unfit nodes wait)
        self._threads: list[threading.Thread] = []
        self.renew_latency = Latency()  # every renew request of a term, successful or not

    # -- public -------------------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        with self._cond:
            return self._state.leading

    @property
    def transitions(self) -> int | None:
        """While leading: the lock's `leaseTransitions` as of this term's acquisition, a term number that only
        grows (every change of holder adds one), so a newer leader always has a larger one; else None."""
        with self._cond:
            state = self._state
            return state.record.transitions if state.leading and state.record is not None else None

    @property
    def changes(self) -> int:
        """How many times this elector's leadership changed: each start and each end of a term adds one."""
        with self._cond:
            return self._state.term

    @property
    def step_down_reason(self) -> str | None:
        """Why the last term ended ("not renewed within the renew deadline", "lock taken by n2", "shutting down");
        set before on_stopped_leading is queued, so that callback can report it."""
        with self._cond:
            return self._state.step_down_reason

    @property
    def leader(self) -> str:
        """The holder we last observed ("" if none)."""
        with self._cond:
            return self._state.reported_leader

    @property
    def offering(self) -> bool:
        return self._offering

    def offer(self, offering: bool) -> None:
        """Unfit (`True`): offer the lock to a fit successor from the next write on, keep leading until one claims
        it, then step down and release. Fit again (`False`): the next renewal withdraws the offer and any claim."""
        if offering == self._offering:
            return
        self._offering = offering
        log.info("election.offer" if offering else "election.offer_withdrawn", lock=self.lock.describe(),
                 identity=self.identity, leading=self.is_leader, mono=round(self._clock(), 6))
        self._wake.set()  # a leader writes it now rather than at its next renewal

    def start(self) -> None:
        """Campaign in background threads: elector, watchdog, lock watch, callbacks."""
        for name, target in (("elector", self._run), ("watchdog", self._watchdog), ("callbacks", self._callbacks),
                             ("lock-watch", self._watch)):
            thread = threading.Thread(target=target, name=f"{name}:{self.lock.describe()}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def heard_from_lock(self) -> float | None:
        """Seconds since the lock (the API server) last answered us, by our clock; None if it never has."""
        with self._cond:
            seen = self._state.observed_at
        return None if not seen else self._clock() - seen

    def alive(self) -> bool:
        """Every thread of a started elector is still running (a liveness probe fails a wedged or dead one)."""
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop campaigning: step down (callback first), then release the lock so a peer takes over at once."""
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        deadline = self._clock() + timeout
        for thread in self._threads:
            if thread.name.startswith(("elector", "watchdog")):
                thread.join(max(0.0, deadline - self._clock()))
        self._callback_queue.put(None)
        for thread in self._threads:
            if thread.name.startswith("callbacks"):
                thread.join(max(0.0, deadline - self._clock()))

    # -- the loop -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        retry = self.timers.retry_period
        while not self._stop.is_set():
            if self.is_leader:
                if not self._hand_over():
                    self._renew()
                    self._wake.wait(retry)  # a claim or an offer wakes it early
                    self._wake.clear()
                continue
            wait = self._try_acquire()
            if not self.is_leader:
                self._wake.clear()
                self._wake.wait(wait)
        self._shutdown()

    def _request_timeout(self) -> float:
        return max(0.05, self.timers.retry_period)

    def _try_acquire(self) -> float:
        """One attempt as a candidate; returns how long to wait before the next one (a watch event wakes earlier).
        What to do with the lock as read is `handover.candidate_move`'s decision (client-go's unless unfit)."""
        retry = self.timers.retry_period
        fitness = self._fitness()
        with self._cond:
            record, fed, observed_at = self._state.record, self._watch_current, self._state.observed_at
        if fed and record is not None and record.holder and record.holder != self.identity \
                and not may_claim(record, self.identity, fitness):
            # a live holder, and the watch tells us of any change: no request until its lease could expire
            remaining = observed_at + max(record.lease_duration_s, self.timers.lease_duration) - self._clock()
            if remaining > 0:
                return min(retry, remaining)
        sent = self._clock()
        try:
            found = self.lock.get(self._request_timeout())
            if found is None:
                now = self._clock()
                self._absent_since = now if self._absent_since is None else self._absent_since
                move, wait = candidate_move(None, self.identity, fitness, now - self._absent_since,
                                            self.timers.lease_duration)
                if move is Move.WAIT:
                    return min(retry, wait)
                record = self._record(holder_changed=True, previous=None)
                version = self.lock.create(record, self._request_timeout())
                self._became_leader(sent, version, record)
                return retry
            self._absent_since = None
            record, version = found
            self._observe(record, version)
            with self._cond:
                unchanged = self._clock() - self._state.observed_at
            move, wait = candidate_move(record, self.identity, fitness, unchanged,
                                        max(record.lease_duration_s, self.timers.lease_duration))
            if move is Move.WAIT:
                return min(retry, wait)
            if move is Move.CLAIM:
                self.lock.update(dataclasses.replace(record, successor=self.identity), version,
                                 self._request_timeout())
                log.info("election.claimed", lock=self.lock.describe(), identity=self.identity, holder=record.holder,
                         mono=round(self._clock(), 6))
                return retry
            if fitness is Fitness.UNFIT:
                log.warning("election.last_resort", lock=self.lock.describe(), identity=self.identity,
                            reason="unfit, but nobody fit has taken the lock for a lease duration")
            new = self._record(holder_changed=record.holder != self.identity, previous=record)
            new_version = self.lock.update(new, version, self._request_timeout())
            self._became_leader(sent, new_version, new)
        except LockConflict:
            log.debug("election.acquire_conflict", lock=self.lock.describe(), identity=self.identity)
        except LockUnavailable as exc:
            log.debug("election.lock_unavailable", lock=self.lock.describe(), error=str(exc))
        return retry

    def _fitness(self) -> Fitness:
        try:
            return self.callbacks.fitness()
        except Exception:
            log.exception("election.callback_failed", lock=self.lock.describe(), identity=self.identity)
            return Fitness.UNKNOWN

    def _record(self, holder_changed: bool, previous: LeaderRecord | None) -> LeaderRecord:
        now = self._now()
        transitions = previous.transitions if previous else 0
        return LeaderRecord(holder=self.identity, lease_duration_s=self.timers.lease_seconds, acquire_time=now,
                            renew_time=now, transitions=transitions + (1 if holder_changed and previous else 0),
                            offered=self._offering)

    def _observe(self, record: LeaderRecord, version: str) -> None:
        """Remember the record; restart the expiry clock only when its content changed (client-go's rule)."""
        report = ""
        with self._cond:
            state = self._state
            if record != state.record:
                state.record = record
                state.observed_at = self._clock()
            state.version = version
            if record.holder and record.holder != state.reported_leader:
                state.reported_leader = report = record.holder
        if record.holder == self.identity and record.successor and record.successor != self.identity:
            self._wake.set()  # a claim on our offer: the leader's loop hands over now
        if report:
            log.info("election.new_leader", lock=self.lock.describe(), identity=self.identity, leader=report)
            self._enqueue(lambda: self.callbacks.on_new_leader(report))

    def _became_leader(self, sent: float, version: str, record: LeaderRecord) -> None:
        with self._cond:
            state = self._state
            state.leading, state.term = True, state.term + 1
            state.renewed_at, state.version, state.record = sent, version, record
            state.observed_at = self._clock()
            term = state.term
            self._cond.notify_all()
        log.info("election.started_leading", lock=self.lock.describe(), identity=self.identity, term=term,
                 mono=round(self._clock(), 6))
        self._enqueue(self.callbacks.on_started_leading)
        self._observe(record, version)

    def _renew(self) -> None:
        with self._cond:
            state = self._state
            if not state.leading or state.record is None or state.version is None:
                return
            term, version, current = state.term, state.version, state.record
            remaining = state.renewed_at + self.timers.renew_deadline - self._clock()
        if remaining <= 0:
            return  # the watchdog ends this term
        sent = self._clock()
        # the offer as it stands now; a claim is cleared (it is acted on before renewing, see _hand_over)
        renewed = LeaderRecord(self.identity, self.timers.lease_seconds, current.acquire_time, self._now(),
                               current.transitions, offered=self._offering)
        try:
            try:
                new_version = self.lock.update(renewed, version, remaining)
            finally:
                self.renew_latency.observe(self._clock() - sent)
        except LockConflict:
            self._after_conflict(term, remaining)
            return
        except LockUnavailable as exc:
            log.warning("election.renew_failed", lock=self.lock.describe(), identity=self.identity, error=str(exc),
                        seconds_left=round(remaining - (self._clock() - sent), 3))
            return
        with self._cond:
            if state.term == term and state.leading:
                state.renewed_at, state.version, state.record = sent, new_version, renewed
                state.observed_at = self._clock()

    def _after_conflict(self, term: int, remaining: float) -> None:
        """Someone wrote the lock under us: if it is no longer ours, step down now; else adopt its version."""
        try:
            found = self.lock.get(max(0.05, remaining))
        except LockUnavailable:
            return
        if found is None or found[0].holder != self.identity:
            self._step_down(term, "lock taken by " + (found[0].holder if found else "nobody (deleted)"))
            if found:
                self._observe(*found)
            return
        with self._cond:
            if self._state.term == term:
                self._state.version = found[1]  # our own earlier write landed late; renewed_at stays conservative
                self._state.record = found[0]  # or a candidate's claim: _hand_over acts on it
        if found[0].successor:
            self._wake.set()

    def _step_down(self, term: int, reason: str) -> bool:
        with self._cond:
            state = self._state
            if not state.leading or state.term != term:
                return False
            state.leading, state.term = False, state.term + 1
            state.step_down_reason = reason
            self._cond.notify_all()
        log.warning("election.stopped_leading", lock=self.lock.describe(), identity=self.identity, reason=reason,
                    mono=round(self._clock(), 6))
        self._enqueue(self.callbacks.on_stopped_leading)
        self._wake.set()
        return True

    def _watchdog(self) -> None:
        """End the term at renewed_at + renew_deadline, independent of any request in flight."""
        with self._cond:
            while not self._stop.is_set():
                state = self._state
                if not state.leading:
                    self._cond.wait()  # a follower's watchdog sleeps: leading, stepping down and stop() notify
                    continue
                deadline = state.renewed_at + self.timers.renew_deadline
                left = deadline - self._clock()
                if left > 0:
                    self._cond.wait(left)
                    continue
                term = state.term
                self._cond.release()
                try:
                    self._step_down(term, "not renewed within the renew deadline")
                finally:
                    self._cond.acquire()

    def _watch(self) -> None:
        def changed(found: tuple[LeaderRecord, str] | None) -> None:
            with self._cond:
                self._watch_current = found is not None
                leading = self._state.leading
            if found is not None:
                self._observe(*found)  # observed when it changed: the expiry clock is exact, no polling needed
            if not leading and (found is None or not found[0].holder):
                self._wake.set()  # released (or unknown): try now rather than after a retry period

        try:
            self.lock.watch(changed, self._stop)
        except Exception as exc:  # the watch is an accelerator; polling still works without it
            log.warning("election.watch_stopped", lock=self.lock.describe(), error=str(exc))

    # -- callbacks and shutdown ---------------------------------------------------------------------------

    def _enqueue(self, callback: Callable[[], None]) -> None:
        self._callback_queue.put(callback)

    def _callbacks(self) -> None:
        while True:
            callback = self._callback_queue.get()
            if callback is None:
                return
            try:
                callback()
            except Exception:
                log.exception("election.callback_failed", lock=self.lock.describe(), identity=self.identity)
            finally:
                self._callback_queue.task_done()

    def _drain_callbacks(self, timeout: float) -> bool:
        done = threading.Event()
        self._enqueue(done.set)
        return done.wait(timeout)

    def _shutdown(self) -> None:
        with self._cond:
            term, leading = self._state.term, self._state.leading
            version, record = self._state.version, self._state.record
        if not leading:
            return
        self._step_down(term, "shutting down")
        self._release(version, record)

    def _hand_over(self) -> bool:
        """While offering, once a fit candidate has claimed the lock: step down, then release it to them."""
        with self._cond:
            state = self._state
            record, version, term = state.record, state.version, state.term
            due = (state.leading and self._offering and record is not None and record.holder == self.identity
                   and record.successor not in ("", self.identity))
        if not due or record is None:
            return False
        if not self._step_down(term, f"handing over to {record.successor}"):
            return False
        self._release(version, record, successor=record.successor)
        return True

    def _release(self, version: str | None, record: LeaderRecord | None, successor: str = "") -> None:
        """Write holder "" once on_stopped_leading has finished, so the next leader never overlaps with us."""
        if not self._drain_callbacks(timeout=1.0):
            log.warning("election.release_skipped", lock=self.lock.describe(),
                        reason="on_stopped_leading still running")
            return
        if version is None or record is None:
            return
        try:
            releasable = self.callbacks.may_release()
        except Exception:
            log.exception("election.callback_failed", lock=self.lock.describe(), identity=self.identity)
            releasable = False
        if not releasable:
            log.warning("election.release_skipped", lock=self.lock.describe(),
                        reason="what this leader held is not released yet; the lock will expire instead")
            return
        now = self._now()
        # the successor is not named in the released record: a client-go elector taking it would keep the annotation
        released = LeaderRecord("", 1, now, now, record.transitions)
        try:
            self.lock.update(released, version, self._request_timeout())
            log.info("election.released", lock=self.lock.describe(), identity=self.identity,
                     mono=round(self._clock(), 6), **({"successor": successor} if successor else {}))
        except (LockConflict, LockUnavailable) as exc:
            log.warning("election.release_failed", lock=self.lock.describe(), error=str(exc))
