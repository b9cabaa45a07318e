"""BGP settings from the node annotations a cloud controller manager writes (`--annotations PREFIX`).

The Equinix Metal CCM (prefix `metal.equinix.com`), Cherry Servers' fork (`cherryservers.com`) and anything that
writes the same shape under its own prefix describe this node's BGP sessions in its Node's annotations. Under a
prefix `P`, two layouts are read, with exact key matching (a key under another prefix, or with any extra text, is
ignored):

- **indexed** (Equinix CCM v3.3.0 on, Cherry Servers): `P/bgp-peers-N-{node-asn,peer-asn,peer-ip,src-ip,bgp-pass,
  peer-multi-hop}` for any set of decimal indices `N` (written without leading zeros), read in numeric order. Each
  index is one session setting: the CCM writes one peer address per index, a comma-separated list is accepted too
  (each address a peer with that index's settings). Every peer keeps **its own index's** peer AS, password,
  multihop and source address.
- **legacy** (Equinix CCM v3.2.x): `P/{node-asn,peer-asn,peer-ip,src-ip,bgp-pass,peer-multi-hop}`, `peer-ip` a
  comma-separated list.

When both layouts are present the indexed one is used and the legacy keys are ignored: a node upgraded through
CCM v3.3 carries both with equal values. If they differ, the result still comes from the indexed keys and
`ParsedAnnotations.notes` says which legacy keys differ, for the caller to log once.

Values:

- `node-asn` is the node's own AS (`Discovered.local_as`), the same in every index; `peer-asn` the peer's AS.
- `peer-ip`: IPv4 or IPv6 addresses (no zone), comma separated; a list with no address counts as missing.
- `src-ip`: this node's address on the session (each peer's `local_address`, of the peer's family); the IPv4 one is
  also the router ID. All indices that give a `src-ip` of one family must give the same one. **An absent (or
  empty) `src-ip` is not an error** (Cherry Servers' CCM writes it only from v1.35.3): the peer's source address is
  then unset, and the daemon uses `--sourceIP` / `--sourceIF` or the kernel's choice, and derives the router ID.
- `bgp-pass`: the TCP MD5 password as standard base64 of its UTF-8 bytes (what the CCM writes), at most 80 bytes
  decoded; an empty value (or no key) means no password.
- `peer-multi-hop`: `true`/`false` (or Go's other boolean spellings: `1`, `t`, `TRUE`, ...); absent or empty means
  false.
- Surrounding whitespace in a value is ignored.

The same peer address given twice (two indices, or twice in one list) is one peer when the settings agree and an
error naming both keys when they do not. Peer order is deterministic: by index, then by address (IPv4 before IPv6)
within an index; the legacy list sorted by address.

Errors are `AnnotationError`s naming the key and the problem; a non-secret value is shown, a `bgp-pass` value or
password never is. `AnnotationsMissing`, a subclass, means there is nothing to peer with yet: no BGP key under the
prefix, or an index without `peer-ip`, `peer-asn` or `node-asn` (the CCM writes the annotations late; the caller
waits for them). Malformed values are reported before missing keys.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from generic.bgp.peers import MD5_MAX_KEY_BYTES, BgpPeer, PeerSource
from generic.parse import IPAddress, parse_asn, parse_bool
from generic.secret import Secret
from kubevip_metal.peering.settings import Discovered, PeeringError

NODE_ASN = "node-asn"
PEER_ASN = "peer-asn"
PEER_IP = "peer-ip"
SRC_IP = "src-ip"
BGP_PASS = "bgp-pass"
MULTIHOP = "peer-multi-hop"
FIELDS = (NODE_ASN, PEER_ASN, PEER_IP, SRC_IP, BGP_PASS, MULTIHOP)
REQUIRED = (NODE_ASN, PEER_ASN, PEER_IP)

_INDEXED = re.compile(r"bgp-peers-(0|[1-9][0-9]*)-(" + "|".join(map(re.escape, FIELDS)) + ")")
_SHOWN_CHARS = 64


class AnnotationError(PeeringError):
    """A node annotation that cannot be used; `keys` are the annotation keys the message names."""

    def __init__(self, message: str, keys: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.keys = tuple(keys)


class AnnotationsMissing(AnnotationError):
    """Nothing to peer with yet: `missing` are the keys that must still be written (the caller waits)."""

    def __init__(self, message: str, missing: Sequence[str] = ()) -> None:
        super().__init__(message, missing)
        self.missing = tuple(missing)


class Layout(Enum):
    INDEXED = "indexed"
    LEGACY = "legacy"


@dataclass(frozen=True)
class ParsedAnnotations:
    """What the annotations say, which layout it came from, and remarks to log once (never a password)."""

    discovered: Discovered
    layout: Layout
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Group:
    """The keys of one index (or the legacy keys): field -> (annotation key, value)."""

    keys: dict[str, tuple[str, str]]

    def key(self, field: str) -> str:
        return self.keys[field][0]


@dataclass(frozen=True)
class _Parsed:
    """One group's present values, parsed; required ones may be absent (None / no addresses)."""

    group: _Group
    node_asn: int | None
    peer_asn: int | None
    addresses: tuple[IPAddress, ...]
    src_ip: IPAddress | None
    password: Secret | None
    multihop: bool


