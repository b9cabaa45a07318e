"""`kube-vip-metal lab` runs its failover scenario end to end and leaves nothing behind: not at its end, not when
its rig cannot be built, and not when a signal (Ctrl-C, SIGTERM, SIGHUP) stops it at any point."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from kubevip_testbed import bird as bird_driver
from kubevip_testbed.lab.cluster import LabCluster, LabError
from kubevip_testbed.rig import RigError, cleanup_stale
from kubevip_testbed.rig.netns import names
from tests.conftest import CLI, clean_env, run_cli
from tests.rig_support import require, require_rig

# the CLI with one rig step made to fail after the namespaces exist: the router's nftables ruleset is refused
BROKEN_RIG = """
import sys
from kubevip_testbed.rig import topology
topology.ROUTER_NFT = "this is not an nftables ruleset\\n"
from kubevip_metal.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def _left_behind(before: set[str]) -> list[str]:
    """Namespaces made since `before` by a process that has exited (a rig's are `kvm<pid>x...`): another rig running
    at the same time (a parallel test run) is not this lab's leftover."""
    left = []
    for name in set(names()) - before:
        owner = re.match(r"kvm(\d+)x", name)
        if owner is None or not Path(f"/proc/{owner.group(1)}").exists():
            left.append(name)
    return sorted(left)


def test_lab_shows_a_crash_and_a_graceful_hand_over() -> None:
    require_rig()
    before = set(names())
    result = run_cli(["lab", "--timers", "1,0.75,0.2"], timeout=120)
    assert result.returncode == 0, result.stderr
    assert "CRASH" in result.stdout and "SIGTERM" in result.stdout
    crash = re.search(r"crash of the leader\s+outage\s+(\d+) ms", result.stdout)
    graceful = re.search(r"graceful hand-over\s+outage\s+<?\s*(\d+) ms", result.stdout)
    assert crash and graceful, result.stdout
    assert int(crash.group(1)) < 3000  # seen by the client, bounded by the 1 s lease plus detection
    assert not _left_behind(before)  # every namespace it made is gone
    cleanup_stale()


# the CLI on a machine without BIRD: `shutil.which` finds neither bird nor birdc
NO_BIRD = """
import shutil, sys
found = shutil.which
shutil.which = lambda name, *args, **kw: None if name in ("bird", "birdc") else found(name, *args, **kw)
from kubevip_metal.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_lab_bgp_shows_the_router_fib_follow_the_leader() -> None:
    """The VIP by BGP to BIRD: the timeline shows which node the router's FIB forwards to; after the crash the dead
    leader's session and route linger (hold 30 s) while the FIB already forwards to the new leader (its lower MED),
    so the client's outage is about the 1 s lease; nothing is left behind, not even the crashed manager's ExaBGP
    work directory."""
    require_rig()
    require("BIRD 2", bird_driver.missing())
    before = set(names())
    tmp = Path(tempfile.mkdtemp(prefix="kvm-labtest-"))  # short: ExaBGP's unix socket path lives under TMPDIR
    try:
        result = run_cli(["lab", "--bgp", "--timers", "1,0.75,0.2"], env={"TMPDIR": str(tmp)}, timeout=120)
        left = sorted(path.name for path in tmp.iterdir())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "VIP 203.0.113.10 by BGP" in out and "CRASH" in out and "SIGTERM" in out, out
    crashed = re.search(r"CRASH (n\d): cable pulled and SIGKILL", out)
    assert crashed, out
    dead = crashed.group(1)
    after_crash = out[crashed.end():out.index("STOP ")]
    moved = re.search(rf"lease holder (n\d)\s+VIP on \S*\s+router FIB -> (n\d)\s+BGP routes \(best first\) from "
                      rf"\1,{dead}\(dead\)", after_crash)
    assert moved and moved.group(1) == moved.group(2) != dead, out  # the new leader's route wins; the dead one lingers
    assert f"{dead}'s session still Established, its route still at the router" in out, out
    crash = re.search(r"crash of the leader\s+outage\s+(\d+) ms", out)
    graceful = re.search(r"graceful hand-over\s+outage\s+<?\s*(\d+) ms", out)
    assert crash and graceful, out
    assert int(crash.group(1)) < 3000  # the lease (1 s) plus detection, not the hold time (30 s)
    assert int(graceful.group(1)) < 1000
    assert left == []  # no lab directory, no BIRD directory, no ExaBGP work directory
    assert not _left_behind(before)
    cleanup_stale()


def test_lab_metal_bgp_shows_both_metal_routers_follow_the_leader() -> None:
    """Metal's BGP mode, no Elastic IP assigned: the managers take their peers from the Metal API emulator (project
    BGP enabled, each device's session created by the daemon) and peer with both of Metal's routers, a BIRD each
    (169.254.255.1 on router, .2 on router2, AS 65530, the project's MD5 password, multihop). The timeline shows
    both routers' FIBs and BIRD routes on the leader before the crash, on the new leader after it (the dead one's
    route lingering at both) and on a third node after the graceful hand-over; nothing is left behind."""
    require_rig()
    require("BIRD 2", bird_driver.missing())
    from kubevip_testbed.lab.run import METAL_MD5

    before = set(names())
    tmp = Path(tempfile.mkdtemp(prefix="kvm-labtest-"))  # short: ExaBGP's unix socket path lives under TMPDIR
    try:
        result = run_cli(["lab", "--metal", "--bgp", "--timers", "1,0.75,0.2"], env={"TMPDIR": str(tmp)},
                         timeout=180)
        left = sorted(path.name for path in tmp.iterdir())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Elastic IP 203.0.113.10 by BGP, peers from the Metal API" in out, out
    assert "169.254.255.1 on router, 169.254.255.2 on router2" in out and "AS 65530, MD5, multihop" in out, out

    def at_both(leader: str, routes: str) -> str:  # one timeline line: both FIBs on the leader, BIRDs' routes
        return (rf"lease holder {leader}\s+VIP on \S*\s+router FIB -> {leader}\s+BGP {routes}\s+"
                rf"router2 FIB -> {leader}\s+BGP {routes}\s*$")

    crashed = re.search(r"CRASH (n\d): cable pulled and SIGKILL", out)
    assert crashed, out
    dead = crashed.group(1)
    assert re.search(at_both(dead, dead), out[:crashed.start()], re.M), out  # both routers used the leader's route
    stopped = re.search(r"STOP (n\d): SIGTERM", out)
    assert stopped, out
    second = stopped.group(1)
    assert second != dead, out
    after_crash = out[crashed.end():stopped.start()]
    assert re.search(at_both(second, rf"{second},{dead}\(dead\)"), after_crash, re.M), out  # the dead route lingers
    third = next(node for node in ("n1", "n2", "n3") if node not in (dead, second))
    assert re.search(at_both(third, rf"{third},{dead}\(dead\)"), out[stopped.end():], re.M), out
    assert f"{dead}'s sessions still Established at router and router2, its routes still at both" in out, out
    crash = re.search(r"crash of the leader\s+outage\s+(\d+) ms", out)
    graceful = re.search(r"graceful hand-over\s+outage\s+<?\s*(\d+) ms", out)
    assert crash and graceful, out
    assert int(crash.group(1)) < 3000  # the lease (1 s) plus detection, not the hold time (30 s)
    assert int(graceful.group(1)) < 1000
    assert METAL_MD5 not in out + result.stderr
    assert left == []  # no lab directory, no BIRD directory, no ExaBGP work directory
    assert not _left_behind(before)  # router2's included
    cleanup_stale()


def test_lab_bgp_without_bird_is_one_line_naming_the_package() -> None:
    result = subprocess.run([sys.executable, "-c", NO_BIRD, "lab", "--bgp"], capture_output=True, text=True,
                            env=clean_env(), timeout=30)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "apt-get install bird2" in result.stderr, result.stderr


def test_lab_rejects_bad_timers() -> None:
    result = run_cli(["lab", "--timers", "1,1,1"])
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "--timers" in result.stderr


def test_lab_needs_no_kubernetes_flags() -> None:
    result = run_cli(["lab", "--help"])
    assert result.returncode == 0 and "--keep" in result.stdout


def test_a_lab_whose_rig_cannot_be_built_removes_its_work_directory(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    """`LabCluster.up` undoes a partial set-up itself: a `with` block never reaches `__exit__` when entering fails."""
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    lab = LabCluster()

    def refuse() -> None:
        raise RigError("mount --make-rslave / failed: Invalid argument")

    monkeypatch.setattr(lab.rig, "up", refuse)
    assert lab.workdir.is_dir()
    with pytest.raises(LabError, match=r"^could not set up the lab: mount --make-rslave / failed"), lab:
        pass
    assert not lab.workdir.exists() and not list(tmp_path.iterdir())


def _lab_processes(workdir_parent: Path) -> list[int]:
    """PIDs whose command line names a file under `workdir_parent` (the managers name their kubeconfigs)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if str(workdir_parent).encode() in cmdline:
                found.append(int(entry))
    return found


