"""A client that probes a VIP with ICMP echo every few milliseconds and reports each outage.

Runs inside the client namespace (`python -m kubevip_testbed.lab.probe VIP --interval 0.005`). It prints one
JSON line per event: `{"event": "reply", ...}` every `--every` replies as a heartbeat, and
`{"event": "outage", "start": t, "end": t, "seconds": s}` when replies resume after a gap longer than three
intervals. Times are CLOCK_MONOTONIC, comparable with the managers' `mono` fields on the same host.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import select
import socket
import struct
import sys
import time


def _checksum(data: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _emit(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("--every", type=int, default=200, help="heartbeat every N replies")
    args = parser.parse_args()
    v6 = ipaddress.ip_address(args.target).version == 6
    if v6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        request, reply = 128, 129
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        request, reply = 8, 0
    ident = os.getpid() & 0xFFFF
    seq, replies = 0, 0
    last_reply: float | None = None
    next_send = time.monotonic()
    _emit(event="started", target=args.target, mono=next_send)
    while True:
        now = time.monotonic()
        if now >= next_send:
            seq = (seq + 1) & 0xFFFF
            header = struct.pack("!BBHHH", request, 0, 0, ident, seq)
            packet = header if v6 else struct.pack("!BBHHH", request, 0, _checksum(header), ident, seq)
            with contextlib.suppress(OSError):
                sock.sendto(packet, (args.target, 0))
            next_send += args.interval
            if next_send < now:
                next_send = now + args.interval
        ready, _, _ = select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
        if not ready:
            continue
        data = sock.recv(2048)
        at = time.monotonic()
        icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
        kind, _, _, got_ident, _ = struct.unpack("!BBHHH", icmp[:8])
        if kind != reply or got_ident != ident:
            continue
        replies += 1
        if last_reply is not None and at - last_reply > 3 * args.interval:
            _emit(event="outage", start=last_reply, end=at, seconds=at - last_reply)
        last_reply = at
        if replies % args.every == 0:
            _emit(event="reply", mono=at, replies=replies)


if __name__ == "__main__":
    raise SystemExit(main())