def parse_annotations(annotations: Mapping[str, str], prefix: str) -> Discovered:
    """This node's BGP settings from its annotations under `prefix` (the module docstring's rules).

    Raises AnnotationsMissing when there is nothing to peer with yet, AnnotationError for a bad value."""
    return parse_annotations_full(annotations, prefix).discovered


def parse_annotations_full(annotations: Mapping[str, str], prefix: str) -> ParsedAnnotations:
    """`parse_annotations` with the layout used and the notes to log (legacy keys that differ from the indexed)."""
    indexed, legacy = _collect(annotations, prefix)
    if indexed:
        discovered = _discover(indexed)
        notes = _legacy_notes(legacy, discovered, prefix) if legacy.keys else ()
        return ParsedAnnotations(discovered, Layout.INDEXED, notes)
    if legacy.keys:
        return ParsedAnnotations(_discover([legacy]), Layout.LEGACY)
    expected = [f"{prefix}/bgp-peers-0-{field}" for field in REQUIRED]
    raise AnnotationsMissing(
        f"no BGP annotations under {prefix}/ yet: expected {prefix}/bgp-peers-N-{{{','.join(REQUIRED)}}} "
        f"(CCM v3.3 on) or {prefix}/{{{','.join(REQUIRED)}}} (older)", expected)


def _collect(annotations: Mapping[str, str], prefix: str) -> tuple[list[_Group], _Group]:
    """The indexed groups in numeric index order, and the legacy group (possibly empty)."""
    start = prefix + "/"
    indexed: dict[str, dict[str, tuple[str, str]]] = {}
    legacy: dict[str, tuple[str, str]] = {}
    for key, value in annotations.items():
        if not key.startswith(start):
            continue
        name = key[len(start):]
        if name in FIELDS:
            legacy[name] = (key, value)
        elif match := _INDEXED.fullmatch(name):
            indexed.setdefault(match[1], {})[match[2]] = (key, value)
    order = sorted(indexed, key=lambda index: (len(index), index))  # numeric order, no int() of a huge index
    return [_Group(indexed[index]) for index in order], _Group(legacy)


def _discover(groups: Sequence[_Group]) -> Discovered:
    parsed = [_parse_group(group) for group in groups]
    _check_missing(parsed)
    local_as = _agreed_node_asn(parsed)
    sources = _agreed_sources(parsed)
    peers = _merged_peers(parsed)
    router_id = sources.get(4)
    return Discovered(PeerSource.ANNOTATION, peers, local_as,
                      router_id if isinstance(router_id, ipaddress.IPv4Address) else None)


# ---- one group's values ----

def _shown(value: str) -> str:
    """A non-secret value in double quotes for a message: long values cut, and quotes, backslashes and anything
    unprintable (control and format characters such as a right-to-left override) escaped."""
    cut = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"
    return '"' + "".join(_escaped(char) for char in cut) + '"'


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _bad(key: str, value: str, reason: str) -> AnnotationError:
    return AnnotationError(f"{key} {_shown(value)}: {reason}", (key,))


