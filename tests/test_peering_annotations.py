"""The node-annotation source of BGP settings: the CCMs' exact shapes (Equinix indexed and legacy, Cherry Servers),
per-peer settings, deterministic order, errors naming the key and never a password, and property tests over any
annotation map and over CCM-rendered peers."""

from __future__ import annotations

import base64
import ipaddress
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generic.bgp.peers import BgpPeer, PeerSource
from generic.parse import IPAddress
from generic.secret import Secret
from kubevip_metal.peering.annotations import (
    FIELDS,
    AnnotationError,
    AnnotationsMissing,
    Layout,
    parse_annotations,
    parse_annotations_full,
)
from kubevip_metal.peering.settings import Discovered, FlagBgp, PeeringError, combine

EM = "metal.equinix.com"
CHERRY = "cherryservers.com"
PASSWORD = "s3cr3t-md5"
V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ---- a CCM as a test helper: peers in, annotations out, the way the CCMs write them ----

@dataclass(frozen=True)
class CcmPeer:
    address: IPAddress
    asn: int
    password: str | None = None  # None: `bgp-pass` written empty (Equinix) or not at all (write_pass=False)
    multihop: bool | None = None  # None: no `peer-multi-hop` key (the Equinix CCM never writes one)
    src_ip: IPAddress | None = None  # None: no `src-ip` key (Cherry Servers before v1.35.3)

    def expected(self) -> BgpPeer:
        local = self.src_ip if self.src_ip is not None and self.src_ip.version == self.address.version else None
        return BgpPeer(self.address, self.asn, Secret(self.password) if self.password else None,
                       bool(self.multihop), source=PeerSource.ANNOTATION, local_address=local)


def _values(peer: CcmPeer, node_asn: int, write_pass: bool) -> dict[str, str]:
    out = {"node-asn": str(node_asn), "peer-asn": str(peer.asn), "peer-ip": str(peer.address)}
    if peer.src_ip is not None:
        out["src-ip"] = str(peer.src_ip)
    if write_pass:
        out["bgp-pass"] = b64(peer.password or "")
    if peer.multihop is not None:
        out["peer-multi-hop"] = "true" if peer.multihop else "false"
    return out


def ccm_indexed(prefix: str, node_asn: int, peers: Sequence[CcmPeer], indices: Sequence[int] | None = None,
                write_pass: bool = True) -> dict[str, str]:
    """CCM v3.3+ (and Cherry Servers): `prefix/bgp-peers-N-field`, one peer per index."""
    out: dict[str, str] = {}
    for n, peer in zip(indices if indices is not None else range(len(peers)), peers, strict=True):
        for field, value in _values(peer, node_asn, write_pass).items():
            out[f"{prefix}/bgp-peers-{n}-{field}"] = value
    return out


def ccm_legacy(prefix: str, node_asn: int, peers: Sequence[CcmPeer], write_pass: bool = True) -> dict[str, str]:
    """CCM v3.2: `prefix/field`, the peer addresses comma-joined; the other values are one for all peers."""
    out = {f"{prefix}/{field}": value for field, value in _values(peers[0], node_asn, write_pass).items()}
    out[f"{prefix}/peer-ip"] = ",".join(str(peer.address) for peer in peers)
    return out


EQUINIX_PEERS = [CcmPeer(V4("169.254.255.1"), 65530, PASSWORD, src_ip=V4("10.70.17.3")),
                 CcmPeer(V4("169.254.255.2"), 65530, PASSWORD, src_ip=V4("10.70.17.3"))]
EQUINIX_EXPECTED = Discovered(PeerSource.ANNOTATION, tuple(p.expected() for p in EQUINIX_PEERS), 65000,
                              V4("10.70.17.3"))


# ---- the exact shapes ----

def test_equinix_ccm_v33_indexed() -> None:
    annotations = {
        "metal.equinix.com/bgp-peers-0-node-asn": "65000",
        "metal.equinix.com/bgp-peers-0-peer-asn": "65530",
        "metal.equinix.com/bgp-peers-0-peer-ip": "169.254.255.1",
        "metal.equinix.com/bgp-peers-0-src-ip": "10.70.17.3",
        "metal.equinix.com/bgp-peers-0-bgp-pass": "czNjcjN0LW1kNQ==",
        "metal.equinix.com/bgp-peers-1-node-asn": "65000",
        "metal.equinix.com/bgp-peers-1-peer-asn": "65530",
        "metal.equinix.com/bgp-peers-1-peer-ip": "169.254.255.2",
        "metal.equinix.com/bgp-peers-1-src-ip": "10.70.17.3",
        "metal.equinix.com/bgp-peers-1-bgp-pass": "czNjcjN0LW1kNQ==",
        "metal.equinix.com/network-4-private": "10.70.17.0/25",
        "node.alpha.kubernetes.io/ttl": "0",
    }
    parsed = parse_annotations_full(annotations, EM)
    assert parsed.discovered == EQUINIX_EXPECTED
    assert parsed.layout is Layout.INDEXED and parsed.notes == ()
    first = parsed.discovered.peers[0]
    assert first.password is not None and first.password.reveal() == PASSWORD
    assert first.local_address == V4("10.70.17.3") and first.port == 179 and not first.multihop
    assert parse_annotations(annotations, EM) == parsed.discovered


