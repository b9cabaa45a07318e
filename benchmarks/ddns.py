"""Client-visible failover of a `--ddns` control-plane VIP: the address leased from dnsmasq (DHCP + DNS in the
router namespace), three real managers in the namespace rig against the Kubernetes API emulator.

Two scenarios, repeated: **graceful** (SIGTERM to the leader: it withdraws the VIP and releases the lease; the
new leader asks for the name's address) and **crash** (SIGKILL plus the leader's cable pulled: the lease is not
released; the new leader gets it by the client id). Measured per run: the client's outage (ICMP echo every
2 ms, `lab.probe()`), the new leader's leadership to lease (`controlplane.leading` to `ddns.bound`, the managers'
CLOCK_MONOTONIC `mono`), and whether the address stayed the same. After each run the old leader comes back (cable
in, its stale VIP deleted, restarted) and the next run waits for one holder that every follower has resolved.

    .venv/bin/python benchmarks/ddns.py [--runs N] [--timers 5,3,1]

Progress goes to stderr; stdout gets the table, then one JSON line with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

try:
    from kubevip_testbed.ddns import DdnsLab
    from kubevip_testbed.dns import dnsmasq_missing
except ModuleNotFoundError as exc:
    raise SystemExit(f"ddns.py: cannot run: {exc.name} is not installed (bash benchmarks/prerequisites.sh)") from None

# benchmarks/ is on sys.path when this runs
from common import pct, say, wait_for
from failover import Prober


@dataclass
class Run:
    scenario: str
    victim: str
    successor: str
    outage: float
    lead_to_lease: float | None
    same_address: bool


def _events(lab: DdnsLab, node: str, name: str) -> list[dict[str, Any]]:
    return [e for e in lab.events(node) if e["event"] == name]


def _holder(lab: DdnsLab, address: str, exclude: str | None = None) -> str | None:
    running = [n for n in lab.holders(address) if n in lab.managers and n != exclude]
    if len(running) == 1 and lab.lease_holder() == running[0]:
        return running[0]
    return None


def _followed(lab: DdnsLab, address: str) -> bool:
    return all(any(e.get("new") == address for e in _events(lab, node, "dns.moved"))
               for node in lab.managers if node != lab.lease_holder())


def one_run(lab: DdnsLab, prober: Prober, scenario: str, address: str) -> Run:
    victim = wait_for("one holder", lambda: _holder(lab, address), 30)
    wait_for("every follower resolved the name", lambda: _followed(lab, address) or None, 30)
    wait_for("client replies", lambda: prober.flowing() or None, 15)
    bound_before = {n: len(_events(lab, n, "ddns.bound")) for n in lab.nodes}
    event_at = time.monotonic()
    if scenario == "graceful":
        lab.terminate(victim, timeout=10)
    else:
        lab.kill(victim)
        lab.rig.link_down(victim)

    def successor() -> str | None:
        for node in lab.managers:
            if len(_events(lab, node, "ddns.bound")) > bound_before[node] and lab.lease_holder() == node:
                return node
        return None

    new = wait_for("a new leader with a lease", successor, 40)
    bound = _events(lab, new, "ddns.bound")[-1]
    wait_for("client replies again", lambda: prober.replied_after(time.monotonic() - 0.1) or None, 15)
    time.sleep(0.2)
    gaps = prober.between(event_at, time.monotonic())
    outage = max((end - start for start, end in gaps), default=3 * prober.interval)
    leading = [e["mono"] for e in _events(lab, new, "controlplane.leading") if e["mono"] >= event_at]
    lead_to_lease = bound["mono"] - leading[-1] if leading else None
    run = Run(scenario, victim, new, outage, lead_to_lease, bound["address"] == address)
    say(f"  {scenario} {victim}->{new}: outage {outage:.3f} s, leading->lease "
        f"{'-' if lead_to_lease is None else f'{lead_to_lease:.3f} s'}, same address {run.same_address}")
    if scenario == "crash":  # the node comes back as after a reboot: cable in, the stale VIP gone
        lab.rig.link_up(victim)
        lab.rig.run(victim, ["ip", "addr", "del", f"{address}/32", "dev", "eth0"], check=False)
    lab.start(victim)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions of each scenario")
    parser.add_argument("--timers", default="5,3,1", help="lease duration, renew deadline, retry period")
    parser.add_argument("--interval", type=float, default=0.002, help="probe interval in seconds")
    args = parser.parse_args()
    if dnsmasq_missing():
        raise SystemExit("ddns.py: " + "; ".join(dnsmasq_missing()))
    timers = tuple(float(t) for t in args.timers.split(","))
    runs: list[Run] = []
    started = time.monotonic()
    with DdnsLab(timers=timers, extra_args=["--dnsInterval", "1"]) as lab:
        for node in lab.nodes:
            lab.start(node)
        leader = wait_for("a first lease", lambda: next((n for n in lab.nodes if _events(lab, n, "ddns.bound")),
                                                         None), 60)
        address = str(_events(lab, leader, "ddns.bound")[-1]["address"])
        lab.vip = address
        say(f"leased {address} on {leader}")
        prober = Prober(lab, args.interval)
        try:
            for i in range(args.runs):
                for scenario in ("graceful", "crash"):
                    say(f"run {i + 1}/{args.runs} {scenario}")
                    runs.append(one_run(lab, prober, scenario, address))
        finally:
            prober.stop()
    print(f"DDNS failover, timers {args.timers}, client ICMP every {args.interval * 1000:g} ms, "
          f"{len(runs)} runs, wall {(time.monotonic() - started) / 60:.1f} min")
    print("| scenario | runs | outage median | p90 | max | leading -> lease median | same address |")
    print("|---|---|---|---|---|---|---|")
    headline: dict[str, Any] = {}
    for scenario in ("graceful", "crash"):
        mine = [r for r in runs if r.scenario == scenario]
        outages = [r.outage for r in mine]
        leases = [r.lead_to_lease for r in mine if r.lead_to_lease is not None]
        same = sum(r.same_address for r in mine)
        print(f"| {scenario} | {len(mine)} | {statistics.median(outages):.3f} s | {pct(outages, 0.9):.3f} s | "
              f"{max(outages):.3f} s | {statistics.median(leases) * 1000:.0f} ms | {same}/{len(mine)} |")
        headline[scenario] = {"outage_median": round(statistics.median(outages), 3), "same_address": same,
                              "runs": len(mine)}
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
