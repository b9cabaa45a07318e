"""Run one elector on a Lease and print its leadership changes, one JSON object per line.

`python -m generic.election --kubeconfig K --identity n1 [--namespace ns] [--lease name] [--timers 5,3,1]`

Used by the election tests and benchmarks to campaign as real processes (so they can be SIGKILLed) without
the rest of the daemon; also handy to watch an election by hand. Each event carries `mono`, the
CLOCK_MONOTONIC time, which all processes on one host share.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from generic.election.elector import Callbacks, Elector, Timers
from generic.election.lease_lock import LeaseLock


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "mono": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generic.election", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--identity", required=True)
    parser.add_argument("--namespace", default="kube-system")
    parser.add_argument("--lease", default="plndr-cp-lock")
    parser.add_argument("--timers", default="5,3,1", help="lease,renew,retry in seconds")
    args = parser.parse_args(argv)
    try:
        lease, renew, retry = (float(part) for part in args.timers.split(","))
        timers = Timers(lease, renew, retry)
    except ValueError as exc:  # TimerError is one
        parser.error(f"--timers {args.timers}: {exc}")

    from kubernetes import client
    from kubernetes import config as kube_config_module

    kube_config: Any = kube_config_module
    configuration = client.Configuration()
    kube_config.load_kube_config(config_file=args.kubeconfig, client_configuration=configuration)
    configuration.retries = False
    api = client.ApiClient(configuration)

    callbacks = Callbacks(
        on_started_leading=lambda: _emit("started_leading", identity=args.identity),
        on_stopped_leading=lambda: _emit("stopped_leading", identity=args.identity),
        on_new_leader=lambda leader: _emit("new_leader", identity=args.identity, leader=leader),
    )
    elector = Elector(LeaseLock(api, args.namespace, args.lease), args.identity, timers,
                      callbacks)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    _emit("campaigning", identity=args.identity)
    elector.start()
    while not stop.wait(0.5):
        pass
    elector.stop(timeout=2.0)
    _emit("exited", identity=args.identity)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
