"""Is this node's own API server healthy? `--controlPlaneHealthCheckAddress` (kube-vip HEAD's flags) asked every
`--controlPlaneHealthCheckPeriodSeconds`, with hysteresis, so that a leader whose API server is sick hands the
control-plane VIP over (kube-vip #1786: a node whose own API server is dead kept the VIP) and, by BGP without
leader election, withdraws its route (#1145).

Three parts, each replaceable in tests:

- `HttpCheck`: one GET of the URL within the timeout; HTTP 200 is healthy, anything else (another status, refused,
  timed out, a TLS failure) is not, with a short reason. With a CA file the certificate is verified against it; for a
  loopback URL (the default, `https://127.0.0.1:<port>/readyz`) the name checked is `kubernetes`, which every API
  server certificate carries (kubeadm, k3s, RKE2), while 127.0.0.1 is not always listed (kubeadm's lacks it).
  Without a CA file the certificate is not verified: the check sends nothing secret (`/readyz` is readable
  anonymously) and only decides this node's candidacy, which something listening on the node's own loopback could
  sway anyway.
  The timeout bounds the connection and each read (the body is read up to 4 KiB); a check is never retried
  inside: the thresholds below are the retry policy, and a hidden retry would only blur them.
- `CheckState`: the state machine. It starts `UNKNOWN`; `failure_threshold` failures in a row make it `UNHEALTHY`,
  `success_threshold` successes in a row make it `HEALTHY`; anything else keeps the state.
- `LocalHealth`: the thread that runs the check every period and reports each change of state.
"""

from __future__ import annotations

import http.client
import ipaddress
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

from generic.election.handover import Fitness
from generic.logfmt import get_logger

log = get_logger("kubevip_metal.localhealth")

Probe = Callable[[], str | None]  # None: healthy; else why not, in a few words


class State(Enum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"

    @property
    def fitness(self) -> Fitness:
        return {State.UNKNOWN: Fitness.UNKNOWN, State.HEALTHY: Fitness.FIT, State.UNHEALTHY: Fitness.UNFIT}[self]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Https(http.client.HTTPSConnection):
    """An HTTPS connection that checks the certificate for `server_name` rather than the URL's host."""

    def __init__(self, host: str, port: int | None, *, timeout: float, context: ssl.SSLContext,
                 server_name: str) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._tls, self._server_name = context, server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_name)


class HttpCheck:
    def __init__(self, url: str, timeout: float, ca_path: Path | None = None) -> None:
        parts = urlsplit(url)
        self.url, self.timeout = url, timeout
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname or "", parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._context: ssl.SSLContext | None = None
        self._server_name = self._host
        if self._https:
            if ca_path is not None:
                self._context = ssl.create_default_context(cafile=str(ca_path))
                self._server_name = "kubernetes" if _loopback(self._host) else self._host
            else:
                self._context = ssl.create_default_context()
                self._context.check_hostname = False
                self._context.verify_mode = ssl.CERT_NONE

    def __call__(self) -> str | None:
        connection: http.client.HTTPConnection
        if self._context is not None:
            connection = _Https(self._host, self._port, timeout=self.timeout, context=self._context,
                                server_name=self._server_name)
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        try:
            connection.request("GET", self._target, headers={"Accept": "text/plain", "Connection": "close"})
            response = connection.getresponse()
            response.read(4096)
            return None if response.status == 200 else f"HTTP {response.status}"
        except ssl.SSLCertVerificationError as exc:
            return f"certificate not trusted: {exc.verify_message}"
        except TimeoutError:
            return "timed out"
        except (OSError, http.client.HTTPException) as exc:
            return type(exc).__name__
        finally:
            connection.close()


@dataclass
class CheckState:
    """The hysteresis, alone: `observe` each result, read `state`."""

    failure_threshold: int
    success_threshold: int
    state: State = State.UNKNOWN
    failures_in_a_row: int = 0
    successes_in_a_row: int = 0
    checks: int = 0
    failures: int = 0
    last_problem: str | None = None

    def observe(self, problem: str | None) -> State | None:
        """One result (None: healthy); returns the new state when it changed."""
        self.checks += 1
        self.last_problem = problem
        if problem is None:
            self.successes_in_a_row, self.failures_in_a_row = self.successes_in_a_row + 1, 0
            new = State.HEALTHY if self.successes_in_a_row >= self.success_threshold else self.state
        else:
            self.failures += 1
            self.failures_in_a_row, self.successes_in_a_row = self.failures_in_a_row + 1, 0
            new = State.UNHEALTHY if self.failures_in_a_row >= self.failure_threshold else self.state
        if new is self.state:
            return None
        self.state = new
        return new


class LocalHealth:
    """Runs `probe` every `period` seconds in a thread; `on_change(state)` on every change of `CheckState`."""

    def __init__(self, probe: Probe, on_change: Callable[[State], None], *, period: float, failure_threshold: int,
                 success_threshold: int, clock: Callable[[], float] = time.monotonic, url: str = "") -> None:
        self.probe, self.on_change, self.period, self.url = probe, on_change, period, url
        self.machine = CheckState(failure_threshold, success_threshold)
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-health", daemon=True)

    @property
    def state(self) -> State:
        with self._lock:
            return self.machine.state

    def fitness(self) -> Fitness:
        return self.state.fitness

    def snapshot(self) -> CheckState:
        """A copy, consistent, for metrics and readiness."""
        with self._lock:
            return CheckState(**vars(self.machine))

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 0.2) -> None:
        """Ends the loop; waits briefly only: a check in flight (up to its own timeout) must not hold up SIGTERM's
        two seconds, and the daemon thread ends with its check."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def observe(self, problem: str | None) -> None:
        """One check's result (the loop's, or a test's)."""
        with self._lock:
            changed = self.machine.observe(problem)
            in_a_row = self.machine.failures_in_a_row or self.machine.successes_in_a_row
        if problem is not None and changed is None:
            log.debug("localhealth.check_failed", url=self.url, problem=problem, in_a_row=in_a_row)
        if changed is not None:
            log.info("localhealth.changed", url=self.url, state=changed.value, problem=problem,
                     in_a_row=in_a_row, mono=round(self._clock(), 6))
            self.on_change(changed)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            try:
                problem = self.probe()
            except Exception as exc:  # a check that breaks counts as a failed check, never kills the loop
                problem = f"check failed: {type(exc).__name__}"
            try:
                self.observe(problem)
            except Exception:
                log.exception("localhealth.callback_failed", url=self.url)
            self._stop.wait(max(0.0, started + self.period - self._clock()))
