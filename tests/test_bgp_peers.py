"""kube-vip's peer syntax, the quoted-field extension, and error messages that never carry a password."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generic.bgp.peers import BgpPeer, PeerListError, format_peer_list, parse_peer_list
from generic.secret import Secret


def test_kube_vip_examples() -> None:
    peers = parse_peer_list("198.51.100.1:65001:s3cr3t:true,[2001:db8::1]:65002::false", 65000)
    assert peers == (
        BgpPeer(ipaddress.IPv4Address("198.51.100.1"), 65001, Secret("s3cr3t"), True),
        BgpPeer(ipaddress.IPv6Address("2001:db8::1"), 65002, None, False),
    )


def test_empty_fields_take_defaults() -> None:
    (peer,) = parse_peer_list("198.51.100.1::::", 64512)
    assert peer == BgpPeer(ipaddress.IPv4Address("198.51.100.1"), 64512, None, False, 179)
    (peer,) = parse_peer_list("198.51.100.1:65001", 64512)
    assert peer.asn == 65001 and peer.password is None


def test_port_field_is_honoured() -> None:
    (peer,) = parse_peer_list("198.51.100.1:65001::false:1179", 65000)
    assert peer.port == 1179


def test_quoted_password_may_hold_colon_comma_and_quote() -> None:
    (peer, other) = parse_peer_list(r'198.51.100.1:65001:"p:a,s\"s\\":true,198.51.100.2:65002', 65000)
    assert peer.password == Secret('p:a,s"s\\')
    assert other.asn == 65002


def test_unquoted_brackets_inside_a_password() -> None:
    (peer,) = parse_peer_list("198.51.100.1:65001:pa[ss:true", 65000)
    assert peer.password == Secret("pa[ss") and peer.multihop


@pytest.mark.parametrize("text", ["198.51.100.1:65001:s3cr3t:maybe", "198.51.100.1:s3cr3t", "s3cr3t",
                                  '198.51.100.1:65001:"s3cr3t', "198.51.100.1:65001:s3cr3t:true:1:2",
                                  "198.51.100.1:65001:s3cr3t:true,198.51.100.1:65001:s3cr3t"])
def test_errors_mask_the_password(text: str) -> None:
    with pytest.raises(PeerListError) as info:
        parse_peer_list(text, 65000)
    assert "s3cr3t" not in info.value.shown
    assert "s3cr3t" not in str(info.value)


_password = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20).filter(
    lambda p: len(p.encode()) <= 80)
_peer = st.builds(
    BgpPeer,
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(1, 4294967295),
    st.one_of(st.none(), _password.map(Secret)),
    st.booleans(),
    st.integers(1, 65535),
)


@given(st.lists(_peer, max_size=4, unique_by=lambda p: p.address))
def test_format_and_parse_round_trip(peers: list[BgpPeer]) -> None:
    text = format_peer_list(tuple(peers), reveal=True)
    assert parse_peer_list(text, 65000) == tuple(p for p in peers)


@settings(max_examples=500)
@given(st.text(max_size=80))
def test_fuzz_only_peer_list_errors_escape(text: str) -> None:
    with contextlib.suppress(PeerListError):
        parse_peer_list(text, 65000)
