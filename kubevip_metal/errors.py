"""The daemon's two kinds of failure, so that one place (the manager loop) decides what happens next.

`FatalError`: waiting will not fix it (a refused token, no such project or reservation, an ambiguous device);
the manager logs one line and exits 1. `NotReady`: the world is not there yet (a static pod starts before kubeadm
has written its kubeconfig, the interface is not up, the Metal API answers 503); the manager retries with backoff
and says so in the log. Components raise these (or subclasses) and nothing else across the daemon's seams.
"""

from __future__ import annotations


class DaemonError(Exception):
    """Base of the errors a component may raise while starting."""


class FatalError(DaemonError):
    """Will not go away by waiting: exit 1 with this message."""


class NotReady(DaemonError):
    """Not possible yet: retry later (the manager backs off up to 30 s)."""