def _asn(key: str, value: str) -> int:
    try:
        return parse_asn(value.strip())
    except ValueError as exc:
        raise _bad(key, value, str(exc)) from None


def _address(key: str, value: str, text: str) -> IPAddress:
    """One address of the value (`text`: the value itself, or one item of its comma-separated list)."""
    which = "" if text == value.strip() else f"{_shown(text)} "
    if "%" in text:
        raise _bad(key, value, f"{which}has a zone; give the address alone")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise _bad(key, value, f"{which}not an IPv4 or IPv6 address") from None
    if address.is_unspecified or address.is_multicast:
        raise _bad(key, value, f"{which}not a BGP session address (unspecified or multicast)")
    return address


def _addresses(key: str, value: str) -> tuple[IPAddress, ...]:
    found = {_address(key, value, item.strip()) for item in value.split(",") if item.strip()}
    return tuple(sorted(found, key=_address_order))


def _address_order(address: IPAddress) -> tuple[int, int]:
    return address.version, int(address)


def _password(key: str, value: str) -> Secret | None:
    """The MD5 password from standard base64; the value is never shown (it is the password, encoded)."""
    text = value.strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise AnnotationError(f"{key}: not standard base64 (the CCM writes the MD5 password base64-encoded; "
                              "value not shown)", (key,)) from None
    if len(raw) > MD5_MAX_KEY_BYTES:
        raise AnnotationError(f"{key}: the password is longer than {MD5_MAX_KEY_BYTES} bytes (the TCP MD5 limit)",
                              (key,))
    try:
        password = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AnnotationError(f"{key}: the decoded password is not UTF-8 text (value not shown)", (key,)) from None
    return Secret(password) if password else None


def _multihop(key: str, value: str) -> bool:
    text = value.strip()
    if not text:
        return False
    try:
        return parse_bool(text)
    except ValueError as exc:
        raise _bad(key, value, str(exc)) from None


def _parse_group(group: _Group) -> _Parsed:
    def present(field: str) -> tuple[str, str] | None:
        entry = group.keys.get(field)
        return entry if entry is not None and entry[1].strip() else None

    node_asn = present(NODE_ASN)
    peer_asn = present(PEER_ASN)
    peer_ip = group.keys.get(PEER_IP)
    src_ip = present(SRC_IP)
    password = group.keys.get(BGP_PASS)
    multihop = group.keys.get(MULTIHOP)
    return _Parsed(
        group,
        node_asn=_asn(*node_asn) if node_asn else None,
        peer_asn=_asn(*peer_asn) if peer_asn else None,
        addresses=_addresses(*peer_ip) if peer_ip else (),
        src_ip=_address(*src_ip, src_ip[1].strip()) if src_ip else None,
        password=_password(*password) if password else None,
        multihop=_multihop(*multihop) if multihop else False,
    )


# ---- across groups ----

def _check_missing(parsed: Iterable[_Parsed]) -> None:
    missing: list[str] = []
    shown: list[str] = []
    for item in parsed:
        given = {NODE_ASN: item.node_asn is not None, PEER_ASN: item.peer_asn is not None,
                 PEER_IP: bool(item.addresses)}
        for field in REQUIRED:
            if given[field]:
                continue
            entry = item.group.keys.get(field)
            key = entry[0] if entry else _sibling_key(item.group, field)
            missing.append(key)
            shown.append(f"{key} (empty)" if entry else key)
    if missing:
        raise AnnotationsMissing(f"BGP node annotations incomplete: missing {', '.join(shown)}", missing)


def _sibling_key(group: _Group, field: str) -> str:
    """The key `field` would have in this group, built from any key the group has."""
    some_field, (some_key, _value) = next(iter(group.keys.items()))
    return some_key[: len(some_key) - len(some_field)] + field


def _agreed_node_asn(parsed: Sequence[_Parsed]) -> int:
    first = parsed[0]
    for item in parsed[1:]:
        if item.node_asn != first.node_asn:
            raise _disagree(item.group.key(NODE_ASN), str(item.node_asn), first.group.key(NODE_ASN),
                            str(first.node_asn), "the node has one AS")
    assert first.node_asn is not None  # _check_missing ran
    return first.node_asn


