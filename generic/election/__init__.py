"""Leader election: one small loop behind a small lock protocol (Lease now, etcd later)."""

from generic.election.elector import Callbacks, Elector, TimerError, Timers
from generic.election.lock import LeaderRecord, Lock, LockConflict, LockUnavailable

__all__ = ["Callbacks", "Elector", "LeaderRecord", "Lock", "LockConflict", "LockUnavailable", "TimerError", "Timers"]
