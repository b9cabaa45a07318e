"""Network namespace primitives: iproute2 batches, per-thread setns, and who runs inside a namespace.

The rig drives iproute2 (`ip -batch`, `ip -n`) rather than netlink: one process per namespace configures it,
the commands read like the shell recipe they replace, and iproute2 is needed anyway for `ip netns exec`.
Work that must happen in-process (sysctls, sockets) runs in a short-lived thread that joins the namespace:
setns(2) is per thread, so no other thread of the caller ever changes namespace.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

NETNS_DIR = Path("/run/netns")  # where `ip netns add` bind-mounts named namespaces
_CLONE_NEWNET = 0x40000000
T = TypeVar("T")


class RigError(RuntimeError):
    """A rig step failed; the message says which step and why."""


class CommandError(RigError, subprocess.CalledProcessError):
    """A command exited non-zero. Unlike CalledProcessError, its message carries the command's stderr."""

    def __init__(self, returncode: int, cmd: Sequence[str], output: str | None = None,
                 stderr: str | None = None) -> None:
        subprocess.CalledProcessError.__init__(self, returncode, list(cmd), output, stderr)

    def __str__(self) -> str:
        detail = self.stderr.strip() if isinstance(self.stderr, str) else ""
        text = f"{shlex.join(self.cmd)} exited with status {self.returncode}"
        return f"{text}: {detail}" if detail else text


def run(argv: Sequence[str], *, stdin: str | None = None, timeout: float = 30) -> str:
    """Run a command to completion; its stdout, or CommandError with its stderr."""
    result = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout)
    if result.returncode:
        raise CommandError(result.returncode, argv, result.stdout, result.stderr)
    return result.stdout


def ip_batch(lines: Sequence[str], netns: str | None = None, *, force: bool = False) -> None:
    """Run iproute2 commands (`link set lo up`, ...) in one `ip` process, inside `netns` if given."""
    argv = ["ip", *(["-n", netns] if netns else []), *(["-force"] if force else []), "-batch", "-"]
    run(argv, stdin="\n".join(lines) + "\n")


def ip_json(args: Sequence[str], netns: str | None = None) -> list[dict[str, Any]]:
    """`ip -json ARGS` inside `netns`, parsed."""
    out = run(["ip", "-json", *(["-n", netns] if netns else []), *args])
    parsed: list[dict[str, Any]] = json.loads(out) if out.strip() else []
    return parsed


def names() -> list[str]:
    """Every named namespace on the machine, as `ip netns list` shows them."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def created_at(name: str) -> float:
    """When the namespace was created (the nsfs inode's mtime, set when `ip netns add` pinned it)."""
    return os.stat(NETNS_DIR / name).st_mtime


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if sys.version_info >= (3, 12):
        os.setns(fd, os.CLONE_NEWNET)
    elif _libc().setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def call_in(name: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a fresh thread that has joined namespace `name`; the caller's thread never moves."""
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # handed to the caller's thread below
            error.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def socket_in(name: str, family: socket.AddressFamily, kind: socket.SocketKind) -> socket.socket:
    """A socket that belongs to namespace `name` (a socket keeps the namespace it was created in)."""
    return call_in(name, lambda: socket.socket(family, kind))


def write_sysctls(name: str, values: Mapping[str, str]) -> None:
    """Set sysctls inside `name`; keys are paths under /proc/sys (`net/ipv4/ip_forward`), which resolve
    per thread for the net subtree, and allow interface names that contain dots."""

    def write() -> None:
        for key, value in values.items():
            Path("/proc/sys", key).write_text(value)

    call_in(name, write)


def pids_in(namespaces: Iterable[str]) -> dict[str, list[int]]:
    """Processes whose network namespace is one of `namespaces` (what `ip netns pids` reports, in one
    pass over /proc for all of them). The calling process is never listed."""
    wanted: dict[tuple[int, int], str] = {}
    for name in namespaces:
        try:
            st = os.stat(NETNS_DIR / name)
        except FileNotFoundError:
            continue
        wanted[(st.st_dev, st.st_ino)] = name
    found: dict[str, list[int]] = {name: [] for name in wanted.values()}
    if not wanted:
        return found
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:  # exited meanwhile, or a zombie (no namespaces left)
            continue
        owner = wanted.get((st.st_dev, st.st_ino))
        if owner is not None:
            found[owner].append(int(entry))
    return found


def delete(namespaces: Iterable[str]) -> None:
    """`ip netns del` for those that exist; RigError if any is still there afterwards."""
    present = [name for name in namespaces if exists(name)]
    if not present:
        return
    failure: CommandError | None = None
    try:
        ip_batch([f"netns del {name}" for name in present], force=True)
    except CommandError as exc:  # a concurrent cleanup may have removed some first
        failure = exc
    left = [name for name in present if exists(name)]
    if left:
        raise RigError(f"could not delete namespaces {left}: {failure}")


ETC_DIR = Path("/etc/netns")  # ip-netns(8): files under /etc/netns/<name>/ are bound over /etc/ by `ip netns exec`


def write_etc(name: str, filename: str, text: str) -> None:
    """/etc/netns/<name>/<filename> (written whole, then renamed into place)."""
    directory = ETC_DIR / name
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / f".{filename}.new"
    temporary.write_text(text)
    temporary.replace(directory / filename)


def remove_etc(names: Iterable[str]) -> None:
    """Remove /etc/netns/<name>/ of each namespace (only those; /etc/netns itself stays)."""
    for name in names:
        shutil.rmtree(ETC_DIR / name, ignore_errors=True)

