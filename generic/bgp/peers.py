"""A BGP peer, and kube-vip's peer list syntax: `address:AS:password:multihop[:port]`, comma separated.

One peer model for every source: flags, the Equinix Metal API and node annotations all produce `BgpPeer`s, each
saying where it came from (`PeerSource`), so peers from several sources can be merged and a conflict reported
with its origin.

Compatible with what kube-vip users already write (`198.51.100.1:65001:pass:true`, `[2001:db8::1]:65002::false`,
empty fields for defaults). One extension: a field may be written in double quotes, inside which `:`, `,`
and `\\"` are literal (`198.51.100.1:65001:"pa:ss,wd":true`), so any password can be expressed, which
kube-vip's format cannot do.

Error messages never contain a password: the peer is shown with its password field masked.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import Enum

from generic.parse import IPAddress, parse_asn, parse_bool, parse_port
from generic.secret import MASK, Secret

MD5_MAX_KEY_BYTES = 80  # Linux TCP_MD5SIG_MAXKEYLEN
DEFAULT_BGP_PORT = 179


class PeerSource(Enum):
    """Where a peer's settings came from."""

    FLAG = "flag"  # --bgppeers, --bgppeersFile, --peerAddress (and their variables)
    METAL_API = "metal-api"
    ANNOTATION = "annotation"


@dataclass(frozen=True)
class BgpPeer:
    address: IPAddress
    asn: int
    password: Secret | None = None
    multihop: bool = False
    port: int = DEFAULT_BGP_PORT
    source: PeerSource = PeerSource.FLAG
    local_address: IPAddress | None = None  # this node's address on the session, when the source says (Metal, CCM)


class PeerListError(ValueError):
    """A bad peer list; `shown` is the offending entry with the password masked (safe to print)."""

    def __init__(self, reason: str, shown: str) -> None:
        super().__init__(reason)
        self.shown = shown


def _split(text: str, sep: str) -> list[str]:
    """Split on `sep` outside brackets and double quotes; quotes and escapes are kept for the field parser."""
    parts: list[str] = []
    current: list[str] = []
    in_quotes = in_brackets = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif in_quotes and char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif not in_quotes and char == "[" and not current:
            in_brackets = True
        elif in_brackets and char == "]":
            in_brackets = False
        elif char == sep and not in_quotes and not in_brackets:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if in_quotes or escaped:
        raise ValueError("unterminated quoted field")
    parts.append("".join(current))
    return parts


def _unquote(field: str) -> str:
    if len(field) >= 2 and field[0] == field[-1] == '"':
        out: list[str] = []
        escaped = False
        for char in field[1:-1]:
            if escaped:
                out.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                raise ValueError("a quote inside a quoted field must be written \\\"")
            else:
                out.append(char)
        return "".join(out)
    if '"' in field:
        raise ValueError("quotes must enclose a whole field")
    return field


_SAFE_FIELD = (
    re.compile(r"^\[?[0-9A-Fa-f:.]*\]?$"),  # address
    re.compile(r"^[0-9]*$"),  # AS
    re.compile(r"^$"),  # password: only an empty one is shown
    re.compile(r"^(|1|t|T|TRUE|true|True|0|f|F|FALSE|false|False)$"),  # multihop
    re.compile(r"^[0-9]*$"),  # port
)


def _masked(fields: list[str]) -> str:
    """The entry as typed, but any field that could be a misplaced password replaced by the mask."""
    shown = []
    for index, field in enumerate(fields):
        safe = index < len(_SAFE_FIELD) and _SAFE_FIELD[index].match(field)
        shown.append(field if safe else MASK)
    return ":".join(shown)


def _parse_address(field: str) -> IPAddress:
    if field.startswith("[") and field.endswith("]"):
        try:
            return ipaddress.IPv6Address(field[1:-1])
        except ValueError:
            raise ValueError("not an IPv6 address inside [ ]") from None
    try:
        return ipaddress.IPv4Address(field)
    except ValueError:
        raise ValueError("not an IPv4 address (write IPv6 peers as [2001:db8::1])") from None


def parse_peer(entry: str, default_asn: int) -> BgpPeer:
    try:
        fields = _split(entry, ":")
    except ValueError as exc:
        raise PeerListError(str(exc), "(hidden: it may contain a password)") from None
    shown = _masked(fields)
    if len(fields) < 2:
        raise PeerListError("expected address:AS[:password[:multihop[:port]]]", shown)
    if len(fields) > 5:
        raise PeerListError("too many fields (address:AS:password:multihop:port)", shown)
    fields += [""] * (5 - len(fields))
    try:
        address = _parse_address(fields[0])
        asn = parse_asn(fields[1]) if fields[1] else default_asn
        password = _unquote(fields[2])
        if len(password.encode()) > MD5_MAX_KEY_BYTES:
            raise ValueError(f"password longer than {MD5_MAX_KEY_BYTES} bytes (the TCP MD5 limit)")
        multihop = parse_bool(_unquote(fields[3])) if fields[3] else False
        port = parse_port(fields[4]) if fields[4] else DEFAULT_BGP_PORT
    except ValueError as exc:
        raise PeerListError(str(exc), shown) from None
    return BgpPeer(address, asn, Secret(password) if password else None, multihop, port)


def parse_peer_list(text: str, default_asn: int) -> tuple[BgpPeer, ...]:
    """All peers of a comma-separated list; duplicates (same address) are an error, empty entries are skipped."""
    try:
        entries = _split(text, ",")
    except ValueError as exc:
        raise PeerListError(str(exc), "(hidden: it may contain a password)") from None
    peers: list[BgpPeer] = []
    for entry in entries:
        if not entry.strip():
            continue
        peer = parse_peer(entry.strip(), default_asn)
        if any(p.address == peer.address for p in peers):
            raise PeerListError("the same peer address appears twice", _masked(_split(entry.strip(), ":")))
        peers.append(peer)
    return tuple(peers)


def format_peer_list(peers: tuple[BgpPeer, ...], reveal: bool) -> str:
    """The list in the same syntax (for manifests); passwords quoted when needed, or masked unless `reveal`."""
    out = []
    for peer in peers:
        address = f"[{peer.address}]" if peer.address.version == 6 else str(peer.address)
        password = ""
        if peer.password is not None:
            text = peer.password.reveal() if reveal else MASK
            needs_quotes = any(c in text for c in ':,"\\[]') or text != text.strip()
            password = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"' if needs_quotes else text
        fields = [address, str(peer.asn), password, "true" if peer.multihop else "false"]
        if peer.port != DEFAULT_BGP_PORT:
            fields.append(str(peer.port))
        out.append(":".join(fields))
    return ",".join(out)
