"""A three-node cluster network with real managers, for the `lab` command, the tests and the benchmarks.

The Kubernetes API (the emulator by default, or any `ApiBackend`, such as a real kube-apiserver behind a fault
proxy in the tests) serves inside the router namespace (198.51.100.1:6443, so a node cut off by nftables really
loses it). Each node runs a real `kube-vip-metal manager` process with its
own token. `holders()` reads every node's addresses through netlink (about 0.3 ms a node), so a sampler can
prove that the VIP is never on two nodes at once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubevip_metal.options import OPTIONS
from kubevip_testbed.lab.api_backend import ApiBackend, EmulatorBackend
from kubevip_testbed.rig import Rig, RigError

API_PORT = 6443
METAL_PORT = 8080
METAL_EIP = "198.51.100.200"
METAL_TOKEN = "lab-metal-token-not-secret"
LEASE = ("kube-system", "plndr-cp-lock")


def _clean_environment() -> dict[str, str]:
    names = {name for option in OPTIONS for name in option.env}
    return {key: value for key, value in os.environ.items() if key not in names}


class LabError(RuntimeError):
    """The lab could not be set up; what had been started is already stopped and removed."""


class LabCluster:
    """Rig + emulator + managers. Use as a context manager; everything started is stopped on exit."""

    def __init__(self, nodes: int = 3, vip: str | None = None, timers: Sequence[float] = (5, 3, 1),
                 extra_args: Sequence[str] = (), metal: bool = False, keep_workdir: bool = False,
                 api: ApiBackend | None = None, mode_args: Sequence[str] | None = None) -> None:
        """`mode_args` replace the announcement mode's flags (default `--arp --interface eth0`, or the Metal
        Elastic IP mode with `metal`), e.g. `--bgp --leaderElection --bgppeers ...` against a BIRD router."""
        self.mode_args = list(mode_args) if mode_args is not None else None
        self.rig = Rig(nodes=nodes)
        self.keep_workdir = keep_workdir  # the managers' logs and kubeconfigs, for a post-mortem
        self.metal = metal
        self.vip = vip or (METAL_EIP if metal else "198.51.100.10")
        self.timers = tuple(timers)
        self.extra_args = list(extra_args)
        self.api: ApiBackend = api if api is not None else EmulatorBackend()
        self.workdir = Path(tempfile.mkdtemp(prefix="kube-vip-lab-"))  # last: nothing after it can fail
        self._api_started = False
        self.metal_api: Any = None  # MetalEmulatorThread in --metal mode
        self.metal_project = ""
        self.metal_devices: dict[str, str] = {}
        self.managers: dict[str, subprocess.Popen[Any]] = {}
        self._netns: dict[str, Any] = {}
        self._netns_lock = threading.Lock()  # netlink handles are not thread-safe; samplers run in threads

    @property
    def nodes(self) -> list[str]:
        return self.rig.node_names

    def __enter__(self) -> LabCluster:
        return self.up()

    def __exit__(self, *_exc: object) -> None:
        self.down()

    def up(self) -> LabCluster:
        """Build the rig, start the API (and the Metal emulator) and write the kubeconfigs. On any failure what was
        started is stopped and the work directory removed before the error propagates; a set-up failure (the rig,
        a socket, a command) becomes a one-line LabError."""
        try:
            self._set_up()
        except BaseException as exc:
            self.keep_workdir = False  # nothing ran yet that a post-mortem would need
            self.down()
            if isinstance(exc, RigError | OSError | subprocess.SubprocessError):
                raise LabError(f"could not set up the lab: {exc}") from exc
            raise
        return self

    def _set_up(self) -> None:
        self.rig.up()
        api_socket = self.rig.listen_socket("router", self.rig.ipv4("router"), API_PORT)
        server = self.api.start(self.nodes, api_socket)
        self._api_started = True
        for node in self.nodes:
            self.api.write_kubeconfig(node, self.kubeconfig(node), server)
        if self.metal:
            self._start_metal()

    def _start_metal(self) -> None:
        """The Metal API emulator in the router namespace: one project, a device per node, one Elastic IP."""
        from kubevip_testbed.emulators.metalapi import MetalApiEmulator, MetalEmulatorThread

        emulator = MetalApiEmulator(METAL_TOKEN, validate=None)  # validated when openapi-core is installed
        self.metal_project = emulator.add_project("kube-vip-metal-lab")
        self.metal_devices = {node: emulator.add_device(self.metal_project, node, private_ipv4=self.rig.ipv4(node),
                                                        public_ipv6=self.rig.ipv6(node))
                              for node in self.nodes}  # the node's own addresses: BGP's customer_ip
        emulator.add_reservation(self.metal_project, f"{self.vip}/32", ("kube-vip-metal-lab",))
        sock = self.rig.listen_socket("router", self.rig.ipv4("router"), METAL_PORT)
        self.metal_api = MetalEmulatorThread(emulator, listen=(), sockets=[sock])
        self.metal_api.start()
        key = self.workdir / "metal-token"
        key.write_text(METAL_TOKEN)
        key.chmod(0o600)

    def enable_metal_bgp(self, asn: int = 65000, md5: str | None = None) -> None:
        """Local BGP on the lab's Metal project (`metal project bgp-enable`): each device's neighbours are then
        Metal's two peers 169.254.255.1 and .2 in AS 65530, once its session exists."""
        assert self.metal_api is not None, "the lab runs without --metal"
        self.metal_api.emulator.enable_project_bgp(self.metal_project, asn=asn, md5=md5)

    def eip_holders(self) -> list[str]:
        """Nodes whose device holds the Elastic IP in the Metal emulator."""
        if self.metal_api is None:
            return []
        held = set(self.metal_api.emulator.assignments_of(self.vip))
        return [node for node, device in self.metal_devices.items() if device in held]

    def down(self) -> None:
        for node in list(self.managers):
            self.kill(node)
        with self._netns_lock:
            for handle in self._netns.values():
                handle.close()
            self._netns.clear()
        if self._api_started:
            self.api.stop()
            self._api_started = False
        if self.metal_api is not None:
            self.metal_api.stop()
            self.metal_api = None
        self.rig.down()
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kubeconfig(self, node: str) -> Path:
        return self.workdir / f"{node}.kubeconfig"

    def log_path(self, node: str) -> Path:
        return self.workdir / f"{node}.log"

    def manager_argv(self, node: str) -> list[str]:
        lease, renew, retry = self.timers
        router = self.rig.ipv4("router")
        mode = ["--arp", "--interface", "eth0"] if self.mode_args is None else self.mode_args
        if self.metal:  # the Elastic IP mode (or, with mode_args, e.g. --bgp: peers from the Metal API); the
            # metadata service is unreachable here, so the device is found by host name
            mode = ["--metal", "--metalKeyFile", str(self.workdir / "metal-token"), "--metalProjectID",
                    self.metal_project, "--metalAPIURL", f"http://{router}:{METAL_PORT}/metal/v1",
                    "--metalMetadataURL", f"http://{router}:9/metadata", *(self.mode_args or [])]
        return [sys.executable, "-m", "kubevip_metal", "manager", "--controlplane", *mode, "--address", self.vip,
                "--k8sConfigPath", str(self.kubeconfig(node)), "--nodeName", node,
                "--leaseDuration", f"{lease:g}", "--leaseRenewDuration", f"{renew:g}", "--leaseRetry", f"{retry:g}",
                "--log-format", "json", "--prometheusHTTPServer", "", *self.extra_args]

    def start(self, node: str) -> subprocess.Popen[Any]:
        log = self.log_path(node).open("a")
        process = self.rig.spawn(node, self.manager_argv(node), stdout=subprocess.DEVNULL, stderr=log,
                                 env=_clean_environment())
        log.close()
        self.managers[node] = process
        return process

    def kill(self, node: str) -> None:
        """A crash: SIGKILL, no clean-up runs (the VIP stays on the interface, the Lease is not released)."""
        process = self.managers.pop(node, None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5)

    def terminate(self, node: str, timeout: float = 5) -> int:
        process = self.managers.pop(node)
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout)

    def events(self, node: str) -> list[dict[str, Any]]:
        """The manager's JSON log lines (all its runs), oldest first."""
        out = []
        path = self.log_path(node)
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def holders(self, vip: str | None = None) -> list[str]:
        """Nodes that hold the VIP on an interface right now (eth0, or lo in the Elastic IP mode)."""
        vip = vip or self.vip
        with self._netns_lock:
            return self._holders(vip)

    def _holders(self, vip: str) -> list[str]:
        found = []
        for node in self.nodes:
            handle = self._netns.get(node)
            if handle is None:
                from pyroute2 import NetNS

                handle = self._netns[node] = NetNS(self.rig.ns(node))
            if any(entry.get_attr("IFA_ADDRESS") == vip for entry in handle.get_addr()):
                found.append(node)
        return found

    def lease_holder(self) -> str:
        return self.api.lease_holder(*LEASE)

    def client_mac(self, vip: str | None = None) -> str | None:
        """The MAC the client's neighbour table has for the VIP (which node the client talks to)."""
        result = self.rig.run("client", ["ip", "-j", "neigh", "show", vip or self.vip], check=False)
        try:
            entries = json.loads(result.stdout or "[]")
        except ValueError:
            return None
        return str(entries[0].get("lladdr")) if entries and entries[0].get("lladdr") else None

    def node_of_mac(self, mac: str | None) -> str | None:
        return next((node for node in self.nodes if mac and self.rig.mac(node) == mac), None)

    def probe(self, target: str | None = None, interval: float = 0.005) -> subprocess.Popen[str]:
        return self.rig.spawn("client", [sys.executable, "-m", "kubevip_testbed.lab.probe", target or self.vip,
                                         "--interval", str(interval)], stdout=subprocess.PIPE, text=True,
                              env=_clean_environment())
