"""What every rig benchmark does around its measurements, in one place: progress lines, polling, percentiles,
the refusal when a prerequisite is missing, SIGTERM/SIGHUP handling, the real kube-apiserver a run measures
against, the rig's clean-up report, the `--details` file and keeping or removing a run's files.

Why one module: failover.py, bgp.py, peering.py, services.py, dns_move.py and ddns.py used to carry their own
copies of these opening and closing blocks, and a fix to one (the forked-helper rule of `_exit_on_signal`, the
order in which the API server stops and its files go) had to be made in each. Nothing here measures anything:
the measurement loops and their tables stay in the benchmarks.

Only the standard library is imported at the top, so a benchmark can import this before it knows the test bed is
installed; what needs the test bed is imported where it is used. benchmarks/ is on sys.path when a benchmark runs
(`python benchmarks/<name>.py`), which is how the benchmarks import this file and each other.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from kubevip_testbed.peers.apiserver import RealApiServer
    from kubevip_testbed.peers.lab_backend import RealApiBackend

PREREQUISITES = "bash benchmarks/prerequisites.sh"  # installs everything any benchmark needs

T = TypeVar("T")
_T0 = time.monotonic()


def say(message: str) -> None:
    """A progress line on stderr, stamped with the seconds since the benchmark started (stdout is the tables)."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def pct(values: Sequence[float], q: float) -> float:
    """The `q` quantile (0..1) by nearest rank: always one of the measured values, never an interpolation."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Timeout(RuntimeError):
    pass


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, poll: float = 0.02) -> T:
    """Poll `probe` until it returns something other than None/False; Timeout after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise Timeout(f"{what}: not within {timeout:g} s")
        time.sleep(poll)


def wait_for_optional(probe: Callable[[], T | None], timeout: float) -> T | None:
    """`wait_for` for a figure that may legitimately never come (a log line of a run that went otherwise)."""
    try:
        return wait_for("", probe, timeout, poll=0.05)
    except Timeout:
        return None


# -- opening --------------------------------------------------------------------------------------------------


def add_file_options(parser: argparse.ArgumentParser, kept: str, details: str = "every run's measurements") -> None:
    """`--keep-logs` (what `keep_or_remove` honours; `kept` names the files) and `--details` (`write_details`)."""
    parser.add_argument("--keep-logs", action="store_true", help=f"keep the {kept}")
    parser.add_argument("--details", type=Path, help=f"write {details} to this file (JSON lines)")


def cannot_run(script: str, missing: Sequence[str]) -> int:
    """Say on stderr what is missing and how to install it; the exit status (2) for `main` to return."""
    print(f"{script}: cannot run: {'; '.join(missing)}; `{PREREQUISITES}` installs every benchmark prerequisite",
          file=sys.stderr)
    return 2


_MAIN_PID = os.getpid()


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM / SIGHUP unwind like Ctrl-C, so every `finally` and `with` cleans up. Only here: a forked
    helper (pyroute2's NetNS forks one and SIGTERMs it) inherits the handler and must just end, as by default,
    never run a copy of the benchmark's clean-up."""
    if os.getpid() != _MAIN_PID:
        os._exit(128 + signum)
    raise SystemExit(128 + signum)


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP end the benchmark through its clean-up (namespaces, daemons, API server, files)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)


def scratch_dir(stack: contextlib.ExitStack, prefix: str, keep: bool) -> Path:
    """A fresh directory for the run's files, kept or removed when `stack` closes. Call it before entering
    anything that writes there: the callback registered first runs last, so the API server stops before its
    files go."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    stack.callback(keep_or_remove, keep, path)
    return path


def real_api_backend(stack: contextlib.ExitStack, directory: Path,
                     server_class: type[RealApiServer] | None = None) -> RealApiBackend:
    """A real kube-apiserver (built by tests/peers/build.sh) in `directory` for as long as `stack` is open, with
    the manifests' RBAC applied, as the lab's API (each node with its own ServiceAccount token)."""
    from kubevip_testbed.peers import apiserver
    from kubevip_testbed.peers.lab_backend import RealApiBackend
    from kubevip_testbed.peers.objects import apply, rendered

    server = stack.enter_context((server_class or apiserver.RealApiServer)(directory))
    apply(server, rendered("rbac"))
    backend = RealApiBackend(server)
    say(f"kube-apiserver {apiserver.K8S_VERSION} ready in {server.timings['start']:.1f} s")
    return backend


# -- closing --------------------------------------------------------------------------------------------------


def namespaces_left(namespaces: Iterable[str]) -> list[str]:
    """The rig's namespaces that still exist after it came down (there should be none)."""
    from kubevip_testbed.rig import netns

    return [name for name in namespaces if netns.exists(name)]


def rig_down(namespaces: Iterable[str], suffix: str = "") -> None:
    """The progress line that closes a rig: how many of its namespaces outlived it."""
    say(f"rig down; namespaces left: {len(namespaces_left(namespaces))}{suffix}")


def write_details(path: Path | None, records: Iterable[Any], kind: bool = False) -> None:
    """`--details`: every measured record (a dataclass) as one JSON line, with its class name as `kind` when
    one file holds records of several kinds; nothing without `--details`."""
    if path is None:
        return
    with path.open("w") as out:
        for record in records:
            fields = dataclasses.asdict(record)
            out.write(json.dumps({"kind": type(record).__name__, **fields} if kind else fields) + "\n")


def keep_or_remove(keep: bool, path: Path, what: str = "logs") -> None:
    """`--keep-logs`: say where a run's files are; otherwise remove them."""
    if keep:
        say(f"{what} kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)