def test_equinix_ccm_v32_legacy_comma_list() -> None:
    annotations = {
        "metal.equinix.com/node-asn": "65000",
        "metal.equinix.com/peer-asn": "65530",
        "metal.equinix.com/peer-ip": "169.254.255.2,169.254.255.1",
        "metal.equinix.com/src-ip": "10.70.17.3",
        "metal.equinix.com/bgp-pass": b64(PASSWORD),
        "metal.equinix.com/network/4/private": "10.70.17.0/25",
    }
    parsed = parse_annotations_full(annotations, EM)
    assert parsed.discovered == EQUINIX_EXPECTED  # sorted: .1 before .2 whatever the list order
    assert parsed.layout is Layout.LEGACY and parsed.notes == ()


def test_both_layouts_equal_indexed_used_without_notes() -> None:
    annotations = ccm_legacy(EM, 65000, EQUINIX_PEERS) | ccm_indexed(EM, 65000, EQUINIX_PEERS)
    parsed = parse_annotations_full(annotations, EM)
    assert parsed.discovered == EQUINIX_EXPECTED
    assert parsed.layout is Layout.INDEXED and parsed.notes == ()


def test_both_layouts_disagreeing_indexed_wins_and_a_note_names_the_legacy_keys() -> None:
    old = [CcmPeer(p.address, 65531, "old-password", src_ip=p.src_ip) for p in EQUINIX_PEERS]
    annotations = ccm_legacy(EM, 65000, old) | ccm_indexed(EM, 65000, EQUINIX_PEERS)
    parsed = parse_annotations_full(annotations, EM)
    assert parsed.discovered == EQUINIX_EXPECTED
    (note,) = parsed.notes
    assert "metal.equinix.com/peer-asn" in note and "metal.equinix.com/bgp-pass" in note
    assert "metal.equinix.com/node-asn" not in note and "metal.equinix.com/peer-ip," not in note
    for secret in ("old-password", b64("old-password"), PASSWORD, b64(PASSWORD)):
        assert secret not in note


def test_legacy_with_other_peers_is_noted() -> None:
    annotations = ccm_indexed(EM, 65000, EQUINIX_PEERS) | {
        "metal.equinix.com/peer-ip": "169.254.255.1", "metal.equinix.com/node-asn": "65001",
        "metal.equinix.com/peer-asn": "65530", "metal.equinix.com/src-ip": "10.70.17.4"}
    (note,) = parse_annotations_full(annotations, EM).notes
    for field in ("node-asn", "peer-ip", "src-ip", "bgp-pass"):
        assert f"metal.equinix.com/{field}" in note


def test_legacy_with_one_other_peer_is_compared_with_every_indexed_peer() -> None:
    annotations = ccm_indexed(EM, 65000, EQUINIX_PEERS) | {
        "metal.equinix.com/peer-ip": "169.254.255.9", "metal.equinix.com/node-asn": "65000",
        "metal.equinix.com/peer-asn": "65531"}
    (note,) = parse_annotations_full(annotations, EM).notes
    for field in ("peer-ip", "peer-asn", "src-ip", "bgp-pass"):
        assert f"metal.equinix.com/{field}" in note
    assert "metal.equinix.com/node-asn" not in note


def test_unusable_legacy_keys_are_noted_not_fatal() -> None:
    annotations = ccm_indexed(EM, 65000, EQUINIX_PEERS) | {"metal.equinix.com/peer-asn": "banana",
                                                            "metal.equinix.com/bgp-pass": "!!"}
    parsed = parse_annotations_full(annotations, EM)
    assert parsed.discovered == EQUINIX_EXPECTED
    (note,) = parsed.notes
    assert "ignored" in note and "metal.equinix.com/" in note


def test_cherry_servers_shape() -> None:
    annotations = {
        "cherryservers.com/bgp-peers-0-node-asn": "65201",
        "cherryservers.com/bgp-peers-0-peer-asn": "65200",
        "cherryservers.com/bgp-peers-0-peer-ip": "10.168.1.1",
        "cherryservers.com/bgp-peers-0-peer-multi-hop": "true",
        "cherryservers.com/bgp-peers-1-node-asn": "65201",
        "cherryservers.com/bgp-peers-1-peer-asn": "65200",
        "cherryservers.com/bgp-peers-1-peer-ip": "10.168.1.2",
        "cherryservers.com/bgp-peers-1-peer-multi-hop": "true",
        "cherryservers.com/fip-region": "LT-Siauliai",
        "cherryservers.com/loadbalancer-managed": "true",
    }
    found = parse_annotations(annotations, CHERRY)
    assert found == Discovered(PeerSource.ANNOTATION, (
        BgpPeer(V4("10.168.1.1"), 65200, None, True, source=PeerSource.ANNOTATION),
        BgpPeer(V4("10.168.1.2"), 65200, None, True, source=PeerSource.ANNOTATION)), 65201, None)
    assert all(peer.local_address is None and peer.password is None for peer in found.peers)