def test_a_rig_that_cannot_be_built_is_one_line_and_exit_1_with_nothing_left(tmp_path: Path) -> None:
    require_rig()
    process = subprocess.Popen([sys.executable, "-c", BROKEN_RIG, "lab"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=clean_env({"TMPDIR": str(tmp_path)}))
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("kube-vip-metal: error: lab: could not set up the lab: ip netns exec "), err
    assert "nft -f - exited with status 1: " in err and "syntax error" in err
    assert not [name for name in names() if name.startswith(f"kvm{process.pid}x")]
    assert not list(tmp_path.glob("kube-vip-lab-*"))


@pytest.mark.parametrize(("args", "stop", "when"), [
    (["--keep"], signal.SIGTERM, "the lab keeps running"),
    (["--keep"], signal.SIGHUP, "the lab keeps running"),
    ([], signal.SIGTERM, "CRASH"),  # mid-way: a leader just crashed, its cable is out
], ids=["keep-SIGTERM", "keep-SIGHUP", "midway-SIGTERM"])
def test_a_stop_signal_removes_the_whole_lab(args: list[str], stop: signal.Signals, when: str,
                                              tmp_path: Path) -> None:
    require_rig()
    process = subprocess.Popen([*CLI, "lab", "--timers", "1,0.75,0.2", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=clean_env({"TMPDIR": str(tmp_path)}))
    lines: list[str] = []
    reached = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if when in line:
                reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    prefix = f"kvm{process.pid}x"
    try:
        assert reached.wait(90), "".join(lines)
        assert len([name for name in names() if name.startswith(prefix)]) == 6  # n1-n3, client, router, switch
        assert _lab_processes(tmp_path)  # the managers run
        process.send_signal(stop)
        code = process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    reader.join(5)
    assert process.stderr is not None
    err = process.stderr.read()
    assert code == 128 + stop, err
    assert "Traceback" not in err, err
    assert f"{stop.name}: removing the lab" in "".join(lines)
    assert not [name for name in names() if name.startswith(prefix)]
    assert not list(tmp_path.glob("kube-vip-lab-*"))
    assert not _lab_processes(tmp_path)
