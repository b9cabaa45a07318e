"""Keeps the BGP speaker's peers equal to what the sources say now: live re-peering without a restart.

    peering = Peering(flags, sources, to_settings)
    settings = peering.initial()          # every source read once; NotReady while one has nothing yet
    speaker = PeeredSpeaker(make_speaker(settings), peering)   # from now on, changes re-peer it

Each source (the node's annotations, the Metal API) runs its own watch or timer and reports what it found; the
controller combines the flags with the latest value of every source (kubevip_metal.peering.settings), and when
the result differs from what the speaker runs, hands the speaker the whole new settings. The speaker keeps the
sessions whose settings did not change (ExaBGP reloads its configuration and keeps equal neighbours), so a
password rotated on one peer resets that session only.

A source that loses its settings (annotations removed, the Metal API failing) keeps its last good value and says
so; a combination that conflicts keeps the settings the speaker runs and says why, so a bad edit never drops
working sessions. Leadership (the first route advertised) asks the sources to re-read at once, so a new leader
peers with what Metal says now, not what it said at start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from generic.bgp.peers import BgpPeer
from generic.bgp.speaker import IPNetwork, Route, SessionState, Speaker, SpeakerSettings
from generic.logfmt import get_logger
from generic.parse import IPAddress
from kubevip_metal.errors import NotReady
from kubevip_metal.peering.settings import Combined, Discovered, FlagBgp, PeeringError, combine

log = get_logger("kubevip_metal.peering")


class Source(Protocol):
    """One place BGP settings are discovered."""

    name: str

    def first(self) -> Discovered:
        """Read now, blocking; NotReady while there is nothing to peer with yet, FatalError if there never will be."""
        ...

    def start(self, on_change: Callable[[Discovered], None]) -> None:
        """Follow changes from now on, calling `on_change` from any thread with each new value."""
        ...

    def refresh(self) -> None:
        """Re-read soon (a source that is watched already has the latest value and may do nothing)."""
        ...

    def close(self) -> None: ...


class Peering:
    """The combined BGP settings of the flags and every source; `on_settings` gets each change."""

    def __init__(self, flags: FlagBgp, sources: Sequence[Source],
                 to_settings: Callable[[Combined], SpeakerSettings]) -> None:
        self.flags, self.sources, self._to_settings = flags, tuple(sources), to_settings
        self._latest: dict[str, Discovered] = {}
        self._current: SpeakerSettings | None = None
        self._lock = threading.Lock()
        self._on_settings: Callable[[SpeakerSettings], None] | None = None
        self._closed = False

    def initial(self) -> SpeakerSettings:
        """Each source read once (NotReady / FatalError as they raise), then the combined settings."""
        for source in self.sources:
            if source.name not in self._latest:
                try:
                    self._latest[source.name] = source.first()
                except PeeringError as exc:  # e.g. Metal's neighbours disagreeing on our AS: may be fixed there
                    raise NotReady(f"BGP settings from {source.name}: {exc}") from None
        try:
            settings = self._combined()
        except (PeeringError, ValueError) as exc:
            raise NotReady(f"BGP settings: {exc}") from None
        if not settings.peers:
            raise NotReady("BGP settings: no peer yet from " + ", ".join(s.name for s in self.sources))
        self._current = settings
        return settings

    def follow(self, on_settings: Callable[[SpeakerSettings], None]) -> None:
        """From now on, every change of a source that changes the combined settings calls `on_settings`."""
        self._on_settings = on_settings
        for source in self.sources:
            source.start(self._listener(source.name))

    def _listener(self, name: str) -> Callable[[Discovered], None]:
        return lambda found: self._changed(name, found)

    def refresh(self) -> None:
        for source in self.sources:
            source.refresh()

    @property
    def current(self) -> SpeakerSettings | None:
        return self._current

    def close(self) -> None:
        with self._lock:
            self._closed = True
        for source in self.sources:
            source.close()

    def _combined(self) -> SpeakerSettings:
        discovered = [self._latest[source.name] for source in self.sources if source.name in self._latest]
        return self._to_settings(combine(self.flags, discovered))

    def _changed(self, name: str, found: Discovered) -> None:
        with self._lock:
            if self._closed:
                return
            previous = self._latest.get(name)
            self._latest[name] = found
            try:
                settings = self._combined()
            except (PeeringError, ValueError) as exc:
                self._latest[name] = previous if previous is not None else found
                log.error("bgp.settings_rejected", source=name, error=str(exc),
                          effect="the speaker keeps its current peers")
                return
            if settings == self._current:
                return
            if not settings.peers:
                log.warning("bgp.settings_without_peers", source=name, effect="the speaker keeps its current peers")
                return
            log.info("bgp.repeering", source=name, **describe_change(self._current, settings))
            self._current = settings
            callback = self._on_settings
        if callback is not None:
            callback(settings)


def describe_change(old: SpeakerSettings | None, new: SpeakerSettings) -> dict[str, object]:
    """Which peers were added, removed or changed (and which fields), for one log line; never a password."""
    before: Mapping[IPAddress, BgpPeer] = {p.address: p for p in old.peers} if old else {}
    after: Mapping[IPAddress, BgpPeer] = {p.address: p for p in new.peers}
    changed = {}
    for address in before.keys() & after.keys():
        fields = [name for name in ("asn", "password", "multihop", "port", "local_address")
                  if getattr(before[address], name) != getattr(after[address], name)]
        if fields:
            changed[str(address)] = fields
    out: dict[str, object] = {
        "added": sorted(str(a) for a in after.keys() - before.keys()),
        "removed": sorted(str(a) for a in before.keys() - after.keys()),
        "changed": changed,
    }
    if old is not None and (old.local_as, old.router_id) != (new.local_as, new.router_id):
        out["identity"] = f"AS {old.local_as} router ID {old.router_id} -> AS {new.local_as} router ID {new.router_id}"
    return out


class PeeredSpeaker:
    """A `Speaker` whose peers follow a `Peering`; everything else is the wrapped speaker's. Closing it stops the
    sources first, so no re-peering can reach a speaker that is withdrawing its routes."""

    def __init__(self, speaker: Speaker, peering: Peering) -> None:
        self.speaker, self.peering = speaker, peering
        self._advertising = False
        peering.follow(speaker.configure)

    def configure(self, settings: SpeakerSettings) -> None:
        self.speaker.configure(settings)

    def advertise(self, routes: Mapping[IPNetwork, Route]) -> None:
        if routes and not self._advertising:
            self.peering.refresh()  # leadership (or the first healthy moment): re-read what the sources say now
        self._advertising = bool(routes)
        self.speaker.advertise(routes)

    def sessions(self) -> dict[IPAddress, SessionState]:
        return self.speaker.sessions()

    def close(self) -> None:
        self.peering.close()
        self.speaker.close()