def test_cherry_servers_with_src_ip() -> None:
    peers = [CcmPeer(V4("10.168.1.1"), 65200, multihop=True, src_ip=V4("5.199.171.10"))]
    found = parse_annotations(ccm_indexed(CHERRY, 65201, peers, write_pass=False), CHERRY)
    assert found.router_id == V4("5.199.171.10") and found.peers == (peers[0].expected(),)


def test_custom_prefix_and_exact_key_matching() -> None:
    prefix = "bgp.example.org"
    good = ccm_indexed(prefix, 64512, [CcmPeer(V4("192.0.2.1"), 64513)])
    noise = {
        "metal.equinix.com/bgp-peers-0-peer-ip": "198.51.100.1",  # another prefix
        "bgp.example.org.evil/bgp-peers-1-peer-ip": "198.51.100.2",
        "xbgp.example.org/bgp-peers-1-peer-ip": "198.51.100.3",
        "bgp-example.org/bgp-peers-1-peer-ip": "198.51.100.4",
        "bgp.example.org/bgp-peers-0-peer-ip-old": "198.51.100.5",  # extra text
        "bgp.example.org/bgp-peers-0-peer-ipx": "garbage",
        "bgp.example.org/xbgp-peers-0-peer-ip": "garbage",
        "bgp.example.org/bgp-peers-01-peer-ip": "198.51.100.6",  # not how an index is written
        "bgp.example.org/bgp-peers--1-peer-ip": "198.51.100.7",
        "bgp.example.org/bgp-peers-x-peer-ip": "198.51.100.8",
        "bgp.example.org/bgp-peers-٣-peer-ip": "198.51.100.9",  # a non-ASCII digit
        "bgp.example.org/peer-ip\n": "198.51.100.10",
        "bgp.example.org/sub/peer-ip": "198.51.100.11",
        "bgp.example.org/network-4-private": "10.0.0.0/25",
    }
    parsed = parse_annotations_full(good | noise, prefix)
    assert [str(p.address) for p in parsed.discovered.peers] == ["192.0.2.1"]
    assert parsed.discovered.local_as == 64512 and parsed.layout is Layout.INDEXED and parsed.notes == ()
    with pytest.raises(AnnotationsMissing):
        parse_annotations(good, EM)


def test_each_peer_keeps_its_own_asn_password_and_multihop() -> None:
    peers = [CcmPeer(V4("192.0.2.1"), 65001, "first-pw", False, V4("192.0.2.10")),
             CcmPeer(V4("192.0.2.2"), 65002, "second-pw", True, V4("192.0.2.10")),
             CcmPeer(V4("192.0.2.3"), 65003, None, None, V4("192.0.2.10"))]
    found = parse_annotations(ccm_indexed(EM, 65000, peers), EM)
    assert found.peers == tuple(p.expected() for p in peers)
    assert [p.asn for p in found.peers] == [65001, 65002, 65003]
    assert [p.password.reveal() if p.password else None for p in found.peers] == ["first-pw", "second-pw", None]
    assert [p.multihop for p in found.peers] == [False, True, False]


def test_indices_in_numeric_order_any_set_of_indices() -> None:
    peers = [CcmPeer(V4(f"192.0.2.{n}"), 65000 + n) for n in (1, 2, 3)]
    found = parse_annotations(ccm_indexed(EM, 64512, peers, indices=[10, 2, 0]), EM)
    assert [p.asn for p in found.peers] == [65003, 65002, 65001]  # index 0, 2, 10 (not "10" < "2")


def test_comma_list_in_one_index_and_index_before_address() -> None:
    annotations = ccm_indexed(EM, 64512, [CcmPeer(V4("192.0.2.9"), 65009), CcmPeer(V4("192.0.2.1"), 65001)])
    annotations["metal.equinix.com/bgp-peers-0-peer-ip"] = " 2001:db8::9 , 192.0.2.9,192.0.2.8,"
    found = parse_annotations(annotations, EM)
    assert [str(p.address) for p in found.peers] == ["192.0.2.8", "192.0.2.9", "2001:db8::9", "192.0.2.1"]
    assert [p.asn for p in found.peers] == [65009, 65009, 65009, 65001]


