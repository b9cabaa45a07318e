"""Removing namespaces: stop every process inside by PID, then delete the names.

A process inside keeps a namespace (and its veths) alive after `ip netns del`, so processes go first.
`cleanup_stale` is the backstop for runs that could not tear down (SIGKILL, power loss): the next rig
removes namespaces whose owner PID is gone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from generic.logfmt import get_logger
from kubevip_testbed.rig import names, netns, processes

log = get_logger(__name__)
_CLOCK_SLACK = 2.0  # process start times derive from a whole-second boot time


def teardown_namespaces(namespaces: Sequence[str], grace: float) -> list[int]:
    """Stop every process inside `namespaces`, then delete them. Returns the PIDs that needed SIGKILL."""
    inside = [pid for pids in netns.pids_in(namespaces).values() for pid in pids]
    hard = processes.terminate(inside, grace)
    # A process may have forked while dying; what is left now gets no second grace period.
    late = [pid for pids in netns.pids_in(namespaces).values() for pid in pids]
    hard += processes.terminate(late, 0)
    netns.delete(namespaces)
    netns.remove_etc(namespaces)  # a rig's per-namespace resolv.conf (Rig.use_nameservers), if it had one
    return hard


def _owner_gone(namespace: str) -> bool:
    pid = names.owner_pid(namespace)
    if pid is None or pid == os.getpid():
        return False
    if not processes.alive(pid):
        return True
    started = processes.started_at(pid)
    try:
        created = netns.created_at(namespace)
    except FileNotFoundError:  # removed meanwhile by someone else
        return False
    # The PID is in use, but by a process younger than the namespace: the owner died and the PID was reused.
    return started is not None and started > created + _CLOCK_SLACK


def cleanup_stale(grace: float = 0.5) -> list[str]:
    """Remove rig namespaces left by processes that no longer exist; returns the namespaces removed.
    Namespaces of live rigs (any process) and names outside the rig's family are never touched."""
    stale = [name for name in netns.names() if _owner_gone(name)]
    if not stale:
        return []
    hard = teardown_namespaces(stale, grace)
    log.info("rig.stale_removed", namespaces=stale, killed_hard=len(hard))
    return stale
