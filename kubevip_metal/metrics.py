"""Prometheus metrics on `--prometheusHTTPServer` (kube-vip's flag and default, `:2112`; empty: off).

One collector reads the daemon's own state at scrape time (nothing is counted twice, nothing is pushed from the
data path): the electors (`is_leader`, `changes`, `renew_latency`), the VIP controller (`repairs`), the announcers
(`GarpAnnouncer.sent`, the BGP speaker's `sessions()`, each `ElasticIp.moves`), the Services controller
(`serving()`, its Lease or per-Service Leases) and the Metal API's failed requests by status
(`kubevip_metal.metal.retry.errors_by_status`). kube-vip's metric names are used where kube-vip has the metric.

`prometheus_client` is imported only when the server is on. A port that cannot be bound is said in one error line
and the daemon runs on without metrics: a node running kube-vip on the same port (a migration) keeps its VIP.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Iterator
from typing import Any

from generic.logfmt import get_logger
from kubevip_metal import __version__

log = get_logger("kubevip_metal.metrics")

BGP_STATES = ("stopped", "idle", "connected", "established")  # generic.bgp.speaker.SessionPhase values


def _listen_text(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _leases(daemon: Any) -> Iterator[tuple[str, Any]]:
    """(lease name, elector) of every Lease this node campaigns for with an elector."""
    config = daemon.config
    control_plane = daemon.control_plane
    if control_plane is not None and control_plane.elector is not None:
        yield config.election.lease_name, control_plane.elector
    services = daemon.services
    elector = services.elector if services is not None else None
    if elector is not None:
        yield config.election.services_lease_name, elector


class DaemonCollector:
    """A `prometheus_client` collector over a running `Daemon` (duck-typed: tests pass fakes)."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon

    def describe(self) -> list[Any]:
        return []  # no collect() at registration: the daemon may not be up yet

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        daemon, node = self.daemon, self.daemon.config.node_name or ""
        build = GaugeMetricFamily("kube_vip_build_info", "The version of kube-vip-metal", labels=["version", "build",
                                                                                                    "node"])
        build.add_metric([__version__, "kube-vip-metal", node], 1)
        yield build

        leader = GaugeMetricFamily("kube_vip_is_leader", "1 if this node currently holds the lease",
                                   labels=["node", "lease_name"])
        transitions = CounterMetricFamily("kube_vip_leader_election_transitions",
                                          "Changes of this node's leadership of the lease (gained + lost)",
                                          labels=["lease_name"])
        renew = HistogramMetricFamily("kube_vip_lease_renew_duration_seconds",
                                      "Duration of the leader's Lease renew requests", labels=["lease_name"])
        for name, elector in _leases(daemon):
            leading = bool(elector.is_leader)
            leader.add_metric([node, name], 1 if leading else 0)
            transitions.add_metric([name], int(elector.changes))
            latency = elector.renew_latency
            counts, count, total = latency.snapshot()
            cumulative, buckets = 0, []
            for bound, n in zip(latency.buckets, counts, strict=True):
                cumulative += n
                buckets.append((repr(float(bound)), cumulative))
            buckets.append(("+Inf", count))
            renew.add_metric([name], buckets, total)
        yield leader
        yield transitions
        yield renew
        yield from self._local_health(daemon.control_plane)

        services = daemon.services
        if services is not None:
            yield from self._services(services, node)

        ddns = getattr(daemon, "ddns", None)
        if ddns is not None:  # --ddns: the DHCP lease behind the control-plane VIP
            yield GaugeMetricFamily("kube_vip_ddns_lease_bound", "1 while this node holds a DHCP lease for the "
                                    "control-plane VIP (--ddns)", value=int(ddns.address is not None))
            yield CounterMetricFamily("kube_vip_ddns_leases", "DHCP leases granted here (BOUND)", value=ddns.leases)
            yield CounterMetricFamily("kube_vip_ddns_renewals", "DHCP leases renewed (T1) or rebound (T2) here",
                                      value=ddns.renewals)
            yield CounterMetricFamily("kube_vip_ddns_expiries", "DHCP leases that ended without a renewal "
                                      "(the VIP withdrawn)", value=ddns.expiries)

        vips = daemon.vips
        yield CounterMetricFamily("kube_vip_vip_repairs", "Drift repaired by the VIP reconciler (an address "
                                  "re-added or removed, a VIP re-announced)", value=int(vips.repairs))
        yield from self._announcers(list(vips.announcers))
        yield from self._events(daemon)

        from kubevip_metal.metal import retry

        errors = CounterMetricFamily("kube_vip_metal_api_errors", "Failed Equinix Metal API requests (each "
                                     "attempt) by HTTP status, 'network' without one", labels=["status"])
        for status, n in sorted(dict(retry.errors_by_status).items()):
            errors.add_metric([status], n)
        yield errors

    def _local_health(self, control_plane: Any) -> Iterator[Any]:
        """--controlPlaneHealthCheckAddress: the state of the check, its counts, and whether the Lease is offered."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        health = getattr(control_plane, "local_health", None)
        if health is None:
            return
        snapshot = health.snapshot()
        state = GaugeMetricFamily("kube_vip_control_plane_health_check_state", "1 for the current state of this "
                                  "node's API server health check (unknown, healthy, unhealthy)", labels=["state"])
        for name in ("unknown", "healthy", "unhealthy"):
            state.add_metric([name], 1 if snapshot.state.value == name else 0)
        yield state
        yield CounterMetricFamily("kube_vip_control_plane_health_checks", "Health checks of this node's API server",
                                  value=snapshot.checks)
        yield CounterMetricFamily("kube_vip_control_plane_health_check_failures", "Failed health checks of this "
                                  "node's API server", value=snapshot.failures)
        elector = getattr(control_plane, "elector", None)
        if elector is not None:
            yield GaugeMetricFamily("kube_vip_control_plane_lease_offered", "1 while this node, unhealthy, offers "
                                    "the control-plane Lease to a healthy node", value=1 if elector.offering else 0)

    def _services(self, services: Any, node: str) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            serving = dict(services.serving())
        except RuntimeError:  # the worker changed the picture during the copy: skip this scrape's numbers
            serving = {}
        active = GaugeMetricFamily("kube_vip_active_services", "Services of type LoadBalancer this node serves",
                                   labels=["namespace"])
        per_namespace: dict[str, int] = {}
        for key, on in serving.items():
            per_namespace[key.namespace] = per_namespace.get(key.namespace, 0) + (1 if on else 0)
        for namespace, n in sorted(per_namespace.items()):
            active.add_metric([namespace], n)
        yield active
        elections = services.elections
        if elections is not None:
            yield GaugeMetricFamily("kube_vip_service_leases_held", "Per-Service Leases (--servicesElection) "
                                    "this node holds", value=int(elections.leading_count()))
        leases = services.dhcp
        if leases is not None:  # a Service with address 0.0.0.0 was seen
            dhcp = leases.counts()
            yield GaugeMetricFamily("kube_vip_service_dhcp_leases_bound", "Services (address 0.0.0.0) whose DHCP "
                                    "lease this node holds", value=dhcp.bound)
            yield GaugeMetricFamily("kube_vip_service_dhcp_waiting", "Services (address 0.0.0.0) held here still "
                                    "without a DHCP lease (no server answered yet)", value=dhcp.waiting)
            yield CounterMetricFamily("kube_vip_service_dhcp_leases", "Service DHCP leases granted here (BOUND)",
                                      value=dhcp.leases)
            yield CounterMetricFamily("kube_vip_service_dhcp_renewals", "Service DHCP leases renewed (T1) or "
                                      "rebound (T2) here", value=dhcp.renewals)
            yield CounterMetricFamily("kube_vip_service_dhcp_expiries", "Service DHCP leases that ended without a "
                                      "renewal (the VIP withdrawn)", value=dhcp.expiries)

    def _events(self, daemon: Any) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        counts = getattr(getattr(getattr(daemon, "events", None), "recorder", None), "counts", None)
        if counts is None:
            return
        events = CounterMetricFamily("kube_vip_events", "Kubernetes Events by outcome: created, patched (a "
                                     "repeat's count bumped), or dropped: rate_limited, queue_full, failed, refused, "
                                     "shutdown", labels=["result"])
        for result, n in sorted(counts().items()):
            events.add_metric([result], n)
        yield events

    def _announcers(self, announcers: list[Any]) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        garp = CounterMetricFamily("kube_vip_garp_sent", "Gratuitous ARP pairs and unsolicited neighbour "
                                   "advertisements sent")
        sessions = GaugeMetricFamily("kube_vip_manager_bgp_session_info", "1 for the current BGP session state "
                                     "of each peer, 0 for the others", labels=["state", "peer"])
        moves = CounterMetricFamily("kube_vip_metal_eip_moves", "Times this node took an Elastic IP",
                                    labels=["address"])
        sent = 0
        for announcer in announcers:
            if isinstance(getattr(announcer, "sent", None), int):
                sent += announcer.sent
            speaker = getattr(announcer, "speaker", None)
            if speaker is not None and hasattr(speaker, "sessions"):
                for peer, state in sorted(speaker.sessions().items(), key=lambda item: str(item[0])):
                    for phase in BGP_STATES:
                        sessions.add_metric([phase, str(peer)], 1 if state.phase.value == phase else 0)
            for eip in getattr(announcer, "_eips", {}).values():
                moves.add_metric([str(eip.address)], int(eip.moves))
        garp.add_metric([], sent)
        yield garp
        yield sessions
        yield moves


class MetricsServer:
    """The HTTP server of /metrics, in its own thread."""

    def __init__(self, server: Any, thread: threading.Thread, address: str) -> None:
        self._server, self._thread, self.address = server, thread, address

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(1)


def serve(address: tuple[str, int], daemon: Any) -> MetricsServer | None:
    """Serve the daemon's metrics on `address` (host "" = every address, IPv6 and IPv4 where possible); None,
    with one error line, when the address cannot be bound."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.gc_collector import GCCollector
    from prometheus_client.platform_collector import PlatformCollector
    from prometheus_client.process_collector import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    host, port = address
    text = _listen_text(address)
    hosts = [host] if host else (["::", "0.0.0.0"] if socket.has_ipv6 else ["0.0.0.0"])
    for i, candidate in enumerate(hosts):
        try:
            server, thread = start_http_server(port, candidate, registry)
        except OSError as exc:
            if i + 1 < len(hosts) and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                continue  # no IPv6 on this host: every IPv4 address
            reason = "the port is in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            log.error("metrics.unavailable", listen=text, error=f"--prometheusHTTPServer {text}: {reason}",
                      hint="running on without metrics; set another port, or set it empty")
            return None
        log.info("metrics.serving", listen=text, port=int(server.server_address[1]))
        return MetricsServer(server, thread, text)
    return None