def test_ipv6_peers_and_per_family_source_addresses() -> None:
    peers = [CcmPeer(V4("169.254.255.1"), 65530, src_ip=V4("10.70.17.3")),
             CcmPeer(V6("2604:1380:4641:c500::1"), 65530, src_ip=V6("2604:1380:4641:c500::7")),
             CcmPeer(V6("2604:1380:4641:c500::2"), 65530, src_ip=V6("2604:1380:4641:c500::7"))]
    found = parse_annotations(ccm_indexed(EM, 65000, peers), EM)
    assert found.peers == tuple(p.expected() for p in peers)
    assert found.router_id == V4("10.70.17.3")
    only_v6 = parse_annotations(ccm_indexed(EM, 65000, peers[1:]), EM)
    assert only_v6.router_id is None and only_v6.peers[0].local_address == V6("2604:1380:4641:c500::7")


def test_src_ip_absent_in_one_index_is_fine() -> None:
    peers = [CcmPeer(V4("192.0.2.1"), 65001, src_ip=V4("192.0.2.10")), CcmPeer(V4("192.0.2.2"), 65001)]
    found = parse_annotations(ccm_indexed(EM, 65000, peers), EM)
    assert [p.local_address for p in found.peers] == [V4("192.0.2.10"), None]
    assert found.router_id == V4("192.0.2.10")


def test_empty_optional_values_mean_their_default() -> None:
    annotations = ccm_indexed(EM, 65000, [CcmPeer(V4("192.0.2.1"), 65001)])
    annotations |= {f"{EM}/bgp-peers-0-src-ip": "", f"{EM}/bgp-peers-0-peer-multi-hop": "",
                    f"{EM}/bgp-peers-0-bgp-pass": ""}
    (peer,) = parse_annotations(annotations, EM).peers
    assert peer.password is None and not peer.multihop and peer.local_address is None


@pytest.mark.parametrize("spelling,value", [("true", True), ("True", True), ("TRUE", True), ("t", True), ("1", True),
                                            ("false", False), ("F", False), ("0", False), (" true ", True)])
def test_multihop_spellings(spelling: str, value: bool) -> None:
    annotations = ccm_indexed(EM, 65000, [CcmPeer(V4("192.0.2.1"), 65001)])
    annotations[f"{EM}/bgp-peers-0-peer-multi-hop"] = spelling
    assert parse_annotations(annotations, EM).peers[0].multihop is value


def test_surrounding_whitespace_ignored() -> None:
    annotations = {f"{EM}/node-asn": " 65000\n", f"{EM}/peer-asn": "65530 ", f"{EM}/peer-ip": " 169.254.255.1 ",
                   f"{EM}/src-ip": "10.70.17.3\n", f"{EM}/bgp-pass": f" {b64(PASSWORD)}\n"}
    found = parse_annotations(annotations, EM)
    assert found.local_as == 65000 and found.peers == (EQUINIX_EXPECTED.peers[0],)


def test_password_at_the_md5_limit_and_unicode() -> None:
    for password in ("x" * 80, "pässwörd:,\"'", "ü" * 40):
        annotations = ccm_indexed(EM, 65000, [CcmPeer(V4("192.0.2.1"), 65001, password)])
        (peer,) = parse_annotations(annotations, EM).peers
        assert peer.password == Secret(password)


def test_duplicate_peer_with_same_settings_is_merged() -> None:
    peers = [CcmPeer(V4("192.0.2.2"), 65001, "pw", src_ip=V4("192.0.2.10")),
             CcmPeer(V4("192.0.2.1"), 65001, "pw", src_ip=V4("192.0.2.10")),
             CcmPeer(V4("192.0.2.2"), 65001, "pw", src_ip=V4("192.0.2.10"))]
    found = parse_annotations(ccm_indexed(EM, 65000, peers), EM)
    assert [str(p.address) for p in found.peers] == ["192.0.2.2", "192.0.2.1"]
    legacy = {f"{EM}/node-asn": "65000", f"{EM}/peer-asn": "65001", f"{EM}/peer-ip": "192.0.2.1,192.0.2.1"}
    assert len(parse_annotations(legacy, EM).peers) == 1


@pytest.mark.parametrize("other,fields", [
    (CcmPeer(V4("192.0.2.1"), 65002, "pw"), "peer-asn"),
    (CcmPeer(V4("192.0.2.1"), 65001, "another"), "bgp-pass"),
    (CcmPeer(V4("192.0.2.1"), 65001, "pw", True), "peer-multi-hop"),
    (CcmPeer(V4("192.0.2.1"), 65001, "pw", src_ip=V4("192.0.2.10")), "src-ip"),
    (CcmPeer(V4("192.0.2.1"), 65009, None, True), "peer-asn, bgp-pass, peer-multi-hop"),
])
def test_duplicate_peer_with_different_settings_names_both_keys(other: CcmPeer, fields: str) -> None:
    annotations = ccm_indexed(EM, 65000, [CcmPeer(V4("192.0.2.1"), 65001, "pw"), other])
    with pytest.raises(AnnotationError) as info:
        parse_annotations(annotations, EM)
    message = str(info.value)
    assert f"{EM}/bgp-peers-0-peer-ip" in message and f"{EM}/bgp-peers-1-peer-ip" in message
    assert fields in message and "192.0.2.1" in message
    assert b64("pw") not in message and "another" not in message and b64("another") not in message
    assert info.value.keys == (f"{EM}/bgp-peers-0-peer-ip", f"{EM}/bgp-peers-1-peer-ip")


