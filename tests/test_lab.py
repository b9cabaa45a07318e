"""`kube-vip-metal lab` runs its failover scenario end to end and leaves nothing behind: not at its end, not when
its rig cannot be built, and not when a signal (Ctrl-C, SIGTERM, SIGHUP) stops it at any point."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kubevip_testbed.lab.cluster import LabCluster, LabError
from kubevip_testbed.rig import RigError, cleanup_stale
from kubevip_testbed.rig.netns import names
from tests.conftest import CLI, clean_env, run_cli
from tests.rig_support import require_rig

# the CLI with one rig step made to fail after the namespaces exist: the router's nftables ruleset is refused
BROKEN_RIG = """
import sys
from kubevip_testbed.rig import topology
topology.ROUTER_NFT = "this is not an nftables ruleset\\n"
from kubevip_metal.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


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
    assert set(names()) <= before  # every namespace it made is gone
    cleanup_stale()


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
