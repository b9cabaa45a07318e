"""The official Kubernetes client's elector as a candidate (`tests/official_elector.py`), for the interop tests.

It lives here, not in kubevip_testbed.election, because the elector it runs is a test module of this checkout.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from kubevip_testbed.election import Candidate


def official(name: str, kubeconfig: Path, lease: str, timers: Sequence[int]) -> Candidate:
    return Candidate(name, [sys.executable, "-m", "tests.official_elector", str(kubeconfig), name, "kube-system",
                            lease, *map(str, timers)])
