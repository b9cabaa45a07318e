"""A running Equinix Metal API emulator with a small account, for any test that talks to Metal.

The account is kubevip_testbed.metal_account's (one project, devices n1, n2, n3, one unassigned Elastic IP).
Teardown fails the test if any request or response broke the OpenAPI spec.

Registered by `pytest_plugins` in tests/conftest.py: a test takes a `metal` parameter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
from equinix.services import metalv1

from kubevip_testbed.emulators.metalapi import MetalApiEmulator, MetalEmulatorThread
from kubevip_testbed.metal_account import EIP, TOKEN, seeded_emulator


@dataclass
class MetalWorld:
    """The emulator, where it listens, and the ids of what it was seeded with."""

    thread: MetalEmulatorThread
    token: str
    project_id: str
    device_ids: dict[str, str]  # hostname → device id
    reservation_id: str
    eip: str = EIP
    clients: list[metalv1.ApiClient] = field(default_factory=list)
    sessions: list[requests.Session] = field(default_factory=list)

    @property
    def emulator(self) -> MetalApiEmulator:
        return self.thread.emulator

    @property
    def urls(self) -> list[str]:
        return self.thread.urls

    @property
    def api_url(self) -> str:
        """The SDK's `host`: base URL plus /metal/v1."""
        return self.thread.api_url

    def configuration(self, *, token: str | None = None, retries: bool | int | None = False) -> metalv1.Configuration:
        """An SDK configuration for the emulator; `retries=False` shows raw errors, None keeps urllib3's default
        (three retries, Retry-After honoured for idempotent methods)."""
        cfg = metalv1.Configuration(host=self.api_url)
        cfg.api_key["x_auth_token"] = self.token if token is None else token
        if retries is not None:
            cfg.retries = retries
        return cfg

    def client(self, *, token: str | None = None, retries: bool | int | None = False) -> metalv1.ApiClient:
        """An SDK client, closed at teardown."""
        api_client = metalv1.ApiClient(self.configuration(token=token, retries=retries))
        self.clients.append(api_client)
        return api_client

    def session(self, *, token: str | None = None) -> requests.Session:
        """A plain HTTP session carrying the token, for requests the SDK would refuse to send; closed at teardown."""
        session = requests.Session()
        session.headers["X-Auth-Token"] = self.token if token is None else token
        self.sessions.append(session)
        return session


@pytest.fixture(name="metal")
def metal_fixture() -> Iterator[MetalWorld]:
    """A running emulator with the standard account; fails at teardown on any contract violation."""
    emulator, project_id, device_ids, reservation_id = seeded_emulator()
    thread = MetalEmulatorThread(emulator)
    thread.start()
    world = MetalWorld(thread, TOKEN, project_id, device_ids, reservation_id)
    try:
        yield world
    finally:
        for api_client in world.clients:  # the SDK's ApiClient has no close(); its urllib3 pool does
            api_client.rest_client.pool_manager.clear()
        for session in world.sessions:
            session.close()
        thread.stop()
    emulator.assert_no_violations()
