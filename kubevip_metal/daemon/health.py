"""Is this node's own API server healthy? For BGP without leader election, where every control-plane node
advertises the VIP (ECMP at the router) only while the API server behind it answers.

`ReadyzProbe` asks the API server the daemon talks to (in a static pod that is the node's own, through the
`kubernetes` host alias to 127.0.0.1) for `/readyz`, with a timeout. `HealthGate` turns probe results into a
state with hysteresis (kube-vip #1145 kept routes while the local API server was dead): it falls after `fall`
failures in a row, rises again after `rise` successes in a row, and calls back on every change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from generic.kuberest import transport_of
from generic.logfmt import get_logger

log = get_logger("kubevip_metal.health")

PERIOD = 1.0
RISE, FALL = 2, 3


class ReadyzProbe:
    def __init__(self, api_client: Any, timeout: float = 2.0) -> None:
        self._client_for: Callable[[], Any] = api_client if callable(api_client) else lambda: api_client
        self.timeout = timeout

    def __call__(self) -> bool:
        try:
            response = transport_of(self._client_for()).request("GET", "/readyz", timeout=self.timeout,
                                                                accept="text/plain")
            return bool(response.ok)
        except Exception as exc:  # unreachable, refused, timed out: not healthy
            log.debug("health.probe_failed", error=type(exc).__name__)
            return False


class HealthGate:
    """Runs `probe` every `period` seconds; `on_change(healthy)` after `fall` failures or `rise` successes."""

    def __init__(self, probe: Callable[[], bool], on_change: Callable[[bool], None], *, period: float = PERIOD,
                 rise: int = RISE, fall: int = FALL, clock: Callable[[], float] = time.monotonic) -> None:
        self.probe, self.on_change, self.period, self.rise, self.fall = probe, on_change, period, rise, fall
        self._clock = clock
        self.healthy = False
        self._streak = 0  # results in a row that disagree with the current state
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)

    def observe(self, ok: bool) -> None:
        """One probe result (the loop's, or a test's)."""
        if ok == self.healthy:
            self._streak = 0
            return
        self._streak += 1
        if self._streak >= (self.rise if ok else self.fall):
            self.healthy, self._streak = ok, 0
            log.info("health.changed", healthy=ok, mono=round(self._clock(), 6))
            self.on_change(ok)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.observe(self.probe())
            self._stop.wait(self.period)