def _agreed_sources(parsed: Sequence[_Parsed]) -> dict[int, IPAddress]:
    """The one source address per family; each group's `src-ip` must match its peers' family."""
    chosen: dict[int, tuple[str, IPAddress]] = {}
    for item in parsed:
        if item.src_ip is None:
            continue
        key = item.group.key(SRC_IP)
        other = next((a for a in item.addresses if a.version != item.src_ip.version), None)
        if other is not None:
            raise AnnotationError(f"{key} {item.src_ip} is IPv{item.src_ip.version} but "
                                  f"{item.group.key(PEER_IP)} lists IPv{other.version} peer {other}: a session's "
                                  "source address must be of the peer's family", (key, item.group.key(PEER_IP)))
        kept = chosen.setdefault(item.src_ip.version, (key, item.src_ip))
        if kept[1] != item.src_ip:
            raise _disagree(key, str(item.src_ip), kept[0], str(kept[1]),
                            "the node has one source address per address family")
    return {version: address for version, (_key, address) in chosen.items()}


def _disagree(key: str, value: str, first_key: str, first_value: str, why: str) -> AnnotationError:
    return AnnotationError(f"{key} {_shown(value)} differs from {first_key} {_shown(first_value)}: {why}",
                           (key, first_key))


_PEER_FIELDS = (("asn", PEER_ASN), ("password", BGP_PASS), ("multihop", MULTIHOP), ("local_address", SRC_IP))


def _peer_differences(a: BgpPeer, b: BgpPeer) -> list[str]:
    """The annotation fields in which two peers differ (Secret compares by value, prints masked)."""
    return [field for attr, field in _PEER_FIELDS if getattr(a, attr) != getattr(b, attr)]


def _merged_peers(parsed: Iterable[_Parsed]) -> tuple[BgpPeer, ...]:
    kept: dict[IPAddress, tuple[str, BgpPeer]] = {}
    for item in parsed:
        key = item.group.key(PEER_IP)
        assert item.peer_asn is not None  # _check_missing ran
        for address in item.addresses:
            source = item.src_ip if item.src_ip is not None and item.src_ip.version == address.version else None
            peer = BgpPeer(address, item.peer_asn, item.password, item.multihop, source=PeerSource.ANNOTATION,
                           local_address=source)
            first = kept.setdefault(address, (key, peer))
            if differences := _peer_differences(first[1], peer):
                raise AnnotationError(f"BGP peer {address} is in {first[0]} and in {key} with different "
                                      f"{', '.join(differences)}; one peer has one setting", (first[0], key))
    return tuple(peer for _key, peer in kept.values())


# ---- both layouts ----

def _legacy_notes(legacy: _Group, indexed: Discovered, prefix: str) -> tuple[str, ...]:
    """A remark when the ignored legacy keys do not say what the indexed keys say (fields only, no values)."""
    used = f"the indexed keys {prefix}/bgp-peers-N-* (CCM v3.3 on) are used"
    try:
        old = _discover([legacy])
    except AnnotationError as exc:
        return (f"the legacy BGP annotations are ignored and unusable ({exc}); {used}",)
    differ = _layout_differences(old, indexed)
    if not differ:
        return ()
    keys = ", ".join(f"{prefix}/{field}" for field in differ)
    return (f"the legacy BGP annotations {keys} differ from the indexed ones and are ignored; {used}",)


def _layout_differences(old: Discovered, new: Discovered) -> list[str]:
    differ: set[str] = set()
    if old.local_as != new.local_as:
        differ.add(NODE_ASN)
    if old.router_id != new.router_id:
        differ.add(SRC_IP)
    if {peer.address for peer in old.peers} != {peer.address for peer in new.peers}:
        differ.add(PEER_IP)
    for legacy in old.peers:  # the legacy keys hold one setting for all peers: each indexed peer should have it
        for peer in new.peers:
            if peer.address.version == legacy.address.version:
                differ.update(_peer_differences(legacy, peer))
    return [field for field in FIELDS if field in differ]
