"""The namespace rig: reachability, unique names, fault levers, sockets inside namespaces, and a teardown
that happens however a run ends (return, exception, failed test, SIGINT, SIGTERM; SIGKILL at the next start)."""

from __future__ import annotations

import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kubevip_testbed.rig import Rig, cleanup, netns, processes
from tests import rig_support
from tests.rig_support import require_rig

ROOT = Path(__file__).resolve().parents[1]

# A rig in a separate process: prints its prefix and the PID of a process it started inside, then waits.
CHILD = """
import time
from kubevip_testbed.rig import Rig, cleanup, netns, processes
rig = Rig(nodes=1).up()
proc = rig.spawn("n1", ["sleep", "60"])
print(rig.prefix, proc.pid, flush=True)
time.sleep(60)
"""


def _ping(rig: Rig, src: str, dst: str) -> bool:
    family = "-6" if ":" in dst else "-4"
    return rig.run(src, ["ping", family, "-c1", "-W1", dst], check=False).returncode == 0


def _eventually_pings(rig: Rig, src: str, dst: str, attempts: int = 3) -> bool:
    return any(_ping(rig, src, dst) for _ in range(attempts))


def _listed() -> set[str]:
    """Namespace names as `ip netns list` prints them (independent of the rig's own bookkeeping)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its parent counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def _flags(rig: Rig, role: str) -> list[str]:
    links = json.loads(rig.run(role, ["ip", "-json", "link", "show", "eth0"]).stdout)
    flags: list[str] = links[0]["flags"]
    return flags


def _start_child() -> tuple[subprocess.Popen[str], str, int]:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], 15)
    line = child.stdout.readline() if ready else ""
    if not line:
        child.kill()
        child.wait()
        pytest.fail("the child rig did not come up")
    prefix, pid = line.split()
    return child, prefix, int(pid)


# -- without namespaces


def test_roles_names_and_addresses_follow_the_plan() -> None:
    rig = Rig(nodes=2)
    assert re.fullmatch(rf"kvm{os.getpid()}x[0-9a-f]{{4}}", rig.prefix)
    assert rig.node_names == ["n1", "n2"]
    assert rig.ns("n2") == f"{rig.prefix}-n2"
    assert rig.ns("sw") == f"{rig.prefix}-sw"
    assert (rig.ipv4("router"), rig.ipv4("n1"), rig.ipv4("n2"), rig.ipv4("client")) == (
        "198.51.100.1", "198.51.100.11", "198.51.100.12", "198.51.100.100")
    assert (rig.ipv6("router"), rig.ipv6("n2"), rig.ipv6("client")) == (
        "2001:db8:100::1", "2001:db8:100::12", "2001:db8:100::100")
    assert rig.mac("n1") == "02:00:00:00:00:0b"
    with pytest.raises(ValueError, match="n3"):
        rig.ns("n3")
    with pytest.raises(ValueError, match="sw"):
        rig.ipv4("sw")
    assert Rig().prefix != Rig().prefix


def test_require_rig_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rig_support, "prerequisites_missing", lambda: ["not root"])
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not root"):
        require_rig()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="not root"):
        require_rig()


def test_a_namespace_is_stale_when_its_owner_is_gone_or_its_pid_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    with subprocess.Popen(["sleep", "30"]) as owner:
        name = f"kvm{owner.pid}x0000-n1"
        started = processes.started_at(owner.pid)
        assert started is not None
        monkeypatch.setattr(netns, "created_at", lambda _name: started + 1)
        assert not cleanup._owner_gone(name)  # a live owner, older than its namespace
        monkeypatch.setattr(netns, "created_at", lambda _name: started - 60)
        assert cleanup._owner_gone(name)  # the PID now belongs to a younger process: reused
        owner.kill()
    assert cleanup._owner_gone(name)
    assert not cleanup._owner_gone(f"kvm{os.getpid()}x0000-n1")
    assert not cleanup._owner_gone("someone-elses-namespace")


# -- on a rig


def test_client_reaches_every_node_over_ipv4_and_ipv6(rig: Rig) -> None:
    for node in rig.node_names:
        assert _ping(rig, "client", rig.ipv4(node)), node
        assert _ping(rig, "client", rig.ipv6(node)), node
    neighbours = json.loads(rig.run("client", ["ip", "-json", "neigh", "show", rig.ipv4("n1")]).stdout)
    assert neighbours[0]["lladdr"] == rig.mac("n1")
    assert rig.addresses("n1")[:2] == [rig.ipv4("n1"), rig.ipv6("n1")]
    assert rig.timings["up"] > 0


def test_two_rigs_up_at_once_do_not_collide(rig: Rig) -> None:
    with Rig() as other:
        assert other.prefix != rig.prefix
        assert not set(other.namespaces) & set(rig.namespaces)
        assert set(rig.namespaces) | set(other.namespaces) <= _listed()
        for each in (rig, other):
            assert _ping(each, "client", each.ipv4("n1"))
    assert not set(other.namespaces) & _listed()
    assert _ping(rig, "client", rig.ipv4("n3"))


def test_link_down_cuts_one_node_off_until_link_up(rig: Rig) -> None:
    rig.link_down("n2")
    assert not _ping(rig, "client", rig.ipv4("n2"))
    assert _ping(rig, "client", rig.ipv4("n1"))
    assert "NO-CARRIER" in _flags(rig, "n2")  # a pulled cable: the node keeps its addresses
    assert rig.ipv6("n2") in rig.addresses("n2")
    rig.link_up("n2")
    assert "LOWER_UP" in _flags(rig, "n2")
    assert _eventually_pings(rig, "client", rig.ipv4("n2"))
    assert _eventually_pings(rig, "client", rig.ipv6("n2"))


def test_block_drops_one_tcp_port_until_unblocked(rig: Rig) -> None:
    router = rig.ipv4("router")
    port = rig.listen_socket("router", router, 0).getsockname()[1]
    rig.block("n1", router, port)
    rig.block("n1", router, port)  # idempotent: still one rule per direction
    ruleset = json.loads(rig.run("n1", ["nft", "-json", "list", "ruleset"]).stdout)["nftables"]
    rules = [item for item in ruleset if item.get("rule", {}).get("table") == "kvm_block"]
    assert len(rules) == 4  # per direction: the block, and neighbour discovery let through
    with pytest.raises(TimeoutError):  # dropped on the wire: a time-out, as in a partition
        rig.connect_socket("n1", router, port, timeout=1)
    rig.connect_socket("n2", router, port, timeout=2).close()
    assert _ping(rig, "n1", router)  # only that port is blocked
    rig.unblock("n1")
    rig.unblock("n1")
    rig.connect_socket("n1", router, port, timeout=2).close()


def test_block_whole_host_over_both_families(rig: Rig) -> None:
    rig.block("n3", rig.ipv4("router"))
    rig.block("n3", rig.ipv6("router"))
    assert not _ping(rig, "n3", rig.ipv4("router"))
    assert not _ping(rig, "n3", rig.ipv6("router"))
    assert _ping(rig, "n3", rig.ipv4("client"))
    rig.unblock("n3")
    assert _ping(rig, "n3", rig.ipv4("router"))
    assert _ping(rig, "n3", rig.ipv6("router"))


def test_listen_socket_in_router_accepts_a_node(rig: Rig) -> None:
    code = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 5).sendall(b'hello')"
    for address, peer in ((rig.ipv4("router"), rig.ipv4("n3")), (rig.ipv6("router"), rig.ipv6("n3"))):
        listener = rig.listen_socket("router", address, 0)  # the address exists only in the router namespace
        listener.settimeout(5)
        rig.run("n3", [sys.executable, "-I", "-S", "-c", code, address, str(listener.getsockname()[1])])
        conn, remote = listener.accept()
        with conn:
            assert conn.recv(16) == b"hello"
        assert remote[0] == peer
        listener.close()


def test_next_start_removes_what_a_sigkilled_run_left(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    child, prefix, sleeper = _start_child()
    child.send_signal(signal.SIGKILL)
    assert child.wait(10) == -signal.SIGKILL
    leftovers = {name for name in _listed() if name.startswith(prefix + "-")}
    assert len(leftovers) == 4  # n1, client, router, sw: nobody will ever tear them down
    assert not _gone(sleeper)
    caplog.set_level(logging.INFO, logger="kubevip_testbed.rig")
    with Rig(nodes=1):
        assert not leftovers & _listed()
    assert _gone(sleeper)
    assert any(record.getMessage() == "rig.stale_removed" for record in caplog.records)
    assert set(rig.namespaces) <= _listed()  # a live rig is never stale
    assert _ping(rig, "client", rig.ipv4("n1"))


# -- teardown, however the run ends


def test_teardown_stops_processes_and_removes_namespaces() -> None:
    require_rig()
    with Rig(nodes=1, grace=0.3) as rig:
        polite = rig.spawn("n1", ["sleep", "60"])
        stubborn = rig.spawn("client", ["sh", "-c", "trap '' TERM; sleep 60; :"])  # ignores SIGTERM
        orphan = int(rig.run("router", ["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"]).stdout)
        namespaces = rig.namespaces
        pids = [polite.pid, stubborn.pid, orphan]
        assert set(namespaces) <= _listed()
        assert not any(_gone(pid) for pid in pids)
    assert all(_gone(pid) for pid in pids)
    assert (polite.returncode, stubborn.returncode) == (-signal.SIGTERM, -signal.SIGKILL)
    assert not set(namespaces) & _listed()
    assert rig.timings["down"] >= 0.3  # the stubborn one had its grace before SIGKILL


def test_teardown_runs_when_the_body_raises() -> None:
    require_rig()
    with pytest.raises(RuntimeError, match="boom"), Rig(nodes=1) as rig:
        namespaces = rig.namespaces
        raise RuntimeError("boom")
    assert not set(namespaces) & _listed()


def test_sigterm_tears_down_a_rig_in_another_process() -> None:
    require_rig()
    child, prefix, sleeper = _start_child()
    child.send_signal(signal.SIGTERM)
    assert child.wait(10) == -signal.SIGTERM  # still dies of the signal, after tearing down
    assert not any(name.startswith(prefix + "-") for name in _listed())
    assert _gone(sleeper)


def test_fixture_tears_down_after_a_failed_and_an_interrupted_test(tmp_path: Path) -> None:
    require_rig()
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.rig_support"]\n')
    (tmp_path / "test_inner.py").write_text(textwrap.dedent("""
        import os, signal, time
        from pathlib import Path

        def _record(rig):
            with Path(__file__).with_name("names.txt").open("a") as f:
                f.write(" ".join(rig.namespaces) + "\\n")

        def test_fails(rig):
            _record(rig)
            raise AssertionError("the body failed")

        def test_interrupted(rig):
            _record(rig)
            # a Ctrl-C, even where the run was started with SIGINT ignored (a background job of a script)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(10)
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == pytest.ExitCode.INTERRUPTED, result.stdout + result.stderr
    assert "1 failed" in result.stdout
    recorded = (tmp_path / "names.txt").read_text().split()
    assert len(recorded) == 12
    assert not set(recorded) & _listed()


def test_timings_are_measured() -> None:
    require_rig()
    started = time.monotonic()
    with Rig() as rig:
        pass
    assert 0 < rig.timings["up"] + rig.timings["down"] <= time.monotonic() - started
