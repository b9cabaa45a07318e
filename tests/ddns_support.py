"""A fake of pyroute2's AsyncDHCPClient for --ddns's tests: the same surface, driving the configured hooks."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from pyroute2.dhcp.client import ClientConfig
from pyroute2.dhcp.fsm import State
from pyroute2.dhcp.hooks import Trigger, run_hooks

from kubevip_metal.daemon.ddns import MemoryLease

IP = "198.51.100.150"


def lease(ip: str = IP, lease_time: int = 120) -> MemoryLease:
    ack: Any = {"yiaddr": ip, "options": {"lease_time": lease_time, "server_id": "198.51.100.1"}}
    return MemoryLease(ack=ack, interface="eth0", server_mac="02:00:00:00:00:01")


class FakeClient:
    """Answers at bootstrap when `answering`; fires the configured hooks like pyroute2's client does."""

    made: ClassVar[list[FakeClient]] = []
    answering = True

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.state = State.INIT
        self.lease: MemoryLease | None = None
        self.sent: list[str] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        FakeClient.made.append(self)

    async def __aenter__(self) -> FakeClient:
        self.loop = asyncio.get_running_loop()
        return self

    async def bootstrap(self) -> None:
        self.sent.append("discover")
        self.state = State.SELECTING
        if FakeClient.answering:
            await self.fire(Trigger.BOUND, lease())

    async def transition(self, to: State, send: Any = None) -> None:
        """What `DdnsClient` calls to DISCOVER with a requested address (option 50)."""
        wanted = send.dhcp["options"]["requested_ip"]
        self.sent.append(f"discover {wanted}")
        self.state = to
        if FakeClient.answering:
            await self.fire(Trigger.BOUND, lease(wanted))

    async def fire(self, trigger: Trigger, lease: MemoryLease) -> None:
        self.lease = lease
        self.state = State.INIT if trigger in (Trigger.EXPIRED, Trigger.UNBOUND) else State.BOUND
        await run_hooks(self.config.hooks, lease, trigger)

    def fire_from_test(self, trigger: Trigger, lease: MemoryLease) -> None:
        assert self.loop is not None
        asyncio.run_coroutine_threadsafe(self.fire(trigger, lease), self.loop).result(2)

    async def __aexit__(self, *_: object) -> None:
        if self.lease is not None and self.state is State.BOUND:
            await run_hooks(self.config.hooks, self.lease, Trigger.UNBOUND)
            self.sent.append("release")
        self.state = State.OFF