# ---- malformed values: an error naming the key; the value shown unless it is the password ----

@pytest.mark.parametrize("field,value,reason", [
    ("node-asn", "abc", "not an AS number"),
    ("node-asn", "0", "not an AS number"),
    ("node-asn", "4294967296", "not an AS number"),
    ("node-asn", "-1", "not an AS number"),
    ("node-asn", "65000.5", "not an AS number"),
    ("node-asn", "٦٥٠٠٠", "not an AS number"),
    ("peer-asn", "AS65530", "not an AS number"),
    ("peer-asn", "65530,65531", "not an AS number"),
    ("peer-ip", "169.254.255.300", "not an IPv4 or IPv6 address"),
    ("peer-ip", "169.254.255.1;169.254.255.2", "not an IPv4 or IPv6 address"),
    ("peer-ip", "[2001:db8::1]", "not an IPv4 or IPv6 address"),
    ("peer-ip", "peer.example.com", "not an IPv4 or IPv6 address"),
    ("peer-ip", "169.254.255.1,bogus", '"bogus" not an IPv4 or IPv6 address'),
    ("peer-ip", "fe80::1%eth0", "has a zone"),
    ("peer-ip", "0.0.0.0", "not a BGP session address"),
    ("peer-ip", "224.0.0.5", "not a BGP session address"),
    ("peer-ip", "169.254.255.2,ff02::5", '"ff02::5" not a BGP session address'),
    ("src-ip", "10.70.17", "not an IPv4 or IPv6 address"),
    ("src-ip", "10.70.17.3/25", "not an IPv4 or IPv6 address"),
    ("peer-multi-hop", "yes", "not a boolean"),
    ("peer-multi-hop", "on", "not a boolean"),
])
def test_malformed_value_names_key_and_value(field: str, value: str, reason: str) -> None:
    annotations = ccm_indexed(EM, 65000, EQUINIX_PEERS)
    key = f"{EM}/bgp-peers-1-{field}"
    annotations[key] = value
    with pytest.raises(AnnotationError) as info:
        parse_annotations(annotations, EM)
    assert not isinstance(info.value, AnnotationsMissing)
    message = str(info.value)
    assert message.startswith(f'{key} "{value}": ') and reason in message
    assert info.value.keys == (key,)
    assert PASSWORD not in message and b64(PASSWORD) not in message


@pytest.mark.parametrize("value,reason", [
    ("s3cr3t-md5", "not standard base64"),  # the password itself, not encoded
    ("czNjcjN0LW1kNQ", "not standard base64"),  # padding missing
    ("czNjcjN0LW1kNQ==x", "not standard base64"),
    ("czNj cjN0LW1kNQ==", "not standard base64"),
    ("c3_jcjN0-W1kNQ==", "not standard base64"),  # URL-safe alphabet
    ("pässwort", "not standard base64"),
    (base64.b64encode(b"\xff\xfe s3cr3t").decode(), "not UTF-8"),
    (b64("s3cr3t" * 14), "longer than 80 bytes"),
])
def test_bad_password_names_key_never_the_value(value: str, reason: str) -> None:
    annotations = ccm_indexed(EM, 65000, EQUINIX_PEERS)
    key = f"{EM}/bgp-peers-0-bgp-pass"
    annotations[key] = value
    with pytest.raises(AnnotationError) as info:
        parse_annotations(annotations, EM)
    message = str(info.value)
    assert message.startswith(f"{key}: ") and reason in message and info.value.keys == (key,)
    assert value not in message and "s3cr3t" not in message and b64(PASSWORD) not in message


def test_shown_values_are_escaped_and_cut() -> None:
    annotations = ccm_indexed(EM, 65000, EQUINIX_PEERS)
    annotations[f"{EM}/bgp-peers-0-peer-asn"] = '65530\u202e"\n\\\x00'
    with pytest.raises(AnnotationError) as info:
        parse_annotations(annotations, EM)
    assert str(info.value) == (f'{EM}/bgp-peers-0-peer-asn "65530\\u202e\\"\\n\\\\\\x00": '
                               "not an AS number (1-4294967295)")
    annotations[f"{EM}/bgp-peers-0-peer-asn"] = "9" * 1000
    with pytest.raises(AnnotationError) as info:
        parse_annotations(annotations, EM)
    assert f'"{"9" * 64}…"' in str(info.value) and len(str(info.value)) < 200


