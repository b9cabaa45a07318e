"""Namespace names: `kvm<owner pid>x<4 hex>-<role>`, unique per rig and short.

The owner's PID in the name is what lets a later run recognise a leftover: if that process is gone, nobody
will ever tear the namespaces down, so `cleanup_stale` may. Names are at most 22 characters (PIDs have at
most 7 digits), far below iproute2's limit (NAME_MAX); interface names live inside each namespace, so they
stay short and fixed (`eth0`, `br0`, `p-n1`).
"""

from __future__ import annotations

import os
import re
import secrets

from kubevip_testbed.rig import netns

FAMILY = "kvm"
_GENERATED = re.compile(rf"^{FAMILY}(?P<pid>[0-9]+)x[0-9a-f]{{4}}-[a-z0-9]+$")
_CUSTOM = re.compile(r"^[a-z0-9][a-z0-9_]{0,23}$")
_issued: set[str] = set()


def new_prefix() -> str:
    """A prefix that no namespace on the machine uses, and that this process has not issued before."""
    existing = netns.names()
    while True:
        prefix = f"{FAMILY}{os.getpid()}x{secrets.token_hex(2)}"
        if prefix not in _issued and not any(name.startswith(prefix + "-") for name in existing):
            _issued.add(prefix)
            return prefix


def check_prefix(prefix: str) -> str:
    """A caller-chosen prefix: lowercase letters, digits and `_`, at most 24 characters (no `-`, which
    separates the prefix from the role)."""
    if not _CUSTOM.match(prefix):
        raise ValueError(f"rig prefix {prefix!r}: use 1-24 lowercase letters, digits or '_', starting alnum")
    return prefix


def owner_pid(namespace: str) -> int | None:
    """The PID encoded in a generated namespace name; None for names not of the family."""
    match = _GENERATED.match(namespace)
    return int(match.group("pid")) if match else None
