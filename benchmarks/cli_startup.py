"""How long `kube-vip-metal manifest pod ...` takes, wall time, as an operator runs it.

Prints a table, then one JSON line with the headline figures. `--quick` runs 10 times, the full run 60.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ARGS = ["manifest", "pod", "--interface", "eth0", "--address", "192.0.2.10", "--controlplane", "--arp",
        "--leaderElection"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    runs = 10 if parser.parse_args().quick else 60
    script = shutil.which("kube-vip-metal") or f"{sys.prefix}/bin/kube-vip-metal"
    if not os.access(script, os.X_OK):
        raise SystemExit("cli_startup.py: cannot run: the kube-vip-metal command is not installed; "
                         "`bash benchmarks/prerequisites.sh` installs every benchmark prerequisite "
                         "(then run it with .venv/bin/python)")
    commands = {"console script": [script, *ARGS], "version": [script, "version"]}
    results: dict[str, list[float]] = {}
    for name, command in commands.items():
        subprocess.run(command, capture_output=True, check=True)  # warm the page cache
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            samples.append(time.perf_counter() - start)
        results[name] = samples
    print(f"{'command':<16} {'runs':>5} {'p50 s':>8} {'p95 s':>8} {'max s':>8}")
    for name, samples in results.items():
        ordered = sorted(samples)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        print(f"{name:<16} {len(samples):>5} {statistics.median(samples):>8.3f} {p95:>8.3f} {max(samples):>8.3f}")
    pod = sorted(results["console script"])
    print(json.dumps({"manifest_pod_p50_s": round(statistics.median(pod), 4),
                      "manifest_pod_max_s": round(pod[-1], 4), "runs": runs}))


if __name__ == "__main__":
    main()
