"""Gratuitous ARP and unsolicited IPv6 Neighbour Advertisements: tell the LAN where a VIP lives now.

Each announcement of an IPv4 VIP sends both forms, per VIP (no process-wide toggle, unlike kube-vip): an ARP
request with sender = target = VIP, and an ARP reply whose target MAC is our own. Linux (and most switches)
treat exactly these two as gratuitous and update a neighbour entry at once, even within the 1 s locktime;
a reply to the broadcast MAC would be ignored there. IPv6 sends an unsolicited NA with the Override flag to
all-nodes.

The ARP socket is opened once, with protocol 0 and never bound: `sendto((ifname, 0))` names the interface per
frame (so a re-created interface is found again), and the kernel neither waits for an RCU grace period on bind
or close (10-24 ms each with ETH_P_ARP) nor queues received frames for a socket that never reads.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


def arp_frames(mac: bytes, vip: ipaddress.IPv4Address) -> list[bytes]:
    """The two gratuitous ARP frames (request, then reply to ourselves) for one VIP."""
    sip = vip.packed
    frames = []
    for opcode, target_mac in ((1, b"\x00" * 6), (2, mac)):
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, opcode, mac, sip, target_mac, sip)
        frames.append(BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + arp)
    return frames


def neighbour_advertisement(mac: bytes, vip: ipaddress.IPv6Address) -> bytes:
    """ICMPv6 type 136, Override flag, target = VIP, option 2 = our link-layer address (kernel sums it)."""
    return struct.pack("!BBHI16s", 136, 0, 0, 0x20000000, vip.packed) + struct.pack("!BB6s", 2, 1, mac)


class GarpSender:
    """One long-lived send-only packet socket for all gratuitous ARP."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None

    def send(self, interface: str, mac: bytes, vip: ipaddress.IPv4Address) -> None:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        for frame in arp_frames(mac, vip):
            self._sock.sendto(frame, (interface, 0))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def send_unsolicited_na(interface: str, index: int, mac: bytes, vip: ipaddress.IPv6Address) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)  # NDP requires hop limit 255
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.bind((str(vip), 0, 0, index))
        sock.sendto(neighbour_advertisement(mac, vip), ("ff02::1", 0, 0, index))