def test_node_asn_must_agree_across_indices() -> None:
    annotations = ccm_indexed(EM, 65000, EQUINIX_PEERS)
    annotations[f"{EM}/bgp-peers-1-node-asn"] = "65001"
    with pytest.raises(AnnotationError) as info:
        parse_annotations(annotations, EM)
    assert str(info.value) == (f'{EM}/bgp-peers-1-node-asn "65001" differs from {EM}/bgp-peers-0-node-asn "65000": '
                               "the node has one AS")
    assert info.value.keys == (f"{EM}/bgp-peers-1-node-asn", f"{EM}/bgp-peers-0-node-asn")


def test_src_ip_of_one_family_must_agree_across_indices() -> None:
    annotations = ccm_indexed(EM, 65000, EQUINIX_PEERS)
    annotations[f"{EM}/bgp-peers-1-src-ip"] = "10.70.17.4"
    with pytest.raises(AnnotationError) as info:
        parse_annotations(annotations, EM)
    message = str(info.value)
    assert message.startswith(f'{EM}/bgp-peers-1-src-ip "10.70.17.4" differs from {EM}/bgp-peers-0-src-ip')


def test_src_ip_of_the_other_family_than_its_peer() -> None:
    annotations = ccm_indexed(EM, 65000, [CcmPeer(V6("2001:db8::1"), 65001, src_ip=V4("192.0.2.10"))])
    with pytest.raises(AnnotationError) as info:
        parse_annotations(annotations, EM)
    assert info.value.keys == (f"{EM}/bgp-peers-0-src-ip", f"{EM}/bgp-peers-0-peer-ip")
    assert "IPv4" in str(info.value) and "IPv6" in str(info.value)


# ---- nothing to peer with yet ----

@pytest.mark.parametrize("annotations", [{}, {"kubernetes.io/hostname": "n1", f"{EM}/network-4-private": "10.0.0.0/25",
                                              f"{CHERRY}/bgp-peers-0-peer-ip": "192.0.2.1"}])
def test_no_bgp_keys_at_all(annotations: dict[str, str]) -> None:
    with pytest.raises(AnnotationsMissing) as info:
        parse_annotations(annotations, EM)
    assert f"{EM}/bgp-peers-N-" in str(info.value) and f"{EM}/{{node-asn" in str(info.value)
    assert info.value.missing == tuple(f"{EM}/bgp-peers-0-{f}" for f in ("node-asn", "peer-asn", "peer-ip"))


def test_index_lacking_required_keys_names_exactly_those() -> None:
    annotations = ccm_indexed(EM, 65000, EQUINIX_PEERS)
    del annotations[f"{EM}/bgp-peers-1-peer-asn"]
    annotations[f"{EM}/bgp-peers-3-src-ip"] = "10.70.17.3"
    with pytest.raises(AnnotationsMissing) as info:
        parse_annotations(annotations, EM)
    assert info.value.missing == (f"{EM}/bgp-peers-1-peer-asn", f"{EM}/bgp-peers-3-node-asn",
                                  f"{EM}/bgp-peers-3-peer-asn", f"{EM}/bgp-peers-3-peer-ip")
    assert str(info.value) == "BGP node annotations incomplete: missing " + ", ".join(info.value.missing)
    assert isinstance(info.value, AnnotationError) and isinstance(info.value, PeeringError)


def test_empty_required_values_count_as_missing() -> None:
    annotations = {f"{EM}/node-asn": "65000", f"{EM}/peer-asn": "", f"{EM}/peer-ip": " , ",
                   f"{EM}/bgp-pass": b64(PASSWORD)}
    with pytest.raises(AnnotationsMissing) as info:
        parse_annotations(annotations, EM)
    assert info.value.missing == (f"{EM}/peer-asn", f"{EM}/peer-ip")
    assert f"{EM}/peer-asn (empty), {EM}/peer-ip (empty)" in str(info.value)
    assert b64(PASSWORD) not in str(info.value)


def test_a_malformed_value_is_reported_before_missing_keys() -> None:
    annotations = {f"{EM}/bgp-peers-0-peer-ip": "192.0.2.1", f"{EM}/bgp-peers-1-peer-asn": "x"}
    with pytest.raises(AnnotationError) as info:
        parse_annotations(annotations, EM)
    assert not isinstance(info.value, AnnotationsMissing) and info.value.keys == (f"{EM}/bgp-peers-1-peer-asn",)


def test_indexed_keys_win_even_when_incomplete() -> None:
    annotations = ccm_legacy(EM, 65000, EQUINIX_PEERS) | {f"{EM}/bgp-peers-0-peer-ip": "169.254.255.1"}
    with pytest.raises(AnnotationsMissing) as info:
        parse_annotations(annotations, EM)
    assert info.value.missing == (f"{EM}/bgp-peers-0-node-asn", f"{EM}/bgp-peers-0-peer-asn")


def test_result_feeds_combine() -> None:
    combined = combine(FlagBgp((), None, None, False), [parse_annotations(ccm_indexed(EM, 65000, EQUINIX_PEERS), EM)])
    assert combined.local_as == 65000 and combined.router_id == V4("10.70.17.3")
    assert [p.source for p in combined.peers] == [PeerSource.ANNOTATION] * 2


