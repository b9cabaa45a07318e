"""ExaBGP's API process for kube-vip-metal: a byte relay between ExaBGP's pipes and the daemon's unix socket.

ExaBGP starts this itself (the `process` block of the rendered configuration), with its stdin carrying what ExaBGP
tells the process (acks, JSON events) and its stdout the commands ExaBGP reads. ExaBGP starts its API processes
with fresh pipes in a process group of their own, so the daemon cannot hand it a pipe; this helper connects back
to the socket the daemon listens on (`argv[1]`) and copies bytes both ways, unchanged.

Two rules keep ExaBGP alive and bounded:
- ExaBGP's writes to this process block, and a blocked ExaBGP stops sending keepalives: stdin is read without
  pause, whatever the other direction does.
- This helper never outlives its purpose: stdin closed (ExaBGP gone) ends it; the daemon's socket closed (daemon
  gone or stopping) asks ExaBGP to shut down, so an orphaned ExaBGP does not keep announcing for a dead daemon.

Run as `python -I exabgp_relay.py SOCKET` (isolated: no site directories, no current directory on the path);
standard library only, so it starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading

CONNECT_TIMEOUT = 10.0
CHUNK = 65536


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _exabgp_to_daemon(sock: socket.socket) -> None:
    try:
        while True:
            data = os.read(0, CHUNK)
            if not data:
                break
            sock.sendall(data)
    except OSError:
        pass
    os._exit(0)  # ExaBGP went away (or the daemon did): nothing left to relay


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: exabgp_relay.py SOCKET\n")
        return 2
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(argv[1])
        sock.settimeout(None)
    except OSError as exc:
        sys.stderr.write(f"exabgp_relay: cannot reach the daemon at {argv[1]}: {exc}\n")
        _write_all(1, b"shutdown\n")
        return 1
    threading.Thread(target=_exabgp_to_daemon, args=(sock,), daemon=True).start()
    try:
        while True:
            data = sock.recv(CHUNK)
            if not data:
                break
            _write_all(1, data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        _write_all(1, b"shutdown\n")  # the daemon is gone: ExaBGP must not announce on its behalf
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
