"""kube-vip itself (built by build.sh from the Go module proxy) as a peer on a lab cluster's nodes, for the interop
test and the failover benchmark.

What running it takes, learnt by running it (v1.0.0 and v0.7.2):
- `manager` ignores `--k8sConfigPath`: it uses /etc/kubernetes/admin.conf if present (server rewritten to
  kubernetes:6443), else `$HOME/.kube/config` as is. Each instance gets a HOME of its own holding the node's kubeconfig.
- v1.0.0 sends Lease bodies as protobuf, so it needs the real kube-apiserver (the emulator speaks JSON only).
- v0.7.2 has no `--nodeName`: its Lease identity is the kernel host name, so it runs in a UTS namespace of its own.
- Timers are whole seconds (defaults 5/3/1). It logs text on stderr; client-go's klog lines carry microseconds.
- On SIGTERM v1.0.0 releases the Lease and deletes the VIP; v0.7.2 exits at once, leaving both. v1.0.0 exits (2)
  when it loses leadership, expecting the kubelet to restart it.

BGP mode (`KubeVipNode(..., bgp=KubeVipBgp(...))`, read from v1.0.0's sources and then run): the control plane with
`bgp_enable` and Lease election. Every node starts its embedded GoBGP and peers at once (it dials out, ConnectRetry
10 s, and never listens: the router's side may be passive); only the leader adds the VIP (on `lo` here) and its /32
path. A peer is given in the *environment* only: v1.0.0's `--bgppeers` and `--peerAddress` flags are read by its
manifest generator and never reach the BGP server, while `bgp_peers` (address:AS:password:multihop) and
`bgp_peeraddress`/`bgp_peeras` do. The router ID (`bgp_routerid`) is needed: GoBGP refuses an empty one. Hold
time and keepalive are `bgp_hold_time` / `bgp_keepalive_interval` (default 30 / 10). Stepping down (SIGTERM)
releases the Lease first, then stops GoBGP, which closes every session with a Cease NOTIFICATION (so the router
drops the route at once), then the process exits 2.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kubevip_testbed.peers.apiserver import PEERS_DIR

TESTED_VERSION = "v1.0.0"  # the newest release the Go module proxy serves (v1.0.1-v1.0.4 are refused)
METAL_VERSION = "v0.7.2"  # the newest served release with Equinix Metal code (v0.8.10 is refused)
ACQUIRED = re.compile(r"^I(\d{4}) (\d\d:\d\d:\d\d\.\d{6}) .*successfully acquired lease (\S+)")


def binary(version: str = TESTED_VERSION) -> Path:
    return PEERS_DIR / "bin" / f"kube-vip-{version}"


def missing(version: str = TESTED_VERSION) -> list[str]:
    if os.access(binary(version), os.X_OK):
        return []
    hint = f"KUBEVIP_VERSIONS={version} " if version != TESTED_VERSION else ""
    return [f"{binary(version)} not built (run {hint}tests/peers/build.sh kube-vip)"]


@dataclass(frozen=True)
class KubeVipBgp:
    """kube-vip's BGP control-plane settings: one peer (the router) and the timers, as its manifest's variables."""

    peer: str  # the router's address
    peer_as: int
    local_as: int
    hold_time: int = 30  # kube-vip's defaults
    keepalive: int = 10

    def environment(self, router_id: str) -> dict[str, str]:
        return {"bgp_enable": "true", "bgp_routerid": router_id, "bgp_as": str(self.local_as),
                "bgp_peers": f"{self.peer}:{self.peer_as}::false", "bgp_hold_time": str(self.hold_time),
                "bgp_keepalive_interval": str(self.keepalive)}


def argv(version: str, node: str, vip: str, timers: Sequence[int], interface: str | None = None,
         lease: str = "plndr-cp-lock", bgp: bool = False) -> list[str]:
    """The command line of a control-plane kube-vip with Lease election, Prometheus off: ARP mode on `eth0`, or
    with `bgp` the VIP on `lo` and no ARP (BGP itself is switched on by `KubeVipBgp.environment`)."""
    lease_duration, renew, retry = (str(int(t)) for t in timers)
    mode = [] if bgp else ["--arp"]
    command = [str(binary(version)), "manager", "--controlplane", *mode, "--leaderElection", "--address", vip,
               "--interface", interface or ("lo" if bgp else "eth0"), "--namespace", "kube-system",
               "--leaseName", lease, "--leaseDuration", lease_duration, "--leaseRenewDuration", renew,
               "--leaseRetry", retry, "--prometheusHTTPServer="]
    if version == METAL_VERSION:
        return ["unshare", "--uts", "sh", "-c", f'hostname {node} && exec "$@"', "kube-vip", *command]
    return [*command, "--nodeName", node]


def environment(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without anything that would make kube-vip look elsewhere for its API server (or
    pick up a stray kube-vip variable), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_") and k != "KUBECONFIG"
           and not k.startswith(("bgp_", "vip_", "cp_", "svc_"))}
    env["HOME"] = str(home)
    env.update(extra or {})
    return env


class KubeVipNode:
    """One kube-vip process on a lab node, restarted by hand as a kubelet would restart its static pod."""

    def __init__(self, lab: Any, node: str, version: str, timers: Sequence[int], bgp: KubeVipBgp | None = None,
                 address: str | None = None) -> None:
        """`address`: what `--address` is (a DNS name, say); default the lab's VIP."""
        self.lab, self.node, self.version, self.timers = lab, node, version, tuple(int(t) for t in timers)
        self.address = address
        self.bgp = bgp  # None: ARP mode on eth0
        self.home = Path(lab.workdir) / f"kube-vip-{node}"
        self.log_path = Path(lab.workdir) / f"{node}.kube-vip.log"
        self.process: subprocess.Popen[Any] | None = None
        self._log_offset = 0  # where the current process's log begins

    def start(self) -> subprocess.Popen[Any]:
        (self.home / ".kube").mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        shutil.copyfile(self.lab.kubeconfig(self.node), self.home / ".kube" / "config")
        with self.log_path.open("a") as log:
            extra = self.bgp.environment(self.lab.rig.ipv4(self.node)) if self.bgp is not None else None
            command = argv(self.version, self.node, self.address or self.lab.vip, self.timers,
                           bgp=self.bgp is not None)
            self.process = self.lab.rig.spawn(self.node, command, stdout=subprocess.DEVNULL, stderr=log,
                                              env=environment(self.home, extra))
        return self.process

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.kill()
            self.process.wait(5)

    def terminate(self, timeout: float = 10) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def acquisitions(self) -> list[datetime]:
        """Wall-clock times of 'successfully acquired lease' (klog, microseconds; the year is this year's)."""
        if not self.log_path.exists():
            return []
        year = datetime.now().year
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = ACQUIRED.match(line)
            if match:
                found.append(datetime.strptime(f"{year}{match[1]} {match[2]}", "%Y%m%d %H:%M:%S.%f"))
        return found

    def saw_leader(self) -> bool:
        """The current process has talked to the API server and knows who leads (a new-leader or acquired line)."""
        if not self.log_path.exists():
            return False
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            text = log.read().decode(errors="replace")
        return any(mark in text for mark in ("New leader", "successfully acquired lease", "assuming leadership"))
