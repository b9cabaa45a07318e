"""A fault-injecting HTTPS proxy between the nodes and a real kube-apiserver.

The emulator can fail one node's requests on command; a real API server cannot. This proxy gives the same levers in
front of the real one, with the emulator's own fault model (`Fault`: latency, an outage that hangs or refuses, the
next N requests answered 429 with Retry-After or 5xx), so the fault tests run unchanged against either.

It terminates TLS with the API server's serving certificate (valid for the rig's router address) and opens a new
TLS connection upstream, passing the bearer token through: the API server still authenticates and authorizes the
node itself. A client is known by its bearer token (`identify`), else by its address. Responses are relayed chunk
by chunk, so watches stream; a "hang" outage silences open watches too, a "refuse" outage cuts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from kubevip_testbed.emulators.kubeapi_faults import Fault, FaultTable, Outage, RequestLog
from kubevip_testbed.emulators.server_thread import ServerThread

# Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy recomputes; never copied across.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "host", "content-length"})
# Never add headers the client did not send: the official Python client sends JSON bodies without a Content-Type,
# which kube-apiserver takes as JSON, while aiohttp would label them application/octet-stream (415).
AUTO_HEADERS = ("Content-Type", "Accept-Encoding", "User-Agent")


class _Relay:
    """One response being relayed, reachable by its client's identity so an outage can silence or cut it."""

    def __init__(self, identity: str, transport: asyncio.Transport | None) -> None:
        self.identity, self.transport = identity, transport

    def cut(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class FaultProxy:
    """Serves HTTPS on the given addresses or pre-bound sockets, forwards to `upstream` (an https:// URL)."""

    def __init__(self, upstream: str, ca_cert: Path, serving_cert: Path, serving_key: Path) -> None:
        self.upstream = upstream.rstrip("/")
        self.ca_cert, self.serving_cert, self.serving_key = ca_cert, serving_cert, serving_key
        self.urls: list[str] = []
        self.requests = RequestLog()
        self._faults = FaultTable()
        self._faults.add_listener(self._fault_changed)
        self._names_lock = threading.Lock()
        self._names: dict[str, str] = {}  # bearer token or client address -> identity
        self._relays: set[_Relay] = set()
        self._changes: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()

    # -- control (any thread)

    def identify(self, key: str, identity: str) -> None:
        """Requests with bearer token `key` (or from address `key`) belong to `identity`."""
        with self._names_lock:
            self._names[key] = identity

    def set_fault(self, identity: str, *, latency: float = 0.0, outage: str | None = None, fail_next: int = 0,
                  fail_status: int = 500, retry_after: float | None = None) -> None:
        self._faults.set(identity, Fault(latency, Outage(outage) if outage else None, fail_next, fail_status,
                                         retry_after))

    def clear_fault(self, identity: str) -> None:
        self._faults.clear(identity)

    def _fault_changed(self, identity: str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._apply, identity)

    def _apply(self, identity: str) -> None:
        changed = self._changes.pop(identity, None)
        if changed is not None:
            changed.set()
        fault = self._faults.get(identity)
        if fault is not None and fault.outage is Outage.REFUSE:
            for relay in [r for r in self._relays if r.identity == identity]:
                relay.cut()

    # -- server

    async def start(self, listen: Sequence[tuple[str, int]], sockets: Sequence[socket.socket] = ()) -> list[str]:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(self.serving_cert, self.serving_key)
        upstream_tls = ssl.create_default_context(cafile=str(self.ca_cert))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=upstream_tls, limit=0),
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        app = web.Application(client_max_size=16 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=True,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        bound = [socket.create_server((host, port), backlog=128,
                                      family=socket.AF_INET6 if ipaddress.ip_address(host).version == 6
                                      else socket.AF_INET) for host, port in listen]
        for sock in [*bound, *sockets]:
            await web.SockSite(self._runner, sock, ssl_context=server_tls).start()
            self.urls.append(_url(*sock.getsockname()[:2]))
        return list(self.urls)

    async def stop(self) -> None:
        self._stopping.set()
        for changed in self._changes.values():
            changed.set()
        for relay in list(self._relays):
            relay.cut()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _identity(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        address = request.remote or ""
        with self._names_lock:
            return self._names.get(token) or self._names.get(address) or address

    async def _held(self, identity: str) -> bool:
        """Wait out a "hang" outage; True if the request must be dropped (a "refuse" outage, or stopping)."""
        fault = self._faults.get(identity)
        while fault is not None and fault.outage is Outage.HANG and not self._stopping.is_set():
            await self._changes.setdefault(identity, asyncio.Event()).wait()
            fault = self._faults.get(identity)
        return self._stopping.is_set() or (fault is not None and fault.outage is Outage.REFUSE)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        identity = self._identity(request)
        self.requests.record(identity, request.method.lower())
        if await self._held(identity):
            return _drop(request)
        fault = self._faults.get(identity)
        if fault is not None and fault.latency:
            await asyncio.sleep(fault.latency)
        failing = self._faults.take_failure(identity)
        if failing is not None:
            return _failure(failing)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        relay = _Relay(identity, request.transport)
        self._relays.add(relay)
        try:
            async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                             data=body or None, allow_redirects=False,
                                             skip_auto_headers=AUTO_HEADERS) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers={
                    k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP})
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    if await self._held(identity):  # an open watch goes silent, or is cut
                        return _drop(request)
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, ConnectionError) as exc:
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=502)  # the client went away (or was cut): nobody reads this
            return _failure(Fault(fail_next=1, fail_status=502), f"upstream: {exc}")
        finally:
            self._relays.discard(relay)


def _url(host: str, port: int) -> str:
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without an answer."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=503)


def _failure(fault: Fault, message: str = "injected fault") -> web.Response:
    """A metav1.Status answer, as the API server (or a load balancer in front of it) would send."""
    reasons = {429: "TooManyRequests", 503: "ServiceUnavailable", 502: "BadGateway"}
    status: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": f"{message} ({fault.fail_status})",
                              "reason": reasons.get(fault.fail_status, "InternalError"), "code": fault.fail_status}
    headers = {}
    if fault.fail_status == 429 or fault.retry_after is not None:
        seconds = max(1, round(fault.retry_after if fault.retry_after is not None else 1.0))
        headers["Retry-After"] = str(seconds)
        status["details"] = {"retryAfterSeconds": seconds}
    return web.Response(status=fault.fail_status, text=json.dumps(status), content_type="application/json",
                        headers=headers)


class FaultProxyThread(ServerThread[FaultProxy]):
    name = "fault-proxy"
