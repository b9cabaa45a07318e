"""How BGP settings from the flags, the Metal API and node annotations combine (kubevip_metal.peering.settings),
and how the speaker follows its sources live (kubevip_metal.peering.controller), with in-memory sources."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from generic.bgp.peers import BgpPeer, PeerSource
from generic.bgp.speaker import IPNetwork, Route, SpeakerSettings
from generic.secret import Secret
from kubevip_metal.errors import NotReady
from kubevip_metal.peering.controller import PeeredSpeaker, Peering
from kubevip_metal.peering.settings import Combined, Discovered, FlagBgp, PeeringError, combine
from tests.fakes import RecordingSpeaker

ip = ipaddress.ip_address
NO_FLAGS = FlagBgp(peers=(), local_as=None, router_id=None, source_given=False)


def peer(address: str, asn: int = 65530, password: str | None = None, source: PeerSource = PeerSource.METAL_API,
         local: str | None = None, multihop: bool = False) -> BgpPeer:
    return BgpPeer(ip(address), asn, Secret(password) if password else None, multihop,
                   source=source, local_address=ip(local) if local else None)


def from_metal(*peers: BgpPeer, local_as: int | None = 65000, router_id: str | None = "10.70.17.3") -> Discovered:
    return Discovered(PeerSource.METAL_API, peers, local_as,
                      ipaddress.IPv4Address(router_id) if router_id else None)


def from_annotations(*peers: BgpPeer, local_as: int | None = 65000, router_id: str | None = "10.70.17.3") -> Discovered:
    return Discovered(PeerSource.ANNOTATION, peers, local_as,
                      ipaddress.IPv4Address(router_id) if router_id else None)


def test_flag_peers_come_first_then_each_source_in_its_order() -> None:
    flags = FlagBgp((peer("192.0.2.1", 65100, source=PeerSource.FLAG),), None, None, False)
    found = combine(flags, [from_metal(peer("169.254.255.1"), peer("169.254.255.2"))])
    assert [str(p.address) for p in found.peers] == ["192.0.2.1", "169.254.255.1", "169.254.255.2"]
    assert (found.local_as, str(found.router_id)) == (65000, "10.70.17.3")


def test_a_flag_overrides_a_discovered_peer_with_the_same_address() -> None:
    flags = FlagBgp((peer("169.254.255.1", 65111, "from-flag", source=PeerSource.FLAG),), None, None, False)
    found = combine(flags, [from_metal(peer("169.254.255.1", 65530, "from-metal"), peer("169.254.255.2"))])
    assert found.peers[0].asn == 65111 and found.peers[0].password == Secret("from-flag")
    assert len(found.peers) == 2


def test_equal_peers_from_two_sources_merge_and_different_ones_are_an_error_without_the_password() -> None:
    same = combine(NO_FLAGS, [from_metal(peer("169.254.255.1", password="pw")),
                              from_annotations(peer("169.254.255.1", password="pw", source=PeerSource.ANNOTATION))])
    assert len(same.peers) == 1 and same.peers[0].source is PeerSource.METAL_API
    with pytest.raises(PeeringError) as caught:
        combine(NO_FLAGS, [from_metal(peer("169.254.255.1", password="one")),
                           from_annotations(peer("169.254.255.1", 65531, "two", source=PeerSource.ANNOTATION))])
    message = str(caught.value)
    assert "169.254.255.1" in message and "metal-api" in message and "annotation" in message
    assert "asn, password" in message and "one" not in message.replace("one of them", "")
    assert "two" not in message


def test_local_as_and_router_id_the_flags_then_the_sources_then_the_default() -> None:
    assert combine(NO_FLAGS, [from_metal(peer("169.254.255.1"))]).local_as == 65000
    assert combine(NO_FLAGS, [from_metal(peer("169.254.255.1"), local_as=None)]).local_as == 65000  # the default
    flags = FlagBgp((), 64999, ipaddress.IPv4Address("192.0.2.99"), False)
    found = combine(flags, [from_metal(peer("169.254.255.1"), local_as=65010)])
    assert (found.local_as, str(found.router_id)) == (64999, "192.0.2.99")
    with pytest.raises(PeeringError, match="disagree on the local AS"):
        combine(NO_FLAGS, [from_metal(peer("169.254.255.1"), local_as=65010),
                           from_annotations(peer("169.254.255.2", source=PeerSource.ANNOTATION), local_as=65020)])


def test_source_flags_drop_the_discovered_source_addresses() -> None:
    discovered = [from_metal(peer("169.254.255.1", local="10.70.17.3"))]
    assert combine(NO_FLAGS, discovered).peers[0].local_address == ip("10.70.17.3")
    flags = FlagBgp((), None, None, source_given=True)
    assert combine(flags, discovered).peers[0].local_address is None


class FakeSource:
    def __init__(self, name: str, first: Discovered | Exception) -> None:
        self.name, self._first = name, first
        self.on_change: Callable[[Discovered], None] | None = None
        self.refreshed = self.closed = 0

    def first(self) -> Discovered:
        if isinstance(self._first, Exception):
            raise self._first
        return self._first

    def start(self, on_change: Callable[[Discovered], None]) -> None:
        self.on_change = on_change

    def refresh(self) -> None:
        self.refreshed += 1

    def close(self) -> None:
        self.closed += 1


def to_settings(combined: Combined) -> SpeakerSettings:
    return SpeakerSettings(combined.router_id or ipaddress.IPv4Address("10.0.0.1"), combined.local_as,
                           combined.peers)


def test_the_speaker_is_re_peered_when_a_source_changes_and_only_then() -> None:
    source = FakeSource("annotations", from_annotations(peer("169.254.255.1", password="old",
                                                        source=PeerSource.ANNOTATION)))
    peering = Peering(NO_FLAGS, [source], to_settings)
    speaker = RecordingSpeaker(peering.initial())
    peered = PeeredSpeaker(speaker, peering)
    assert source.on_change is not None
    first = speaker.settings
    source.on_change(from_annotations(peer("169.254.255.1", password="old", source=PeerSource.ANNOTATION)))
    assert speaker.settings is first  # nothing changed: no reconfiguration
    rotated = from_annotations(peer("169.254.255.1", password="new", source=PeerSource.ANNOTATION),
                          peer("169.254.255.2", 65531, source=PeerSource.ANNOTATION))
    source.on_change(rotated)
    assert [(str(p.address), p.asn, p.password) for p in speaker.settings.peers] == [
        ("169.254.255.1", 65530, Secret("new")), ("169.254.255.2", 65531, None)]
    route: dict[IPNetwork, Route] = {ipaddress.ip_network("203.0.113.10/32"): Route()}
    peered.advertise(route)
    peered.advertise(route)
    assert source.refreshed == 1  # leadership (the first route) asks the sources to re-read once
    peered.close()
    assert source.closed == 1 and speaker.closed


def test_a_conflicting_or_empty_change_keeps_the_running_peers() -> None:
    metal_source = FakeSource("metal-api", from_metal(peer("169.254.255.1", password="pw")))
    annotation_source = FakeSource("annotations", from_annotations(peer("169.254.255.2", source=PeerSource.ANNOTATION)))
    peering = Peering(NO_FLAGS, [metal_source, annotation_source], to_settings)
    speaker = RecordingSpeaker(peering.initial())
    PeeredSpeaker(speaker, peering)
    running = speaker.settings
    assert annotation_source.on_change is not None
    annotation_source.on_change(from_annotations(peer("169.254.255.1", password="other", source=PeerSource.ANNOTATION)))
    assert speaker.settings is running
    annotation_source.on_change(from_annotations())  # that source has no peer now; the other's still count
    assert [p.address for p in speaker.settings.peers] == [ip("169.254.255.1")]


def test_nothing_to_peer_with_at_start_is_not_ready() -> None:
    empty = Peering(NO_FLAGS, [FakeSource("annotations", from_annotations())], to_settings)
    with pytest.raises(NotReady, match="no peer yet from annotations"):
        empty.initial()
    waiting = Peering(NO_FLAGS, [FakeSource("annotations", NotReady("waiting for the BGP annotations"))],
                      to_settings)
    with pytest.raises(NotReady, match="waiting"):
        waiting.initial()