def test_repr_and_str_mask_the_password() -> None:
    parsed = parse_annotations_full(ccm_indexed(EM, 65000, EQUINIX_PEERS), EM)
    for text in (repr(parsed), str(parsed), repr(parsed.discovered), f"{parsed}"):
        assert PASSWORD not in text and b64(PASSWORD) not in text and "***" in text


# ---- properties ----

MARK = "¤"  # every generated password holds it and no other generated value does
_plain_chars = st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters=MARK)
_passwords = st.builds(lambda a, b: a + MARK + b, st.text(_plain_chars, max_size=12),
                       st.text(_plain_chars, max_size=12)).filter(lambda p: len(p.encode()) <= 80)
_marked_or_none = st.none() | _passwords
_prefixes = st.sampled_from([EM, CHERRY, "bgp.example.org"])
_v4 = st.ip_addresses(v=4).filter(lambda a: not a.is_unspecified and not a.is_multicast)
_v6 = st.ip_addresses(v=6).filter(lambda a: not a.is_unspecified and not a.is_multicast)
_session_addresses = _v4 | _v6
_address_lists = st.lists(_session_addresses, min_size=1, max_size=5, unique=True)
_sources = st.tuples(st.none() | _v4, st.none() | _v6)
_multihops = st.none() | st.booleans()
_asns = st.integers(1, 2**32 - 1)


@st.composite
def _ccm_peers(draw: st.DrawFn, shared: bool, passwords: st.SearchStrategy[str | None]) -> list[CcmPeer]:
    """Peers with distinct addresses; the source address is one per family; `shared`: one setting for all.
    `passwords` includes None (no password)."""
    addresses = draw(_address_lists)
    v4_source, v6_source = draw(_sources)
    sources = {4: v4_source, 6: v6_source}
    settings_ = st.tuples(_asns, passwords, _multihops)
    common = draw(settings_)
    peers = []
    for address in addresses:
        asn, password, multihop = common if shared else draw(settings_)
        peers.append(CcmPeer(address, asn, password, multihop, sources[address.version]))
    return peers


# ---- any annotation map: a CCM-shaped one (or none), then keys removed, overwritten and added at random ----

_indices = st.one_of(st.integers(0, 5).map(str), st.sampled_from(["01", "00", "-1", "x", "", " 1", "99999"]))
_names = st.one_of(st.sampled_from(FIELDS), st.sampled_from(["peer-ips", "bgp-pass-x", "network-4-private"]))
_addresses = _session_addresses.map(str)
_plain_values = st.one_of(
    st.sampled_from(["65000", "65530", "4294967295", "4294967296", "0", "-1", "", " ", ",", "169.254.255.1",
                     "169.254.255.1,169.254.255.2", "2001:db8::1", "fe80::1%eth0", "10.70.17.3", "0.0.0.0", "true",
                     "false", "True", "1", "yes", "[2001:db8::1]"]),
    st.integers(-5, 2**33).map(str),
    _addresses,
    st.lists(_addresses, max_size=3).map(",".join),
    st.text(_plain_chars, max_size=20),
)


@st.composite
def _password_values(draw: st.DrawFn, used: list[str]) -> str:
    kind = draw(st.sampled_from(["b64", "raw", "unpadded", "binary", "empty", "garbage", "long"]))
    if kind == "binary":
        raw: bytes = draw(st.binary(max_size=90))
        return base64.b64encode(raw).decode()
    if kind in ("empty", "garbage"):
        return "" if kind == "empty" else draw(st.text(_plain_chars, max_size=20))
    password: str = draw(_passwords) * (20 if kind == "long" else 1)
    used.append(password)
    if kind == "raw":
        return password
    encoded = b64(password)
    return encoded.rstrip("=") + "x" if kind == "unpadded" else encoded


@st.composite
def _ccm_map(draw: st.DrawFn, prefix: str, used: list[str]) -> dict[str, str]:
    shape = draw(st.sampled_from(["none", "indexed", "legacy", "both"]))
    if shape == "none":
        return {}
    peers = draw(_ccm_peers(shared=shape != "indexed", passwords=_marked_or_none))
    used.extend(p.password for p in peers if p.password)
    node_asn = draw(st.integers(1, 2**32 - 1))
    out = ccm_indexed(prefix, node_asn, peers) if shape != "legacy" else {}
    return out | (ccm_legacy(prefix, node_asn, peers) if shape != "indexed" else {})


