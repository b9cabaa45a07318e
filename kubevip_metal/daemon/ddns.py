"""`--ddns`: while this node leads, the control-plane VIP is the address a DHCP server leases to the name.

On leadership a DHCPv4 client (pyroute2's `AsyncDHCPClient`, its asyncio loop on one thread of its own) runs on
the VIP interface with the node's own MAC, option 12 host name = the FQDN's first label and a client identifier
(type 0) = the same string, as kube-vip does: the server keys the lease by the client id, so the same address
comes back after a restart or on another node, and its DNS (dynamic DNS) registers the host name to it.

The lease drives the control plane's claim and nothing else: BOUND, RENEWED or REBOUND with an address -> the
claim is that address (the VIP controller adds and announces it); EXPIRED or a NAK -> the claim is emptied (the
VIP goes: the address is no longer ours). T1 (renew, unicast to the server), T2 (rebind, broadcast) and the
expiry are pyroute2's timers from the lease; a server that does not answer is retried by the client's own
retransmission (exponential backoff, `RETRANSMIT_FIRST` up to `RETRANSMIT_MAX`) and reported (`ddns.no_lease`,
at once after `REPORT_AFTER` then every `REPORT_AFTER`), never a crash. Losing leadership or SIGTERM ends the term:
the claim was already made inactive by the election callback (the VIP is gone), then DHCPRELEASE is sent.
The claim keeps the last address after that, inactive, so a follower still removes a stray copy of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pyroute2.dhcp import messages
from pyroute2.dhcp.client import AsyncDHCPClient, ClientConfig
from pyroute2.dhcp.fsm import State
from pyroute2.dhcp.hooks import Trigger, hook
from pyroute2.dhcp.leases import Lease

from generic.logfmt import get_logger
from generic.parse import IPAddress

log = get_logger("kubevip_metal.ddns")

REPORT_AFTER = 60.0  # seconds without a lease before `ddns.no_lease` (kube-vip waits 1 min for a lease), then again
RETRANSMIT_FIRST, RETRANSMIT_MAX = 1.0, 16.0  # seconds between two DISCOVERs / REQUESTs nobody answered
RELEASE_WAIT = 0.8  # seconds a step-down waits for the DHCPRELEASE to leave (SIGTERM's whole budget is 2 s)

Leased = Callable[[IPAddress | None], None]  # the address the control plane now claims (None: none)
ClientFactory = Callable[[ClientConfig], Any]  # an AsyncDHCPClient (tests: a fake with the same surface)


class MemoryLease(Lease):  # type: ignore[misc]  # pyroute2 ships no types
    """A lease kept in memory only: nothing is written to the working directory (pyroute2's default), and a
    restart starts from DISCOVER; the client id gets the same address back from the server anyway."""

    def dump(self) -> None:
        return None

    @classmethod
    def load(cls, interface: str) -> None:
        return None


def retransmission() -> Iterator[float]:
    """Seconds between retransmissions: doubling from RETRANSMIT_FIRST up to RETRANSMIT_MAX, with ±25 % jitter so
    nodes that lost the same server do not retry in step."""
    delay = RETRANSMIT_FIRST
    while True:
        yield delay * random.uniform(0.75, 1.25)
        delay = min(delay * 2, RETRANSMIT_MAX)


def host_name(fqdn: str) -> str:
    """The host name sent (option 12) and the client id: the FQDN's first label, as kube-vip."""
    return fqdn.rstrip(".").split(".")[0]


class DhcpLoop:
    """One asyncio loop on one thread, and one worker for the claims, shared by many clients (the Services'
    DHCP leases: one client per Service, never a thread per Service)."""

    def __init__(self, name: str = "dhcp") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.claims = self._new_claims()

    def ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                self._thread.start()
            return self._loop

    def stop(self) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(0.5)
        claims, self.claims = self.claims, self._new_claims()  # idle until used: a later ensure() can run again
        claims.shutdown(wait=False)

    def _new_claims(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self._name}-claim")


class DdnsClient:
    """One DHCP client per leadership term on `interface`; `leased` is told the address to claim.

    `client_id`: the DHCP client identifier (default: the host name). `shared`: a DhcpLoop this client runs on
    (and does not stop); without one it has a private one (named ddns-dhcp), which `stop` ends. `no_lease`: told
    the seconds waited each time `ddns.no_lease` is logged (the Services' Event)."""

    def __init__(self, interface: str, fqdn: str, leased: Leased, *, factory: ClientFactory = AsyncDHCPClient,
                 report_after: float = REPORT_AFTER, clock: Callable[[], float] = time.monotonic,
                 client_id: str | None = None, shared: DhcpLoop | None = None,
                 no_lease: Callable[[float], None] | None = None, log_fields: dict[str, str] | None = None) -> None:
        self.interface, self.fqdn, self.host = interface, fqdn, host_name(fqdn)
        self.client_id = client_id or self.host
        self._leased, self._factory, self._report_after, self._clock = leased, factory, report_after, clock
        self._owns_loop = shared is None
        self._dhcp = shared if shared is not None else DhcpLoop("ddns-dhcp")
        self._no_lease, self._fields = no_lease, log_fields or {}
        self.address: IPAddress | None = None  # the address currently leased (and claimed), None between leases
        self.state = "off"  # the DHCP client's state name while a term runs
        self.leases = 0  # leases granted (BOUND), renewals and rebinds excluded
        self.renewals = 0  # renewed (T1) or rebound (T2)
        self.expiries = 0  # leases that ended without a renewal
        self.hint: IPAddress | None = None  # the name's last answer (followed on every node): asked for first
        self.last: IPAddress | None = None  # the last address leased here
        self._loop: asyncio.AbstractEventLoop | None = None
        self._term: Future[None] | None = None
        self._end: asyncio.Event | None = None
        self._releasing = False
        self._lock = threading.Lock()

    # -- called from the election's thread

    def start_term(self) -> None:
        """Leadership: start a client (DISCOVER). Idempotent while a term runs."""
        with self._lock:
            previous, releasing = self._term, self._releasing
        if previous is not None and not previous.done():
            if not releasing:
                return
            # leadership came back while the last term's release is still in flight: let it finish first
            with contextlib.suppress(Exception):
                previous.result(2.0)
        with self._lock:
            if self._term is not None and not self._term.done():
                return
            loop = self._loop = self._dhcp.ensure()
            self._releasing = False
            self._term = asyncio.run_coroutine_threadsafe(self._run_term(), loop)

    def running(self) -> bool:
        with self._lock:
            return self._term is not None and not self._term.done()

    def end_term(self, timeout: float | None = RELEASE_WAIT) -> None:
        """Leadership lost or SIGTERM: stop the client, which sends DHCPRELEASE; waits up to `timeout` (None:
        does not wait, the release goes on on the loop)."""
        with self._lock:
            term, loop, end = self._term, self._loop, self._end
            if term is None or term.done() or loop is None:
                return
            self._releasing = True
            if end is not None:
                loop.call_soon_threadsafe(end.set)
            else:  # the coroutine has not started yet
                term.cancel()
        if timeout is None:
            return
        try:
            term.result(timeout)
        except Exception as exc:  # a timeout or a failed release: the claim is inactive already, say so only
            log.warning("ddns.release_incomplete", interface=self.interface, error=f"{type(exc).__name__}: {exc}")

    def stop(self, timeout: float = RELEASE_WAIT) -> None:
        """End the term (release) and the loop's thread (not a shared loop's)."""
        self.end_term(timeout)
        if self._owns_loop:
            with self._lock:
                self._loop = None
            self._dhcp.stop()

    # -- on the DHCP thread

    def config(self) -> ClientConfig:
        return ClientConfig(
            interface=self.interface, lease_type=MemoryLease, handle_signals=False, write_pidfile=False,
            release=True, client_id=self.client_id.encode(), host_name=self.host, vendor_id="kube-vip-metal",
            retransmission=retransmission, hooks=[
                hook(trigger)(_reported(trigger, handler)) for trigger, handler in (
                    (Trigger.BOUND, self._bound), (Trigger.RENEWED, self._renewed),
                    (Trigger.REBOUND, self._rebound), (Trigger.EXPIRED, self._expired),
                    (Trigger.UNBOUND, self._unbound))])

    async def _run_term(self) -> None:
        self._end = end = asyncio.Event()
        started = self._clock()
        try:
            async with self._factory(self.config()) as client:
                log.info("ddns.requesting", interface=self.interface, host_name=self.host, client_id=self.client_id,
                         **self._fields)
                await self._discover(client)
                reported = started
                while not end.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(end.wait(), timeout=1.0)
                    self.state = client.state.name.lower()
                    now = self._clock()
                    if client.state is not State.BOUND and self.address is None and \
                            now - reported >= self._report_after:
                        reported = now
                        log.warning("ddns.no_lease", interface=self.interface, host_name=self.host,
                                    state=self.state, waited=round(now - started, 1), **self._fields)
                        if self._no_lease is not None:
                            self._no_lease(now - started)
                # leaving the context sends DHCPRELEASE (and runs the UNBOUND hook)
        except Exception as exc:  # the socket could not open (interface gone...): reported; the next term retries
            log.error("ddns.client_failed", interface=self.interface, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._end = None
            self.state = "off"

    async def _discover(self, client: Any) -> None:
        """DISCOVER, asking (option 50) for the address the name had or this node last leased: a server that
        forgot the client id's lease (released by the last leader, from another MAC) gives the same one back
        while it is free; a server that still holds the lease for the client id answers with that anyway."""
        hint = self.hint or self.last
        if hint is None:
            await client.bootstrap()
            return
        message = messages.discover(parameter_list=client.config.requested_parameters)
        message.dhcp["options"]["requested_ip"] = str(hint)
        log.info("ddns.asking", address=str(hint), source="dns" if self.hint else "last lease")
        await client.transition(to=State.SELECTING, send=message)

    async def _set(self, address: IPAddress | None) -> None:
        """The claim changes on the claims' own thread: netlink (pyroute2's synchronous API runs an event loop of
        its own) cannot be called from this running loop; one worker keeps the changes in order."""
        if address != self.address:
            self.address = address
            if address is not None:
                self.last = address
            await asyncio.get_running_loop().run_in_executor(self._dhcp.claims, self._leased, address)

    async def _bound(self, lease: Lease) -> None:
        self.leases += 1
        await self._set(ipaddress.ip_address(lease.ip))
        log.info("ddns.bound", interface=self.interface, host_name=self.host, address=lease.ip,
                 lease_time=lease.lease_time, renew_in=_seconds(lease.renewal_in),
                 rebind_in=_seconds(lease.rebinding_in), server=_server(lease), mono=round(self._clock(), 6),
                 **self._fields)

    async def _renewed(self, lease: Lease) -> None:
        self.renewals += 1
        await self._set(ipaddress.ip_address(lease.ip))
        log.info("ddns.renewed", address=lease.ip, lease_time=lease.lease_time, renew_in=_seconds(lease.renewal_in),
                 **self._fields)

    async def _rebound(self, lease: Lease) -> None:
        self.renewals += 1
        await self._set(ipaddress.ip_address(lease.ip))
        log.info("ddns.rebound", address=lease.ip, lease_time=lease.lease_time, server=_server(lease),
                 **self._fields)

    async def _expired(self, lease: Lease) -> None:
        """No renewal or rebind reached a server before the lease ended: the address is not ours any more."""
        self.expiries += 1
        await self._set(None)
        log.warning("ddns.expired", interface=self.interface, address=lease.ip, mono=round(self._clock(), 6),
                    **self._fields)

    async def _unbound(self, lease: Lease) -> None:
        """Released at the end of a term (the claim is inactive already, and keeps the address for policing), or
        taken back by the server's NAK (the VIP goes now)."""
        if self._releasing:
            self.address = None
            log.info("ddns.released", interface=self.interface, address=lease.ip, **self._fields)
        else:
            await self._set(None)
            log.warning("ddns.nak", interface=self.interface, address=lease.ip, **self._fields)


def _reported(trigger: Trigger, handler: Callable[[Lease], Awaitable[None]]) -> Any:
    """`handler` as a pyroute2 hook whose failure is logged here (pyroute2 would only log it to its own logger)."""
    async def run(lease: Lease) -> None:
        try:
            await handler(lease)
        except Exception as exc:
            log.error("ddns.hook_failed", trigger=str(trigger), error=f"{type(exc).__name__}: {exc}")

    run.__name__ = f"kube_vip_metal_{trigger}"
    return run


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _server(lease: Lease) -> str | None:
    try:
        return str(lease.server_id)
    except LookupError:
        return None
