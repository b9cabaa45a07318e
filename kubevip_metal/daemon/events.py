"""What the daemon tells operators as Kubernetes Events, and on which object (`kubectl get events`, `kubectl describe`).

Reasons, their type, and the object each lands on:

- `BecameLeader` (Normal), the control-plane Lease: this node took the Lease (and the VIP).
- `SteppedDown` (Warning; Normal for a shutdown), the control-plane Lease: it stopped leading, with the elector's
  reason (not renewed within the renew deadline, lock taken by another node, shutting down).
- `VipDriftRepaired` (Warning), each owner's object (the Lease for the control plane, each Service sharing the
  address; the Node if none is known): the reconciler re-added a deleted VIP or removed a stray one.
- `ElasticIpMoved` (Normal), the control-plane Lease: the Elastic IP was assigned to this device.
- `BgpPeerUp` (Normal) / `BgpPeerDown` (Warning, with the reason), this Node: a session became / stopped being
  Established.
- `VipServed` (Normal) / `VipWithdrawn` (Normal, with the reason), the Service: this node started / stopped
  serving its VIPs while the Service stays (nothing for a deleted Service, nor at shutdown).
- `ServiceSkipped` (Warning), the Service: ours, but malformed; the message names the Service and the key.
- `DhcpNoLease` (Warning), the Service: its holder's DHCP client got no lease for its `0.0.0.0` yet (retried).

BGP sessions land on the **Node**, not the Lease: they are the node's own (every node peers, leading or not, and
BGP without leader election has no Lease at all), so `kubectl describe node` shows a node's flaps beside its
other state, as the kubelet's events are. The speaker's sessions are read every `BGP_POLL_SECONDS` (an in-memory
dict; works with any `Speaker`); a flap shorter than that shows as a Down and an Up at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from generic.addresses import Vip
from generic.logfmt import get_logger
from kubevip_metal.config import Config
from kubevip_metal.events import NORMAL, WARNING, EventRecorder, NullRecorder, ObjectRef, Recorder

log = get_logger("kubevip_metal.daemon.events")

BGP_POLL_SECONDS = 2.0
CONTROL_PLANE_OWNER = "control-plane"
SERVICE_OWNER_PREFIX = "service:"
SHUTTING_DOWN = "shutting down"  # generic.election.Elector's reason at stop


def recorder_for(config: Config, api_client: Callable[[], Any]) -> EventRecorder:
    assert config.node_name is not None
    return EventRecorder(api_client, config.node_name)


class DaemonEvents:
    """The daemon's hooks, turned into Events on the right objects. Every method only queues (never blocks, never
    raises), so it may be called from an election callback or under the VIP controller's lock."""

    def __init__(self, config: Config, recorder: Recorder | None = None) -> None:
        assert config.node_name is not None
        self.node = config.node_name
        self.recorder: Any = recorder if recorder is not None else NullRecorder()
        election = config.election
        self._lease = ObjectRef.lease(election.namespace, election.lease_name)
        self._lease_uid: Callable[[], str] = lambda: ""
        self._services: dict[str, ObjectRef] = {}  # owner -> the Service, as last seen
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watchers: list[threading.Thread] = []

    def start(self) -> None:
        start = getattr(self.recorder, "start", None)
        if start is not None:
            start()

    def stop_watching(self) -> None:
        """First at shutdown: a speaker closing is no peer going down."""
        self._stop.set()
        for thread in self._watchers:
            thread.join(BGP_POLL_SECONDS + 0.5)

    def close(self, timeout: float = 0.5) -> None:
        """Last at shutdown: what is queued (the SteppedDown) is written for at most `timeout`."""
        self.stop_watching()
        close = getattr(self.recorder, "close", None)
        if close is not None:
            close(timeout)

    def _record(self, ref: ObjectRef, reason: str, message: str, kind: str = NORMAL) -> None:
        try:
            self.recorder.record(ref, reason, message, kind)
        except Exception as exc:  # a recorder never raises; this is the belt to its braces
            log.warning("event.hook_failed", reason=reason, error=f"{type(exc).__name__}: {exc}")

    # -- the control-plane Lease ----------------------------------------------------------------------------

    def lease_uid_from(self, lock: Any) -> None:
        """The Lease's uid, read from the lock as it last saw the object (`kubectl describe lease` matches it)."""
        self._lease_uid = lambda: str(getattr(lock, "uid", "") or "")

    def lease_ref(self) -> ObjectRef:
        base = self._lease
        return ObjectRef.lease(base.namespace, base.name, self._lease_uid())

    def became_leader(self, vips: Sequence[Vip]) -> None:
        self._record(self.lease_ref(), "BecameLeader",
                     f"{self.node} became leader; holding {', '.join(str(v) for v in vips) or 'no VIP'}")

    def stepped_down(self, reason: str | None) -> None:
        why = reason or "unknown"
        self._record(self.lease_ref(), "SteppedDown", f"{self.node} stopped leading: {why}",
                     NORMAL if why == SHUTTING_DOWN else WARNING)

    def eip_moved(self, address: str, device: str, removed_from: Iterable[str]) -> None:
        others = sorted(removed_from)
        self._record(self.lease_ref(), "ElasticIpMoved",
                     f"Elastic IP {address} assigned to device {device} ({self.node})"
                     + (f", removed from {', '.join(others)}" if others else ""))

    # -- VIP drift --------------------------------------------------------------------------------------------

    def vip_repaired(self, vip: Vip, owners: Sequence[str], what: str) -> None:
        """On each owner's object (the Lease for the control plane, each Service); the Node when none is known."""
        refs = self._refs_of(owners)
        message = f"VIP {vip} on {self.node}: {what}"
        for ref in refs or [ObjectRef.node(self.node)]:
            self._record(ref, "VipDriftRepaired", message, WARNING)

    def _refs_of(self, owners: Sequence[str]) -> list[ObjectRef]:
        refs = []
        with self._lock:
            for owner in owners:
                if owner == CONTROL_PLANE_OWNER:
                    refs.append(self.lease_ref())
                elif owner in self._services:
                    refs.append(self._services[owner])
        return refs

    # -- Services -----------------------------------------------------------------------------------------------

    def _service(self, namespace: str, name: str, uid: str) -> ObjectRef:
        ref = ObjectRef.service(namespace, name, uid)
        with self._lock:
            self._services[f"{SERVICE_OWNER_PREFIX}{namespace}/{name}"] = ref
        return ref

    def service_served(self, namespace: str, name: str, uid: str, vips: Iterable[Vip]) -> None:
        addresses = ", ".join(str(v.address) for v in sorted(vips, key=str))
        self._record(self._service(namespace, name, uid), "VipServed", f"{addresses} served by {self.node}")

    def service_withdrawn(self, namespace: str, name: str, uid: str, vips: Iterable[Vip], why: str) -> None:
        addresses = ", ".join(str(v.address) for v in sorted(vips, key=str))
        self._record(self._service(namespace, name, uid), "VipWithdrawn",
                     f"{addresses} no longer served by {self.node}: {why}")

    def service_skipped(self, namespace: str, name: str, uid: str, reason: str) -> None:
        self._record(ObjectRef.service(namespace, name, uid), "ServiceSkipped", reason, WARNING)

    def dhcp_no_lease(self, namespace: str, name: str, uid: str, message: str) -> None:
        self._record(ObjectRef.service(namespace, name, uid), "DhcpNoLease", message, WARNING)

    def service_gone(self, namespace: str, name: str) -> None:
        with self._lock:
            self._services.pop(f"{SERVICE_OWNER_PREFIX}{namespace}/{name}", None)

    # -- announcers: the Elastic IP, the BGP speaker -----------------------------------------------------------

    def attach(self, announcers: Iterable[Any]) -> None:
        """Hook the mode's announcers: each Elastic IP's moves, each BGP speaker's sessions."""
        for announcer in announcers:
            for eip in getattr(announcer, "elastic_ips", ()):
                eip.on_moved = self.eip_moved
            speaker = getattr(announcer, "speaker", None)
            if speaker is not None and hasattr(speaker, "sessions"):
                thread = threading.Thread(target=self._watch_sessions, args=(speaker,), name="events-bgp",
                                          daemon=True)
                self._watchers.append(thread)
                thread.start()

    def _watch_sessions(self, speaker: Any) -> None:
        seen: dict[Any, tuple[bool, float]] = {}
        while not self._stop.is_set():
            try:
                sessions = speaker.sessions()
            except Exception as exc:  # a closed speaker: nothing more to tell
                log.debug("event.bgp_sessions_failed", error=f"{type(exc).__name__}: {exc}")
                sessions = {}
            if self._stop.is_set():
                return
            seen = self.sessions_changed(seen, sessions)
            self._stop.wait(BGP_POLL_SECONDS)

    def sessions_changed(self, seen: dict[Any, tuple[bool, float]], sessions: dict[Any, Any]) -> dict[Any, tuple[
            bool, float]]:
        """Events for what changed since `seen` (peer -> (established, since)); returns the new `seen`."""
        node = ObjectRef.node(self.node)
        now: dict[Any, tuple[bool, float]] = {}
        for peer, state in sorted(sessions.items(), key=lambda item: str(item[0])):
            up, since = bool(state.established), float(state.since)
            now[peer] = (up, since)
            before = seen.get(peer)
            was_up = before is not None and before[0]
            flapped = was_up and up and before is not None and before[1] != since
            if was_up and (not up or flapped):
                self._record(node, "BgpPeerDown", f"BGP session to {peer} (AS {state.asn}) down: "
                             f"{state.last_error or state.phase.value}", WARNING)
            if up and (not was_up or flapped):
                self._record(node, "BgpPeerUp", f"BGP session to {peer} (AS {state.asn}) established")
        return now
