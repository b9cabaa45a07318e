"""Run an asyncio server (an emulator) on its own event loop in a daemon thread, for synchronous callers:
pytest, benchmarks, the lab. Shared by the Kubernetes and the Metal API emulators."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from generic.logfmt import EventLogger


class AsyncServer(Protocol):
    async def start(self, listen: Sequence[tuple[str, int]], sockets: Sequence[socket.socket]) -> list[str]: ...

    async def stop(self) -> None: ...


S = TypeVar("S", bound=AsyncServer)


class ServerThread(Generic[S]):
    """`start()` returns the server's URLs once it listens; `stop()` ends it and the loop. A context manager."""

    name = "emulator"

    def __init__(self, server: S, listen: Sequence[tuple[str, int]], sockets: Sequence[socket.socket] = ()) -> None:
        self.emulator = server
        self.urls: list[str] = []
        self._listen = listen
        self._sockets = sockets
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> list[str]:
        if self._thread is not None:
            raise RuntimeError("the emulator thread is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run, args=(loop,), name=self.name, daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            self.urls = asyncio.run_coroutine_threadsafe(self.emulator.start(self._listen, self._sockets),
                                                         loop).result(timeout)
        except BaseException:
            self._halt(timeout)
            raise
        return list(self.urls)

    def stop(self, timeout: float = 30.0) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.emulator.stop(), loop).result(timeout)
        finally:
            self._halt(timeout)

    def _halt(self, timeout: float) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def __enter__(self) -> ServerThread[S]:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def listen_address(text: str) -> tuple[str, int]:
    """The emulators' `--listen`: `127.0.0.1:6443`, `[::1]:6443` → (host, port)."""
    import argparse
    import ipaddress

    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--listen {text!r} is not IP:PORT (IPv6 as [::1]:PORT)") from None
    if not sep or not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"--listen {text!r} is not IP:PORT (IPv6 as [::1]:PORT)")
    return host, number


def serve_command(server: AsyncServer, listen: Sequence[tuple[str, int]], log: EventLogger, name: str) -> int:
    """The emulators' command lines: serve until SIGTERM or SIGINT, then stop cleanly; the exit status (1, with one
    `<name>.listen_failed` line, when an address cannot be bound)."""
    try:
        asyncio.run(_serve_until_signalled(server, listen))
    except OSError as exc:
        log.error(f"{name}.listen_failed", error=str(exc))
        return 1
    return 0


async def _serve_until_signalled(server: AsyncServer, listen: Sequence[tuple[str, int]]) -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start(listen, ())
    try:
        await stop.wait()
    finally:
        await server.stop()
