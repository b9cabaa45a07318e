"""DHCP + dynamic DNS in the rig: Debian's dnsmasq in the router namespace leases addresses on the LAN and
answers, under `rig.test`, the host name each client sent; a lab whose managers run `--ddns --address
vip.rig.test`.

    with DdnsLab(timers=...) as lab:
        lab.start_all()
        lab.dns.query("vip.rig.test")      # the leader's leased address, registered by dnsmasq

dnsmasq's minimum lease time is two minutes; T1 and T2 are sent shorter (options 58/59) so a renewal and a
rebind happen within seconds. `no-ping`: dnsmasq would otherwise ping an address before its first offer (3 s).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from kubevip_testbed.dns import DOMAIN, NAME, Dnsmasq
from kubevip_testbed.lab.cluster import LabCluster
from kubevip_testbed.rig import Rig

POOL = ("198.51.100.150", "198.51.100.199")


class DhcpDnsmasq(Dnsmasq):
    """dnsmasq as the LAN's DHCP server and its DNS for the leased host names."""

    def __init__(self, rig: Rig, workdir: Path, *, lease: int = 120, t1: int = 4, t2: int = 8) -> None:
        super().__init__(rig, workdir)
        self.lease, self.t1, self.t2 = lease, t1, t2
        self.leases = workdir / "dnsmasq.leases"

    def start(self, records: Any = None) -> DhcpDnsmasq:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.leases.touch()
        conf = self.workdir / "dnsmasq.conf"
        conf.write_text("\n".join([
            "interface=eth0", "bind-interfaces", "except-interface=lo", "port=53", "no-resolv", "no-hosts",
            f"domain={DOMAIN}", f"local=/{DOMAIN}/", "local-ttl=0",
            f"dhcp-range={POOL[0]},{POOL[1]},255.255.255.0,{self.lease}",
            f"dhcp-option=option:T1,{self.t1}", f"dhcp-option=option:T2,{self.t2}",
            f"dhcp-leasefile={self.leases}", "dhcp-authoritative", "no-ping", "log-dhcp", "log-queries", ""]))
        argv = ["dnsmasq", "--keep-in-foreground", f"--conf-file={conf}", "--pid-file=", "--user=root",
                "--group=root", f"--log-facility={self.log}"]
        self.process = self.rig.spawn(self.role, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def restart(self) -> None:
        self.stop()
        self.start()

    def leased(self) -> list[str]:
        """The lease file's lines: `expiry mac address hostname client-id`."""
        return [line for line in self.leases.read_text().splitlines() if line.strip()]


class DdnsLab(LabCluster):
    """A LabCluster whose managers get the control-plane VIP by DHCP (`--ddns --address vip.rig.test`).
    `vip` is the address last seen leased (what `holders()`, `probe()` and `client_mac()` look at)."""

    def __init__(self, nodes: int = 3, *, name: str = NAME, lease: int = 120, t1: int = 4, t2: int = 8,
                 **kwargs: Any) -> None:
        super().__init__(nodes, vip=POOL[0], **kwargs)
        self.name = name
        self.lease_args = {"lease": lease, "t1": t1, "t2": t2}
        self.dns: DhcpDnsmasq | None = None

    def __enter__(self) -> DdnsLab:
        self.up()
        return self

    def _set_up(self) -> None:
        super()._set_up()
        self.dns = DhcpDnsmasq(self.rig, self.workdir / "dns", **self.lease_args).start()
        for node in self.nodes:
            self.rig.use_nameservers(node, self.dns.address)

    def manager_argv(self, node: str) -> list[str]:
        argv = super().manager_argv(node)
        argv[argv.index("--address") + 1] = self.name
        return [*argv, "--ddns"]
