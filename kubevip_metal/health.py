"""`/healthz` and `/readyz` on `--healthCheckPort` (kube-vip's flag), for the kubelet's probes.

kube-vip's `/healthz` answers OK whatever happens. Here:

- **`/healthz` (liveness)** fails only when restarting the process would help: a loop that died or wedged (the
  VIP reconciler has not finished a pass for long, an elector thread is gone). While the manager is still waiting
  for the world (no kubeconfig yet, the Metal API answering 503) it is alive: a restart would not help, and a
  liveness failure would turn a slow start into a crash loop.
- **`/readyz` (readiness)** says whether this node does its job: the daemon is up (configuration complete, the API
  client made, the announcers built), the API server answered its Leases within two lease durations, and, by BGP,
  at least one session is Established. The body says why not.

Both are plain text, one line. The server is a small threaded `http.server` on its own port, started before
the daemon's bring-up, so the probes answer from the first second.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from generic.logfmt import get_logger

log = get_logger("kubevip_metal.health")

Check = Callable[[], str | None]  # None: fine; else the reason it is not


def liveness(daemon: Any) -> str | None:
    vips = getattr(daemon, "vips", None)
    if vips is not None and getattr(vips, "_thread", None) is not None and not vips.alive():
        return "the VIP reconciler is not running or has not finished a pass recently"
    for name in ("control_plane", "services"):
        component = getattr(daemon, name, None)
        elector = getattr(component, "elector", None)
        if elector is not None and not elector.alive():
            return f"the {name.replace('_', '-')} elector is not running"
    local = getattr(getattr(daemon, "control_plane", None), "local_health", None)
    if local is not None and not local.alive():
        return "the local API server health check is not running"
    return None


def readiness(daemon: Any, started: Callable[[], bool]) -> str | None:
    if not started():
        return "starting: the daemon is not up yet (see the manager.not_ready log lines)"
    for name in ("control_plane", "services"):
        elector = getattr(getattr(daemon, name, None), "elector", None)
        if elector is None:
            continue
        quiet = elector.heard_from_lock()
        limit = 2 * elector.timers.lease_duration
        if quiet is None or quiet > limit:
            return (f"the API server has not answered the {name.replace('_', '-')} Lease "
                    + ("yet" if quiet is None else f"for {quiet:.0f} s"))
    local = getattr(getattr(daemon, "control_plane", None), "local_health", None)
    if local is not None and local.state.value == "unhealthy":  # --controlPlaneHealthCheckAddress
        return f"this node's API server fails its health check ({local.snapshot().last_problem or 'failing'})"
    for announcer in getattr(getattr(daemon, "vips", None), "announcers", []):
        speaker = getattr(announcer, "speaker", None)
        if speaker is not None:
            sessions = speaker.sessions()
            if sessions and not any(state.established for state in sessions.values()):
                return "no BGP session is established: " + ", ".join(
                    f"{peer} {state.phase.value}" for peer, state in sorted(sessions.items(), key=str))
    return None


class HealthServer:
    def __init__(self, port: int, live: Check, ready: Check, host: str = "") -> None:
        checks = {"/healthz": live, "/livez": live, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                check = checks.get(self.path.split("?", 1)[0])
                if check is None:
                    self._answer(404, "not found: /healthz, /readyz\n")
                    return
                try:
                    problem = check()
                except Exception as exc:  # a check that breaks says so, it does not hang the probe
                    problem = f"check failed: {type(exc).__name__}"
                self._answer(200 if problem is None else 503, "ok\n" if problem is None else problem + "\n")

            def _answer(self, status: int, text: str) -> None:
                body = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # probes every few seconds are not worth a log line each

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise OSError(f"--healthCheckPort {port}: cannot listen: {exc.strerror or exc}") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("health.serving", port=self.port, paths=["/healthz", "/readyz"])
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, which never runs unless started
            self._server.shutdown()
        self._server.server_close()
