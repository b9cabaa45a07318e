"""Campaign with the official `kubernetes.leaderelection` elector (client-go's record format) and print
its leadership changes as JSON lines with CLOCK_MONOTONIC timestamps, like `python -m generic.election`.

Usage: python -m tests.official_elector KUBECONFIG IDENTITY NAMESPACE LEASE LEASE_S RENEW_S RETRY_S
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def _emit(event: str, identity: str) -> None:
    sys.stdout.write(json.dumps({"event": event, "mono": time.monotonic(), "identity": identity}) + "\n")
    sys.stdout.flush()


def main() -> None:
    kubeconfig, identity, namespace, lease, lease_s, renew_s, retry_s = sys.argv[1:8]
    from kubernetes import config
    from kubernetes.leaderelection import electionconfig as electionconfig_module
    from kubernetes.leaderelection import leaderelection as leaderelection_module
    from kubernetes.leaderelection.resourcelock import leaselock

    loader: Any = config  # the election modules are untyped
    electionconfig: Any = electionconfig_module
    leaderelection: Any = leaderelection_module
    LeaseLock: Any = leaselock.LeaseLock
    loader.load_kube_config(config_file=kubeconfig)
    _emit("campaigning", identity)
    while True:  # run() returns after losing the lease; campaign again, as a long-running pod would
        settings = electionconfig.Config(
            LeaseLock(lease, namespace, identity), int(lease_s), int(renew_s), int(retry_s),
            onstarted_leading=lambda: _emit("started_leading", identity),
            onstopped_leading=lambda: _emit("stopped_leading", identity))
        leaderelection.LeaderElection(settings).run()


if __name__ == "__main__":
    main()
