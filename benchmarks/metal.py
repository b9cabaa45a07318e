"""Elastic IP convergence after a leader crash, through the real SDK against the Metal API emulator.

A crash means the old leader writes nothing; the new leader (started leading at t0) must leave exactly one
assignment, on its own device. Measured: seconds from t0 until the emulator shows that, and the HTTP requests
the new leader made, with no fault, with 100 ms added to every API call, and with half of all calls answered
429 (Retry-After: 1). `--quick` runs 3 crashes per case, the full run 20. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import sys
import time

PREREQUISITES = "bash benchmarks/prerequisites.sh"  # installs everything any benchmark needs

try:
    from generic.secret import Secret
    from kubevip_metal.metal.client import Device, MetalClient
    from kubevip_metal.metal.eip import ElasticIp
    from kubevip_testbed.emulators.metalapi import MetalEmulatorThread
    from kubevip_testbed.metal_account import EIP, TOKEN, seeded_emulator
except ModuleNotFoundError as exc:  # not the virtualenv's Python, or the test bed is not installed
    raise SystemExit(f"metal.py: cannot run: {exc.name} is not installed; `{PREREQUISITES}` installs every "
                     "benchmark prerequisite (then run it with .venv/bin/python)") from None

CASES = {
    "no fault": {},
    "100 ms API latency": {"latency": 0.1},
    "50 % of calls 429, Retry-After 1 s": {"rate_429": 0.5, "retry_after": 1.0},
}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_case(fault: dict[str, float], runs: int, seed: int) -> tuple[list[float], list[int]]:
    emulator, project_id, devices, _reservation = seeded_emulator(seed=seed)
    address = ipaddress.IPv4Address(EIP)
    seconds, calls = [], []
    with MetalEmulatorThread(emulator) as thread:
        names = sorted(devices)
        controllers = {}
        for name in names:
            client = MetalClient(Secret(TOKEN), thread.api_url)
            controllers[name] = ElasticIp(client, project_id, Device(devices[name], name), address, period=5.0)
            controllers[name].start()
        leader = names[0]
        controllers[leader].set_leading(True)
        while emulator.assignments_of(EIP) != [devices[leader]]:
            time.sleep(0.01)
        emulator.set_fault(**fault)  # type: ignore[arg-type]
        for run in range(runs):
            old, new = leader, names[(names.index(leader) + 1) % len(names)]
            controllers[old].set_leading(False)  # crashed: no write from it
            before = controllers[new].client.calls
            started = time.monotonic()
            controllers[new].set_leading(True)
            while emulator.assignments_of(EIP) != [devices[new]]:
                time.sleep(0.005)
            seconds.append(time.monotonic() - started)
            calls.append(controllers[new].client.calls - before)
            leader = new
            print(f"  run {run + 1}: {seconds[-1]:.3f} s, {calls[-1]} calls", file=sys.stderr)
        emulator.clear_fault()
        for controller in controllers.values():
            controller.stop()
        emulator.assert_no_violations()
    return seconds, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    runs = 3 if parser.parse_args().quick else 20
    results = {}
    for index, (name, fault) in enumerate(CASES.items()):
        print(f"{name} ...", file=sys.stderr)
        results[name] = run_case(fault, runs, seed=index)
    print(f"{'case':<38} {'runs':>4} {'p50 s':>7} {'p99 s':>7} {'max s':>7} {'calls p50':>9} {'calls max':>9}")
    for name, (seconds, calls) in results.items():
        print(f"{name:<38} {len(seconds):>4} {statistics.median(seconds):>7.3f} {_pct(seconds, 0.99):>7.3f} "
              f"{max(seconds):>7.3f} {statistics.median(calls):>9.0f} {max(calls):>9d}")
    base, slow, storm = (results[name] for name in CASES)
    print(json.dumps({
        "eip_converge_p50_s": round(statistics.median(base[0]), 3),
        "eip_converge_latency_100ms_p99_s": round(_pct(slow[0], 0.99), 3),
        "eip_converge_429_50pct_p99_s": round(_pct(storm[0], 0.99), 3),
        "eip_calls_p50": statistics.median(base[1]),
        "eip_calls_429_max": max(storm[1]),
        "runs": runs,
    }))


if __name__ == "__main__":
    main()