@st.composite
def _annotation_maps(draw: st.DrawFn) -> tuple[str, dict[str, str], list[str]]:
    prefix = draw(_prefixes)
    used: list[str] = []
    out = draw(_ccm_map(prefix, used))
    for key in draw(st.lists(st.sampled_from(sorted(out)), max_size=3)) if out else ():
        out.pop(key, None)
    mutations = draw(st.integers(0, 4))
    for _ in range(mutations):
        name = draw(_names)
        key = draw(st.sampled_from([f"{prefix}/bgp-peers-{draw(_indices)}-{name}", f"{prefix}/{name}",
                                    f"other.example/bgp-peers-0-{name}", f"{prefix}/bgp-peers-0-{name}x"]))
        out[key] = draw(_password_values(used)) if key.endswith("bgp-pass") else draw(_plain_values)
    return prefix, out, used


def _leaks(text: str, passwords: list[str], shown_values: Mapping[str, str]) -> list[str]:
    """The passwords (or their base64) found in `text`; base64 is checked unless a shown value holds it by chance."""
    shown = " ".join(v for k, v in shown_values.items() if not k.endswith("bgp-pass"))
    found = [p for p in passwords if p in text]
    return found + [b64(p) for p in passwords if b64(p) in text and b64(p) not in shown]


def _outcome(annotations: Mapping[str, str], prefix: str) -> object:
    try:
        return parse_annotations_full(annotations, prefix)
    except AnnotationError as exc:
        return (type(exc), str(exc), exc.keys)


@settings(max_examples=300, deadline=None)
@given(_annotation_maps())
def test_any_map_gives_settings_or_an_annotation_error_and_never_leaks(case: tuple[str, dict[str, str],
                                                                                  list[str]]) -> None:
    prefix, annotations, passwords = case
    try:
        parsed = parse_annotations_full(annotations, prefix)
    except AnnotationError as exc:
        assert exc.keys and all(key.startswith(prefix + "/") for key in exc.keys)
        assert not _leaks(str(exc), passwords, annotations) and not _leaks(repr(exc), passwords, annotations)
        assert not isinstance(exc, AnnotationsMissing) or exc.missing == exc.keys
    else:
        found = parsed.discovered
        assert found.peers and found.local_as is not None and found.origin is PeerSource.ANNOTATION
        assert len({p.address for p in found.peers}) == len(found.peers)
        assert all(p.source is PeerSource.ANNOTATION for p in found.peers)
        for text in (repr(parsed), str(parsed), *parsed.notes):
            assert not _leaks(text, passwords, annotations)
    # the order the API server (or a Go map) hands the keys over changes nothing
    assert _outcome(dict(reversed(list(annotations.items()))), prefix) == _outcome(annotations, prefix)


# ---- round trip: peers rendered as a CCM writes them parse back to the same peers ----

_ccm_passwords = st.none() | st.text(_plain_chars, min_size=1, max_size=20).filter(lambda p: len(p.encode()) <= 80)


@settings(max_examples=200, deadline=None)
@given(_prefixes, st.integers(1, 2**32 - 1), _ccm_peers(shared=False, passwords=_ccm_passwords),
       st.lists(st.integers(0, 10**6), min_size=5, max_size=5, unique=True), st.booleans())
def test_round_trip_indexed(prefix: str, node_asn: int, peers: list[CcmPeer], indices: list[int],
                            write_pass: bool) -> None:
    if not write_pass:
        peers = [CcmPeer(p.address, p.asn, None, p.multihop, p.src_ip) for p in peers]
    indices = indices[: len(peers)]
    found = parse_annotations(ccm_indexed(prefix, node_asn, peers, indices, write_pass), prefix)
    by_index = [peer for _index, peer in sorted(zip(indices, peers, strict=True), key=lambda pair: pair[0])]
    assert found.peers == tuple(p.expected() for p in by_index)
    assert found.local_as == node_asn
    v4_sources = {p.src_ip for p in peers if p.src_ip is not None and p.src_ip.version == 4}
    assert found.router_id == (v4_sources.pop() if v4_sources else None)


@settings(max_examples=200, deadline=None)
@given(_prefixes, st.integers(1, 2**32 - 1), _ccm_peers(shared=True, passwords=_ccm_passwords),
       st.randoms(use_true_random=False))
def test_round_trip_legacy_and_both(prefix: str, node_asn: int, peers: list[CcmPeer], rng: random.Random) -> None:
    if len({p.address.version for p in peers}) == 2:  # one legacy src-ip cannot serve both families
        peers = [CcmPeer(p.address, p.asn, p.password, p.multihop, None) for p in peers]
    listed = list(peers)
    rng.shuffle(listed)
    legacy = ccm_legacy(prefix, node_asn, listed)
    expected = tuple(p.expected() for p in sorted(peers, key=lambda p: (p.address.version, int(p.address))))
    parsed = parse_annotations_full(legacy, prefix)
    assert parsed.discovered.peers == expected and parsed.discovered.local_as == node_asn
    assert parsed.layout is Layout.LEGACY
    both = parse_annotations_full(legacy | ccm_indexed(prefix, node_asn, peers), prefix)
    assert both.layout is Layout.INDEXED and both.notes == ()
    assert both.discovered.peers == tuple(p.expected() for p in peers)
