"""Writing back what we serve: `status.loadBalancer.ingress` (and the `kube-vip.io/vipHost` annotation), coalesced.

One thread writes for every Service. The controller says what a Service's status should be; only the latest wish
per Service is kept, so a burst of changes to one Service costs one write, and a write whose content the Service
already shows is never sent. A failed write (a 409, a 429 with Retry-After, a 5xx, a dropped connection) is tried
again later with jittered exponential backoff, without holding up the others. At most `rate` writes a second
leave, so 10,000 new Services do not flood the API server (kube-vip retried each write every 10 ms for 30 s).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from generic.logfmt import get_logger
from kubevip_metal.services.model import REQUESTED_IP, VIP_HOST, ServiceKey

log = get_logger("kubevip_metal.services.status")

WRITE_TIMEOUT = 10.0
RATE = 50.0  # writes per second at most
MAX_BACKOFF = 30.0

Ingress = tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Wanted:
    ingress: Ingress
    vip_host: str | None  # None: leave the annotation as it is
    requested_ip: str | None = None  # kube-vip.io/requestedIP (a DHCP-leased address); None: left as it is

    def annotations(self) -> dict[str, str]:
        wanted = {VIP_HOST: self.vip_host, REQUESTED_IP: self.requested_ip}
        return {k: v for k, v in wanted.items() if v is not None}


class StatusWriter:
    def __init__(self, api: Any, *, rate: float = RATE, clock: Callable[[], float] = time.monotonic) -> None:
        self._api, self._rate, self._clock = api, rate, clock
        self._wanted: dict[ServiceKey, Wanted] = {}
        self._written: dict[ServiceKey, Wanted] = {}  # what the Service showed last (as seen, or as we wrote it)
        self._failures: dict[ServiceKey, int] = {}
        self._due: list[tuple[float, int, ServiceKey]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._stop = False
        self.writes = 0
        self._thread = threading.Thread(target=self._run, name="service-status", daemon=True)

    def start(self) -> StatusWriter:
        self._thread.start()
        return self

    def close(self, timeout: float = 1.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def observed(self, key: ServiceKey, status_ingress: Sequence[Mapping[str, Any]], vip_host: str | None,
                 requested_ip: str | None = None) -> None:
        """What the Service shows now (from the informer), so a write it already reflects is not sent."""
        with self._cond:
            self._written[key] = Wanted(tuple(dict(i) for i in status_ingress), vip_host, requested_ip)

    def want(self, key: ServiceKey, wanted: Wanted) -> None:
        with self._cond:
            shown = self._written.get(key)
            if shown is not None and _satisfied(shown, wanted):
                self._wanted.pop(key, None)
                return
            if self._wanted.get(key) == wanted:
                return
            fresh = key not in self._wanted
            self._wanted[key] = wanted
            if fresh:
                heapq.heappush(self._due, (self._clock(), next(self._order), key))
                self._cond.notify()

    def forget(self, key: ServiceKey) -> None:
        with self._cond:
            self._wanted.pop(key, None)
            self._written.pop(key, None)
            self._failures.pop(key, None)

    def pending(self) -> int:
        with self._cond:
            return len(self._wanted)

    def _run(self) -> None:
        gap = 1.0 / self._rate
        while True:
            with self._cond:
                while not self._stop and (not self._due or self._due[0][0] > self._clock()):
                    self._cond.wait(None if not self._due else max(0.0, self._due[0][0] - self._clock()))
                if self._stop:
                    return
                _at, _n, key = heapq.heappop(self._due)
                wanted = self._wanted.get(key)
            if wanted is None:
                continue
            ok = self._write(key, wanted)
            with self._cond:
                if ok:
                    self._failures.pop(key, None)
                    self._written[key] = wanted
                    if self._wanted.get(key) == wanted:
                        del self._wanted[key]
                    elif key in self._wanted:  # changed while we wrote: write the newer wish
                        heapq.heappush(self._due, (self._clock(), next(self._order), key))
                elif key in self._wanted:
                    failures = self._failures.get(key, 0) + 1
                    self._failures[key] = failures
                    delay = min(MAX_BACKOFF, 0.2 * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)
                    heapq.heappush(self._due, (self._clock() + max(delay, self._retry_after), next(self._order), key))
            time.sleep(gap)

    _retry_after = 0.0

    def _write(self, key: ServiceKey, wanted: Wanted) -> bool:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self._api)
        self._retry_after = 0.0
        try:
            core.patch_namespaced_service_status(key.name, key.namespace,
                                                 {"status": {"loadBalancer": {"ingress": list(wanted.ingress)}}},
                                                 _request_timeout=WRITE_TIMEOUT)
            self.writes += 1
            if wanted.annotations():
                core.patch_namespaced_service(key.name, key.namespace,
                                              {"metadata": {"annotations": wanted.annotations()}},
                                              _request_timeout=WRITE_TIMEOUT)
                self.writes += 1
        except ApiException as exc:
            if exc.status == 404:  # deleted meanwhile: nothing to write
                with self._cond:
                    self._wanted.pop(key, None)
                return True
            retry_after = (exc.headers or {}).get("Retry-After") if exc.headers else None
            if retry_after:
                with contextlib.suppress(ValueError):
                    self._retry_after = float(retry_after)
            log.warning("service.status_failed", service=str(key), status=exc.status, retry=True)
            return False
        except Exception as exc:  # the connection: retried the same way
            log.warning("service.status_failed", service=str(key), error=type(exc).__name__, retry=True)
            return False
        log.info("service.status_written", service=str(key), ingress=[i.get("ip") for i in wanted.ingress],
                 vip_host=wanted.vip_host, requested_ip=wanted.requested_ip)
        return True


def _satisfied(shown: Wanted, wanted: Wanted) -> bool:
    return shown.ingress == wanted.ingress and (wanted.vip_host is None or shown.vip_host == wanted.vip_host) and \
        (wanted.requested_ip is None or shown.requested_ip == wanted.requested_ip)
