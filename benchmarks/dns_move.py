"""DNS change -> VIP moved and reachable: `--address NAME` followed by ours and by kube-vip v1.0.0.

(Not named dns.py: a script's own directory comes first on sys.path, and benchmarks/dns.py would hide dnspython's
`dns` package from everything this script imports.)

One rig (three node namespaces, a client, a router) and one Kubernetes API (by default a real kube-apiserver built
by tests/peers/build.sh, which kube-vip v1.0.0 needs: it speaks protobuf; `--api emulator` for ours alone).
dnsmasq in the router namespace serves `vip.rig.test`; every node resolves through it (its own resolv.conf).
Each case runs three managers with `--address vip.rig.test`, ARP mode, Lease election at 5/3/1, and the name is
changed N times, each time to an address never used before (198.51.100.20, .21, ...: no client ARP cache to
help or hinder). Per change, from the moment dnsmasq is told (SIGHUP, after which every query gets the new answer):

- **on the leader**: the new address is on the leader's eth0 (netlink, polled every 10 ms);
- **reachable**: the client's first echo reply from the new address (a prober in the client namespace every
  5 ms, started before the change);
- **old gone**: the previous address is on no node any more (kube-vip lets it expire: `valid_lft 60`).

Cases: `ours` at the default `--dnsInterval` 3 (kube-vip's fixed 3 s), `ours-1s` at `--dnsInterval 1`, and
`kube-vip` v1.0.0. `--quick`: 3 changes of `ours` and `kube-vip` (about a minute and a half, most of it kube-vip's
old addresses expiring); the full run: 20 changes of every case. Progress goes to stderr; stdout gets the table,
then one JSON line with the headline figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# what every benchmark shares (benchmarks/ is on sys.path; common.py needs only the standard library)
import common
from common import PREREQUISITES, pct, say

try:
    from kubevip_testbed.dns import DnsLab, dnsmasq_missing
    from kubevip_testbed.lab.api_backend import ApiBackend
    from kubevip_testbed.peers import apiserver as real_apiserver
    from kubevip_testbed.peers import kubevip
    from kubevip_testbed.peers.kubevip import KubeVipNode
    from kubevip_testbed.rig import prerequisites_missing
except ModuleNotFoundError as exc:
    raise SystemExit(f"dns_move.py: cannot run: {exc.name} is not installed; `{PREREQUISITES}` installs every "
                     "benchmark prerequisite (then run it with .venv/bin/python)") from None

TIMERS = (5.0, 3.0, 1.0)
CASES = ("ours", "ours-1s", "kube-vip")
QUICK = ("ours", "kube-vip")
FIRST = "198.51.100.10"
OLD_GONE_WAIT = 75.0  # seconds: kube-vip's addresses live 60 s after their last refresh


def poll(what: str, probe: Callable[[], Any], timeout: float, step: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(step)


@dataclass
class Change:
    old: str
    new: str
    told: float
    leader: str
    on_leader: float | None = None  # seconds after `told`
    reachable: float | None = None
    old_gone: float | None = None
    errors: list[str] = field(default_factory=list)


class GoneWatcher:
    """Notes when each old address is on no node any more, in the background (kube-vip's take a minute)."""

    def __init__(self, lab: DnsLab) -> None:
        self.lab = lab
        self.pending: list[Change] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gone-watcher", daemon=True)
        self._thread.start()

    def watch(self, change: Change) -> None:
        with self._lock:
            self.pending.append(change)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            with self._lock:
                pending = list(self.pending)
            for change in pending:
                if not self.lab.holders(change.old):
                    change.old_gone = time.monotonic() - change.told
                    with self._lock:
                        self.pending.remove(change)

    def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self.pending:
                    break
            time.sleep(0.1)
        self._stop.set()
        self._thread.join(2)


class Case:
    name = ""

    def __init__(self, lab: DnsLab) -> None:
        self.lab = lab

    def start_all(self) -> None:
        raise NotImplementedError

    def stop_all(self) -> None:
        raise NotImplementedError

    def leader(self) -> str | None:
        holders = self.lab.holders()
        return holders[0] if len(holders) == 1 and self.lab.lease_holder() == holders[0] else None


class Ours(Case):
    def __init__(self, lab: DnsLab, interval: float) -> None:
        super().__init__(lab)
        self.interval = interval
        self.name = f"ours, --dnsInterval {interval:g}"

    def start_all(self) -> None:
        self.lab.extra_args = ["--dnsInterval", f"{self.interval:g}"]
        for node in self.lab.nodes:
            self.lab.start(node)

    def stop_all(self) -> None:
        for node in list(self.lab.managers):
            self.lab.terminate(node)


class KubeVip(Case):
    name = f"kube-vip {kubevip.TESTED_VERSION}"

    def __init__(self, lab: DnsLab) -> None:
        super().__init__(lab)
        self.peers = {node: KubeVipNode(lab, node, kubevip.TESTED_VERSION, [int(t) for t in TIMERS],
                                        address=lab.name) for node in lab.nodes}

    def start_all(self) -> None:
        for peer in self.peers.values():
            peer.start()

    def stop_all(self) -> None:
        for peer in self.peers.values():
            if peer.alive:
                peer.terminate()
        for node in self.lab.nodes:  # whatever kube-vip left to expire
            for address in self.lab.rig.addresses(node):
                if address.startswith("198.51.100.") and address.split(".")[-1] not in ("11", "12", "13"):
                    self.lab.rig.run(node, ["ip", "addr", "del", f"{address}/32", "dev", "eth0"], check=False)

    def leader(self) -> str | None:
        holders = self.lab.holders()
        return holders[0] if len(holders) == 1 and self.peers[holders[0]].alive else None


def first_reply(probe: subprocess.Popen[str], timeout: float) -> float | None:
    """The CLOCK_MONOTONIC of the prober's first echo reply (it was started with --every 1)."""
    assert probe.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = probe.stdout.readline()
        if not line:
            return None
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == "reply":
                return float(event["mono"])
    return None


def run_case(lab: DnsLab, case: Case, changes: int, next_address: Callable[[], str]) -> list[Change]:
    assert lab.dns is not None
    lab.dns.set(lab.name, FIRST)
    lab.vip = FIRST
    say(f"== {case.name}: starting")
    case.start_all()
    try:
        leader = poll("a leader holding the first address", case.leader, 90)
    except TimeoutError:
        for node in lab.nodes:  # what the managers said, for the post-mortem
            for path in (lab.log_path(node), Path(lab.workdir) / f"{node}.kube-vip.log"):
                if path.exists():
                    say(f"   {path.name}: ...{path.read_text(errors='replace')[-1500:]}")
        raise
    say(f"   {leader} leads")
    time.sleep(2.0)  # every node has resolved and settled
    watcher = GoneWatcher(lab)
    phase = random.Random(12)  # the same sequence of waits in every case and run
    done: list[Change] = []
    try:
        for i in range(changes):
            old, new = lab.vip, next_address()
            prober = _with_every_one(lab, new)
            try:
                assert prober.stdout is not None
                prober.stdout.readline()  # "started": it sends from now on
                told = lab.move(new)
                change = Change(old, new, told, leader)
                watcher.watch(change)  # from now on: when is the old address on no node
                at = poll(f"{new} on {leader}", lambda new=new: time.monotonic() if leader in lab.holders(new)
                          else None, 30)
                change.on_leader = at - told
                reply = first_reply(prober, 30)
                change.reachable = None if reply is None else reply - told
                others = [n for n in lab.holders(new) if n != leader]
                if others:
                    change.errors.append(f"{new} also on {others}")
            finally:
                prober.terminate()
                with contextlib.suppress(Exception):
                    prober.wait(5)
            done.append(change)
            say(f"   change {i + 1}/{changes}: {old} -> {new}: on the leader {change.on_leader:.3f} s, "
                f"reachable {change.reachable if change.reachable is None else round(change.reachable, 3)} s")
            time.sleep(0.5 + phase.uniform(0, 3.0))  # a change lands anywhere in the 3 s between lookups
        watcher.drain(OLD_GONE_WAIT)
    finally:
        say(f"== {case.name}: stopping")
        case.stop_all()
    return done


def _with_every_one(lab: DnsLab, target: str) -> subprocess.Popen[str]:
    from kubevip_testbed.lab.cluster import _clean_environment

    return lab.rig.spawn("client", [sys.executable, "-m", "kubevip_testbed.lab.probe", target, "--interval",
                                    "0.005", "--every", "1"], stdout=subprocess.PIPE, text=True,
                         env=_clean_environment())


def _fmt(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.3f} / {pct(values, 0.99):.3f} / {max(values):.3f}"


def report(results: dict[str, tuple[str, list[Change]]], quick: bool) -> dict[str, Any]:
    width = 34
    print(f"{'case':<24} {'changes':>7}  {'on the leader p50/p99/max s':<{width}} "
          f"{'reachable p50/p99/max s':<{width}} {'old gone p50/max s':<24} errors")
    headline: dict[str, Any] = {"benchmark": "dns", "quick": quick}
    for key, (name, changes) in results.items():
        on_leader = [c.on_leader for c in changes if c.on_leader is not None]
        reachable = [c.reachable for c in changes if c.reachable is not None]
        gone = [c.old_gone for c in changes if c.old_gone is not None]
        not_gone = sum(c.old_gone is None for c in changes)
        gone_text = "-" if not gone else f"{statistics.median(gone):.3f} / {max(gone):.3f}"
        if not_gone:
            gone_text += f" ({not_gone} > {OLD_GONE_WAIT:g} s)"
        errors = sum(len(c.errors) + (c.reachable is None) for c in changes)
        print(f"{name:<24} {len(changes):>7}  {_fmt(on_leader):<{width}} {_fmt(reachable):<{width}} "
              f"{gone_text:<24} {errors}")
        key = key.replace("-", "_")
        if reachable:
            headline[f"{key}_reachable_p50_s"] = round(statistics.median(reachable), 3)
            headline[f"{key}_reachable_p99_s"] = round(pct(reachable, 0.99), 3)
        if gone:
            headline[f"{key}_old_gone_p50_s"] = round(statistics.median(gone), 3)
        headline[f"{key}_errors"] = errors
    return headline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"3 changes of {', '.join(QUICK)}")
    parser.add_argument("--changes", type=int, help="changes per case (default 20, --quick 3)")
    parser.add_argument("--api", choices=("kube-apiserver", "emulator"), default="kube-apiserver")
    parser.add_argument("--only", type=lambda t: t.split(","), metavar="CASE[,CASE...]",
                        help=f"cases, of: {', '.join(CASES)}")
    args = parser.parse_args()
    chosen = args.only or list(QUICK if args.quick else CASES)
    if unknown := [c for c in chosen if c not in CASES]:
        parser.error(f"unknown case(s) {unknown}; cases are {', '.join(CASES)}")
    changes = args.changes or (3 if args.quick else 20)
    missing = prerequisites_missing() + dnsmasq_missing()
    if args.api == "kube-apiserver":
        missing += real_apiserver.missing()
    elif "kube-vip" in chosen:
        parser.error("kube-vip needs --api kube-apiserver (v1.0.0 speaks protobuf, which the emulator does not)")
    if "kube-vip" in chosen:
        missing += kubevip.missing()
    if missing:
        return common.cannot_run("dns_move.py", missing)
    common.exit_on_signals()
    started = time.monotonic()
    results: dict[str, tuple[str, list[Change]]] = {}
    with contextlib.ExitStack() as stack:
        workdir = common.scratch_dir(stack, "kvm-dns-bench-", keep=False)
        backend: ApiBackend | None = None
        if args.api == "kube-apiserver":
            backend = common.real_api_backend(stack, workdir / "kube-apiserver")
        lab = stack.enter_context(DnsLab(timers=TIMERS, first=FIRST, api=backend))
        namespaces = lab.rig.namespaces
        say(f"rig up ({lab.rig.prefix}); dnsmasq at {lab.rig.ipv4('router')}:53 serves {lab.name}")
        counter = iter(range(20, 250))

        def next_address() -> str:
            return f"198.51.100.{next(counter)}"

        cases: dict[str, Case] = {"ours": Ours(lab, 3.0), "ours-1s": Ours(lab, 1.0), "kube-vip": KubeVip(lab)}
        for name in chosen:
            case = cases[name]
            results[name] = (case.name, run_case(lab, case, changes, next_address))
    common.rig_down(namespaces, f"; {time.monotonic() - started:.0f} s")
    print(f"DNS change -> VIP moved: {changes} changes per case, seconds from dnsmasq told (SIGHUP); "
          f"{os.cpu_count()} CPUs; API: {args.api}")
    headline = report(results, args.quick)
    headline["api"] = args.api
    headline["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
