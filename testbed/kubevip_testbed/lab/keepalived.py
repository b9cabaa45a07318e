"""keepalived (VRRP) on the rig's nodes: the reference our failover is measured against.

One keepalived per node namespace, VRRP subsystem only, in the foreground (`-n`; it still forks a VRRP
child), logging to a file, with pid files of its own: the defaults are shared paths, so two instances on one
machine would otherwise find each other's pid file and refuse to start. Every node starts as BACKUP with
`nopreempt` and a distinct priority, so a restarted node never takes the VIP back (as our Lease never does)
and a master's death has exactly one successor (the highest surviving priority), not a tie.

    ka = Keepalived(rig, "n1", workdir, VrrpConfig(vip="198.51.100.10", version=3, advert_int=0.1), 200)
    ka.start(); ...; ka.kill()       # SIGKILL of the parent and the VRRP child: a crash
    ka.terminate()                   # SIGTERM: priority-0 advert, VIP removed, exit
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubevip_testbed.rig import Rig
from kubevip_testbed.rig.processes import alive

_STATE = re.compile(r"\(VI_1\) Entering (\w+) STATE")


class KeepalivedError(RuntimeError):
    """keepalived is missing, refused its configuration, or did not start."""


@dataclass(frozen=True)
class VrrpConfig:
    vip: str
    version: int = 2
    advert_int: float = 1.0
    interface: str = "eth0"
    router_id: int = 51

    @property
    def master_down(self) -> float:
        """An upper bound of RFC 5798's Master_Down_Interval (3 x advert + skew, and skew < advert): the longest
        a backup waits for a silent master."""
        return 3 * self.advert_int + self.advert_int


def render(node: str, priority: int, config: VrrpConfig) -> str:
    prefix = 32 if ":" not in config.vip else 128
    return (f"global_defs {{\n  router_id {node}\n}}\n"
            f"vrrp_instance VI_1 {{\n  state BACKUP\n  nopreempt\n  interface {config.interface}\n"
            f"  virtual_router_id {config.router_id}\n  priority {priority}\n  advert_int {config.advert_int:g}\n"
            f"  version {config.version}\n"
            f"  virtual_ipaddress {{\n    {config.vip}/{prefix} dev {config.interface}\n  }}\n}}\n")


def binary() -> str:
    found = shutil.which("keepalived")
    if found is None:
        raise KeepalivedError("keepalived not found (apt-get install --no-install-recommends keepalived)")
    return found


class Keepalived:
    """One keepalived in `node`'s namespace; its files live in `workdir`."""

    def __init__(self, rig: Rig, node: str, workdir: Path, config: VrrpConfig, priority: int) -> None:
        self.rig, self.node, self.config, self.priority = rig, node, config, priority
        self.conf = workdir / f"keepalived-{node}.conf"
        self.log = workdir / f"keepalived-{node}.log"
        self.pidfiles = {flag: workdir / f"keepalived-{node}.{kind}.pid"
                         for flag, kind in (("-p", "main"), ("-r", "vrrp"), ("-c", "checkers"), ("-b", "bfd"))}
        self.process: subprocess.Popen[Any] | None = None
        self.started_at = 0.0
        self._log_offset = 0

    def write_config(self) -> None:
        self.conf.write_text(render(self.node, self.priority, self.config))
        result = subprocess.run([binary(), "-t", "-l", "-f", str(self.conf)], capture_output=True, text=True,
                                timeout=30)
        if result.returncode:
            raise KeepalivedError(f"keepalived refused {self.conf}: {(result.stderr or result.stdout).strip()}")

    def start(self) -> subprocess.Popen[Any]:
        if self.running():
            raise KeepalivedError(f"keepalived on {self.node} is running already")
        for path in self.pidfiles.values():  # a stale pid file from a SIGKILL could name a reused PID
            path.unlink(missing_ok=True)
        argv = [binary(), "-n", "-l", "-D", "-G", "-P", "-f", str(self.conf)]
        for flag, path in self.pidfiles.items():
            argv += [flag, str(path)]
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("a") as log:
            self.process = self.rig.spawn(self.node, argv, stdout=log, stderr=subprocess.STDOUT)
        self.started_at = time.monotonic()
        return self.process

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def vrrp_pid(self, timeout: float = 5.0) -> int:
        """The VRRP child's PID (waits for its pid file after a start)."""
        deadline = time.monotonic() + timeout
        path = self.pidfiles["-r"]
        while True:
            with contextlib.suppress(OSError, ValueError):
                pid = int(path.read_text().strip())
                if alive(pid):
                    return pid
            if time.monotonic() > deadline:
                raise KeepalivedError(f"keepalived on {self.node}: no live VRRP child in {path}")
            time.sleep(0.01)

    def states(self) -> list[str]:
        """The VRRP states entered since the last start, oldest first (BACKUP, MASTER, FAULT)."""
        if not self.log.exists():
            return []
        with self.log.open("rb") as log:
            log.seek(self._log_offset)
            text = log.read().decode(errors="replace")
        return _STATE.findall(text)

    def kill(self) -> None:
        """A crash: SIGKILL of the parent and of the VRRP child; nothing is cleaned up (the VIP stays)."""
        if self.process is None:
            return
        child = self.vrrp_pid(timeout=1.0) if self.running() else None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        self.process.wait(5)
        self._wait_gone(child, 5.0)
        self.process = None

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM: keepalived sends priority 0, removes the VIP and exits (it takes about a second)."""
        if self.process is None:
            return 0
        child = self.vrrp_pid(timeout=1.0) if self.running() else None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._wait_gone(child, timeout)
        self.process = None
        return code

    @staticmethod
    def _wait_gone(pid: int | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while pid is not None and alive(pid):
            if time.monotonic() > deadline:
                raise KeepalivedError(f"keepalived VRRP child {pid} still alive after {timeout} s")
            time.sleep(0.01)
