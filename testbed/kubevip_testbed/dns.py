"""DNS in the rig: Debian's dnsmasq in the router namespace serving names a test changes, and a lab whose
managers are given `--address <name>` and resolve it through that dnsmasq (their namespaces' resolv.conf).

    with DnsLab(timers=...) as lab:          # vip.rig.test -> 198.51.100.10, served at 198.51.100.1:53
        lab.start_all()
        lab.move("198.51.100.20")            # the record changes (addn-hosts rewritten, SIGHUP), answered at once

dnsmasq runs in the foreground as a rig process (stopped by PID with the rig), reads only its own files
(`no-resolv`, `no-hosts`: it never forwards a query anywhere) and answers NXDOMAIN for anything else under
`rig.test`. Only `dnsmasq-base` (the binary) is needed, not the `dnsmasq` package, whose service would start
in the root namespace on a machine without policy-rc.d.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kubevip_testbed.lab.cluster import LabCluster
from kubevip_testbed.rig import Rig, RigError
from kubevip_testbed.rig import netns as rig_netns

DOMAIN = "rig.test"
NAME = f"vip.{DOMAIN}"


def dnsmasq_missing() -> list[str]:
    return [] if shutil.which("dnsmasq") else ["dnsmasq not found (apt-get install dnsmasq-base)"]


class Dnsmasq:
    """dnsmasq on `role`'s LAN address, port 53, answering from a hosts file this object rewrites."""

    def __init__(self, rig: Rig, workdir: Path, role: str = "router") -> None:
        self.rig, self.role = rig, role
        self.workdir = workdir
        self.address = rig.ipv4(role)
        self.hosts = workdir / "hosts"
        self.log = workdir / "dnsmasq.log"
        self.process: subprocess.Popen[Any] | None = None
        self.records: dict[str, tuple[str, ...]] = {}

    def start(self, records: Mapping[str, Sequence[str]]) -> Dnsmasq:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write(records)
        conf = self.workdir / "dnsmasq.conf"
        conf.write_text("\n".join([
            f"listen-address={self.address}", "bind-interfaces", "port=53", "no-resolv", "no-hosts",
            f"addn-hosts={self.hosts}", f"local=/{DOMAIN}/", "local-ttl=0", "log-queries", ""]))
        argv = ["dnsmasq", "--keep-in-foreground", f"--conf-file={conf}", "--pid-file=", "--user=root",
                "--group=root", f"--log-facility={self.log}"]
        self.process = self.rig.spawn(self.role, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = next(iter(self.records), None)
        if first is not None:
            self.wait_answers(first, self.records[first])
        return self

    def _write(self, records: Mapping[str, Sequence[str]]) -> None:
        self.records = {name: tuple(addresses) for name, addresses in records.items()}
        lines = [f"{address} {name}\n" for name, addresses in self.records.items() for address in addresses]
        temporary = self.hosts.with_suffix(".new")
        temporary.write_text("".join(lines))
        temporary.replace(self.hosts)

    def set(self, name: str, *addresses: str) -> float:
        """`name` now answers `addresses` (none: the name is gone, NXDOMAIN). Returns time.monotonic() of the
        moment the server was told (SIGHUP), after which every query gets the new answer; waits until it does."""
        self._write({**self.records, name: addresses} if addresses else
                    {k: v for k, v in self.records.items() if k != name})
        assert self.process is not None and self.process.poll() is None, "dnsmasq is not running"
        told = time.monotonic()
        self.process.send_signal(signal.SIGHUP)
        self.wait_answers(name, addresses)
        return told

    def stop(self) -> None:
        """A dead DNS server: lookups time out (nothing listens on port 53 any more)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start(self.records)

    def query(self, name: str, rdtype: str = "A", role: str = "client", timeout: float = 1.0) -> list[str]:
        """Ask the server from `role`'s namespace; [] for NXDOMAIN or no answer of that type."""
        import dns.message
        import dns.query
        import dns.rcode

        sock = rig_netns.socket_in(self.rig.ns(role), socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            response = dns.query.udp(dns.message.make_query(name, rdtype), self.address, timeout=timeout,
                                     sock=sock)
        finally:
            sock.close()
        if response.rcode() != dns.rcode.NOERROR:
            return []
        return sorted(rdata.address for rrset in response.answer for rdata in rrset if hasattr(rdata, "address"))

    def wait_answers(self, name: str, addresses: Sequence[str], timeout: float = 10.0) -> None:
        wanted = (sorted(a for a in addresses if ":" not in a), sorted(a for a in addresses if ":" in a))
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                last = (self.query(name), self.query(name, "AAAA"))
                if last == wanted:
                    return
            except Exception as exc:  # not listening yet, or a timeout: try again
                last = exc
            if time.monotonic() > deadline:
                exited = self.process.poll() if self.process is not None else None
                tail = self.log.read_text(errors="replace")[-500:] if self.log.exists() else ""
                raise RigError(f"dnsmasq did not answer {name} -> {wanted} within {timeout} s (last: {last!r}; "
                               f"exit status {exited}; log: {tail!r})")
            time.sleep(0.02)


class DnsLab(LabCluster):
    """A LabCluster whose managers follow `--address vip.rig.test`, resolved through dnsmasq in the router
    namespace. `vip` is the name's current address (what `holders()`, `probe()` and `client_mac()` look at)."""

    def __init__(self, nodes: int = 3, *, first: str = "198.51.100.10", also: Sequence[str] = (), name: str = NAME,
                 **kwargs: Any) -> None:
        """`first`: the name's address at start (`vip`); `also`: more addresses it answers (an AAAA for dual)."""
        super().__init__(nodes, vip=first, **kwargs)
        self.name, self.also = name, tuple(also)
        self.dns: Dnsmasq | None = None

    def __enter__(self) -> DnsLab:
        self.up()
        return self

    def _set_up(self) -> None:
        super()._set_up()
        self.dns = Dnsmasq(self.rig, self.workdir / "dns").start({self.name: [self.vip, *self.also]})
        for node in self.nodes:
            self.rig.use_nameservers(node, self.dns.address)

    def manager_argv(self, node: str) -> list[str]:
        argv = super().manager_argv(node)
        argv[argv.index("--address") + 1] = self.name
        return argv

    def move(self, address: str) -> float:
        """The name now answers `address`; returns when dnsmasq was told (time.monotonic())."""
        assert self.dns is not None
        told = self.dns.set(self.name, address)
        self.vip = address
        return told
